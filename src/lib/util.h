/* util.h — small pure helpers shared by every program: random tokens,
 * hashes, encodings, times. */
#ifndef AF_UTIL_H
#define AF_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define AF_TOKEN_CHARS 43          /* 32 random bytes, base64url, no padding */
#define AF_SHA256_HEX 65           /* 64 hex digits + NUL */

/* 256 random bits as base64url without padding (out: AF_TOKEN_CHARS + 1). */
void af_random_token(char out[AF_TOKEN_CHARS + 1]);
/* SHA-256 of data as lower-case hex (out: AF_SHA256_HEX). */
void af_sha256_hex(const void *data, size_t len, char out[AF_SHA256_HEX]);
void af_sha256(const void *data, size_t len, unsigned char out[32]);
/* base64url without padding; out must hold ((len + 2) / 3) * 4 + 1. */
void af_b64url(const unsigned char *in, size_t len, char *out);
/* A random UUID v4 string (out: 37 bytes). */
void af_uuid4(char out[37]);
bool af_is_uuid(const char *s);
/* RFC 3339 UTC with seconds (out: 21 bytes). */
void af_time_rfc3339(time_t t, char out[21]);
/* Microseconds of a monotonic clock. */
int64_t af_now_us(void);
/* Constant-time string equality. */
bool af_streq_ct(const char *a, const char *b);
/* Valid UTF-8 without overlongs or surrogates; NUL counts as invalid. */
bool af_utf8_valid(const char *s, size_t len);
/* Number of code points in valid UTF-8. */
size_t af_utf8_len(const char *s);
/* Whether a space/comma separated list holds item[0..n) (case-insensitive
 * when nocase). */
bool af_list_contains(const char *list, const char *item, size_t n, bool nocase);
/* Whether the address ip is in list: space or comma separated addresses,
 * each optionally with a /N prefix length (IPv4 or IPv6). */
bool af_addr_in_list(const char *list, const char *ip);
/* A whole file as a NUL-terminated malloc'd string, or NULL (errno set). */
char *af_read_file(const char *path);
/* RFC 3986 percent-encoding of s (all but unreserved characters) into out.
 * Returns the length, or -1 when out is too small. */
int af_percent_encode(const char *s, char *out, size_t outlen);

#endif
