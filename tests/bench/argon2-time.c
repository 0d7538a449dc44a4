/* argon2-time — how long one Argon2id password verification takes with
 * libsodium at a given cost, the figure that bounds the login rate.
 *
 *   argon2-time ITERATIONS MEMORY_KIB [RUNS]
 *
 * Hashes one password, verifies it RUNS times (default 15) and prints
 * "median_ms=... min_ms=... max_ms=...". */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static const char pw[] = "correct horse battery staple 42";
    char hash[crypto_pwhash_STRBYTES];
    unsigned long long ops;
    size_t mem;
    int runs = 15;

    if (argc < 3) {
        fprintf(stderr, "usage: %s ITERATIONS MEMORY_KIB [RUNS]\n", argv[0]);
        return 2;
    }
    ops = strtoull(argv[1], NULL, 10);
    mem = (size_t)strtoull(argv[2], NULL, 10) * 1024;
    if (argc > 3)
        runs = atoi(argv[3]);
    if (runs < 1 || runs > 1000 || sodium_init() < 0)
        return 2;
    if (crypto_pwhash_str_alg(hash, pw, strlen(pw), ops, mem,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        fprintf(stderr, "argon2-time: hashing failed (out of memory?)\n");
        return 1;
    }

    double *t = calloc((size_t)runs, sizeof *t);
    if (t == NULL)
        return 1;
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        if (crypto_pwhash_str_verify(hash, pw, strlen(pw)) != 0) {
            fprintf(stderr, "argon2-time: verification failed\n");
            return 1;
        }
        t[i] = now_ms() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp);
    printf("median_ms=%.3f min_ms=%.3f max_ms=%.3f\n", t[runs / 2], t[0], t[runs - 1]);
    free(t);
    return 0;
}
