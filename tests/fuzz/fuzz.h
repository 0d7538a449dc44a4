/* fuzz.h — what the libFuzzer harnesses share.
 *
 * Inputs are copied into buffers of exactly their size, so AddressSanitizer
 * sees a read one byte past the input. A property that does not hold is
 * reported like a crash (abort), so libFuzzer keeps the input. */
#ifndef AF_FUZZ_H
#define AF_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* data[0..size) as a NUL-terminated malloc'd string (cut at an inner NUL). */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    size_t n = nul ? (size_t)(nul - data) : size;
    char *s = malloc(n + 1);
    if (!s)
        abort();
    if (n)
        memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* Splits data at NUL bytes into at most max strings (the last one takes the
 * rest, NULs included, cut at its first NUL). Each is its own allocation;
 * missing ones are empty. Free with fuzz_free_fields. */
static inline void fuzz_fields(const uint8_t *data, size_t size, char **out, int max)
{
    for (int i = 0; i < max; i++) {
        const uint8_t *nul = i < max - 1 && size ? memchr(data, 0, size) : NULL;
        size_t n = nul ? (size_t)(nul - data) : size;
        out[i] = fuzz_str(data, n);
        data += nul ? n + 1 : n;
        size -= nul ? n + 1 : n;
    }
}

static inline void fuzz_free_fields(char **f, int n)
{
    for (int i = 0; i < n; i++)
        free(f[i]);
}

#endif
