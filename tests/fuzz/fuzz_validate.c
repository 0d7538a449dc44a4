/* fuzz_validate.c — field checks done at the boundary: af_email_normalize
 * and af_name_check, and the UTF-8 functions of util.c they rest on.
 *
 * Properties: an accepted address is lower-case ASCII of at most
 * AF_EMAIL_MAX characters with one '@', and normalising it again gives the
 * same text (the output buffer is exactly AF_EMAIL_MAX + 1 bytes, so a
 * write past it is caught); an accepted name has no control characters;
 * af_utf8_len counts what af_utf8_valid accepts without reading past it. */
#include <stdbool.h>

#include "fuzz.h"
#include "util.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_str(data, size);
    char *out = malloc(AF_EMAIL_MAX + 1);
    if (!out)
        abort();
    if (!af_email_normalize(s, out)) {
        size_t n = strlen(out);
        FUZZ_CHECK(n > 0 && n <= AF_EMAIL_MAX);
        FUZZ_CHECK(strchr(out, '@') && strchr(out, '@') == strrchr(out, '@'));
        for (const char *p = out; *p; p++)
            FUZZ_CHECK((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && !(*p >= 'A' && *p <= 'Z'));
        char *again = malloc(AF_EMAIL_MAX + 1);
        if (!again)
            abort();
        FUZZ_CHECK(af_email_normalize(out, again) == NULL && strcmp(again, out) == 0);
        free(again);
    }
    if (!af_name_check(s))
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
            FUZZ_CHECK(*p >= 0x20 && *p != 0x7f);
    size_t n = strlen(s);
    if (af_utf8_valid(s, n))
        FUZZ_CHECK(af_utf8_len(s) <= n);
    free(out);
    free(s);
    return 0;
}
