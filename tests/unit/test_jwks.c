/* test_jwks.c — a provider's JWKS and id_token verification, and the rules
 * of outbound fetches that need no network.
 *
 * Keys are made here (RSA 2048, RSA 1024, EC P-256 and P-384), published as
 * a JWKS built from their public numbers, and id_tokens are signed by
 * libjwt. Beside the good tokens, the forgeries and mistakes verification
 * must refuse: alg none, HS256 keyed with the RSA public PEM, an RS256
 * header on an EC key, tampered parts, crit, headers that bring their own
 * key, and every claim rule (iss, aud, azp, exp, iat, nbf, sub, nonce). A
 * token signed by PyJWT checks that libjwt reads ES256 signatures in the
 * JOSE form other implementations write. */
#define _GNU_SOURCE /* asprintf */
#include <json-c/json.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fetch.h"
#include "jwks.h"
#include "tap.h"
#include "util.h"

#define ISS "https://idp.example.test"
#define CLIENT "client-123"
#define NONCE "n-0S6_WzA2Mj"

static char *rsa_priv, *rsa_pub, *small_priv, *ec_priv, *ec384_priv, *other_ec_priv;
static EVP_PKEY *small;
static char *jwks_text;
static struct af_jwks *ks;
static time_t now;

static const char *status_name(enum af_idtoken_status s)
{
    return s == AF_IDTOKEN_OK ? "OK" : s == AF_IDTOKEN_EXPIRED ? "EXPIRED"
         : s == AF_IDTOKEN_UNKNOWN_KID ? "UNKNOWN_KID" : "INVALID";
}

/* ------------------------------------------------------------ keys */

static char *pem_of(EVP_PKEY *pk, bool priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (priv)
        PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    else
        PEM_write_bio_PUBKEY(b, pk);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    return s;
}

/* A public number of pk as base64url, left-padded to pad bytes (0: none). */
static char *num_b64(EVP_PKEY *pk, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    EVP_PKEY_get_bn_param(pk, param, &bn);
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    BN_bn2binpad(bn, buf, (int)n);
    BN_free(bn);
    char *out = malloc(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    af_b64url(buf, n, out);
    return out;
}

/* The JWK of pk's public part; alg and use may be NULL (left out). */
static json_object *jwk(EVP_PKEY *pk, const char *kid, const char *alg, const char *use)
{
    json_object *o = json_object_new_object();
    char *a, *b;
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA) {
        a = num_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0);
        b = num_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0);
        json_object_object_add(o, "kty", json_object_new_string("RSA"));
        json_object_object_add(o, "n", json_object_new_string(a));
        json_object_object_add(o, "e", json_object_new_string(b));
    } else {
        char group[64];
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL);
        bool p384 = strcmp(group, "secp384r1") == 0;
        a = num_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, p384 ? 48 : 32);
        b = num_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, p384 ? 48 : 32);
        json_object_object_add(o, "kty", json_object_new_string("EC"));
        json_object_object_add(o, "crv", json_object_new_string(p384 ? "P-384" : "P-256"));
        json_object_object_add(o, "x", json_object_new_string(a));
        json_object_object_add(o, "y", json_object_new_string(b));
    }
    free(a);
    free(b);
    if (kid)
        json_object_object_add(o, "kid", json_object_new_string(kid));
    if (alg)
        json_object_object_add(o, "alg", json_object_new_string(alg));
    if (use)
        json_object_object_add(o, "use", json_object_new_string(use));
    return o;
}

static char *jwks_of(json_object *keys)
{
    json_object *doc = json_object_new_object();
    json_object_object_add(doc, "keys", keys);
    char *s = strdup(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN));
    json_object_put(doc);
    return s;
}

static struct af_jwks *parse(const char *text)
{
    char err[256] = "";
    struct af_jwks *s = af_jwks_parse(text, err, sizeof err);
    if (!s)
        diag("af_jwks_parse: %s", err);
    return s;
}

/* ------------------------------------------------------------ tokens */

static char *b64(const void *data, size_t len)
{
    char *out = malloc(sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    af_b64url(data, len, out);
    return out;
}

/* A token from raw header and payload JSON and a signature segment. */
static char *raw_token(const char *header, const char *payload, const char *sig)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload)), *t;
    if (asprintf(&t, "%s.%s.%s", h, p, sig) < 0)
        t = NULL;
    free(h);
    free(p);
    return t;
}

/* A complete, valid set of id_token claims around now; callers edit it. */
static json_object *claims(void)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "iss", json_object_new_string(ISS));
    json_object_object_add(o, "aud", json_object_new_string(CLIENT));
    json_object_object_add(o, "sub", json_object_new_string("10769150350006150715113082367"));
    json_object_object_add(o, "email", json_object_new_string("jane@example.test"));
    json_object_object_add(o, "email_verified", json_object_new_boolean(1));
    json_object_object_add(o, "name", json_object_new_string("Jane Doe"));
    json_object_object_add(o, "nonce", json_object_new_string(NONCE));
    json_object_object_add(o, "iat", json_object_new_int64(now - 5));
    json_object_object_add(o, "exp", json_object_new_int64(now + 600));
    json_object_object_add(o, "auth_time", json_object_new_int64(now - 20));
    return o;
}

static json_object *with(json_object *c, const char *name, json_object *v)
{
    json_object_object_del(c, name);
    if (v)
        json_object_object_add(c, name, v);
    return c;
}

/* A token signed by libjwt with any algorithm and key; takes c. */
static char *mint(jwt_alg_t alg, const char *key, const char *kid, const char *headers,
                  json_object *c)
{
    jwt_t *jwt = NULL;
    char *t = NULL;
    if (jwt_new(&jwt) == 0 &&
        jwt_set_alg(jwt, alg, (const unsigned char *)key, key ? (int)strlen(key) : 0) == 0 &&
        (!kid || jwt_add_header(jwt, "kid", kid) == 0) &&
        (!headers || jwt_add_headers_json(jwt, headers) == 0) &&
        jwt_add_grants_json(jwt, json_object_to_json_string(c)) == 0)
        t = jwt_encode_str(jwt);
    jwt_free(jwt);
    json_object_put(c);
    return t;
}

/* An RS256 token over any header text, signed with OpenSSL directly:
 * libjwt always writes typ JWT, whatever the header it was given. */
static char *rs256_raw(const char *header, json_object *c)
{
    char *t = raw_token(header, json_object_to_json_string(c), ""), *out = NULL;
    json_object_put(c);
    BIO *b = BIO_new_mem_buf(rsa_priv, -1);
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[512];
    size_t n = sizeof sig;
    size_t len = strlen(t) - 1; /* without the last '.' */
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
        EVP_DigestSign(md, sig, &n, (const unsigned char *)t, len) == 1) {
        char *s = b64(sig, n);
        if (asprintf(&out, "%s%s", t, s) < 0)
            out = NULL;
        free(s);
    }
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    BIO_free(b);
    free(t);
    return out;
}

/* now is fixed (in main) so that slow runs (valgrind) keep their margins. */
static struct af_idtoken_expect W = {
    .issuer = ISS, .client_id = CLIENT, .nonce = NONCE, .skew_s = 60,
};

/* Verifies (and frees) token against ks and want; checks the status and,
 * when why_want is given, the reason. */
static void expect(const struct af_jwks *s, char *token, const struct af_idtoken_expect *want,
                   enum af_idtoken_status st_want, const char *why_want, const char *what)
{
    struct af_idtoken out;
    const char *why = "(no token made)";
    enum af_idtoken_status st = token ? af_idtoken_verify(s, token, want, &out, &why)
                                      : AF_IDTOKEN_INVALID;
    if (!is_str(status_name(st), status_name(st_want), "%s -> %s", what, status_name(st_want)) ||
        (why_want && !is_str(why, why_want, "%s: why", what)))
        diag("why: %s", why);
    free(token);
}

/* ------------------------------------------------------------ tests */

static void test_parse(void)
{
    ok(ks && af_jwks_count(ks) == 4, "the JWKS yields its 4 usable keys (1024-bit RSA, enc, oct, "
       "e 1 and even, P-521, an off-curve point and PS256 skipped): %zu", af_jwks_count(ks));

    char err[256];
    ok(!af_jwks_parse("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"h\"}]}", err, sizeof err),
       "a JWKS of only an oct key is refused");
    ok(strstr(err, "usable") != NULL, "... saying no key is usable: %s", err);
    ok(!af_jwks_parse("{\"keys\":[{\"kty\":\"RSA\"", err, sizeof err), "garbage JSON is refused");
    ok(!af_jwks_parse("[]", err, sizeof err), "a JSON array is refused");
    ok(!af_jwks_parse("{\"keys\":{}}", err, sizeof err), "keys that is not an array is refused");
    ok(!af_jwks_parse("{\"keys\":[]}", err, sizeof err), "an empty key list is refused");
    ok(!af_jwks_parse(NULL, err, sizeof err), "NULL is refused");

    json_object *keys = json_object_new_array();
    json_object_array_add(keys, jwk(small, "small", "RS256", "sig"));
    char *t = jwks_of(keys);
    ok(!af_jwks_parse(t, err, sizeof err), "a JWKS of only a 1024-bit RSA key is refused");
    free(t);

    /* kid that is not a string, alg that does not fit the key type. */
    ok(!af_jwks_parse("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":7,"
                      "\"x\":\"hyDyTGKd7HKC40CfCMXp5Y8Mv2taGY4wlC1Imr873n0\","
                      "\"y\":\"_gHVlD_v04hpGFtNk1WEZnCLqo4ClmByeKgaZ7Q1uyg\"}]}", err, sizeof err),
       "a key whose kid is not a string is skipped");
    ok(!af_jwks_parse("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"RS256\","
                      "\"x\":\"hyDyTGKd7HKC40CfCMXp5Y8Mv2taGY4wlC1Imr873n0\","
                      "\"y\":\"_gHVlD_v04hpGFtNk1WEZnCLqo4ClmByeKgaZ7Q1uyg\"}]}", err, sizeof err),
       "an EC key with alg RS256 is skipped");
    ok(!af_jwks_parse("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES384\","
                      "\"x\":\"hyDyTGKd7HKC40CfCMXp5Y8Mv2taGY4wlC1Imr873n0\","
                      "\"y\":\"_gHVlD_v04hpGFtNk1WEZnCLqo4ClmByeKgaZ7Q1uyg\"}]}", err, sizeof err),
       "a P-256 key with alg ES384 is skipped");
    struct af_jwks *one = parse("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
                                "\"x\":\"hyDyTGKd7HKC40CfCMXp5Y8Mv2taGY4wlC1Imr873n0\","
                                "\"y\":\"_gHVlD_v04hpGFtNk1WEZnCLqo4ClmByeKgaZ7Q1uyg\"}]}");
    ok(one && af_jwks_count(one) == 1, "a P-256 key without kid, alg or use is usable");
    af_jwks_free(one);
}

static void test_good(void)
{
    struct af_idtoken out;
    const char *why = NULL;
    struct af_idtoken_expect w0 = W;
    w0.now = 0;
    char *t = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", NULL, claims());
    enum af_idtoken_status st = af_idtoken_verify(ks, t, &w0, &out, &why);
    is_str(status_name(st), "OK", "a good RS256 id_token verifies (now from the clock)");
    is_str(why, "ok", "... why is ok");
    is_str(out.sub, "10769150350006150715113082367", "... sub");
    is_str(out.email, "jane@example.test", "... email");
    ok(out.email_verified, "... email_verified");
    is_str(out.name, "Jane Doe", "... name");
    is_str(out.nonce, NONCE, "... nonce");
    ok(out.aud == W.client_id, "... aud is the client id (want's own string)");
    is_str(out.azp, "", "... azp absent");
    is_int(out.iat, now - 5, "... iat");
    is_int(out.exp, now + 600, "... exp");
    is_int(out.auth_time, now - 20, "... auth_time");
    free(t);

    t = mint(JWT_ALG_ES256, ec_priv, "ec-1", NULL,
             with(claims(), "email_verified", json_object_new_string("true")));
    memset(&out, 0, sizeof out);
    st = af_idtoken_verify(ks, t, &W, &out, NULL);
    is_str(status_name(st), "OK", "a good ES256 id_token verifies (why may be NULL)");
    is_str(out.sub, "10769150350006150715113082367", "... sub");
    ok(out.email_verified, "... email_verified given as the string \"true\"");
    free(t);

    t = mint(JWT_ALG_ES256, ec_priv, "ec-1", NULL, with(claims(), "email_verified", NULL));
    st = af_idtoken_verify(ks, t, &W, &out, NULL);
    ok(st == AF_IDTOKEN_OK && !out.email_verified, "email_verified absent -> false");
    free(t);
    t = mint(JWT_ALG_ES256, ec_priv, "ec-1", NULL,
             with(with(claims(), "email", json_object_new_int(5)), "name", NULL));
    st = af_idtoken_verify(ks, t, &W, &out, NULL);
    ok(st == AF_IDTOKEN_OK && !out.email[0] && !out.email_verified && !out.name[0],
       "an email that is not a string is treated as absent (and unverified)");
    free(t);

    expect(ks, mint(JWT_ALG_ES384, ec384_priv, "ec-384", NULL, claims()), &W, AF_IDTOKEN_OK, NULL,
           "ES384 on the P-384 key");
    expect(ks, mint(JWT_ALG_RS384, rsa_priv, "rsa-any", NULL, claims()), &W, AF_IDTOKEN_OK, NULL,
           "RS384 on an RSA key without alg");
    expect(ks, mint(JWT_ALG_RS512, rsa_priv, "rsa-any", NULL, claims()), &W, AF_IDTOKEN_OK, NULL,
           "RS512 on an RSA key without alg");
    expect(ks, mint(JWT_ALG_RS384, rsa_priv, "rsa-1", NULL, claims()), &W, AF_IDTOKEN_INVALID,
           "algorithm does not match the key", "RS384 on the key published as RS256");
    expect(ks, mint(JWT_ALG_ES256, ec_priv, NULL, NULL, claims()), &W, AF_IDTOKEN_OK, NULL,
           "no kid, and exactly one key for ES256");
    expect(ks, mint(JWT_ALG_RS256, rsa_priv, NULL, NULL, claims()), &W, AF_IDTOKEN_INVALID,
           "no kid and several keys", "no kid, and two keys for RS256");
    expect(ks, rs256_raw("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", claims()), &W, AF_IDTOKEN_OK,
           NULL, "no typ (as node-oidc-provider signs)");
    expect(ks, rs256_raw("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"jwt\"}", claims()), &W,
           AF_IDTOKEN_OK, NULL, "typ jwt in lower case");
}

static void test_forgeries(void)
{
    /* alg none: hand-built, empty signature and a made-up one. */
    json_object *c = claims();
    char *payload = strdup(json_object_to_json_string(c));
    json_object_put(c);
    expect(ks, raw_token("{\"alg\":\"none\",\"kid\":\"rsa-1\"}", payload, ""), &W,
           AF_IDTOKEN_INVALID, "malformed token", "alg none with an empty signature");
    expect(ks, raw_token("{\"alg\":\"none\",\"kid\":\"rsa-1\"}", payload, "AAAA"), &W,
           AF_IDTOKEN_INVALID, "algorithm not allowed", "alg none with a signature");
    expect(ks, raw_token("{\"alg\":\"NONE\",\"kid\":\"rsa-1\"}", payload, "AAAA"), &W,
           AF_IDTOKEN_INVALID, "algorithm not allowed", "alg NONE");
    expect(ks, raw_token("{\"kid\":\"rsa-1\"}", payload, "AAAA"), &W,
           AF_IDTOKEN_INVALID, "algorithm not allowed", "no alg");
    expect(ks, raw_token("{\"alg\":[\"RS256\"],\"kid\":\"rsa-1\"}", payload, "AAAA"), &W,
           AF_IDTOKEN_INVALID, "algorithm not allowed", "alg that is not a string");
    expect(ks, raw_token("{\"alg\":\"RS256\",\"kid\":[\"rsa-1\"]}", payload, "AAAA"), &W,
           AF_IDTOKEN_INVALID, "bad kid", "kid that is not a string");
    expect(ks, raw_token("[\"RS256\"]", payload, "AAAA"), &W, AF_IDTOKEN_INVALID, "bad header",
           "a header that is not an object");
    free(payload);

    /* HS256 keyed with the RSA public PEM: libjwt alone accepts it. */
    char *t = mint(JWT_ALG_HS256, rsa_pub, "rsa-1", NULL, claims());
    jwt_t *jwt = NULL;
    ok(t && jwt_decode(&jwt, t, (const unsigned char *)rsa_pub, (int)strlen(rsa_pub)) == 0,
       "libjwt alone accepts HS256 keyed with the RSA public PEM (the trap)");
    jwt_free(jwt);
    expect(ks, t, &W, AF_IDTOKEN_INVALID, "algorithm not allowed", "HS256 keyed with the RSA public PEM");

    expect(ks, mint(JWT_ALG_RS256, rsa_priv, "ec-1", NULL, claims()), &W, AF_IDTOKEN_INVALID,
           "algorithm does not match the key", "RS256 header naming the EC key");
    expect(ks, mint(JWT_ALG_ES256, ec_priv, "rsa-1", NULL, claims()), &W, AF_IDTOKEN_INVALID,
           "algorithm does not match the key", "ES256 header naming the RSA key");
    expect(ks, mint(JWT_ALG_ES256, other_ec_priv, "ec-1", NULL, claims()), &W, AF_IDTOKEN_INVALID,
           "bad signature", "signed by a foreign key under our kid");

    /* Tampering: another sub in the payload, a changed signature. */
    t = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", NULL, claims());
    char *other = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", NULL,
                       with(claims(), "sub", json_object_new_string("admin")));
    char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    char *o1 = strchr(other, '.'), *o2 = strchr(o1 + 1, '.'), *forged;
    if (asprintf(&forged, "%.*s%.*s%s", (int)(d1 - t), t, (int)(o2 - o1), o1, d2) < 0)
        forged = NULL;
    expect(ks, forged, &W, AF_IDTOKEN_INVALID, "bad signature", "tampered payload");
    char *sig = strdup(t);
    char *last = sig + strlen(sig) - 3;
    *last = *last == 'A' ? 'B' : 'A';
    expect(ks, sig, &W, AF_IDTOKEN_INVALID, "bad signature", "tampered signature");
    free(other);

    /* Structure. */
    size_t n = strlen(t);
    char *five = malloc(n + 12);
    snprintf(five, n + 12, "%s.AAAA.AAAA", t);
    expect(ks, five, &W, AF_IDTOKEN_INVALID, "malformed token", "five parts (a JWE shape)");
    expect(ks, strndup(t, (size_t)(d2 - t)), &W, AF_IDTOKEN_INVALID, "malformed token", "two parts");
    expect(ks, strdup(""), &W, AF_IDTOKEN_INVALID, "malformed token", "empty token");
    expect(ks, strdup("not a token"), &W, AF_IDTOKEN_INVALID, "malformed token", "garbage");
    expect(ks, strdup("!!!.AAAA.AAAA"), &W, AF_IDTOKEN_INVALID, "bad header", "header not base64url");
    char *huge = malloc(20000);
    memset(huge, 'A', 19999);
    huge[19999] = '\0';
    huge[100] = huge[200] = '.';
    expect(ks, huge, &W, AF_IDTOKEN_INVALID, "malformed token", "a token over the size limit");
    free(t);

    /* Headers. */
    expect(ks, mint(JWT_ALG_RS256, rsa_priv, "rsa-1", "{\"crit\":[\"exp\"]}", claims()), &W,
           AF_IDTOKEN_INVALID, "crit header", "a crit header");
    expect(ks, rs256_raw("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"at+jwt\"}", claims()), &W,
           AF_IDTOKEN_INVALID, "unsupported typ", "typ at+jwt");
    expect(ks, rs256_raw("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[\"b64\"],\"b64\":false}",
                         claims()), &W, AF_IDTOKEN_INVALID, "crit header", "crit b64 (RFC 7797)");
    /* Duplicate names: whichever each JSON parser keeps, the algorithm
     * libjwt verified with must be the key's. */
    expect(ks, rs256_raw("{\"alg\":\"HS256\",\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", claims()), &W,
           AF_IDTOKEN_OK, NULL, "alg named twice, RS256 last");
    expect(ks, rs256_raw("{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"rsa-1\"}", claims()), &W,
           AF_IDTOKEN_INVALID, "algorithm not allowed", "alg named twice, none last");
    expect(ks, mint(JWT_ALG_RS256, rsa_priv, "rsa-9", NULL, claims()), &W,
           AF_IDTOKEN_UNKNOWN_KID, "unknown kid", "an unknown kid");
    expect(ks, mint(JWT_ALG_RS256, small_priv, "small", NULL, claims()), &W,
           AF_IDTOKEN_UNKNOWN_KID, "unknown kid", "the kid of the skipped 1024-bit key");
    expect(ks, mint(JWT_ALG_RS256, rsa_priv, "attacker", "{\"jku\":\"https://evil.example/jwks\"}",
                    claims()), &W, AF_IDTOKEN_UNKNOWN_KID, "unknown kid",
           "a jku header is not fetched");
    /* A foreign key brought along in the header, its signature, our kid. */
    EVP_PKEY *pk = NULL;
    BIO *b = BIO_new_mem_buf(other_ec_priv, -1);
    pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    json_object *h = json_object_new_object();
    json_object_object_add(h, "jwk", jwk(pk, "ec-1", "ES256", "sig"));
    EVP_PKEY_free(pk);
    expect(ks, mint(JWT_ALG_ES256, other_ec_priv, "ec-1", json_object_to_json_string(h), claims()),
           &W, AF_IDTOKEN_INVALID, "bad signature", "a jwk header is not used");
    json_object_put(h);
}

static char *rs(json_object *c) { return mint(JWT_ALG_RS256, rsa_priv, "rsa-1", NULL, c); }

static void test_claims(void)
{
    expect(ks, rs(with(claims(), "iss", json_object_new_string("https://evil.example.test"))), &W,
           AF_IDTOKEN_INVALID, "wrong iss", "another iss");
    expect(ks, rs(with(claims(), "iss", json_object_new_string(ISS "/"))), &W,
           AF_IDTOKEN_INVALID, "wrong iss", "iss with a trailing slash");
    expect(ks, rs(with(claims(), "iss", NULL)), &W, AF_IDTOKEN_INVALID, "wrong iss", "no iss");

    expect(ks, rs(with(claims(), "aud", NULL)), &W, AF_IDTOKEN_INVALID, "wrong aud", "no aud");
    expect(ks, rs(with(claims(), "aud", json_object_new_string("other"))), &W, AF_IDTOKEN_INVALID,
           "wrong aud", "another aud");
    expect(ks, rs(with(claims(), "aud", json_tokener_parse("[]"))), &W, AF_IDTOKEN_INVALID,
           "wrong aud", "an empty aud array");
    expect(ks, rs(with(claims(), "aud", json_tokener_parse("[\"" CLIENT "\"]"))), &W,
           AF_IDTOKEN_OK, NULL, "aud array of just the client id, no azp");
    expect(ks, rs(with(claims(), "aud", json_tokener_parse("[\"" CLIENT "\",5]"))), &W,
           AF_IDTOKEN_INVALID, "wrong aud", "aud array holding a number");
    expect(ks, rs(with(claims(), "aud", json_tokener_parse("[\"" CLIENT "\",\"other\"]"))), &W,
           AF_IDTOKEN_INVALID, "several audiences and no azp", "aud array of two, no azp");
    expect(ks, rs(with(with(claims(), "aud", json_tokener_parse("[\"other\",\"" CLIENT "\"]")),
                       "azp", json_object_new_string(CLIENT))),
           &W, AF_IDTOKEN_OK, NULL, "aud array of two, azp the client id");
    expect(ks, rs(with(with(claims(), "aud", json_tokener_parse("[\"" CLIENT "\",\"other\"]")),
                       "azp", json_object_new_string("other"))),
           &W, AF_IDTOKEN_INVALID, "wrong azp", "aud array of two, azp the other");
    expect(ks, rs(with(claims(), "azp", json_object_new_string("other"))), &W,
           AF_IDTOKEN_INVALID, "wrong azp", "one aud, azp another party");
    expect(ks, rs(with(claims(), "azp", json_object_new_int(1))), &W,
           AF_IDTOKEN_INVALID, "bad azp", "azp that is not a string");

    /* Extra audiences: the app's other client id, as Google's Android
     * sign-in sends (aud the web client, azp the app). */
    static const char *const extra[] = {"android-app", NULL};
    struct af_idtoken_expect w2 = W;
    w2.extra_audiences = extra;
    struct af_idtoken out;
    char *t = rs(with(with(claims(), "aud", json_tokener_parse("[\"" CLIENT "\",\"android-app\"]")),
                      "azp", json_object_new_string("android-app")));
    enum af_idtoken_status st = af_idtoken_verify(ks, t, &w2, &out, NULL);
    ok(st == AF_IDTOKEN_OK && out.aud == extra[0] && strcmp(out.azp, "android-app") == 0,
       "two accepted audiences: azp picks the one that matched");
    free(t);
    expect(ks, rs(with(claims(), "aud", json_object_new_string("android-app"))), &w2,
           AF_IDTOKEN_OK, NULL, "aud one of the extra audiences");
    expect(ks, rs(with(claims(), "aud", json_object_new_string("android-app"))), &W,
           AF_IDTOKEN_INVALID, "wrong aud", "... which W alone does not accept");

    expect(ks, rs(with(claims(), "exp", json_object_new_int64(now - 120))), &W,
           AF_IDTOKEN_EXPIRED, "expired", "expired two minutes ago");
    expect(ks, rs(with(claims(), "exp", json_object_new_int64(now - 30))), &W,
           AF_IDTOKEN_OK, NULL, "expired within the skew");
    expect(ks, rs(with(claims(), "exp", NULL)), &W, AF_IDTOKEN_INVALID, NULL, "no exp");
    expect(ks, rs(with(claims(), "exp", json_object_new_string("9999999999"))), &W,
           AF_IDTOKEN_INVALID, NULL, "exp as a string");
    expect(ks, rs(with(claims(), "exp", json_object_new_double((double)now + 600.5))), &W,
           AF_IDTOKEN_OK, NULL, "exp with a fraction");
    expect(ks, rs(with(claims(), "iat", json_object_new_int64(now + 300))), &W,
           AF_IDTOKEN_INVALID, "iat in the future", "iat five minutes ahead");
    expect(ks, rs(with(claims(), "iat", json_object_new_int64(now + 30))), &W,
           AF_IDTOKEN_OK, NULL, "iat ahead within the skew");
    expect(ks, rs(with(claims(), "iat", NULL)), &W, AF_IDTOKEN_INVALID, NULL, "no iat");
    expect(ks, rs(with(claims(), "nbf", json_object_new_int64(now + 300))), &W,
           AF_IDTOKEN_INVALID, "not yet valid", "nbf five minutes ahead");
    expect(ks, rs(with(claims(), "nbf", json_object_new_int64(now - 5))), &W,
           AF_IDTOKEN_OK, NULL, "nbf passed");
    struct af_idtoken_expect w3 = W;
    w3.max_age_s = 3600;
    expect(ks, rs(with(claims(), "iat", json_object_new_int64(now - 7200))), &w3,
           AF_IDTOKEN_EXPIRED, "issued too long ago", "iat two hours ago, max_age_s 3600");
    expect(ks, rs(with(claims(), "iat", json_object_new_int64(now - 7200))), &W,
           AF_IDTOKEN_OK, NULL, "... accepted with max_age_s 0");
    expect(ks, rs(with(claims(), "exp", json_object_new_int64(0x7fffffffffffffffL))), &W,
           AF_IDTOKEN_OK, NULL, "exp at LONG_MAX does not overflow");

    expect(ks, rs(with(claims(), "sub", NULL)), &W, AF_IDTOKEN_INVALID, "missing or bad sub", "no sub");
    expect(ks, rs(with(claims(), "sub", json_object_new_string(""))), &W, AF_IDTOKEN_INVALID,
           "missing or bad sub", "empty sub");
    expect(ks, rs(with(claims(), "sub", json_object_new_int(42))), &W, AF_IDTOKEN_INVALID,
           "missing or bad sub", "sub as a number");
    char longsub[257];
    memset(longsub, 'a', 256);
    longsub[256] = '\0';
    expect(ks, rs(with(claims(), "sub", json_object_new_string(longsub))), &W, AF_IDTOKEN_INVALID,
           "missing or bad sub", "sub of 256 bytes");
    longsub[255] = '\0';
    expect(ks, rs(with(claims(), "sub", json_object_new_string(longsub))), &W, AF_IDTOKEN_OK, NULL,
           "sub of 255 bytes");

    expect(ks, rs(with(claims(), "nonce", json_object_new_string("n-other"))), &W,
           AF_IDTOKEN_INVALID, "wrong nonce", "another nonce");
    expect(ks, rs(with(claims(), "nonce", json_object_new_string(NONCE "x"))), &W,
           AF_IDTOKEN_INVALID, "wrong nonce", "the nonce with a character more");
    expect(ks, rs(with(claims(), "nonce", NULL)), &W, AF_IDTOKEN_INVALID, "missing nonce",
           "no nonce when one is expected");
    expect(ks, rs(with(claims(), "nonce", json_object_new_int(1))), &W, AF_IDTOKEN_INVALID,
           "missing nonce", "nonce as a number");
    struct af_idtoken_expect w4 = W;
    w4.nonce = NULL;
    expect(ks, rs(with(claims(), "nonce", NULL)), &w4, AF_IDTOKEN_OK, NULL,
           "no nonce when none is expected");
    expect(ks, rs(with(claims(), "nonce", json_object_new_string("whatever"))), &w4,
           AF_IDTOKEN_OK, NULL, "a nonce when none is expected");

    /* A bad claim comes before expiry: the caller must not read an
     * expired forgery as "log in again". */
    expect(ks, rs(with(with(claims(), "aud", json_object_new_string("other")), "exp",
                       json_object_new_int64(now - 3600))),
           &W, AF_IDTOKEN_INVALID, "wrong aud", "expired and the wrong aud");
}

/* Signed by PyJWT 2.6 (cryptography's ECDSA, JOSE R||S signature). */
static void test_pyjwt(void)
{
    struct af_jwks *py = parse(
        "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"py-es\", \"use\": \"sig\", "
        "\"alg\": \"ES256\", \"x\": \"hyDyTGKd7HKC40CfCMXp5Y8Mv2taGY4wlC1Imr873n0\", "
        "\"y\": \"_gHVlD_v04hpGFtNk1WEZnCLqo4ClmByeKgaZ7Q1uyg\"}]}");
    const char *tok =
        "eyJhbGciOiJFUzI1NiIsImtpZCI6InB5LWVzIiwidHlwIjoiSldUIn0."
        "eyJpc3MiOiJodHRwczovL3B5LmV4YW1wbGUudGVzdCIsImF1ZCI6InB5LWNsaWVudCIsInN1YiI6IjI0ODI4OTc2MTAw"
        "MSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwLCJub25jZSI6Im4tMFM2X1d6QTJNaiIsImVtYWlsIjoi"
        "amFuZUBleGFtcGxlLnRlc3QiLCJlbWFpbF92ZXJpZmllZCI6InRydWUiLCJuYW1lIjoiSmFuZSBEb2UifQ."
        "3VX-NIAIZ6ouuG_plQf5qWoOmDxMpc0AmMafn23m1p2Z0Yjc-tZdYN_HHPFm34P09rcM3-ZcYhtgRSOshyejxg";
    struct af_idtoken_expect w = {.issuer = "https://py.example.test", .client_id = "py-client",
                                  .nonce = NONCE, .skew_s = 60, .now = 1700000100};
    struct af_idtoken out;
    const char *why = NULL;
    enum af_idtoken_status st = py ? af_idtoken_verify(py, tok, &w, &out, &why) : AF_IDTOKEN_INVALID;
    is_str(status_name(st), "OK", "PyJWT's ES256 id_token verifies (%s)", why ? why : "");
    ok(st == AF_IDTOKEN_OK && strcmp(out.sub, "248289761001") == 0 && out.email_verified,
       "... with its sub and email_verified \"true\"");
    w.now = 1700003600 + 61;
    st = py ? af_idtoken_verify(py, tok, &w, &out, &why) : AF_IDTOKEN_INVALID;
    is_str(status_name(st), "EXPIRED", "... and is expired an hour and a minute later");
    af_jwks_free(py);
}

static void test_urls(void)
{
    static const char *const good[] = {
        "https://x", "https://accounts.example.com/.well-known/openid-configuration",
        "https://user@idp.example/token", "http://127.0.0.1:5/", "http://127.9.8.7/jwks",
        "http://localhost/", "HTTP://LOCALHOST:8080/x", "http://[::1]/", "http://[::1]:9000/jwks",
        "http://127.1/", NULL};
    static const char *const bad_urls[] = {
        "http://example.com/", "ftp://example.com/x", "file:///etc/passwd",
        "http://127.0.0.1.evil.com/", "http://localhost.evil.com/", "http://127.0.0.1@evil.com/",
        "http://128.0.0.1/", "http://[::2]/", "http://[::ffff:8.8.8.8]/", "gopher://localhost/",
        "garbage", "", "//example.com/", "https://", "javascript:alert(1)",
        "dict://127.0.0.1:6379/", NULL};
    for (size_t i = 0; good[i]; i++)
        ok(af_fetch_url_allowed(good[i]), "URL allowed: %s", good[i]);
    for (size_t i = 0; bad_urls[i]; i++)
        ok(!af_fetch_url_allowed(bad_urls[i]), "URL refused: '%s'", bad_urls[i]);
    ok(!af_fetch_url_allowed(NULL), "URL refused: NULL");

    char err[256] = "";
    struct af_fetch_resp r;
    struct af_fetch_req rq = {.url = "http://example.com/jwks", .timeout_ms = 1000, .max_bytes = 1000};
    ok(af_fetch(&rq, &r, err, sizeof err) == -1 && strstr(err, "refused"),
       "af_fetch refuses plain http to another host: %s", err);
    rq.url = "http://127.0.0.1:1/";
    rq.bearer = "abc\r\nX-Injected: 1";
    ok(af_fetch(&rq, &r, err, sizeof err) == -1 && strstr(err, "b64token") && !strstr(err, "Injected"),
       "af_fetch refuses a bearer token with CR LF: %s", err);
    rq.bearer = "abc";
    rq.basic_user = "id";
    rq.basic_password = "secret";
    ok(af_fetch(&rq, &r, err, sizeof err) == -1 && !strstr(err, "secret"),
       "af_fetch refuses bearer and basic together: %s", err);

    static const char *const pairs[] = {"grant_type", "authorization_code", "code", "a b&c=d+e",
                                        "redirect_uri", "https://x/cb?y=1", "skipped", NULL,
                                        "code_verifier", "~._-", NULL};
    char *f = af_form_encode(pairs);
    is_str(f, "grant_type=authorization_code&code=a%20b%26c%3Dd%2Be&redirect_uri=https%3A%2F%2Fx"
              "%2Fcb%3Fy%3D1&code_verifier=~._-", "af_form_encode");
    free(f);
    static const char *const none[] = {NULL};
    f = af_form_encode(none);
    is_str(f, "", "af_form_encode of no pairs");
    free(f);
}

int main(void)
{
    now = time(NULL);
    W.now = now;
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256"), *ec384 = EVP_EC_gen("P-384");
    EVP_PKEY *other_ec = EVP_EC_gen("P-256");
    rsa_priv = pem_of(rsa, true);
    rsa_pub = pem_of(rsa, false);
    ec_priv = pem_of(ec, true);
    ec384_priv = pem_of(ec384, true);
    other_ec_priv = pem_of(other_ec, true);
    small = EVP_RSA_gen(1024);
    small_priv = pem_of(small, true);

    json_object *keys = json_object_new_array();
    json_object_array_add(keys, jwk(rsa, "rsa-1", "RS256", "sig"));
    json_object_array_add(keys, jwk(rsa, "rsa-any", NULL, NULL));
    json_object_array_add(keys, jwk(ec, "ec-1", "ES256", "sig"));
    json_object_array_add(keys, jwk(ec384, "ec-384", NULL, "sig"));
    /* Skipped: a 1024-bit RSA key, encryption keys, a symmetric key, RSA
     * exponents 1 and 65538, a curve not offered, a point off its curve. */
    json_object_array_add(keys, jwk(small, "small", "RS256", "sig"));
    json_object_array_add(keys, jwk(rsa, "rsa-enc", "RSA-OAEP", "enc"));
    json_object_array_add(keys, jwk(rsa, "rsa-enc2", NULL, "enc"));
    json_object_array_add(keys, json_tokener_parse("{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"}"));
    json_object_array_add(keys, json_tokener_parse("{\"kty\":\"EC\",\"crv\":\"P-521\",\"kid\":\"e5\","
                                                   "\"x\":\"AAAA\",\"y\":\"AAAA\"}"));
    json_object *e1 = jwk(rsa, "e-1", NULL, NULL), *e2 = jwk(rsa, "e-2", NULL, NULL);
    json_object_object_add(e1, "e", json_object_new_string("AQ"));
    json_object_object_add(e2, "e", json_object_new_string("AAEAAg"));
    json_object_array_add(keys, e1);
    json_object_array_add(keys, e2);
    json_object *bent = jwk(other_ec, "bent", NULL, NULL);
    json_object_object_add(bent, "y", json_object_new_string("_gHVlD_v04hpGFtNk1WEZnCLqo4ClmByeKgaZ7Q1uyg"));
    json_object_array_add(keys, bent);
    /* ... and an algorithm libjwt lacks. */
    json_object_array_add(keys, jwk(rsa, "rsa-ps", "PS256", "sig"));
    jwks_text = jwks_of(keys);
    ks = parse(jwks_text);

    test_parse();
    test_good();
    test_forgeries();
    test_claims();
    test_pyjwt();
    test_urls();

    af_jwks_free(ks);
    free(jwks_text);
    free(rsa_priv);
    free(rsa_pub);
    free(small_priv);
    free(ec_priv);
    free(ec384_priv);
    free(other_ec_priv);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec384);
    EVP_PKEY_free(other_ec);
    EVP_PKEY_free(small);
    af_fetch_thread_cleanup();
    return done_testing();
}
