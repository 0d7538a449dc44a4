/* jwks.h — an OpenID provider's signing keys (its JWKS document) and the
 * verification of the id_tokens it issues.
 *
 * libjwt 1.10 verifies with whatever key it is handed and under whatever
 * algorithm the token names (an HS256 token keyed with an RSA public PEM
 * verifies), and checks no claim, so it is never called bare: the JOSE
 * header is decoded here first, the algorithm must be an asymmetric one
 * that fits the key `kid` selects, libjwt must report having verified with
 * exactly that algorithm, and every claim OpenID Connect Core §3.1.3.7 asks
 * a client to check is checked here. Header parameters that point at other
 * keys (jku, jwk, x5u, x5c) are ignored, never fetched; a `crit` header is
 * refused, since none of its extensions are understood. */
#ifndef AF_JWKS_H
#define AF_JWKS_H
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct af_jwks;

/* The usable keys of a JWKS document: RSA (2048 to 4096 bits; RS256, RS384,
 * RS512) and EC P-256 (ES256) and P-384 (ES384), "use" absent or "sig".
 * Other keys (oct, enc, other curves or algorithms, small RSA) are skipped;
 * a document with no usable key is an error. NULL and a reason in err on
 * failure. */
struct af_jwks *af_jwks_parse(const char *json_text, char *err, size_t errlen);
void af_jwks_free(struct af_jwks *ks);
/* The number of usable keys. */
size_t af_jwks_count(const struct af_jwks *ks);

enum af_idtoken_status {
    AF_IDTOKEN_OK = 0,
    AF_IDTOKEN_INVALID,         /* malformed, forged, or a claim is wrong */
    AF_IDTOKEN_EXPIRED,         /* exp passed, or issued longer than max_age_s ago */
    AF_IDTOKEN_UNKNOWN_KID,     /* no key with the token's kid: the provider may
                                 * have rotated; refetch its JWKS once and retry */
};

struct af_idtoken_expect {
    const char *issuer;         /* iss must equal it exactly */
    const char *client_id;      /* an accepted audience */
    const char *const *extra_audiences; /* more accepted audiences, NULL-terminated; may be NULL */
    const char *nonce;          /* non-NULL: the token's nonce must equal it; NULL: not checked */
    long skew_s;                /* clock difference allowed on exp, iat, nbf (AF_CLOCK_SKEW) */
    long max_age_s;             /* iat at most this old (not OIDC's max_age, which is about
                                 * auth_time); 0: no limit */
    time_t now;                 /* 0: time(NULL) */
};

/* The verified claims; fixed-size buffers, nothing to free. Optional
 * string claims that are absent, not strings or too long are "". */
struct af_idtoken {
    char sub[256];
    char email[321];
    bool email_verified;        /* JSON true, or the string "true" some providers send;
                                 * false when email is "" */
    char name[256];
    char nonce[256];
    char azp[256];
    const char *aud;            /* the accepted audience that matched: want's own string */
    long iat, exp;
    long auth_time;             /* 0 when absent */
};

/* Verifies token against ks and want. On AF_IDTOKEN_OK out is filled; on
 * any status *why (when why is non-NULL) is a short static text for logs
 * ("bad signature", "wrong aud", "expired", "wrong nonce", ...), never
 * holding any part of the token. */
enum af_idtoken_status af_idtoken_verify(const struct af_jwks *ks, const char *token,
                                         const struct af_idtoken_expect *want,
                                         struct af_idtoken *out, const char **why);

#endif
