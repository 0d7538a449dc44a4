/* jwks.c — a provider's JWKS and id_token verification (see jwks.h). */
#include "jwks.h"

#include <json-c/json.h>
#include <jwt.h>
#include <math.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* Providers publish a handful; the rest of a longer set is ignored. */
#define MAX_KEYS 32
#define MAX_KID 255
#define MAX_TOKEN_LEN 16384
#define MAX_HEADER_LEN 8192         /* base64url characters */
#define MAX_RSA_BYTES 512           /* 4096-bit moduli at most: OpenSSL's public check of an
                                     * 8192-bit key costs ~0.2 s, at each fetch of the keys */
#define MIN_RSA_BITS 2048

struct key {
    char kid[MAX_KID + 1];
    bool has_kid;
    int type;                       /* EVP_PKEY_RSA or EVP_PKEY_EC */
    /* The one algorithm the key serves: the JWK's alg, the curve's for EC;
     * JWT_ALG_NONE for an RSA key without alg (any RS*). */
    jwt_alg_t alg;
    char *pem;
    size_t pem_len;
};

struct af_jwks {
    struct key keys[MAX_KEYS];
    size_t n;
};

/* The algorithms an id_token may use: asymmetric ones only, so that no
 * published (public) key can ever serve as an HMAC secret; never none. */
struct alg {
    const char *name;
    jwt_alg_t alg;
    int type;
};

static const struct alg algs[] = {
    {"RS256", JWT_ALG_RS256, EVP_PKEY_RSA}, {"RS384", JWT_ALG_RS384, EVP_PKEY_RSA},
    {"RS512", JWT_ALG_RS512, EVP_PKEY_RSA}, {"ES256", JWT_ALG_ES256, EVP_PKEY_EC},
    {"ES384", JWT_ALG_ES384, EVP_PKEY_EC},
};

static const struct alg *alg_allowed(const char *name)
{
    for (size_t i = 0; name && i < sizeof algs / sizeof algs[0]; i++)
        if (strcmp(algs[i].name, name) == 0)
            return &algs[i];
    return NULL;
}

static bool key_fits(const struct key *k, const struct alg *a)
{
    return k->type == a->type && (k->alg == JWT_ALG_NONE || k->alg == a->alg);
}

/* ------------------------------------------------------------ JWK to PEM */

/* A member that is absent is NULL; present but not a string is "bad". */
static const char bad[] = "";

/* A string member; bad when it is not a string or holds a NUL (which C
 * would cut it at). */
static const char *member_str(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v))
        return NULL;
    if (!json_object_is_type(v, json_type_string))
        return bad;
    const char *s = json_object_get_string(v);
    return strlen(s) == (size_t)json_object_get_string_len(v) ? s : bad;
}

static bool b64url_dec(const char *s, unsigned char *out, size_t cap, size_t *n)
{
    return s && s != bad && *s &&
           sodium_base642bin(out, cap, s, strlen(s), NULL, n, NULL,
                             sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
           *n > 0;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = bld ? OSSL_PARAM_BLD_to_param(bld) : NULL;
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    EVP_PKEY *pk = NULL;
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    /* fromdata takes the numbers as given: the public check refuses an EC
     * point off its curve and an RSA modulus or exponent that is even or 1. */
    EVP_PKEY_CTX *chk = pk ? EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL) : NULL;
    if (pk && (!chk || EVP_PKEY_public_check(chk) != 1)) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    EVP_PKEY_CTX_free(chk);
    return pk;
}

static EVP_PKEY *rsa_key(json_object *jwk)
{
    unsigned char n[MAX_RSA_BYTES], e[16];
    size_t nlen, elen;
    if (!b64url_dec(member_str(jwk, "n"), n, sizeof n, &nlen) ||
        !b64url_dec(member_str(jwk, "e"), e, sizeof e, &elen))
        return NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (bn && be && bld && BN_num_bits(bn) >= MIN_RSA_BITS &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pk = pkey_fromdata("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return pk;
}

static EVP_PKEY *ec_key(json_object *jwk, const char *group, size_t size)
{
    /* The uncompressed point: 0x04, then x and y at full size each. */
    unsigned char pt[1 + 2 * 48];
    size_t xlen, ylen;
    pt[0] = 0x04;
    if (!b64url_dec(member_str(jwk, "x"), pt + 1, size, &xlen) || xlen != size ||
        !b64url_dec(member_str(jwk, "y"), pt + 1 + size, size, &ylen) || ylen != size)
        return NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * size))
        pk = pkey_fromdata("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    return pk;
}

/* Fills k from one JWK; false when the key is not one we can use. */
static bool jwk_load(json_object *jwk, struct key *k)
{
    if (!json_object_is_type(jwk, json_type_object))
        return false;
    const char *kty = member_str(jwk, "kty"), *use = member_str(jwk, "use");
    const char *alg = member_str(jwk, "alg"), *kid = member_str(jwk, "kid");
    const struct alg *a = alg ? alg_allowed(alg) : NULL;
    if (!kty || (use && strcmp(use, "sig") != 0) || (alg && !a) ||
        kid == bad || (kid && strlen(kid) > MAX_KID))
        return false;
    const char *crv = member_str(jwk, "crv");
    const char *group = NULL;
    size_t size = 0;
    if (strcmp(kty, "RSA") == 0) {
        k->type = EVP_PKEY_RSA;
        k->alg = a ? a->alg : JWT_ALG_NONE;
    } else if (strcmp(kty, "EC") == 0 && crv) {
        k->type = EVP_PKEY_EC;
        if (strcmp(crv, "P-256") == 0) {
            k->alg = JWT_ALG_ES256;
            group = "prime256v1";
            size = 32;
        } else if (strcmp(crv, "P-384") == 0) {
            k->alg = JWT_ALG_ES384;
            group = "secp384r1";
            size = 48;
        } else {
            return false;
        }
    } else {
        return false;
    }
    /* A JWK's alg must agree with its key type, and an EC key's with its
     * curve. */
    if (a && (a->type != k->type || a->alg != k->alg))
        return false;
    EVP_PKEY *pk = k->type == EVP_PKEY_RSA ? rsa_key(jwk) : ec_key(jwk, group, size);
    if (!pk)
        return false;
    /* libjwt 1.10 takes keys as PEM text only. */
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    long len;
    if (b && PEM_write_bio_PUBKEY(b, pk) == 1 && (len = BIO_get_mem_data(b, &data)) > 0 &&
        (k->pem = malloc((size_t)len + 1))) {
        memcpy(k->pem, data, (size_t)len);
        k->pem[len] = '\0';
        k->pem_len = (size_t)len;
    }
    BIO_free(b);
    EVP_PKEY_free(pk);
    if (!k->pem)
        return false;
    k->has_kid = kid != NULL;
    if (kid)
        strcpy(k->kid, kid);
    return true;
}

struct af_jwks *af_jwks_parse(const char *json_text, char *err, size_t errlen)
{
    json_object *doc = json_text ? json_tokener_parse(json_text) : NULL, *keys;
    if (!doc || !json_object_is_type(doc, json_type_object) ||
        !json_object_object_get_ex(doc, "keys", &keys) || !json_object_is_type(keys, json_type_array)) {
        json_object_put(doc);
        snprintf(err, errlen, "jwks: not a JSON object with a \"keys\" array");
        return NULL;
    }
    struct af_jwks *ks = calloc(1, sizeof *ks);
    if (!ks) {
        json_object_put(doc);
        snprintf(err, errlen, "jwks: out of memory");
        return NULL;
    }
    size_t total = json_object_array_length(keys);
    for (size_t i = 0; i < total && ks->n < MAX_KEYS; i++) {
        struct key *k = &ks->keys[ks->n];
        if (jwk_load(json_object_array_get_idx(keys, i), k))
            ks->n++;
        else
            memset(k, 0, sizeof *k);
    }
    json_object_put(doc);
    if (ks->n == 0) {
        snprintf(err, errlen, "jwks: none of its %zu keys is usable (RSA >= 2048 bits, EC P-256 or "
                 "P-384, for signatures)", total);
        af_jwks_free(ks);
        return NULL;
    }
    return ks;
}

void af_jwks_free(struct af_jwks *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        free(ks->keys[i].pem);
    free(ks);
}

size_t af_jwks_count(const struct af_jwks *ks) { return ks ? ks->n : 0; }

/* ------------------------------------------------------------ id_tokens */

static json_object *b64url_json(const char *seg, size_t len)
{
    if (len == 0 || len > MAX_HEADER_LEN)
        return NULL;
    unsigned char *buf = malloc(len);
    size_t n;
    json_object *o = NULL;
    if (buf && sodium_base642bin(buf, len - 1, seg, len, NULL, &n, NULL,
                                 sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0) {
        buf[n] = '\0';
        if (af_utf8_valid((const char *)buf, n))
            o = json_tokener_parse((const char *)buf);
    }
    free(buf);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

/* Picks the key for the token's header, or says why not. */
static enum af_idtoken_status select_key(const struct af_jwks *ks, json_object *hdr,
                                         const struct key **key, const struct alg **alg,
                                         const char **why)
{
    const char *name = member_str(hdr, "alg"), *kid = member_str(hdr, "kid");
    const char *typ = member_str(hdr, "typ");
    const struct alg *a = alg_allowed(name);
    if (!a) {
        *why = "algorithm not allowed";
        return AF_IDTOKEN_INVALID;
    }
    /* crit lists extensions the verifier must understand (RFC 7515
     * §4.1.11); we understand none. */
    if (json_object_object_get_ex(hdr, "crit", NULL)) {
        *why = "crit header";
        return AF_IDTOKEN_INVALID;
    }
    /* libjwt 1.10 refuses any typ but JWT: say so rather than "bad signature". */
    if (typ && strcasecmp(typ, "JWT") != 0) {
        *why = "unsupported typ";
        return AF_IDTOKEN_INVALID;
    }
    if (kid == bad) {
        *why = "bad kid";
        return AF_IDTOKEN_INVALID;
    }
    const struct key *k = NULL;
    if (kid) {
        bool known = false;
        for (size_t i = 0; i < ks->n && !k; i++) {
            if (!ks->keys[i].has_kid || strcmp(ks->keys[i].kid, kid) != 0)
                continue;
            known = true;
            if (key_fits(&ks->keys[i], a))
                k = &ks->keys[i];
        }
        if (!known) {
            *why = "unknown kid";
            return AF_IDTOKEN_UNKNOWN_KID;
        }
    } else {
        /* Without kid the key must be beyond doubt. */
        size_t fit = 0;
        for (size_t i = 0; i < ks->n; i++)
            if (key_fits(&ks->keys[i], a)) {
                k = &ks->keys[i];
                fit++;
            }
        if (fit != 1) {
            *why = fit ? "no kid and several keys" : "no key for the algorithm";
            return AF_IDTOKEN_INVALID;
        }
    }
    if (!k) {
        *why = "algorithm does not match the key";
        return AF_IDTOKEN_INVALID;
    }
    *key = k;
    *alg = a;
    return AF_IDTOKEN_OK;
}

/* An optional string claim into dst: 1 copied, 0 absent, -1 not a string,
 * too long, or holding a NUL. */
static int claim_str(json_object *g, const char *name, char *dst, size_t n)
{
    json_object *v;
    dst[0] = '\0';
    if (!json_object_object_get_ex(g, name, &v))
        return 0;
    size_t len = json_object_is_type(v, json_type_string) ? (size_t)json_object_get_string_len(v) : n;
    if (len >= n || strlen(json_object_get_string(v)) != len)
        return -1;
    memcpy(dst, json_object_get_string(v), len + 1);
    return 1;
}

/* A NumericDate: 1 read, 0 absent, -1 not a number (libjwt's own getter
 * would read a string as 0). Fractions are allowed and dropped. */
static int claim_time(json_object *g, const char *name, long *out)
{
    json_object *v;
    if (!json_object_object_get_ex(g, name, &v))
        return 0;
    if (json_object_is_type(v, json_type_int)) {
        *out = (long)json_object_get_int64(v);
        return 1;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (!isfinite(d) || d < -1e15 || d > 1e15)
            return -1;
        *out = (long)d;
        return 1;
    }
    return -1;
}

static const char *accepted(const struct af_idtoken_expect *w, const char *aud)
{
    if (w->client_id && strcmp(aud, w->client_id) == 0)
        return w->client_id;
    for (size_t i = 0; w->extra_audiences && w->extra_audiences[i]; i++)
        if (strcmp(aud, w->extra_audiences[i]) == 0)
            return w->extra_audiences[i];
    return NULL;
}

/* aud holds an accepted audience, and azp (when there are several
 * audiences, or when present at all) names the party the token was issued
 * to: one of ours (OpenID Connect Core §2 and §3.1.3.7 items 3 to 5). */
static const char *aud_check(json_object *g, const struct af_idtoken_expect *w, const char *azp,
                             const char **why)
{
    json_object *v;
    const char *matched = NULL;
    *why = "wrong aud";
    if (!json_object_object_get_ex(g, "aud", &v))
        return NULL;
    size_t n = 1;
    if (json_object_is_type(v, json_type_string)) {
        matched = accepted(w, json_object_get_string(v));
    } else if (json_object_is_type(v, json_type_array)) {
        n = json_object_array_length(v);
        for (size_t i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            if (!json_object_is_type(e, json_type_string))
                return NULL;
            const char *m = accepted(w, json_object_get_string(e));
            /* Several audiences: the one that counts is azp's. */
            if (m && (!matched || (*azp && strcmp(m, azp) == 0)))
                matched = m;
        }
    }
    if (!matched)
        return NULL;
    if (n > 1 && !*azp) {
        *why = "several audiences and no azp";
        return NULL;
    }
    if ((n > 1 && strcmp(azp, matched) != 0) || (*azp && !accepted(w, azp))) {
        *why = "wrong azp";
        return NULL;
    }
    return matched;
}

static enum af_idtoken_status check_claims(json_object *g, const struct af_idtoken_expect *w,
                                           struct af_idtoken *c, const char **why)
{
    time_t now = w->now ? w->now : time(NULL);
    long skew = w->skew_s, nbf = 0;
    char iss[512];
    if (claim_str(g, "iss", iss, sizeof iss) != 1 || !w->issuer || strcmp(iss, w->issuer) != 0) {
        *why = "wrong iss";
        return AF_IDTOKEN_INVALID;
    }
    if (claim_str(g, "azp", c->azp, sizeof c->azp) < 0) {
        *why = "bad azp";
        return AF_IDTOKEN_INVALID;
    }
    if (!(c->aud = aud_check(g, w, c->azp, why)))
        return AF_IDTOKEN_INVALID;
    if (claim_str(g, "sub", c->sub, sizeof c->sub) != 1 || !c->sub[0]) {
        *why = "missing or bad sub";
        return AF_IDTOKEN_INVALID;
    }
    int has_nonce = claim_str(g, "nonce", c->nonce, sizeof c->nonce);
    if (w->nonce && has_nonce != 1) {
        *why = "missing nonce";
        return AF_IDTOKEN_INVALID;
    }
    if (w->nonce && !af_streq_ct(c->nonce, w->nonce)) {
        *why = "wrong nonce";
        return AF_IDTOKEN_INVALID;
    }
    if (claim_time(g, "exp", &c->exp) != 1 || claim_time(g, "iat", &c->iat) != 1 ||
        claim_time(g, "nbf", &nbf) < 0 || claim_time(g, "auth_time", &c->auth_time) < 0) {
        *why = "missing or bad exp, iat, nbf or auth_time";
        return AF_IDTOKEN_INVALID;
    }
    /* The skew goes on now's side: the token's numbers may be anything up
     * to LONG_MAX, and adding to them could overflow. */
    if (c->iat > now + skew) {
        *why = "iat in the future";
        return AF_IDTOKEN_INVALID;
    }
    if (nbf > now + skew) {
        *why = "not yet valid";
        return AF_IDTOKEN_INVALID;
    }
    if (c->exp <= now - skew) {
        *why = "expired";
        return AF_IDTOKEN_EXPIRED;
    }
    if (w->max_age_s > 0 && c->iat < now - skew - w->max_age_s) {
        *why = "issued too long ago";
        return AF_IDTOKEN_EXPIRED;
    }
    /* Profile claims are optional; an unusable one is treated as absent. */
    json_object *ev;
    if (claim_str(g, "email", c->email, sizeof c->email) < 0)
        c->email[0] = '\0';
    if (claim_str(g, "name", c->name, sizeof c->name) < 0)
        c->name[0] = '\0';
    c->email_verified = c->email[0] && json_object_object_get_ex(g, "email_verified", &ev) &&
                        ((json_object_is_type(ev, json_type_boolean) && json_object_get_boolean(ev)) ||
                         (json_object_is_type(ev, json_type_string) &&
                          strcmp(json_object_get_string(ev), "true") == 0));
    *why = "ok";
    return AF_IDTOKEN_OK;
}

enum af_idtoken_status af_idtoken_verify(const struct af_jwks *ks, const char *token,
                                         const struct af_idtoken_expect *want,
                                         struct af_idtoken *out, const char **why)
{
    const char *ignored;
    if (!why)
        why = &ignored;
    *why = "malformed token";
    size_t len = token ? strlen(token) : 0;
    if (!ks || len == 0 || len > MAX_TOKEN_LEN)
        return AF_IDTOKEN_INVALID;
    /* Three parts, a signature among them: a JWS in compact form, not a
     * JWE (five parts) nor an unsigned token. */
    const char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2 || strchr(dot2 + 1, '.') || dot2[1] == '\0')
        return AF_IDTOKEN_INVALID;
    json_object *hdr = b64url_json(token, (size_t)(dot1 - token));
    if (!hdr) {
        *why = "bad header";
        return AF_IDTOKEN_INVALID;
    }
    const struct key *k = NULL;
    const struct alg *a = NULL;
    enum af_idtoken_status st = select_key(ks, hdr, &k, &a, why);
    json_object_put(hdr);
    if (st != AF_IDTOKEN_OK)
        return st;

    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *)k->pem, (int)k->pem_len) != 0 || !jwt) {
        jwt_free(jwt);
        *why = "bad signature";
        return AF_IDTOKEN_INVALID;
    }
    /* What libjwt verified, not what the header said, must be the key's
     * algorithm. */
    if (jwt_get_alg(jwt) != a->alg) {
        jwt_free(jwt);
        *why = "algorithm does not match the key";
        return AF_IDTOKEN_INVALID;
    }
    char *grants = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    json_object *g = grants ? json_tokener_parse(grants) : NULL;
    free(grants);
    if (!g || !json_object_is_type(g, json_type_object)) {
        json_object_put(g);
        *why = "bad payload";
        return AF_IDTOKEN_INVALID;
    }
    struct af_idtoken c;
    memset(&c, 0, sizeof c);
    st = check_claims(g, want, &c, why);
    json_object_put(g);
    if (st == AF_IDTOKEN_OK)
        *out = c;
    return st;
}
