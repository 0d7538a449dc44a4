/* fuzz_token.c — access-token verification (af_token_verify).
 *
 * At start-up an ES256 and an RS256 key are generated; af_keyset_load
 * loads them from a temporary directory, as a responder loads its keys (the
 * files are removed once loaded, the directory at exit). The first input
 * byte picks a mode:
 *   0  the rest is a token string;
 *   1  the rest is a payload, under our ES256 header, validly signed;
 *   2  the same with the RS256 key;
 *   3  header NUL payload, "@KID@" in the header replaced by the ES256 kid,
 *      validly signed with the ES256 key;
 *   4  the same with the RS256 key;
 *   5  mode 1 with one bit of the signature flipped (the second byte picks
 *      which);
 *   6  header NUL payload (with "@KID@" as in 3), signed HS256 with the
 *      ES256 public key's PEM as the secret (algorithm confusion);
 *   7  the same with the RS256 public key's PEM.
 * Modes 1-4 reach the claim checks, which need a signature no input can
 * carry: the keys are new in every process.
 *
 * Properties: a token not signed by one of our keys (modes 0, 5, 6, 7) is
 * never accepted; an accepted token's claims are within their bounds
 * (sub and sid UUIDs, strings terminated), it is accepted again from the
 * cache with the same claims, and it is expired once its exp is more than
 * the clock skew behind. "now" is fixed, and the key set is reloaded after
 * an accepted token, so its cache never carries one input into the next. */
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <limits.h>
#include <sodium.h>
#include <stdbool.h>
#include <unistd.h>

#include "fuzz.h"
#include "token.h"
#include "util.h"

#define NOW 1700000000L

static const struct af_token_params params = {"https://auth.example.test", "authflow", 900, AF_CLOCK_SKEW};

struct signer {
    char kid[64];
    const char *alg, *file;
    char *pem;                  /* the private key, for af_keyset_load */
    EVP_PKEY *pk;               /* the same, for signing here */
    char *pub_pem;
};

static char dir[] = "/tmp/authflow-fuzz-keys.XXXXXX";
static struct signer es = {.alg = "ES256", .file = "es.pem"}, rs = {.alg = "RS256", .file = "rs.pem"};
static struct af_keyset *ks;

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void put_file(const char *name, const char *text)
{
    char p[256];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

static void drop_file(const char *name)
{
    char p[256];
    path_of(p, sizeof p, name);
    unlink(p);
}

static void cleanup(void)
{
    rmdir(dir);
}

/* A fresh key set (and so an empty cache). The key files exist only while
 * it loads, so a run that dies leaves at most an empty directory. */
static void load_keyset(void)
{
    char err[256];
    af_keyset_free(ks);
    ks = NULL;
    put_file(es.file, es.pem);
    put_file(rs.file, rs.pem);
    put_file("current", es.kid);
    int rc = af_keyset_load(&ks, dir, err, sizeof err);
    drop_file(es.file);
    drop_file(rs.file);
    drop_file("current");
    if (rc != 0) {
        fprintf(stderr, "fuzz_token: %s\n", err);
        abort();
    }
}

static void make_key(struct signer *s)
{
    char err[256];
    if (af_key_generate(s->alg, &s->pem, s->kid, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_token: %s\n", err);
        abort();
    }
    BIO *in = BIO_new_mem_buf(s->pem, -1), *out = BIO_new(BIO_s_mem());
    s->pk = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    /* The same canonical public PEM the key set verifies with. */
    if (!s->pk || !PEM_write_bio_PUBKEY(out, s->pk))
        abort();
    char *data;
    long n = BIO_get_mem_data(out, &data);
    s->pub_pem = strndup(data, (size_t)n);
    BIO_free(in);
    BIO_free(out);
}

static void init(void)
{
    if (sodium_init() < 0 || !mkdtemp(dir))
        abort();
    atexit(cleanup);
    make_key(&es);
    make_key(&rs);
    load_keyset();
}

/* s with every "@KID@" replaced by kid (malloc'd). */
static char *with_kid(const char *s, const char *kid)
{
    size_t n = 0, kl = strlen(kid);
    for (const char *p = s; (p = strstr(p, "@KID@")); p += 5)
        n++;
    char *out = malloc(strlen(s) + n * kl + 1), *o = out;
    if (!out)
        abort();
    for (const char *p = s, *q; *p; p = q + 5) {
        if (!(q = strstr(p, "@KID@"))) {
            strcpy(o, p);
            return out;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, kid, kl);
        o += kl;
    }
    *o = '\0';
    return out;
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
        if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, s->pk) != 1 ||
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

static void check_accepted(const char *t, const struct af_claims *c)
{
    FUZZ_CHECK(af_is_uuid(c->sub) && af_is_uuid(c->sid));
    FUZZ_CHECK(memchr(c->jti, 0, sizeof c->jti) && memchr(c->email, 0, sizeof c->email) &&
               memchr(c->dfp, 0, sizeof c->dfp));
    FUZZ_CHECK(c->roles[0] == '[' && c->amr[0] == '[');
    FUZZ_CHECK(memchr(c->roles, 0, sizeof c->roles) && memchr(c->amr, 0, sizeof c->amr));
    FUZZ_CHECK(c->exp >= NOW - AF_CLOCK_SKEW && c->nbf <= NOW + AF_CLOCK_SKEW);

    struct af_claims again;
    memset(&again, 0, sizeof again);
    FUZZ_CHECK(af_token_verify(ks, &params, t, NOW, &again) == AF_TOKEN_OK);
    FUZZ_CHECK(!strcmp(again.sub, c->sub) && !strcmp(again.sid, c->sid) &&
               !strcmp(again.jti, c->jti) && !strcmp(again.email, c->email) &&
               !strcmp(again.roles, c->roles) && !strcmp(again.amr, c->amr) &&
               !strcmp(again.dfp, c->dfp) && again.email_verified == c->email_verified &&
               again.iat == c->iat && again.nbf == c->nbf && again.exp == c->exp);
    if (c->exp < LONG_MAX - AF_CLOCK_SKEW - 1)
        FUZZ_CHECK(af_token_verify(ks, &params, t, c->exp + AF_CLOCK_SKEW + 1, &again) ==
                   AF_TOKEN_EXPIRED);
    load_keyset();
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
    unsigned mode = data[0] % 8, flip = data[1];
    char *f[2];
    fuzz_fields(data + 1, size - 1, f, 2);
    const struct signer *s = mode == 2 || mode == 4 || mode == 7 ? &rs : &es;
    char *t, *hdr = NULL, ours[128];
    switch (mode) {
    case 0:
        t = fuzz_str(data + 1, size - 1);
        break;
    case 1:
    case 2:
    case 5: {
        char *payload = fuzz_str(data + (mode == 5 ? 2 : 1), size - (mode == 5 ? 2 : 1));
        snprintf(ours, sizeof ours, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", s->alg, s->kid);
        t = token(s, ours, payload, mode == 5 ? SIG_FLIPPED : SIG_KEY, flip);
        free(payload);
        break;
    }
    default:
        hdr = with_kid(f[0], s->kid);
        t = token(s, hdr, f[1], mode >= 6 ? SIG_HS256 : SIG_KEY, 0);
        break;
    }
    struct af_claims c;
    memset(&c, 0, sizeof c);
    enum af_token_status st = af_token_verify(ks, &params, t, NOW, &c);
    FUZZ_CHECK(st == AF_TOKEN_OK || st == AF_TOKEN_INVALID || st == AF_TOKEN_EXPIRED);
    if (mode == 0 || mode >= 5)
        FUZZ_CHECK(st != AF_TOKEN_OK);
    if (st == AF_TOKEN_OK)
        check_accepted(t, &c);
    free(t);
    free(hdr);
    fuzz_free_fields(f, 2);
    return 0;
}
