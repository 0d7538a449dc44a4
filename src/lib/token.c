/* token.c — keys, JWT signing and verification, JWKS (see token.h). */
#include "token.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define MAX_KEYS 16
/* Verified tokens: a set-associative cache of CACHE_SETS x CACHE_WAYS
 * slots, least recently used way replaced, so that a few hundred busy
 * tokens do not evict each other. Allocated on first use; pages are only
 * touched as slots fill. */
#define CACHE_SETS 1024
#define CACHE_WAYS 4
#define MAX_TOKEN_LEN 4096

struct key {
    char kid[64];
    jwt_alg_t alg;
    char *priv_pem, *pub_pem;
    size_t priv_len, pub_len;
    time_t mtime;
};

struct cache_slot {
    unsigned char hash[32];
    unsigned long used;         /* 0: empty; else the tick of the last hit */
    struct af_claims claims;
};

struct af_keyset {
    struct key keys[MAX_KEYS];
    size_t n;
    int current;
    char *jwks;
    struct cache_slot *cache;   /* allocated on first verification */
    unsigned long tick;
};

static char *bio_text(BIO *b, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    if (len)
        *len = (size_t)n;
    return s;
}

static int bn_b64(const EVP_PKEY *pk, const char *param, size_t pad, char *out, size_t outlen)
{
    BIGNUM *bn = NULL;
    if (!EVP_PKEY_get_bn_param(pk, param, &bn))
        return -1;
    unsigned char buf[1024];
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    if (n > sizeof buf || BN_bn2binpad(bn, buf, (int)n) < 0) {
        BN_free(bn);
        return -1;
    }
    BN_free(bn);
    if (sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > outlen)
        return -1;
    af_b64url(buf, n, out);
    return 0;
}

/* Fills the public JWK members and the RFC 7638 thumbprint of pk. */
static int jwk_of(EVP_PKEY *pk, jwt_alg_t *alg, json_object *jwk, char kid[64])
{
    char a[700], b[700], canon[1600];
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
        char group[64];
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) ||
            strcmp(group, "prime256v1") != 0)
            return -1;
        if (bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, 32, a, sizeof a) < 0 ||
            bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b, sizeof b) < 0)
            return -1;
        *alg = JWT_ALG_ES256;
        snprintf(canon, sizeof canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a, b);
        json_object_object_add(jwk, "kty", json_object_new_string("EC"));
        json_object_object_add(jwk, "crv", json_object_new_string("P-256"));
        json_object_object_add(jwk, "x", json_object_new_string(a));
        json_object_object_add(jwk, "y", json_object_new_string(b));
        json_object_object_add(jwk, "alg", json_object_new_string("ES256"));
    } else if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA) {
        if (EVP_PKEY_get_bits(pk) < 2048)
            return -1;
        if (bn_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof a) < 0 ||
            bn_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof b) < 0)
            return -1;
        *alg = JWT_ALG_RS256;
        snprintf(canon, sizeof canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", b, a);
        json_object_object_add(jwk, "kty", json_object_new_string("RSA"));
        json_object_object_add(jwk, "n", json_object_new_string(a));
        json_object_object_add(jwk, "e", json_object_new_string(b));
        json_object_object_add(jwk, "alg", json_object_new_string("RS256"));
    } else {
        return -1;
    }
    unsigned char h[32];
    af_sha256(canon, strlen(canon), h);
    af_b64url(h, sizeof h, kid);
    json_object_object_add(jwk, "use", json_object_new_string("sig"));
    json_object_object_add(jwk, "kid", json_object_new_string(kid));
    return 0;
}

static int load_key(struct key *k, const char *path, json_object *keys, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    fstat(fileno(f), &st);
    k->mtime = st.st_mtime;
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (!pk) {
        fclose(f);
        snprintf(err, errlen, "%s: not a PEM private key", path);
        return -1;
    }
    /* libjwt wants PEM text; keep ours in a canonical form. */
    BIO *priv = BIO_new(BIO_s_mem()), *pub = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(priv, pk, NULL, NULL, 0, NULL, NULL);
    PEM_write_bio_PUBKEY(pub, pk);
    k->priv_pem = bio_text(priv, &k->priv_len);
    k->pub_pem = bio_text(pub, &k->pub_len);
    BIO_free(priv);
    BIO_free(pub);
    fclose(f);
    json_object *jwk = json_object_new_object();
    int rc = jwk_of(pk, &k->alg, jwk, k->kid);
    EVP_PKEY_free(pk);
    if (rc < 0 || !k->priv_pem || !k->pub_pem) {
        json_object_put(jwk);
        snprintf(err, errlen, "%s: only P-256 EC and RSA (>= 2048 bits) keys are supported", path);
        return -1;
    }
    json_object_array_add(keys, jwk);
    return 0;
}

int af_keyset_load(struct af_keyset **out, const char *dir, char *err, size_t errlen)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "[tokens] keys_dir: %s: %s", dir, strerror(errno));
        return -1;
    }
    struct af_keyset *ks = calloc(1, sizeof *ks);
    json_object *doc = json_object_new_object(), *keys = json_object_new_array();
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".pem") != 0)
            continue;
        if (ks->n == MAX_KEYS) {
            snprintf(err, errlen, "%s: more than %d keys; retire old ones", dir, MAX_KEYS);
            rc = -1;
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (load_key(&ks->keys[ks->n], path, keys, err, errlen) < 0) {
            rc = -1;
            break;
        }
        ks->n++;
    }
    closedir(d);
    if (rc == 0 && ks->n == 0) {
        snprintf(err, errlen, "%s: no signing key (run: authflowctl keys generate)", dir);
        rc = -1;
    }
    if (rc == 0) {
        char path[4096], cur[128] = "";
        snprintf(path, sizeof path, "%s/current", dir);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(cur, sizeof cur, f))
                cur[strcspn(cur, "\r\n")] = '\0';
            fclose(f);
        }
        ks->current = -1;
        for (size_t i = 0; i < ks->n; i++) {
            if (cur[0] && strcmp(ks->keys[i].kid, cur) == 0)
                ks->current = (int)i;
        }
        if (ks->current < 0) {
            ks->current = 0;
            for (size_t i = 1; i < ks->n; i++)
                if (ks->keys[i].mtime > ks->keys[ks->current].mtime)
                    ks->current = (int)i;
        }
        json_object_object_add(doc, "keys", keys);
        ks->jwks = strdup(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN));
    } else {
        json_object_put(keys);
    }
    json_object_put(doc);
    if (rc < 0) {
        af_keyset_free(ks);
        return -1;
    }
    *out = ks;
    return 0;
}

void af_keyset_free(struct af_keyset *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < MAX_KEYS; i++) {
        if (ks->keys[i].priv_pem) {
            sodium_memzero(ks->keys[i].priv_pem, ks->keys[i].priv_len);
            free(ks->keys[i].priv_pem);
        }
        free(ks->keys[i].pub_pem);
    }
    free(ks->jwks);
    free(ks->cache);
    free(ks);
}

size_t af_keyset_count(const struct af_keyset *ks) { return ks->n; }

void af_keyset_info(const struct af_keyset *ks, size_t i, struct af_key_info *out)
{
    const struct key *k = &ks->keys[i];
    out->kid = k->kid;
    out->alg = jwt_alg_str(k->alg);
    out->created = k->mtime;
    out->current = (int)i == ks->current;
}
const char *af_keyset_jwks(const struct af_keyset *ks) { return ks->jwks; }

int af_key_generate(const char *alg, char **pem, char kid_out[64], char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    if (strcmp(alg, "ES256") == 0)
        pk = EVP_EC_gen("P-256");
    else if (strcmp(alg, "RS256") == 0)
        pk = EVP_RSA_gen(3072);
    else {
        snprintf(err, errlen, "unsupported algorithm '%s' (ES256 or RS256)", alg);
        return -1;
    }
    if (!pk) {
        snprintf(err, errlen, "key generation failed");
        return -1;
    }
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    *pem = bio_text(b, NULL);
    BIO_free(b);
    json_object *jwk = json_object_new_object();
    jwt_alg_t a;
    int rc = jwk_of(pk, &a, jwk, kid_out);
    json_object_put(jwk);
    EVP_PKEY_free(pk);
    if (rc < 0 || !*pem) {
        snprintf(err, errlen, "key encoding failed");
        return -1;
    }
    return 0;
}

static const char *alg_name(jwt_alg_t a)
{
    return a == JWT_ALG_ES256 ? "ES256" : a == JWT_ALG_RS256 ? "RS256" : "?";
}

int af_token_sign(const struct af_keyset *ks, const struct af_token_params *p,
                  struct af_claims *c, char **out)
{
    const struct key *k = &ks->keys[ks->current];
    time_t now = time(NULL);
    c->iat = c->nbf = now;
    c->exp = now + p->ttl;
    af_uuid4(c->jti);
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt))
        return -1;
    int rc = jwt_set_alg(jwt, k->alg, (const unsigned char *)k->priv_pem, (int)k->priv_len);
    rc |= jwt_add_header(jwt, "kid", k->kid);
    rc |= jwt_add_grant(jwt, "iss", p->issuer);
    rc |= jwt_add_grant(jwt, "aud", p->audience);
    rc |= jwt_add_grant(jwt, "sub", c->sub);
    rc |= jwt_add_grant(jwt, "sid", c->sid);
    rc |= jwt_add_grant(jwt, "jti", c->jti);
    rc |= jwt_add_grant(jwt, "email", c->email);
    rc |= jwt_add_grant(jwt, "dfp", c->dfp);
    rc |= jwt_add_grant_int(jwt, "iat", c->iat);
    rc |= jwt_add_grant_int(jwt, "nbf", c->nbf);
    rc |= jwt_add_grant_int(jwt, "exp", c->exp);
    rc |= jwt_add_grant_bool(jwt, "email_verified", c->email_verified);
    char arrays[sizeof c->roles + sizeof c->amr + 32];
    snprintf(arrays, sizeof arrays, "{\"roles\":%s,\"amr\":%s}", c->roles, c->amr);
    rc |= jwt_add_grants_json(jwt, arrays);
    *out = rc ? NULL : jwt_encode_str(jwt);
    jwt_free(jwt);
    return *out ? 0 : -1;
}

static bool b64url_json(const char *seg, size_t len, json_object **out)
{
    unsigned char buf[2048];
    size_t n;
    if (len == 0 || len > 2700 ||
        sodium_base642bin(buf, sizeof buf - 1, seg, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    buf[n] = '\0';
    if (!af_utf8_valid((const char *)buf, n))
        return false;
    *out = json_tokener_parse((const char *)buf);
    if (*out && !json_object_is_type(*out, json_type_object)) {
        json_object_put(*out);
        *out = NULL;
    }
    return *out != NULL;
}

/* Claim readers over the decoded payload; each insists on the JSON type,
 * since libjwt reads a wrong-typed number as 0. */
static bool claim_str(json_object *g, const char *name, char *dst, size_t n)
{
    json_object *v;
    if (!json_object_object_get_ex(g, name, &v) || !json_object_is_type(v, json_type_string) ||
        (size_t)json_object_get_string_len(v) >= n)
        return false;
    strcpy(dst, json_object_get_string(v));
    return true;
}

static bool claim_int(json_object *g, const char *name, long *out)
{
    json_object *v;
    if (!json_object_object_get_ex(g, name, &v) || !json_object_is_type(v, json_type_int))
        return false;
    *out = (long)json_object_get_int64(v);
    return true;
}

static bool claim_strings(json_object *g, const char *name, char *dst, size_t n)
{
    json_object *v;
    if (!json_object_object_get_ex(g, name, &v) || !json_object_is_type(v, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(v); i++)
        if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_string))
            return false;
    const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (strlen(s) >= n)
        return false;
    strcpy(dst, s);
    return true;
}

static bool aud_ok(json_object *g, const char *audience)
{
    json_object *v;
    if (!json_object_object_get_ex(g, "aud", &v))
        return false;
    if (json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), audience) == 0;
    if (!json_object_is_type(v, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (json_object_is_type(e, json_type_string) && strcmp(json_object_get_string(e), audience) == 0)
            return true;
    }
    return false;
}

/* Whether e should be replaced rather than cur when a token is added: an
 * empty way first, then an expired one, then the least recently used. */
static bool better_victim(const struct cache_slot *e, const struct cache_slot *cur, time_t now, long skew)
{
    if (!cur)
        return true;
    if (!cur->used || !e->used)
        return !e->used && cur->used;
    bool e_old = now - skew > e->claims.exp, cur_old = now - skew > cur->claims.exp;
    if (e_old != cur_old)
        return e_old;
    return e->used < cur->used;
}

enum af_token_status af_token_verify(struct af_keyset *ks, const struct af_token_params *p,
                                     const char *token, time_t now, struct af_claims *out)
{
    size_t len = strlen(token);
    if (len == 0 || len > MAX_TOKEN_LEN)
        return AF_TOKEN_INVALID;
    long skew = p->skew;
    unsigned char h[32];
    af_sha256(token, len, h);
    if (!ks->cache)
        ks->cache = calloc((size_t)CACHE_SETS * CACHE_WAYS, sizeof *ks->cache);
    struct cache_slot *slot = NULL;
    if (ks->cache) {
        struct cache_slot *set = &ks->cache[((unsigned)h[0] | (unsigned)h[1] << 8) % CACHE_SETS * CACHE_WAYS];
        ks->tick++;
        for (int w = 0; w < CACHE_WAYS; w++) {
            struct cache_slot *e = &set[w];
            if (e->used && memcmp(e->hash, h, 32) == 0) {
                if (now - skew > e->claims.exp)
                    return AF_TOKEN_EXPIRED;
                if (e->claims.nbf > now + skew)
                    return AF_TOKEN_INVALID;
                e->used = ks->tick;
                *out = e->claims;
                return AF_TOKEN_OK;
            }
            if (better_victim(e, slot, now, p->skew))
                slot = e;
        }
    }

    const char *dot1 = strchr(token, '.');
    if (!dot1 || !strchr(dot1 + 1, '.'))
        return AF_TOKEN_INVALID;
    json_object *hdr = NULL, *v;
    if (!b64url_json(token, (size_t)(dot1 - token), &hdr))
        return AF_TOKEN_INVALID;
    const char *kid = json_object_object_get_ex(hdr, "kid", &v) ? json_object_get_string(v) : NULL;
    const char *alg = json_object_object_get_ex(hdr, "alg", &v) ? json_object_get_string(v) : NULL;
    const struct key *k = NULL;
    for (size_t i = 0; kid && i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            k = &ks->keys[i];
    /* The algorithm is the key's, never the token's choice. */
    bool header_ok = k && alg && strcmp(alg, alg_name(k->alg)) == 0;
    json_object_put(hdr);
    if (!header_ok)
        return AF_TOKEN_INVALID;

    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *)k->pub_pem, (int)k->pub_len) != 0 || !jwt)
        return AF_TOKEN_INVALID;
    enum af_token_status st = AF_TOKEN_INVALID;
    struct af_claims c;
    memset(&c, 0, sizeof c);
    char *grants = jwt_get_alg(jwt) == k->alg ? jwt_get_grants_json(jwt, NULL) : NULL;
    json_object *g = grants ? json_tokener_parse(grants) : NULL, *ev;
    free(grants);
    char iss[512];
    if (!g || !claim_str(g, "iss", iss, sizeof iss) || strcmp(iss, p->issuer) != 0 ||
        !aud_ok(g, p->audience))
        goto done;
    if (!claim_str(g, "sub", c.sub, sizeof c.sub) || !claim_str(g, "sid", c.sid, sizeof c.sid) ||
        !claim_str(g, "jti", c.jti, sizeof c.jti) || !claim_str(g, "email", c.email, sizeof c.email) ||
        !claim_str(g, "dfp", c.dfp, sizeof c.dfp) ||
        !claim_strings(g, "roles", c.roles, sizeof c.roles) ||
        !claim_strings(g, "amr", c.amr, sizeof c.amr) || !af_is_uuid(c.sub) || !af_is_uuid(c.sid) ||
        !claim_int(g, "exp", &c.exp) || !claim_int(g, "nbf", &c.nbf) || !claim_int(g, "iat", &c.iat) ||
        !json_object_object_get_ex(g, "email_verified", &ev) || !json_object_is_type(ev, json_type_boolean))
        goto done;
    c.email_verified = json_object_get_boolean(ev);
    /* The skew goes on now's side: exp is the token's number, up to
     * LONG_MAX, and exp + skew would overflow. */
    if (now - skew > c.exp) {
        st = AF_TOKEN_EXPIRED;
        goto done;
    }
    if (c.nbf > now + skew)
        goto done;
    st = AF_TOKEN_OK;
    *out = c;
    if (slot) {
        memcpy(slot->hash, h, 32);
        slot->claims = c;
        slot->used = ks->tick;
    }
done:
    json_object_put(g);
    jwt_free(jwt);
    return st;
}
