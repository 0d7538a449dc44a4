/* fuzz_jwks.c — an OpenID provider's JWKS (af_jwks_parse) and id_token
 * verification against it (af_idtoken_verify).
 *
 * At start-up an RSA 2048 and an EC P-256 key are generated and published,
 * from their public numbers, as a JWKS ("rsa-1", no alg; "ec-1", ES256):
 * the fixed key set every token is checked against, with a fixed
 * af_idtoken_expect (issuer, client, one extra audience, nonce, max age and
 * "now"). The private keys never leave the process. The first input byte
 * picks a mode:
 *   0  the rest is a token string;
 *   1  the rest is a JWKS document, then NUL and a token string verified
 *      against the key set it gives (when it gives one);
 *   2  the rest is a payload, under our RS256 header, validly signed;
 *   3  the same under our ES256 header, with the EC key;
 *   4  header NUL payload, validly signed with the RSA key (SHA-384 or
 *      SHA-512 when the header says RS384 or RS512, else SHA-256);
 *   5  the same with the EC key (SHA-384 when the header says ES384);
 *   6  mode 2 with one bit of the signature flipped (the second byte picks
 *      which);
 *   7  the same with mode 3;
 *   8  header NUL payload, signed HS256 with the RSA public key's PEM as the
 *      secret (algorithm confusion);
 *   9  the same with the EC public key's PEM.
 * Modes 2-5 reach the claim checks, which need a signature no input can
 * carry: the keys are new in every process.
 *
 * Properties: a token not signed by one of our keys (modes 0, 1, 6-9) is
 * never accepted (so no seed may carry a token signed for its own JWKS);
 * the status is one of the four, and its reason a short static text that
 * is no part of the token; a JWKS that parses has 1 to 32 keys, one that
 * does not says why. An accepted token's claims are within their bounds
 * (strings terminated, sub set, aud one of the expected strings, the
 * nonce, exp, iat and max age kept), it is accepted again with the same
 * claims, and refused once its exp is more than the skew behind "now", or
 * under another issuer, client or nonce. */
#include <json-c/json.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>
#include <stdbool.h>

#include "fuzz.h"
#include "jwks.h"
#include "util.h"

#define NOW 1700000000L
#define SKEW 60
#define MAX_AGE 3600
#define ISS "https://idp.example.test"
#define CLIENT "authflow"
#define NONCE "n-0S6_WzA2Mj"

static const char *const extra[] = {"authflow-mobile", NULL};
static const struct af_idtoken_expect want = {
    .issuer = ISS,
    .client_id = CLIENT,
    .extra_audiences = extra,
    .nonce = NONCE,
    .skew_s = SKEW,
    .max_age_s = MAX_AGE,
    .now = NOW,
};

struct signer {
    const char *kid, *alg;
    EVP_PKEY *pk;
    char *pub_pem;              /* as jwks.c hands it to libjwt */
};

static struct signer rs = {.kid = "rsa-1", .alg = "RS256"}, es = {.kid = "ec-1", .alg = "ES256"};
static struct af_jwks *ks;

static char *b64(const unsigned char *in, size_t n)
{
    char *out = malloc(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    if (!out)
        abort();
    af_b64url(in, n, out);
    return out;
}

/* A public number of pk as base64url, left-padded to pad bytes (0: none). */
static char *num_b64(EVP_PKEY *pk, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[512];
    if (EVP_PKEY_get_bn_param(pk, param, &bn) != 1)
        abort();
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    if (n > sizeof buf || BN_bn2binpad(bn, buf, (int)n) != (int)n)
        abort();
    BN_free(bn);
    return b64(buf, n);
}

static void add(json_object *o, const char *name, const char *value)
{
    json_object_object_add(o, name, json_object_new_string(value));
}

static void add_owned(json_object *o, const char *name, char *value)
{
    add(o, name, value);
    free(value);
}

static char *pub_pem(EVP_PKEY *pk)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    if (!b || PEM_write_bio_PUBKEY(b, pk) != 1)
        abort();
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    if (!s)
        abort();
    return s;
}

static void init(void)
{
    if (sodium_init() < 0)
        abort();
    rs.pk = EVP_RSA_gen(2048);
    es.pk = EVP_EC_gen("P-256");
    if (!rs.pk || !es.pk)
        abort();
    rs.pub_pem = pub_pem(rs.pk);
    es.pub_pem = pub_pem(es.pk);

    json_object *doc = json_object_new_object(), *keys = json_object_new_array();
    json_object *r = json_object_new_object(), *e = json_object_new_object();
    add(r, "kty", "RSA");
    add(r, "kid", rs.kid);
    add(r, "use", "sig");
    add_owned(r, "n", num_b64(rs.pk, OSSL_PKEY_PARAM_RSA_N, 0));
    add_owned(r, "e", num_b64(rs.pk, OSSL_PKEY_PARAM_RSA_E, 0));
    add(e, "kty", "EC");
    add(e, "kid", es.kid);
    add(e, "alg", "ES256");
    add(e, "crv", "P-256");
    add_owned(e, "x", num_b64(es.pk, OSSL_PKEY_PARAM_EC_PUB_X, 32));
    add_owned(e, "y", num_b64(es.pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32));
    json_object_array_add(keys, r);
    json_object_array_add(keys, e);
    json_object_object_add(doc, "keys", keys);

    char err[256];
    ks = af_jwks_parse(json_object_to_json_string(doc), err, sizeof err);
    json_object_put(doc);
    if (!ks || af_jwks_count(ks) != 2) {
        fprintf(stderr, "fuzz_jwks: our own JWKS: %s\n", ks ? "not 2 keys" : err);
        abort();
    }
}

/* The digest a header's alg names (SHA-256 when it names none we sign). */
static const EVP_MD *digest_of(const char *hdr)
{
    json_object *h = json_tokener_parse(hdr), *a;
    const EVP_MD *md = EVP_sha256();
    if (h && json_object_is_type(h, json_type_object) && json_object_object_get_ex(h, "alg", &a) &&
        json_object_is_type(a, json_type_string)) {
        const char *s = json_object_get_string(a);
        if (strlen(s) == 5 && !strcmp(s + 2, "384"))
            md = EVP_sha384();
        else if (strlen(s) == 5 && !strcmp(s + 2, "512"))
            md = EVP_sha512();
    }
    json_object_put(h);
    return md;
}

enum sig { SIG_KEY, SIG_FLIPPED, SIG_HS256 };

/* b64(header).b64(payload).b64(signature) */
static char *token(const struct signer *s, const char *hdr, const char *payload, enum sig how,
                   unsigned flip)
{
    size_t hl = strlen(hdr), pl = strlen(payload);
    size_t cap = (hl + 2) / 3 * 4 + (pl + 2) / 3 * 4 + 1024;
    char *t = malloc(cap);
    if (!t)
        abort();
    af_b64url((const unsigned char *)hdr, hl, t);
    size_t n = strlen(t);
    t[n++] = '.';
    af_b64url((const unsigned char *)payload, pl, t + n);
    n += strlen(t + n);

    unsigned char sig[512];
    size_t sl = sizeof sig;
    if (how == SIG_HS256) {
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, (const unsigned char *)s->pub_pem, strlen(s->pub_pem));
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)t, n);
        crypto_auth_hmacsha256_final(&st, sig);
        sl = crypto_auth_hmacsha256_BYTES;
    } else {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md || EVP_DigestSignInit(md, NULL, digest_of(hdr), NULL, s->pk) != 1 ||
            EVP_DigestSign(md, sig, &sl, (const unsigned char *)t, n) != 1)
            abort();
        EVP_MD_CTX_free(md);
        if (s == &es) {
            /* JWS wants r || s, not DER. */
            const unsigned char *p = sig;
            ECDSA_SIG *e = d2i_ECDSA_SIG(NULL, &p, (long)sl);
            if (!e || BN_bn2binpad(ECDSA_SIG_get0_r(e), sig, 32) != 32 ||
                BN_bn2binpad(ECDSA_SIG_get0_s(e), sig + 32, 32) != 32)
                abort();
            ECDSA_SIG_free(e);
            sl = 64;
        }
        if (how == SIG_FLIPPED)
            sig[(flip >> 3) % sl] ^= (unsigned char)(1u << (flip & 7));
    }
    t[n++] = '.';
    af_b64url(sig, sl, t + n);
    return t;
}

#define TERMINATED(a) (memchr((a), 0, sizeof(a)) != NULL)

/* One verification, with the properties every answer has. */
static enum af_idtoken_status verify(const struct af_jwks *set, const char *t,
                                     const struct af_idtoken_expect *w, struct af_idtoken *c)
{
    const char *why = NULL;
    memset(c, 0, sizeof *c);
    enum af_idtoken_status st = af_idtoken_verify(set, t, w, c, &why);
    FUZZ_CHECK(st == AF_IDTOKEN_OK || st == AF_IDTOKEN_INVALID || st == AF_IDTOKEN_EXPIRED ||
               st == AF_IDTOKEN_UNKNOWN_KID);
    FUZZ_CHECK(why && strnlen(why, 64) < 64);
    /* A static text, not a pointer into the token. */
    uintptr_t w0 = (uintptr_t)why, t0 = (uintptr_t)t;
    FUZZ_CHECK(w0 < t0 || w0 > t0 + strlen(t));
    return st;
}

static void check_accepted(const char *t, const struct af_idtoken *c)
{
    FUZZ_CHECK(TERMINATED(c->sub) && TERMINATED(c->email) && TERMINATED(c->name) &&
               TERMINATED(c->nonce) && TERMINATED(c->azp));
    FUZZ_CHECK(c->sub[0]);
    FUZZ_CHECK(c->aud == want.client_id || c->aud == extra[0]);
    FUZZ_CHECK(!c->azp[0] || !strcmp(c->azp, CLIENT) || !strcmp(c->azp, extra[0]));
    FUZZ_CHECK(!strcmp(c->nonce, NONCE));
    FUZZ_CHECK(c->exp > NOW - SKEW && c->iat <= NOW + SKEW && c->iat >= NOW - SKEW - MAX_AGE);
    FUZZ_CHECK(!c->email_verified || c->email[0]);

    struct af_idtoken again;
    FUZZ_CHECK(verify(ks, t, &want, &again) == AF_IDTOKEN_OK);
    FUZZ_CHECK(!strcmp(again.sub, c->sub) && !strcmp(again.email, c->email) &&
               !strcmp(again.name, c->name) && !strcmp(again.nonce, c->nonce) &&
               !strcmp(again.azp, c->azp) && again.aud == c->aud &&
               again.email_verified == c->email_verified && again.iat == c->iat &&
               again.exp == c->exp && again.auth_time == c->auth_time);

    struct af_idtoken_expect w = want;
    if (c->exp < LONG_MAX - SKEW) {
        w.now = c->exp + SKEW;
        FUZZ_CHECK(verify(ks, t, &w, &again) == AF_IDTOKEN_EXPIRED);
    }
    w = want;
    w.issuer = ISS "/";
    FUZZ_CHECK(verify(ks, t, &w, &again) == AF_IDTOKEN_INVALID);
    w = want;
    w.nonce = NONCE "x";
    FUZZ_CHECK(verify(ks, t, &w, &again) == AF_IDTOKEN_INVALID);
    w = want;
    w.client_id = "someone-else";
    w.extra_audiences = NULL;
    FUZZ_CHECK(verify(ks, t, &w, &again) == AF_IDTOKEN_INVALID);
}

/* Mode 1: a JWKS document, and a token against what it gives. */
static void jwks_mode(const char *doc, const char *t)
{
    char err[256];
    memset(err, 'x', sizeof err);
    struct af_jwks *set = af_jwks_parse(doc, err, sizeof err);
    if (!set) {
        FUZZ_CHECK(TERMINATED(err) && err[0]);
        return;
    }
    FUZZ_CHECK(af_jwks_count(set) >= 1 && af_jwks_count(set) <= 32);
    if (*t) {
        struct af_idtoken c;
        enum af_idtoken_status st = verify(set, t, &want, &c);
        FUZZ_CHECK(st != AF_IDTOKEN_OK);
        /* why may be NULL. */
        FUZZ_CHECK(af_idtoken_verify(set, t, &want, &c, NULL) == st);
    }
    af_jwks_free(set);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned mode = data[0] % 10, flip = data[1];
    char *f[2];
    fuzz_fields(data + 1, size - 1, f, 2);
    if (mode == 1) {
        jwks_mode(f[0], f[1]);
        fuzz_free_fields(f, 2);
        return 0;
    }
    const struct signer *s = mode == 3 || mode == 5 || mode == 7 || mode == 9 ? &es : &rs;
    char *t, ours[128];
    switch (mode) {
    case 0:
        t = fuzz_str(data + 1, size - 1);
        break;
    case 2:
    case 3:
    case 6:
    case 7: {
        bool flipped = mode >= 6;
        char *payload = fuzz_str(data + (flipped ? 2 : 1), size - (flipped ? 2 : 1));
        snprintf(ours, sizeof ours, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", s->alg, s->kid);
        t = token(s, ours, payload, flipped ? SIG_FLIPPED : SIG_KEY, flip);
        free(payload);
        break;
    }
    default:
        t = token(s, f[0], f[1], mode >= 8 ? SIG_HS256 : SIG_KEY, 0);
        break;
    }
    struct af_idtoken c;
    enum af_idtoken_status st = verify(ks, t, &want, &c);
    if (mode == 0 || mode >= 6)
        FUZZ_CHECK(st != AF_IDTOKEN_OK);
    if (st == AF_IDTOKEN_OK)
        check_accepted(t, &c);
    free(t);
    fuzz_free_fields(f, 2);
    return 0;
}
