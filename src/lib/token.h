/* token.h — access tokens: the signing key set, JWT signing and
 * verification, and the JWKS document.
 *
 * libjwt 1.10 does no claim validation and will verify with whatever key
 * it is handed (a NULL key means "no verification"; an HS256 token keyed
 * with an RSA public PEM verifies), so it is never called bare: the header
 * is read first, `kid` selects one of our keys, the token's `alg` must equal
 * that key's algorithm, and iss, aud, exp and nbf are checked here. `jwk`,
 * `jku` and `x5u` headers are ignored. Verified tokens are remembered by
 * their SHA-256 until they expire, so a busy responder verifies each token
 * once. */
#ifndef AF_TOKEN_H
#define AF_TOKEN_H
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* The default of [tokens] clock_skew. */
#define AF_CLOCK_SKEW 60

struct af_claims {
    char sub[37], sid[37], jti[37];
    char email[256];
    char roles[512];        /* JSON array text */
    char amr[96];           /* JSON array text */
    char dfp[65];
    bool email_verified;
    long iat, nbf, exp;
};

enum af_token_status {
    AF_TOKEN_OK = 0,
    AF_TOKEN_INVALID,       /* malformed, bad signature, unknown kid, wrong alg/iss/aud */
    AF_TOKEN_EXPIRED,
};

struct af_keyset;

/* Loads every *.pem private key in dir; the signing key is the one named in
 * dir/current, else the newest file. */
int af_keyset_load(struct af_keyset **out, const char *dir, char *err, size_t errlen);
void af_keyset_free(struct af_keyset *ks);
size_t af_keyset_count(const struct af_keyset *ks);
/* The JWKS document of the public keys. */
const char *af_keyset_jwks(const struct af_keyset *ks);
/* Key i (0 .. count-1): its kid, algorithm, file time, and whether it signs. */
struct af_key_info {
    const char *kid, *alg;
    time_t created;
    bool current;
};
void af_keyset_info(const struct af_keyset *ks, size_t i, struct af_key_info *out);

/* Generates a key (alg "ES256" or "RS256") as PEM; its kid (RFC 7638
 * thumbprint) goes to kid_out. Caller frees *pem. */
int af_key_generate(const char *alg, char **pem, char kid_out[64], char *err, size_t errlen);

struct af_token_params {
    const char *issuer, *audience;
    long ttl;
    long skew;              /* seconds of clock difference allowed on exp and nbf */
};

/* Signs claims (iat/nbf/exp/jti are set here). Caller frees *out. */
int af_token_sign(const struct af_keyset *ks, const struct af_token_params *p,
                  struct af_claims *c, char **out);
enum af_token_status af_token_verify(struct af_keyset *ks, const struct af_token_params *p,
                                     const char *token, time_t now, struct af_claims *out);

#endif
