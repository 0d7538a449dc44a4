/* test_totp.c — RFC 6238's test vectors, the window and replay rules,
 * base32 (RFC 4648's vectors), the otpauth URI, the QR code's SVG and the
 * sealing of secrets. */
#define _GNU_SOURCE /* memmem */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "totp.h"
#include "util.h"

/* RFC 6238, appendix B: 8-digit codes of the ASCII seeds below. */
static const struct {
    time_t t;
    const char *sha1, *sha256, *sha512;
} vectors[] = {
    {59, "94287082", "46119246", "90693936"},
    {1111111109, "07081804", "68084774", "25091201"},
    {1111111111, "14050471", "67062674", "99943326"},
    {1234567890, "89005924", "91819424", "93441116"},
    {2000000000, "69279037", "90698825", "38618901"},
    {20000000000, "65353130", "77737706", "47863826"},
};
static const char seed20[] = "12345678901234567890";
static const char seed32[] = "12345678901234567890123456789012";
static const char seed64[] =
    "1234567890123456789012345678901234567890123456789012345678901234";

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    char code[9];
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        long t = (long)vectors[i].t;
        af_totp_code((const unsigned char *)seed20, 20, AF_TOTP_SHA1, vectors[i].t, 8, code);
        is_str(code, vectors[i].sha1, "RFC 6238 SHA-1 at %ld", t);
        af_totp_code((const unsigned char *)seed32, 32, AF_TOTP_SHA256, vectors[i].t, 8, code);
        is_str(code, vectors[i].sha256, "RFC 6238 SHA-256 at %ld", t);
        af_totp_code((const unsigned char *)seed64, 64, AF_TOTP_SHA512, vectors[i].t, 8, code);
        is_str(code, vectors[i].sha512, "RFC 6238 SHA-512 at %ld", t);
    }
    /* What an app shows: the last 6 digits of the same truncation. */
    af_totp_code((const unsigned char *)seed20, 20, AF_TOTP_SHA1, 59, 6, code);
    is_str(code, "287082", "6 digits at 59 are the 8-digit code's last 6");
    ok(af_totp_code((const unsigned char *)seed20, 20, AF_TOTP_SHA1, 59, 5, code) < 0,
       "5 digits refused");

    /* The window: the code of 1111111109 (step 37037036) is accepted from
     * the step before to the step after, not two steps away. */
    const unsigned char *s = (const unsigned char *)seed20;
    char c6[9];
    af_totp_code(s, 20, AF_TOTP_SHA1, 1111111109, 6, c6);
    int64_t step = 0, at = 1111111109 / AF_TOTP_STEP;
    is_int(af_totp_check(s, 20, c6, 1111111109, 0, &step), AF_TOTP_OK, "code accepted at its time");
    is_int((long)step, (long)at, "the step matched is returned");
    is_int(af_totp_check(s, 20, c6, 1111111109 + 30, 0, &step), AF_TOTP_OK, "one step later: ok");
    is_int(af_totp_check(s, 20, c6, 1111111109 - 30, 0, &step), AF_TOTP_OK,
           "one step earlier: ok");
    is_int(af_totp_check(s, 20, c6, 1111111109 + 60, 0, &step), AF_TOTP_WRONG,
           "two steps later: refused");
    is_int(af_totp_check(s, 20, c6, 1111111109 - 60, 0, &step), AF_TOTP_WRONG,
           "two steps earlier: refused");
    /* Each code once: a step at or before the last one used is a replay. */
    is_int(af_totp_check(s, 20, c6, 1111111109, at, &step), AF_TOTP_REPLAY,
           "the same step again: replay");
    is_int(af_totp_check(s, 20, c6, 1111111109 + 30, at + 1, &step), AF_TOTP_REPLAY,
           "an older step after a newer one: replay");
    char wrong[9];
    snprintf(wrong, sizeof wrong, "%06d", (atoi(c6) + 1) % 1000000);
    is_int(af_totp_check(s, 20, wrong, 1111111109, 0, &step), AF_TOTP_WRONG, "a wrong code");
    is_int(af_totp_check(s, 20, "12345", 1111111109, 0, &step), AF_TOTP_WRONG, "5 digits");
    is_int(af_totp_check(s, 20, "1234567", 1111111109, 0, &step), AF_TOTP_WRONG, "7 digits");
    is_int(af_totp_check(s, 20, "12a456", 1111111109, 0, &step), AF_TOTP_WRONG, "not digits");
    is_int(af_totp_check(s, 20, "", 1111111109, 0, &step), AF_TOTP_WRONG, "empty");

    /* RFC 4648's base32 vectors, without padding. */
    static const struct {
        const char *in, *out;
    } b32[] = {{"", ""},           {"f", "MY"},         {"fo", "MZXQ"},       {"foo", "MZXW6"},
               {"foob", "MZXW6YQ"}, {"fooba", "MZXW6YTB"}, {"foobar", "MZXW6YTBOI"}};
    for (size_t i = 0; i < sizeof b32 / sizeof b32[0]; i++) {
        char out[32];
        af_totp_base32((const unsigned char *)b32[i].in, strlen(b32[i].in), out, sizeof out);
        is_str(out, b32[i].out, "base32 of '%s'", b32[i].in);
    }
    char b[AF_TOTP_B32_CHARS];
    ok(af_totp_base32(s, 20, b, sizeof b) == 0 && strlen(b) == 32, "a secret is 32 base32 characters");
    is_str(b, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "base32 of RFC 6238's seed");
    ok(af_totp_base32(s, 20, b, 32) < 0, "too small a buffer is refused");

    char uri[1024];
    ok(af_totp_uri("authflow", "al+ice@example.com", b, uri, sizeof uri) == 0, "uri made");
    is_str(uri,
           "otpauth://totp/authflow:al%2Bice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
           "&issuer=authflow&algorithm=SHA1&digits=6&period=30",
           "otpauth URI, label and issuer percent-encoded");
    ok(af_totp_uri("My Site & Co", "a@b", b, uri, sizeof uri) == 0 &&
           strstr(uri, "otpauth://totp/My%20Site%20%26%20Co:a%40b?") == uri,
       "spaces and & in the issuer are encoded");
    ok(af_totp_uri("authflow", "a@b", b, uri, 40) < 0, "too small a buffer is refused");

    char *svg = af_qr_svg(uri);
    ok(svg && !strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39) &&
           strstr(svg, "</svg>") && strstr(svg, "<path fill=\"#000\" d=\"M"),
       "QR code as SVG");
    free(svg);

    unsigned char key[32], secret[AF_TOTP_SECRET_BYTES], sealed[AF_TOTP_SEALED_BYTES],
        back[AF_TOTP_SECRET_BYTES];
    randombytes_buf(key, sizeof key);
    af_totp_new_secret(secret);
    af_totp_seal(key, secret, sealed);
    ok(af_totp_open(key, sealed, sizeof sealed, back) == 0 && !memcmp(back, secret, sizeof back),
       "a sealed secret opens with its key");
    ok(memmem(sealed, sizeof sealed, secret, sizeof secret) == NULL,
       "the sealed form does not hold the secret");
    sealed[30] ^= 1;
    ok(af_totp_open(key, sealed, sizeof sealed, back) < 0, "an altered box does not open");
    sealed[30] ^= 1;
    key[0] ^= 1;
    ok(af_totp_open(key, sealed, sizeof sealed, back) < 0, "another key does not open it");
    ok(af_totp_open(key, sealed, sizeof sealed - 1, back) < 0, "a short box does not open");
    return done_testing();
}
