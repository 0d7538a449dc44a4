/* test_token.c — the key set, access token signing and verification, and
 * the JWKS document, including the forgeries verification must refuse:
 * alg none, HS256 keyed with a public key, foreign keys, tampered parts,
 * wrong issuer or audience, expiry and not-before outside the clock skew.
 *
 * Verified tokens are cached by hash inside a key set, so every check that
 * expects a refusal uses a token no key set has accepted before. */
#define _GNU_SOURCE /* asprintf */
#include <json-c/json.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "token.h"
#include "util.h"

#define ISSUER "https://auth.example.test"
#define AUDIENCE "authflow"

static const struct af_token_params P = {ISSUER, AUDIENCE, 900, AF_CLOCK_SKEW};
static const struct af_token_params P_OTHER_ISS = {"https://other.example.test", AUDIENCE, 900, AF_CLOCK_SKEW};
static const struct af_token_params P_OTHER_AUD = {ISSUER, "other-service", 900, AF_CLOCK_SKEW};

static char dir[64], evil_dir[64];
static char *es_pem, *rs_pem, *evil_pem;
static char es_kid[64], rs_kid[64], evil_kid[64];

static const char *status_name(enum af_token_status s)
{
    return s == AF_TOKEN_OK ? "OK" : s == AF_TOKEN_EXPIRED ? "EXPIRED" : "INVALID";
}

static void write_file(const char *d, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", d, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        diag("cannot write %s", path);
}

static void remove_file(const char *d, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", d, name);
    unlink(path);
}

static struct af_keyset *load(const char *d)
{
    struct af_keyset *ks = NULL;
    char err[256] = "";
    if (af_keyset_load(&ks, d, err, sizeof err) != 0)
        diag("af_keyset_load %s: %s", d, err);
    return ks;
}

static void fill(struct af_claims *c, bool verified)
{
    memset(c, 0, sizeof *c);
    af_uuid4(c->sub);
    af_uuid4(c->sid);
    snprintf(c->email, sizeof c->email, "alice+%.8s@example.test", c->sub);
    snprintf(c->roles, sizeof c->roles, "[\"user\",\"admin\"]");
    snprintf(c->amr, sizeof c->amr, "[\"pwd\",\"otp\"]");
    af_sha256_hex(c->sid, strlen(c->sid), c->dfp);
    c->email_verified = verified;
}

static char *sign(const struct af_keyset *ks, struct af_claims *c)
{
    char *t = NULL;
    fill(c, true);
    if (af_token_sign(ks, &P, c, &t) != 0)
        return NULL;
    return t;
}

static void verify_is(struct af_keyset *ks, const struct af_token_params *p, const char *token,
                      time_t now, enum af_token_status want, const char *what)
{
    struct af_claims out;
    enum af_token_status st = token ? af_token_verify(ks, p, token, now, &out) : AF_TOKEN_INVALID;
    if (!token)
        diag("%s: no token was made", what);
    is_str(status_name(st), status_name(want), "%s -> %s", what, status_name(want));
}

/* base64url of text, malloc'd. */
static char *b64(const void *data, size_t len)
{
    size_t n = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(n);
    af_b64url(data, len, out);
    return out;
}

/* The decoded header or payload (part 0 or 1) of a token, malloc'd. */
static char *part(const char *token, int which)
{
    const char *s = token;
    for (int i = 0; i < which; i++)
        s = strchr(s, '.') + 1;
    size_t len = strcspn(s, ".");
    char *out = calloc(1, len + 1);
    size_t n;
    if (sodium_base642bin((unsigned char *)out, len, s, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        out[0] = '\0';
    return out;
}

static char *join3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
    char *s = malloc(n);
    snprintf(s, n, "%s.%s.%s", a, b, c);
    return s;
}

/* A token from raw header and payload JSON and a signature segment. */
static char *raw_token(const char *header, const char *payload, const char *sig)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload));
    char *t = join3(h, p, sig);
    free(h);
    free(p);
    return t;
}

/* token with the character at offset pos changed. */
static char *flip(const char *token, size_t pos)
{
    char *t = strdup(token);
    t[pos] = t[pos] == 'A' ? 'B' : 'A';
    return t;
}

/* A complete, valid set of claims around now; callers edit it. */
static json_object *std_claims(time_t now)
{
    char sub[37], sid[37], jti[37];
    af_uuid4(sub);
    af_uuid4(sid);
    af_uuid4(jti);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "iss", json_object_new_string(ISSUER));
    json_object_object_add(o, "aud", json_object_new_string(AUDIENCE));
    json_object_object_add(o, "sub", json_object_new_string(sub));
    json_object_object_add(o, "sid", json_object_new_string(sid));
    json_object_object_add(o, "jti", json_object_new_string(jti));
    json_object_object_add(o, "email", json_object_new_string("mallory@example.test"));
    json_object_object_add(o, "dfp", json_object_new_string("00"));
    json_object_object_add(o, "roles", json_tokener_parse("[\"user\"]"));
    json_object_object_add(o, "amr", json_tokener_parse("[\"pwd\"]"));
    json_object_object_add(o, "email_verified", json_object_new_boolean(1));
    json_object_object_add(o, "iat", json_object_new_int64(now));
    json_object_object_add(o, "nbf", json_object_new_int64(now));
    json_object_object_add(o, "exp", json_object_new_int64(now + 900));
    return o;
}

/* A token signed by libjwt with any algorithm and key; takes claims. */
static char *mint(jwt_alg_t alg, const char *key, const char *kid, const char *headers,
                  json_object *claims)
{
    jwt_t *jwt = NULL;
    char *t = NULL;
    if (jwt_new(&jwt) == 0 &&
        jwt_set_alg(jwt, alg, (const unsigned char *)key, key ? (int)strlen(key) : 0) == 0 &&
        (!kid || jwt_add_header(jwt, "kid", kid) == 0) &&
        (!headers || jwt_add_headers_json(jwt, headers) == 0) &&
        jwt_add_grants_json(jwt, json_object_to_json_string(claims)) == 0)
        t = jwt_encode_str(jwt);
    jwt_free(jwt);
    json_object_put(claims);
    return t;
}

/* The SubjectPublicKeyInfo PEM of the private key in dir/<kid>.pem. */
static char *public_pem(const char *kid)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.pem", dir, kid);
    FILE *f = fopen(path, "r");
    EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!pk)
        return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, pk);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(pk);
    return s;
}

static void setup(void)
{
    char err[256];
    snprintf(dir, sizeof dir, "/tmp/authflow-keys-XXXXXX");
    snprintf(evil_dir, sizeof evil_dir, "/tmp/authflow-keys-XXXXXX");
    ok(mkdtemp(dir) != NULL && mkdtemp(evil_dir) != NULL, "temporary key directories made");
    ok(af_key_generate("ES256", &es_pem, es_kid, err, sizeof err) == 0, "ES256 key generated");
    ok(af_key_generate("RS256", &rs_pem, rs_kid, err, sizeof err) == 0, "RS256 key generated");
    ok(af_key_generate("ES256", &evil_pem, evil_kid, err, sizeof err) == 0,
       "a foreign ES256 key generated");
    ok(af_key_generate("HS256", &(char *){NULL}, (char[64]){0}, err, sizeof err) != 0,
       "HS256 key generation refused");
    is_int((long)strlen(es_kid), 43, "kid is a base64url SHA-256 thumbprint");
    ok(strcmp(es_kid, rs_kid) && strcmp(es_kid, evil_kid), "kids differ");

    char name[80];
    snprintf(name, sizeof name, "%s.pem", es_kid);
    write_file(dir, name, es_pem);
    snprintf(name, sizeof name, "%s.pem", rs_kid);
    write_file(dir, name, rs_pem);
    snprintf(name, sizeof name, "%s.pem", evil_kid);
    write_file(evil_dir, name, evil_pem);
}

static void cleanup(void)
{
    char name[80];
    snprintf(name, sizeof name, "%s.pem", es_kid);
    remove_file(dir, name);
    snprintf(name, sizeof name, "%s.pem", rs_kid);
    remove_file(dir, name);
    remove_file(dir, "current");
    rmdir(dir);
    snprintf(name, sizeof name, "%s.pem", evil_kid);
    remove_file(evil_dir, name);
    rmdir(evil_dir);
    free(es_pem);
    free(rs_pem);
    free(evil_pem);
}

static void test_keyset(void)
{
    struct af_keyset *ks = NULL;
    char err[256] = "";
    ok(af_keyset_load(&ks, "/nonexistent/authflow-keys", err, sizeof err) != 0 && !ks,
       "missing keys dir refused");
    ok(strstr(err, "keys_dir") != NULL, "message names keys_dir");

    char empty[64];
    snprintf(empty, sizeof empty, "/tmp/authflow-empty-XXXXXX");
    if (mkdtemp(empty)) {
        ok(af_keyset_load(&ks, empty, err, sizeof err) != 0 && !ks, "empty keys dir refused");
        write_file(empty, "junk.pem", "not a key\n");
        ok(af_keyset_load(&ks, empty, err, sizeof err) != 0 && !ks, "non-PEM key file refused");
        remove_file(empty, "junk.pem");
        rmdir(empty);
    }

    ks = load(dir);
    ok(ks != NULL, "key set loads without a current file");
    if (ks)
        is_int((long)af_keyset_count(ks), 2, "two keys loaded");
    af_keyset_free(ks);
}

static void test_jwks(struct af_keyset *ks)
{
    const char *doc = af_keyset_jwks(ks);
    json_object *o = doc ? json_tokener_parse(doc) : NULL, *keys = NULL;
    ok(o && json_object_is_type(o, json_type_object), "JWKS is a JSON object");
    ok(o && json_object_object_get_ex(o, "keys", &keys) &&
           json_object_is_type(keys, json_type_array),
       "JWKS has a keys array");
    is_int(keys ? (long)json_object_array_length(keys) : -1, 2, "JWKS holds 2 keys");
    int seen_es = 0, seen_rs = 0;
    for (size_t i = 0; keys && i < json_object_array_length(keys); i++) {
        json_object *k = json_object_array_get_idx(keys, i), *v;
        const char *kid = json_object_object_get_ex(k, "kid", &v) ? json_object_get_string(v) : "";
        const char *kty = json_object_object_get_ex(k, "kty", &v) ? json_object_get_string(v) : "";
        const char *alg = json_object_object_get_ex(k, "alg", &v) ? json_object_get_string(v) : "";
        const char *use = json_object_object_get_ex(k, "use", &v) ? json_object_get_string(v) : "";
        ok(*kid && *kty && *alg, "key %zu has kid, kty and alg", i);
        is_str(use, "sig", "key %zu is for signatures", i);
        ok(!json_object_object_get_ex(k, "d", NULL) && !json_object_object_get_ex(k, "p", NULL) &&
               !json_object_object_get_ex(k, "q", NULL),
           "key %zu has no private members", i);
        if (!strcmp(kid, es_kid)) {
            seen_es++;
            ok(!strcmp(kty, "EC") && !strcmp(alg, "ES256"), "EC key is ES256");
            ok(json_object_object_get_ex(k, "crv", &v) &&
                   !strcmp(json_object_get_string(v), "P-256") &&
                   json_object_object_get_ex(k, "x", NULL) &&
                   json_object_object_get_ex(k, "y", NULL),
               "EC key has crv P-256, x and y");
        } else if (!strcmp(kid, rs_kid)) {
            seen_rs++;
            ok(!strcmp(kty, "RSA") && !strcmp(alg, "RS256"), "RSA key is RS256");
            ok(json_object_object_get_ex(k, "n", NULL) && json_object_object_get_ex(k, "e", NULL),
               "RSA key has n and e");
        }
    }
    ok(seen_es == 1 && seen_rs == 1, "each generated kid appears once");
    json_object_put(o);
}

static void test_roundtrip(struct af_keyset *ks_es, struct af_keyset *ks_rs)
{
    struct af_claims c, out;
    time_t before = time(NULL);
    char *t = sign(ks_es, &c);
    ok(t != NULL, "ES256 token signed");
    if (!t)
        return;
    char *hdr = part(t, 0);
    json_object *h = json_tokener_parse(hdr), *v;
    is_str(h && json_object_object_get_ex(h, "alg", &v) ? json_object_get_string(v) : NULL,
           "ES256", "header alg ES256 (current names the ES256 key)");
    is_str(h && json_object_object_get_ex(h, "kid", &v) ? json_object_get_string(v) : NULL,
           es_kid, "header kid is the current key's");
    json_object_put(h);
    free(hdr);
    ok(c.exp - c.iat == 900 && c.nbf == c.iat && c.iat >= before && c.iat <= time(NULL),
       "sign sets iat, nbf and exp = iat + ttl");
    ok(af_is_uuid(c.jti), "sign sets a UUID jti");

    memset(&out, 0, sizeof out);
    is_str(status_name(af_token_verify(ks_es, &P, t, time(NULL), &out)), "OK",
           "ES256 token verifies");
    is_str(out.sub, c.sub, "sub round-trips");
    is_str(out.sid, c.sid, "sid round-trips");
    is_str(out.jti, c.jti, "jti round-trips");
    is_str(out.email, c.email, "email round-trips");
    is_str(out.roles, c.roles, "roles round-trip");
    is_str(out.amr, c.amr, "amr round-trips");
    is_str(out.dfp, c.dfp, "dfp round-trips");
    ok(out.email_verified, "email_verified true round-trips");
    ok(out.iat == c.iat && out.nbf == c.nbf && out.exp == c.exp, "iat, nbf, exp round-trip");

    memset(&out, 0, sizeof out);
    is_str(status_name(af_token_verify(ks_es, &P, t, time(NULL), &out)), "OK",
           "the same token verifies again");
    is_str(out.sub, c.sub, "second verification returns the claims");
    free(t);

    fill(&c, false);
    t = NULL;
    af_token_sign(ks_es, &P, &c, &t);
    memset(&out, 0, sizeof out);
    out.email_verified = true;
    is_str(t ? status_name(af_token_verify(ks_es, &P, t, time(NULL), &out)) : "none", "OK",
           "token with email_verified false verifies");
    ok(!out.email_verified, "email_verified false round-trips");
    free(t);

    t = sign(ks_rs, &c);
    hdr = t ? part(t, 0) : strdup("");
    ok(strstr(hdr, "\"RS256\"") && strstr(hdr, rs_kid),
       "RS256 token when current names the RSA key");
    free(hdr);
    memset(&out, 0, sizeof out);
    is_str(t ? status_name(af_token_verify(ks_es, &P, t, time(NULL), &out)) : "none", "OK",
           "RS256 token verifies with the other key set");
    is_str(out.sub, c.sub, "RS256 sub round-trips");
    is_str(out.roles, c.roles, "RS256 roles round-trip");
    free(t);
}

static void test_params(struct af_keyset *ks)
{
    struct af_claims c;
    char *t = sign(ks, &c);
    verify_is(ks, &P_OTHER_ISS, t, time(NULL), AF_TOKEN_INVALID, "wrong issuer in params");
    verify_is(ks, &P_OTHER_AUD, t, time(NULL), AF_TOKEN_INVALID, "wrong audience in params");
    verify_is(ks, &P, t, time(NULL), AF_TOKEN_OK, "the same token with the right params");
    free(t);

    time_t now = time(NULL);
    json_object *cl = std_claims(now);
    json_object_object_add(cl, "iss", json_object_new_string("https://evil.test"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "token from another issuer");
    free(t);

    cl = std_claims(now);
    json_object_object_del(cl, "iss");
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "token without iss");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "aud", json_object_new_string("other-service"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "token for another audience");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "aud", json_tokener_parse("[\"other\",\"" AUDIENCE "\"]"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_OK, "aud array containing the audience");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "aud", json_tokener_parse("[\"other\",\"another\"]"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "aud array without the audience");
    free(t);

    cl = std_claims(now);
    json_object_object_del(cl, "aud");
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "token without aud");
    free(t);

    cl = std_claims(now);
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_OK, "a minted token with every claim (control)");
    free(t);

    static const char *required[] = {"sub", "sid", "jti", "email", "dfp", "roles", "amr", "exp"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        cl = std_claims(now);
        json_object_object_del(cl, required[i]);
        t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
        char what[64];
        snprintf(what, sizeof what, "token without %s", required[i]);
        verify_is(ks, &P, t, now, AF_TOKEN_INVALID, what);
        free(t);
    }

    cl = std_claims(now);
    json_object_object_add(cl, "sub", json_object_new_string("admin"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "sub that is not a UUID");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "roles", json_object_new_string("admin"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "roles that is not an array");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "exp", json_object_new_string("9999999999"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    /* libjwt reads a non-integer claim as 0: refused, as expired. */
    struct af_claims out;
    ok(t && af_token_verify(ks, &P, t, now, &out) != AF_TOKEN_OK, "exp as a string is refused");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "nbf", json_object_new_string("9999999999"));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "nbf far ahead, as a string");
    free(t);
}

static void test_time(void)
{
    struct af_keyset *signer = load(dir), *ks = load(dir);
    if (!signer || !ks) {
        ok(false, "key sets for time checks load");
        af_keyset_free(signer);
        af_keyset_free(ks);
        return;
    }
    struct af_claims c;
    char *t = sign(signer, &c);
    verify_is(ks, &P, t, c.exp + 61, AF_TOKEN_EXPIRED, "61 s past exp");
    verify_is(ks, &P, t, c.exp + 30, AF_TOKEN_OK, "30 s past exp (within skew)");
    verify_is(ks, &P, t, c.exp + 60, AF_TOKEN_OK, "60 s past exp (the skew's edge)");
    verify_is(ks, &P, t, c.exp + 61, AF_TOKEN_EXPIRED, "61 s past exp once cached");
    verify_is(ks, &P, t, c.nbf - 61, AF_TOKEN_INVALID, "61 s before nbf once cached");
    free(t);

    t = sign(signer, &c);
    verify_is(ks, &P, t, c.nbf - 61, AF_TOKEN_INVALID, "61 s before nbf");
    verify_is(ks, &P, t, c.nbf - 30, AF_TOKEN_OK, "30 s before nbf (within skew)");
    free(t);

    time_t now = time(NULL);
    json_object *cl = std_claims(now);
    json_object_object_add(cl, "nbf", json_object_new_int64(now + 3600));
    json_object_object_add(cl, "exp", json_object_new_int64(now + 7200));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "nbf an hour ahead");
    free(t);

    cl = std_claims(now);
    json_object_object_add(cl, "iat", json_object_new_int64(now - 2000));
    json_object_object_add(cl, "nbf", json_object_new_int64(now - 2000));
    json_object_object_add(cl, "exp", json_object_new_int64(now - 1000));
    t = mint(JWT_ALG_ES256, es_pem, es_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_EXPIRED, "exp 1000 s ago");
    free(t);

    af_keyset_free(signer);
    af_keyset_free(ks);
}

static void test_forgeries(struct af_keyset *ks)
{
    struct af_claims c;
    time_t now = time(NULL);

    char *t = sign(ks, &c);
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    char *bad = flip(t, (size_t)(d1 - t) + (size_t)(d2 - d1) / 2);
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "a payload character changed");
    free(bad);
    bad = flip(t, (size_t)(d2 - t) + strlen(d2) / 2);
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "a signature character changed");
    free(bad);
    bad = flip(t, (size_t)(d1 - t) / 2);
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "a header character changed");
    free(bad);

    /* A re-encoded payload naming another subject, original signature. */
    char *payload = part(t, 1);
    char other[37];
    af_uuid4(other);
    char *at = strstr(payload, c.sub);
    if (at)
        memcpy(at, other, 36);
    char *hseg = strndup(t, (size_t)(d1 - t)), *pseg = b64(payload, strlen(payload));
    bad = join3(hseg, pseg, d2 + 1);
    ok(at != NULL, "payload holds the sub to replace");
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "payload swapped for another subject");
    free(bad);
    free(pseg);

    char *nosig = strndup(t, (size_t)(d2 - t) + 1);
    verify_is(ks, &P, nosig, now, AF_TOKEN_INVALID, "signature removed");
    free(nosig);
    verify_is(ks, &P, t, now, AF_TOKEN_OK, "the untouched token (control)");

    /* alg none, with a real kid and an empty signature. */
    char hdr[256];
    snprintf(hdr, sizeof hdr, "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", es_kid);
    json_object *cl = std_claims(now);
    bad = raw_token(hdr, json_object_to_json_string(cl), "");
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "alg none with a real kid");
    free(bad);
    snprintf(hdr, sizeof hdr, "{\"alg\":\"None\",\"typ\":\"JWT\",\"kid\":\"%s\"}", rs_kid);
    bad = raw_token(hdr, json_object_to_json_string(cl), "");
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "alg None with the RSA kid");
    free(bad);
    bad = raw_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", json_object_to_json_string(cl), "");
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "alg none without a kid");
    free(bad);
    /* The real header and payload with a signature segment from elsewhere. */
    bad = raw_token("{\"alg\":\"ES256\"}", json_object_to_json_string(cl), d2 + 1);
    verify_is(ks, &P, bad, now, AF_TOKEN_INVALID, "header without kid");
    free(bad);
    json_object_put(cl);
    free(payload);
    free(hseg);
    free(t);

    /* HS256 keyed with the public key PEM, as an attacker could from JWKS. */
    char *rs_pub = public_pem(rs_kid), *es_pub = public_pem(es_kid);
    ok(rs_pub && strstr(rs_pub, "BEGIN PUBLIC KEY"), "RSA public key PEM derived");
    t = mint(JWT_ALG_HS256, rs_pub, rs_kid, NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "HS256 keyed with the RSA public PEM, RSA kid");
    free(t);
    t = mint(JWT_ALG_HS256, es_pub, es_kid, NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "HS256 keyed with the EC public PEM, EC kid");
    free(t);
    free(rs_pub);
    free(es_pub);

    /* Another algorithm than the kid's key. */
    t = mint(JWT_ALG_RS384, rs_pem, rs_kid, NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "RS384 with the RSA key");
    free(t);
    t = mint(JWT_ALG_ES256, es_pem, rs_kid, NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "ES256 signature under the RSA kid");
    free(t);
    t = mint(JWT_ALG_RS256, rs_pem, es_kid, NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "RS256 signature under the EC kid");
    free(t);

    /* Foreign keys. */
    struct af_keyset *evil = load(evil_dir);
    t = evil ? sign(evil, &c) : NULL;
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "unknown kid (a foreign key set's token)");
    if (evil)
        verify_is(evil, &P, t, now, AF_TOKEN_OK, "the foreign token verifies with its own key set");
    free(t);
    t = mint(JWT_ALG_ES256, evil_pem, es_kid, NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "foreign key signing under our kid");
    free(t);

    const char *jwks = evil ? af_keyset_jwks(evil) : NULL;
    json_object *doc = jwks ? json_tokener_parse(jwks) : NULL, *keys;
    json_object *jwk = doc && json_object_object_get_ex(doc, "keys", &keys)
                           ? json_object_array_get_idx(keys, 0) : NULL;
    char *embed = NULL;
    if (jwk && asprintf(&embed, "{\"jwk\":%s,\"jku\":\"https://evil.test/jwks.json\"}",
                        json_object_to_json_string(jwk)) < 0)
        embed = NULL;
    t = embed ? mint(JWT_ALG_ES256, evil_pem, es_kid, embed, std_claims(now)) : NULL;
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "foreign key embedded as jwk under our kid");
    free(t);
    t = embed ? mint(JWT_ALG_ES256, evil_pem, evil_kid, embed, std_claims(now)) : NULL;
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "foreign key embedded as jwk with its own kid");
    free(t);
    free(embed);
    json_object_put(doc);
    af_keyset_free(evil);

    t = mint(JWT_ALG_ES256, es_pem, es_kid,
             "{\"jku\":\"https://evil.test/jwks.json\",\"x5u\":\"https://evil.test/x.pem\","
             "\"jwk\":{\"kty\":\"EC\"}}",
             std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_OK,
              "jku, x5u and jwk headers on a genuine token are ignored");
    free(t);

    t = mint(JWT_ALG_ES256, es_pem, "nope", NULL, std_claims(now));
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "made-up kid");
    free(t);
}

static void test_malformed(struct af_keyset *ks)
{
    time_t now = time(NULL);
    static const char *junk[] = {"", "garbage", "a.b.c", "..", "a.b", ".", "e30.e30.",
                                 "e30.e30.e30", "W10.e30.", "eyJhbGciOiJFUzI1NiJ9"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "malformed token '%s'", junk[i]);
        verify_is(ks, &P, junk[i], now, AF_TOKEN_INVALID, what);
    }

    char *huge = malloc(5001);
    memset(huge, 'a', 5000);
    huge[5000] = '\0';
    huge[100] = huge[200] = '.';
    verify_is(ks, &P, huge, now, AF_TOKEN_INVALID, "5000-character token");
    free(huge);

    /* A genuine token made long by a padding claim. */
    json_object *cl = std_claims(now);
    char *pad = malloc(3001);
    memset(pad, 'p', 3000);
    pad[3000] = '\0';
    json_object_object_add(cl, "pad", json_object_new_string(pad));
    char *t = mint(JWT_ALG_RS256, rs_pem, rs_kid, NULL, cl);
    ok(t && strlen(t) > 4096, "padded token is longer than 4096");
    verify_is(ks, &P, t, now, AF_TOKEN_INVALID, "genuine token longer than 4096");
    free(t);

    cl = std_claims(now);
    pad[1000] = '\0';
    json_object_object_add(cl, "pad", json_object_new_string(pad));
    t = mint(JWT_ALG_RS256, rs_pem, rs_kid, NULL, cl);
    verify_is(ks, &P, t, now, AF_TOKEN_OK, "genuine token with a 1000-byte extra claim");
    free(t);
    free(pad);
}

/* Enough tokens that some cache sets overflow (1,500 over 1,024 sets of 4
 * ways), each verified several times in turns: every answer right,
 * whatever the cache kept. */
static void test_many(struct af_keyset *ks)
{
    enum { N = 1500 };
    static char *tokens[N];
    static char subs[N][37];
    int signed_ok = 0, wrong = 0;
    for (int i = 0; i < N; i++) {
        struct af_claims c;
        tokens[i] = sign(ks, &c);
        memcpy(subs[i], c.sub, sizeof subs[i]);
        signed_ok += tokens[i] != NULL;
    }
    ok(signed_ok == N, "%d tokens signed", N);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < N; i++) {
            /* The first 300 again and again, the rest once a round. */
            int k = round == 1 && i % 2 ? i % 300 : i;
            struct af_claims out;
            if (!tokens[k] || af_token_verify(ks, &P, tokens[k], time(NULL), &out) != AF_TOKEN_OK ||
                strcmp(out.sub, subs[k]) != 0)
                wrong++;
        }
    ok(wrong == 0, "%d tokens verified in three rounds: each answer OK with its own claims (%d wrong)", N,
       wrong);
    for (int i = 0; i < N; i++)
        free(tokens[i]);
}

int main(void)
{
    if (sodium_init() < 0) {
        ok(false, "sodium_init");
        return done_testing();
    }
    setup();
    test_keyset();

    /* Signing key ES256 for one set, RS256 for the other. */
    char line[80];
    snprintf(line, sizeof line, "%s\n", es_kid);
    write_file(dir, "current", line);
    struct af_keyset *ks_es = load(dir);
    snprintf(line, sizeof line, "%s\n", rs_kid);
    write_file(dir, "current", line);
    struct af_keyset *ks_rs = load(dir);
    ok(ks_es && ks_rs, "key sets with either signing key load");
    if (ks_es && ks_rs) {
        test_jwks(ks_es);
        test_roundtrip(ks_es, ks_rs);
        test_params(ks_es);
        test_time();
        test_forgeries(ks_es);
        test_malformed(ks_es);
        test_many(ks_es);
    }
    af_keyset_free(ks_es);
    af_keyset_free(ks_rs);
    cleanup();
    return done_testing();
}
