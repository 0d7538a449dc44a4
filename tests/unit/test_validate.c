/* test_validate.c — boundary checks on email addresses, passwords and
 * display names, and the password policy. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"
#include "util.h"
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

#define COMMON "is too common: it is, or is built on, one of the most used passwords"
#define CONTEXT "must not contain your email address, your name or the name of this service"
#define SIMPLE "is too simple: avoid sequences, repeats and dictionary words"
/* 64 code points: spaces, two emoji, a dash and letters outside ASCII. */
#define PASSPHRASE "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln \xf0\x9f\x8c\x89 und Z\xc3\xbcrich, wir " \
    "tr\xc3\xa4umen vom Meer \xf0\x9f\x8c\xb8 \xe2\x80\x94 \xc3\xa7" "a va bien"

static struct af_config policy_config(const char *list, bool dictionary, long min_length)
{
    struct af_config cfg = {0};
    cfg.password_min_length = min_length;
    cfg.password_common_list = (char *)list;
    cfg.password_dictionary_check = dictionary;
    cfg.product_name = "Acme Cloud";
    return cfg;
}

static struct af_pwpolicy *policy(const char *list, bool dictionary, long min_length)
{
    struct af_config cfg = policy_config(list, dictionary, min_length);
    struct af_pwpolicy *p = NULL;
    char err[512];
    if (af_pwpolicy_load(&p, &cfg, err, sizeof err) < 0)
        diag("af_pwpolicy_load: %s", err);
    return p;
}

/* The loader, on a small list of its own. */
static void test_policy_list(void)
{
    char path[] = "/tmp/af-test-list.XXXXXX";
    int fd = mkstemp(path);
    const char text[] = "# a comment, not an entry\n\nHunter2Hunter\r\ndragon\nDRAGON\nmonkey";
    ok(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1), "list written");
    close(fd);
    struct af_pwpolicy *p = policy(path, false, 12);
    ok(p != NULL, "a list with comments, CRLF and no final newline loads");
    if (p) {
        is_str(af_pwpolicy_check(p, "hunter2hunter", NULL, NULL), COMMON, "entry found (CRLF stripped)");
        is_str(af_pwpolicy_check(p, "HUNTER2HUNTER", NULL, NULL), COMMON, "case aside");
        is_str(af_pwpolicy_check(p, "Dr4g0n!!!!!!1", NULL, NULL), COMMON, "its core: ends stripped, leet undone");
        is_str(af_pwpolicy_check(p, "$$monkey$$$$$", NULL, NULL), COMMON, "last line without newline");
        is_str(af_pwpolicy_check(p, "# a comment, not an entry", NULL, NULL), NULL, "comment lines are no entries");
        is_str(af_pwpolicy_check(p, "dragonfly at dawn", NULL, NULL), NULL, "an entry inside a longer password is fine");
        is_str(af_pwpolicy_check(p, "123456789012", NULL, NULL), NULL,
               "without the dictionary check a digit sequence is only screened by the list");
        af_pwpolicy_free(p);
    }
    unlink(path);

    struct af_config cfg = policy_config("/nonexistent/common-passwords.txt", false, 12);
    char err[512] = "";
    p = (struct af_pwpolicy *)1;
    ok(af_pwpolicy_load(&p, &cfg, err, sizeof err) < 0 && p == NULL, "a missing list is an error");
    ok(strstr(err, "[passwords] common_list") && strstr(err, "/nonexistent/common-passwords.txt"),
       "which names the key and the file: %s", err);
    p = policy("", false, 12);
    ok(p != NULL, "an empty common_list: no list");
    if (p) {
        is_str(af_pwpolicy_check(p, "password1234", NULL, NULL), NULL, "then nothing is common");
        is_str(af_pwpolicy_check(p, "abcdefghijk", NULL, NULL), "must be at least 12 characters long",
               "the length rule still holds");
        af_pwpolicy_free(p);
    }
}

/* The shipped list and libpwquality, as the programs load them. */
static void test_policy(void)
{
    const char *srcdir = getenv("AUTHFLOW_SRCDIR");
    char list[4096];
    snprintf(list, sizeof list, "%s/etc/common-passwords.txt", srcdir ? srcdir : ".");
    struct af_pwpolicy *p = policy(list, true, 12);
    if (!ok(p != NULL, "the shipped list and the dictionary check load"))
        return;
    const char *email = "margarethamilton@example.com", *name = "Margaret Hamilton";
    static const char *const common[] = {
        "password1234", "Password123!", "P@ssw0rd2024", "iloveyou2024", "sunshine2023",
        "letmein12345", "qwertyuiop12", "@dmin1234567", "!!Dragon2023!!", "trustno1trustno1",
    };
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        is_str(af_pwpolicy_check(p, common[i], email, name), COMMON, "'%s' is common", common[i]);

    is_str(af_pwpolicy_check(p, "margarethamilton", email, name), CONTEXT, "the email's local part");
    is_str(af_pwpolicy_check(p, "margarethamilton2024", email, name), CONTEXT, "... with digits appended");
    is_str(af_pwpolicy_check(p, "M4rg4r3th4m1lt0n!", email, name), CONTEXT, "... in leet");
    is_str(af_pwpolicy_check(p, "my name is hamilton", "m.hamilton@example.com", NULL), CONTEXT,
           "a dot-separated part of the local part");
    is_str(af_pwpolicy_check(p, "hamilton rocks forever", NULL, name), CONTEXT, "a word of the name");
    is_str(af_pwpolicy_check(p, "Gr\xc3\xa1" "inne rocks forever", NULL, "Gr\xc3\xa1inne Mhaol"), CONTEXT,
           "a word of the name with a non-ASCII letter");
    is_str(af_pwpolicy_check(p, "bo li runs the show", NULL, "Bo Li"), NULL,
           "name words under 4 characters are not screened for");
    is_str(af_pwpolicy_check(p, "acme cloud is great", NULL, NULL), CONTEXT, "the product name");
    is_str(af_pwpolicy_check(p, "my authflow secret", NULL, NULL), CONTEXT, "the service's own name");

    is_str(af_pwpolicy_check(p, "123456789012", email, name), SIMPLE, "a digit sequence");
    is_str(af_pwpolicy_check(p, "abcdefghijklmn", email, name), SIMPLE, "a letter sequence");
    is_str(af_pwpolicy_check(p, "aaaaaaaaaaaa", email, name), SIMPLE, "a repeat");
    is_str(af_pwpolicy_check(p, "            ", email, name), SIMPLE, "12 spaces");
    char *s = repeat("\xf0\x9f\x98\x80", 12);
    is_str(af_pwpolicy_check(p, s, email, name), SIMPLE, "the same emoji 12 times");
    free(s);

    is_str(af_pwpolicy_check(p, "Vq7#kXz2!mW", email, name), "must be at least 12 characters long",
           "11 code points refused");
    s = repeat("\xc3\xa9", 11);
    is_str(af_pwpolicy_check(p, s, email, name), "must be at least 12 characters long",
           "11 two-byte code points (22 bytes) refused");
    free(s);
    s = repeat("x", 129);
    is_str(af_pwpolicy_check(p, s, email, name), "must be at most 128 characters long", "129 refused");
    free(s);
    is_str(af_pwpolicy_check(p, "Vq7#kXz2!mWp", email, name), NULL, "12 uncommon characters accepted");
    ok(af_utf8_len(PASSPHRASE) == 64, "the passphrase has 64 code points");
    is_str(af_pwpolicy_check(p, PASSPHRASE, email, name), NULL,
           "a 64-code-point passphrase with spaces, emoji and non-ASCII letters accepted");
    is_str(af_pwpolicy_check(p, "correct horse battery staple", email, name), NULL, "a classic passphrase");
    /* cracklib alone calls these "too simplistic/systematic". */
    is_str(af_pwpolicy_check(p, "lenders options almonds cicada", email, name), NULL,
           "a passphrase whose words hold several neighbouring letters");
    is_str(af_pwpolicy_check(p, "vivid lantern 23456 river 89ab", email, name), NULL,
           "... and digits");
    is_str(af_pwpolicy_check(p, "1234567890123456789012345678", email, name), SIMPLE,
           "a long digit sequence still refused");
    static const char *const scripts[] = {
        "\xd0\x9c\xd0\xbe\xd0\xb9 \xd0\xba\xd0\xbe\xd1\x82 \xd0\xbb\xd1\x8e\xd0\xb1\xd0\xb8\xd1\x82 "
        "\xd1\x81\xd0\xbf\xd0\xb0\xd1\x82\xd1\x8c",                          /* Russian */
        "\xe3\x81\x99\xe3\x81\xb9\xe3\x81\xa6\xe3\x81\xae\xe7\x8c\xab\xe3\x81\xaf\xe6\x9c\x88"
        "\xe6\x9b\x9c\xe6\x97\xa5\xe3\x81\xab\xe7\x9c\xa0\xe3\x82\x8b",      /* Japanese */
        "\xf0\x9f\x90\xb1\xf0\x9f\x90\xb6\xf0\x9f\xa6\x8a\xf0\x9f\x90\xbb\xf0\x9f\x90\xbc\xf0\x9f\x90\xa8"
        "\xf0\x9f\x90\xaf\xf0\x9f\xa6\x81\xf0\x9f\x90\xae\xf0\x9f\x90\xb7\xf0\x9f\x90\xb8\xf0\x9f\x90\xb5",
    };
    for (size_t i = 0; i < sizeof scripts / sizeof scripts[0]; i++)
        is_str(af_pwpolicy_check(p, scripts[i], email, name), NULL, "non-Latin passphrase %zu accepted", i + 1);

    /* Time per check: list look-ups, context words and libpwquality. */
    static const char *const timed[] = {
        PASSPHRASE, "correct horse battery staple", "Vq7#kXz2!mWp", "password1234", "Tr0ub4dor&3xyz",
    };
    struct timespec t0, t1;
    int n = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 20; round++)
        for (size_t i = 0; i < sizeof timed / sizeof timed[0]; i++, n++)
            af_pwpolicy_check(p, timed[i], email, name);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) / n;
    diag("%.0f us per check on average", us);
    ok(us < 50000, "a check takes well under the password hash's time");
    af_pwpolicy_free(p);

    p = policy(list, false, 8);
    if (ok(p != NULL, "min_length 8, no dictionary check")) {
        is_str(af_pwpolicy_check(p, "Vq7#kXz2", NULL, NULL), NULL, "8 characters accepted with min 8");
        is_str(af_pwpolicy_check(p, "Vq7#kXz", NULL, NULL), "must be at least 8 characters long",
               "7 refused, naming the minimum");
        is_str(af_pwpolicy_check(p, "password", NULL, NULL), COMMON, "the list still applies");
        is_str(af_pwpolicy_check(p, "123456789012", NULL, NULL), NULL,
               "sequences are the dictionary check's");
        af_pwpolicy_free(p);
    }
}

int main(void)
{
    test_email();
    test_password();
    test_name();
    test_policy_list();
    test_policy();
    return done_testing();
}
