/* tap.h — a tiny Test Anything Protocol producer for the unit tests.
 *
 * Header-only: each test program is one translation unit. Output is TAP 13
 * as automake's tap-driver.sh reads it: "ok N - what" / "not ok N - what",
 * diagnostics as "# ..." lines, and the plan "1..N" either first (plan) or
 * last (done_testing without a plan). done_testing() returns the exit code:
 * 0 only when every test passed and the count matches the plan. */
#ifndef AF_TAP_H
#define AF_TAP_H
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int tap_run, tap_failed, tap_planned = -1;

static inline void plan(int n)
{
    tap_planned = n;
    printf("1..%d\n", n);
    fflush(stdout);
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

static inline bool tap_vok(bool cond, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static inline bool tap_vok(bool cond, const char *fmt, va_list ap)
{
    char what[512];
    vsnprintf(what, sizeof what, fmt, ap);
    /* A '#' would start a TAP directive; a newline would end the line. */
    for (char *p = what; *p; p++)
        if (*p == '#' || *p == '\n' || *p == '\r')
            *p = ' ';
    tap_run++;
    if (!cond)
        tap_failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", tap_run, what);
    fflush(stdout);
    return cond;
}

static inline bool ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool ok(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool r = tap_vok(cond, fmt, ap);
    va_end(ap);
    return r;
}

/* Equal strings; two NULLs are equal, NULL and a string are not. */
static inline bool is_str(const char *got, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool is_str(const char *got, const char *want, const char *fmt, ...)
{
    bool same = (!got && !want) || (got && want && strcmp(got, want) == 0);
    va_list ap;
    va_start(ap, fmt);
    bool r = tap_vok(same, fmt, ap);
    va_end(ap);
    if (!r) {
        diag("     got: %s%s%s", got ? "'" : "", got ? got : "NULL", got ? "'" : "");
        diag("expected: %s%s%s", want ? "'" : "", want ? want : "NULL", want ? "'" : "");
    }
    return r;
}

static inline bool is_int(long got, long want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool is_int(long got, long want, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool r = tap_vok(got == want, fmt, ap);
    va_end(ap);
    if (!r) {
        diag("     got: %ld", got);
        diag("expected: %ld", want);
    }
    return r;
}

static inline int done_testing(void)
{
    if (tap_planned < 0)
        printf("1..%d\n", tap_run);
    else if (tap_planned != tap_run)
        diag("planned %d tests but ran %d", tap_planned, tap_run);
    if (tap_failed)
        diag("failed %d of %d tests", tap_failed, tap_run);
    fflush(stdout);
    return tap_failed || (tap_planned >= 0 && tap_planned != tap_run) ? 1 : 0;
}

#endif
