/* totp.h — time-based one-time passwords (RFC 6238) for two-factor login:
 * secrets, the otpauth:// URI and its QR code, checking a code, and the
 * sealing of secrets at rest.
 *
 * Codes are what authenticator apps make: HMAC-SHA-1, 30 s steps, 6
 * digits (liboath computes them). A code is accepted for the step before,
 * the current one and the one after, and only for a step later than the
 * last one accepted, so each code works once. */
#ifndef AF_TOTP_H
#define AF_TOTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define AF_TOTP_SECRET_BYTES 20 /* 160 bits, as RFC 4226 recommends */
#define AF_TOTP_STEP 30
#define AF_TOTP_DIGITS 6
#define AF_TOTP_WINDOW 1 /* steps either side */
/* Base32 of a secret, without padding, and its terminating NUL. */
#define AF_TOTP_B32_CHARS 33

enum af_totp_hash { AF_TOTP_SHA1, AF_TOTP_SHA256, AF_TOTP_SHA512 };

/* Fills out with a new random secret. */
void af_totp_new_secret(unsigned char out[AF_TOTP_SECRET_BYTES]);

/* The secret as RFC 4648 base32 without padding (what the apps read).
 * Returns 0, or -1 when out is too small. */
int af_totp_base32(const unsigned char *secret, size_t len, char *out, size_t outlen);

/* otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=SHA1&
 * digits=6&period=30, the label and parameters percent-encoded. Returns 0,
 * or -1 when out is too small. */
int af_totp_uri(const char *issuer, const char *account, const char *b32, char *out,
                size_t outlen);

/* The code of the step that holds time t. digits: 6 to 8. Returns 0, or -1. */
int af_totp_code(const unsigned char *secret, size_t len, enum af_totp_hash hash, time_t t,
                 unsigned digits, char out[9]);

enum af_totp_result {
    AF_TOTP_OK = 0,
    AF_TOTP_WRONG,   /* no step of the window has this code */
    AF_TOTP_REPLAY,  /* the code is right, but its step was already used */
};

/* Checks a 6-digit code at time now against the steps now-1 .. now+1
 * (SHA-1). last_step is the last step accepted for this secret (0: none);
 * on success *step is the step matched, to be stored as the new last_step. */
enum af_totp_result af_totp_check(const unsigned char *secret, size_t len, const char *code,
                                  time_t now, int64_t last_step, int64_t *step);

/* An SVG image (black modules on white, a 4-module quiet zone) of the QR
 * code of text, error correction M. Returns a malloc'd string or NULL. */
char *af_qr_svg(const char *text);

/* Secrets at rest: XSalsa20-Poly1305 (libsodium secretbox) under a 32-byte
 * key. The sealed form is nonce || box. */
#define AF_TOTP_SEALED_BYTES (24 + 16 + AF_TOTP_SECRET_BYTES)
void af_totp_seal(const unsigned char key[32], const unsigned char secret[AF_TOTP_SECRET_BYTES],
                  unsigned char out[AF_TOTP_SEALED_BYTES]);
/* Returns 0, or -1 when the box was not made with key (or was altered). */
int af_totp_open(const unsigned char key[32], const unsigned char *sealed, size_t len,
                 unsigned char secret[AF_TOTP_SECRET_BYTES]);

#endif
