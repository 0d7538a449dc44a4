/* test_validate.c — boundary checks on email addresses, passwords and
 * display names. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "validate.h"

#define INVALID "is not a valid email address"

static char *repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

static void email_ok(const char *in, const char *want)
{
    char out[AF_EMAIL_MAX + 1] = "";
    const char *msg = af_email_normalize(in, out);
    is_str(msg, NULL, "'%s' is accepted", in);
    is_str(msg ? NULL : out, want, "'%s' normalises to '%s'", in, want);
}

static void email_bad(const char *in, const char *want, const char *what)
{
    char out[AF_EMAIL_MAX + 1];
    is_str(af_email_normalize(in, out), want, "%s is refused", what);
}

static void test_email(void)
{
    email_ok("alice@example.test", "alice@example.test");
    email_ok("  Alice@Example.TEST \r\n", "alice@example.test");
    email_ok("\tBOB.SMITH+tag@Mail.Example.TEST", "bob.smith+tag@mail.example.test");
    email_ok("o'brien@x.test", "o'brien@x.test");
    email_ok("a_b-c!#$%&*/=?^`{|}~@x-y.test", "a_b-c!#$%&*/=?^`{|}~@x-y.test");
    email_ok("a@b.c", "a@b.c");
    email_ok("1@2.3", "1@2.3");

    email_bad("", "is required", "empty address");
    email_bad(" \t\r\n", "is required", "whitespace-only address");
    email_bad("j\xc3\xb6rg@example.test",
              "must be an ASCII address (internationalised addresses are not supported)",
              "non-ASCII local part");
    email_bad("jorg@b\xc3\xbc"
              "cher.test",
              "must be an ASCII address (internationalised addresses are not supported)",
              "non-ASCII domain");
    email_bad("alice.example.test", INVALID, "missing @");
    email_bad("a@b@x.test", INVALID, "two @");
    email_bad("@x.test", INVALID, "empty local part");
    email_bad("alice@", INVALID, "empty domain");
    email_bad(".alice@x.test", INVALID, "leading dot in the local part");
    email_bad("alice.@x.test", INVALID, "trailing dot in the local part");
    email_bad("al..ice@x.test", INVALID, "double dot in the local part");
    email_bad("alice@x..test", INVALID, "double dot in the domain");
    email_bad("alice@.x.test", INVALID, "leading dot in the domain");
    email_bad("alice@x.test.", INVALID, "trailing dot in the domain");
    email_bad("alice@localhost", INVALID, "domain without a dot");
    email_bad("alice@-x.test", INVALID, "label starting with '-'");
    email_bad("alice@x-.test", INVALID, "label ending with '-'");
    email_bad("alice@x.-test", INVALID, "last label starting with '-'");
    email_bad("alice@x_y.test", INVALID, "'_' in the domain");
    email_bad("alice@[127.0.0.1]", INVALID, "address literal");
    email_bad("a b@x.test", INVALID, "space in the local part");
    email_bad("a;b@x.test", INVALID, "';' in the local part");
    email_bad("\"a\"@x.test", INVALID, "quoted local part");
    email_bad("a'; DROP TABLE users;--@x.test", INVALID, "SQL in the local part");
    email_bad("a$(id)@x.test", INVALID, "shell substitution in the local part");
    email_bad("a<script>@x.test", INVALID, "'<' in the local part");
    email_bad("a\\b@x.test", INVALID, "backslash in the local part");
    email_bad("a,b@x.test", INVALID, "',' in the local part");
    email_bad("a\r\nBcc: x@y.test", INVALID, "CRLF inside an address");
    email_bad("alice@x.test\r\nBcc: x@y.test", INVALID, "header injected after an address");
    email_bad("a@x.test;rm", INVALID, "';' in the domain");

    /* Lengths: local part <= 64, label <= 63, whole address <= 254. */
    char *local64 = repeat("a", 64), *local65 = repeat("a", 65);
    char *l63 = repeat("b", 63), *l64 = repeat("b", 64), *l61 = repeat("c", 61);
    char buf[600];
    snprintf(buf, sizeof buf, "%s@x.test", local64);
    email_ok(buf, buf);
    snprintf(buf, sizeof buf, "%s@x.test", local65);
    email_bad(buf, INVALID, "65-character local part");
    snprintf(buf, sizeof buf, "a@%s.test", l63);
    email_ok(buf, buf);
    snprintf(buf, sizeof buf, "a@%s.test", l64);
    email_bad(buf, INVALID, "64-character label");
    snprintf(buf, sizeof buf, "%s@%s.%s.%s", local64, l63, l63, l61);
    is_int((long)strlen(buf), 254, "a 254-character address is built");
    email_ok(buf, buf);
    snprintf(buf, sizeof buf, "%s@%s.%s.%sc", local64, l63, l63, l61);
    email_bad(buf, "is too long", "255-character address");
    snprintf(buf, sizeof buf, "  %s@%s.%s.%s  ", local64, l63, l63, l61);
    char want[AF_EMAIL_MAX + 1];
    snprintf(want, sizeof want, "%s@%s.%s.%s", local64, l63, l63, l61);
    email_ok(buf, want);
    char *huge = repeat("a", 5000);
    email_bad(huge, "is too long", "5000-character input");
    free(huge);
    free(local64);
    free(local65);
    free(l63);
    free(l64);
    free(l61);
}

static void test_password(void)
{
    char *s;
    is_str(af_password_check("abcdefghijk", 12), "must be at least 12 characters long",
           "11 characters refused with min 12");
    is_str(af_password_check("abcdefghijkl", 12), NULL, "12 characters accepted");
    is_str(af_password_check("", 12), "must be at least 12 characters long", "empty refused");
    is_str(af_password_check("abcdefgh", 8), NULL, "8 characters accepted with min 8");
    is_str(af_password_check("abcdefg", 8), "must be at least 8 characters long",
           "message names the configured minimum");
    is_str(af_password_check("            ", 12), NULL, "12 spaces accepted");
    s = repeat("x", 128);
    is_str(af_password_check(s, 12), NULL, "128 characters accepted");
    free(s);
    s = repeat("x", 129);
    is_str(af_password_check(s, 12), "must be at most 128 characters long",
           "129 characters refused");
    free(s);
    s = repeat("\xf0\x9f\x98\x80", 12);
    is_str(af_password_check(s, 12), NULL, "12 emoji (48 bytes) accepted");
    free(s);
    s = repeat("\xf0\x9f\x98\x80", 11);
    is_str(af_password_check(s, 12), "must be at least 12 characters long",
           "11 emoji (44 bytes) refused");
    free(s);
    s = repeat("\xc3\xa9", 128);
    is_str(af_password_check(s, 12), NULL, "128 two-byte characters (256 bytes) accepted");
    free(s);
    s = repeat("\xf0\x9f\x98\x80", 129);
    is_str(af_password_check(s, 12), "must be at most 128 characters long", "129 emoji refused");
    free(s);
    s = repeat("\xe5\xaf\x86", 12);
    is_str(af_password_check(s, 12), NULL, "12 CJK characters accepted");
    free(s);
}

static void test_name(void)
{
    const char *ctl = "must not contain control characters or line breaks";
    is_str(af_name_check("Ada Lovelace"), NULL, "plain name accepted");
    is_str(af_name_check("Zo\xc3\xab O'Brien-M\xc3\xbcller"), NULL, "accented name accepted");
    is_str(af_name_check("\xe6\x9d\x8e\xe5\xb0\x8f\xe9\xbe\x99"), NULL, "CJK name accepted");
    is_str(af_name_check("\xd8\xb3\xd9\x84\xd9\x85\xd9\x89"), NULL, "Arabic name accepted");
    is_str(af_name_check("Ada \xf0\x9f\x9a\x80"), NULL, "name with an emoji accepted");
    is_str(af_name_check("Ada\xc2\xa0Lovelace"), NULL, "no-break space (U+00A0) accepted");
    is_str(af_name_check(""), NULL, "empty name accepted");
    is_str(af_name_check("Ada\rLovelace"), ctl, "CR refused");
    is_str(af_name_check("Ada\nLovelace"), ctl, "LF refused");
    is_str(af_name_check("Ada\tLovelace"), ctl, "tab refused");
    is_str(af_name_check("Ada\x1b[31m"), ctl, "escape refused");
    is_str(af_name_check("Ada\x7f"), ctl, "DEL refused");
    is_str(af_name_check("Ada\xc2\x85Lovelace"), ctl, "U+0085 (NEL) refused");
    is_str(af_name_check("Ada\xc2\x80"), ctl, "U+0080 refused");
    is_str(af_name_check("Ada\xc2\x9f"), ctl, "U+009F refused");

    char *s = repeat("a", 200);
    is_str(af_name_check(s), NULL, "200 characters accepted");
    free(s);
    s = repeat("a", 201);
    is_str(af_name_check(s), "must be at most 200 characters long", "201 characters refused");
    free(s);
    s = repeat("\xc3\xa9", 200);
    is_str(af_name_check(s), NULL, "200 two-byte characters (400 bytes) accepted");
    free(s);
    s = repeat("\xc3\xa9", 201);
    is_str(af_name_check(s), "must be at most 200 characters long",
           "201 two-byte characters refused");
    free(s);
}

int main(void)
{
    test_email();
    test_password();
    test_name();
    return done_testing();
}
