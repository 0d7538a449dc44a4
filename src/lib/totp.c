/* totp.c — RFC 6238 codes through liboath, QR codes through libqrencode,
 * secrets sealed with libsodium (see totp.h). */
#include <liboath/oath.h>
#include <qrencode.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "totp.h"
#include "util.h"

/* liboath keeps no state worth a context, but wants oath_init once. */
static bool oath_ready(void)
{
    static int state; /* 0 not yet, 1 ready, -1 failed */
    if (state == 0)
        state = oath_init() == OATH_OK ? 1 : -1;
    return state == 1;
}

void af_totp_new_secret(unsigned char out[AF_TOTP_SECRET_BYTES])
{
    randombytes_buf(out, AF_TOTP_SECRET_BYTES);
}

int af_totp_base32(const unsigned char *secret, size_t len, char *out, size_t outlen)
{
    char *b32 = NULL;
    size_t n = 0;
    if (!oath_ready() || oath_base32_encode((const char *)secret, len, &b32, &n) != OATH_OK)
        return -1;
    /* Without liboath's '=' padding, as the apps and the URI want it. */
    while (n > 0 && b32[n - 1] == '=')
        n--;
    int rc = n < outlen ? 0 : -1;
    if (rc == 0) {
        memcpy(out, b32, n);
        out[n] = '\0';
    }
    free(b32);
    return rc;
}

int af_totp_uri(const char *issuer, const char *account, const char *b32, char *out,
                size_t outlen)
{
    char iss[256], acct[800];
    if (af_percent_encode(issuer, iss, sizeof iss) < 0 ||
        af_percent_encode(account, acct, sizeof acct) < 0)
        return -1;
    int n = snprintf(out, outlen,
                     "otpauth://totp/%s:%s?secret=%s&issuer=%s&algorithm=SHA1&digits=%d&period=%d",
                     iss, acct, b32, iss, AF_TOTP_DIGITS, AF_TOTP_STEP);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static int oath_flags(enum af_totp_hash hash)
{
    return hash == AF_TOTP_SHA256   ? OATH_TOTP_HMAC_SHA256
           : hash == AF_TOTP_SHA512 ? OATH_TOTP_HMAC_SHA512
                                    : 0;
}

int af_totp_code(const unsigned char *secret, size_t len, enum af_totp_hash hash, time_t t,
                 unsigned digits, char out[9])
{
    if (!oath_ready() || digits < 6 || digits > 8)
        return -1;
    return oath_totp_generate2((const char *)secret, len, t, AF_TOTP_STEP, 0, digits,
                               oath_flags(hash), out) == OATH_OK
               ? 0
               : -1;
}

enum af_totp_result af_totp_check(const unsigned char *secret, size_t len, const char *code,
                                  time_t now, int64_t last_step, int64_t *step)
{
    if (!oath_ready() || strlen(code) != AF_TOTP_DIGITS ||
        strspn(code, "0123456789") != AF_TOTP_DIGITS)
        return AF_TOTP_WRONG;
    /* Every step of the window is compared (in constant time), so the
     * answer takes as long whichever step matches; of several matching
     * steps the latest unused one counts. */
    int64_t cur = (int64_t)(now / AF_TOTP_STEP), found = 0;
    bool replay = false;
    for (int64_t s = cur - AF_TOTP_WINDOW; s <= cur + AF_TOTP_WINDOW; s++) {
        char want[9];
        if (s < 0 || af_totp_code(secret, len, AF_TOTP_SHA1, (time_t)(s * AF_TOTP_STEP),
                                  AF_TOTP_DIGITS, want) < 0)
            continue;
        bool match = af_streq_ct(want, code);
        sodium_memzero(want, sizeof want);
        if (!match)
            continue;
        if (s <= last_step)
            replay = true;
        else
            found = s;
    }
    if (found) {
        *step = found;
        return AF_TOTP_OK;
    }
    return replay ? AF_TOTP_REPLAY : AF_TOTP_WRONG;
}

char *af_qr_svg(const char *text)
{
    QRcode *qr = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!qr)
        return NULL;
    const int quiet = 4, w = qr->width, size = w + 2 * quiet;
    /* One path of unit squares: "M x yh1v1h-1z" is at most 24 bytes. */
    size_t cap = 256 + (size_t)w * (size_t)w * 24;
    char *svg = malloc(cap);
    if (!svg) {
        QRcode_free(qr);
        return NULL;
    }
    size_t n = (size_t)snprintf(svg, cap,
                                "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
                                "shape-rendering=\"crispEdges\"><rect width=\"%d\" height=\"%d\" "
                                "fill=\"#fff\"/><path fill=\"#000\" d=\"",
                                size, size, size, size);
    for (int y = 0; y < w; y++)
        for (int x = 0; x < w; x++)
            if (qr->data[y * w + x] & 1)
                n += (size_t)snprintf(svg + n, cap - n, "M%d %dh1v1h-1z", x + quiet, y + quiet);
    snprintf(svg + n, cap - n, "\"/></svg>");
    QRcode_free(qr);
    return svg;
}

void af_totp_seal(const unsigned char key[32], const unsigned char secret[AF_TOTP_SECRET_BYTES],
                  unsigned char out[AF_TOTP_SEALED_BYTES])
{
    randombytes_buf(out, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(out + crypto_secretbox_NONCEBYTES, secret, AF_TOTP_SECRET_BYTES, out,
                          key);
}

int af_totp_open(const unsigned char key[32], const unsigned char *sealed, size_t len,
                 unsigned char secret[AF_TOTP_SECRET_BYTES])
{
    if (len != AF_TOTP_SEALED_BYTES)
        return -1;
    return crypto_secretbox_open_easy(secret, sealed + crypto_secretbox_NONCEBYTES,
                                      len - crypto_secretbox_NONCEBYTES, sealed, key) == 0
               ? 0
               : -1;
}
