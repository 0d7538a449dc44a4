/* validate.c — field checks (see validate.h). */
#include "validate.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static bool atext(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+/=?^_`{|}~-", c);
}

const char *af_email_normalize(const char *in, char out[AF_EMAIL_MAX + 1])
{
    const char *s = in, *e;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    size_t n = (size_t)(e - s);
    if (n == 0)
        return "is required";
    if (n > AF_EMAIL_MAX)
        return "is too long";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80)
            return "must be an ASCII address (internationalised addresses are not supported)";
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[n] = '\0';
    char *at = strchr(out, '@');
    if (!at || strchr(at + 1, '@'))
        return "is not a valid email address";
    size_t local = (size_t)(at - out);
    if (local == 0 || local > 64 || out[0] == '.' || at[-1] == '.' || strstr(out, ".."))
        return "is not a valid email address";
    for (size_t i = 0; i < local; i++)
        if (out[i] != '.' && !atext(out[i]))
            return "is not a valid email address";
    const char *d = at + 1;
    if (!*d || !strchr(d, '.'))
        return "is not a valid email address";
    /* Domain: dot-separated labels of letters, digits and inner hyphens. */
    const char *label = d;
    for (const char *p = d;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t ll = (size_t)(p - label);
            if (ll == 0 || ll > 63 || *label == '-' || p[-1] == '-')
                return "is not a valid email address";
            if (*p == '\0')
                break;
            label = p + 1;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
            return "is not a valid email address";
        }
    }
    return NULL;
}

const char *af_password_check(const char *pw, long min_len)
{
    static char msg[96];
    size_t n = af_utf8_len(pw);
    if ((long)n < min_len) {
        snprintf(msg, sizeof msg, "must be at least %ld characters long", min_len);
        return msg;
    }
    if (n > AF_PASSWORD_MAX)
        return "must be at most 128 characters long";
    return NULL;
}

const char *af_name_check(const char *name)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return "must not contain control characters or line breaks";
    /* C1 controls (U+0080..U+009F) arrive as 0xC2 0x80..0x9F. */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            return "must not contain control characters or line breaks";
    if (af_utf8_len(name) > AF_NAME_MAX)
        return "must be at most 200 characters long";
    return NULL;
}
