/* validate.c — field checks and the password policy (see validate.h). */
#include "validate.h"

#include <errno.h>
#include <pwquality.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
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

/* ---- The password policy ----------------------------------------------- */

#define MSG_COMMON "is too common: it is, or is built on, one of the most used passwords"
#define MSG_CONTEXT "must not contain your email address, your name or the name of this service"
#define MSG_SIMPLE "is too simple: avoid sequences, repeats and dictionary words"

/* Shorter words of an email or a name are not screened for: strong
 * passwords contain them by chance. */
#define WORD_MIN 4
/* A password as bytes, with room to spare: AF_PASSWORD_MAX code points. */
#define PW_BYTES (4 * AF_PASSWORD_MAX + 1)

struct af_pwpolicy {
    long min_length;
    char *service;              /* "authflow" and [mail] product_name */
    /* The common-password list: the file's text, each entry lower-cased and
     * NUL-terminated in place, and an open-addressing table of entry
     * offsets + 1 (0: empty slot) keyed by SipHash under a process key. */
    char *list;
    uint32_t *slots;
    size_t mask;                /* the number of slots (a power of two) - 1 */
    unsigned char key[crypto_shorthash_KEYBYTES];
    pwquality_settings_t *pwq;  /* NULL without the dictionary check */
    char *systematic;           /* cracklib's "too systematic" verdict, as worded here */
};

static void ascii_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s + 32);
}

/* The slot holding s, or the empty one where it would go. */
static size_t list_slot(const struct af_pwpolicy *p, const char *s)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, (const unsigned char *)s, strlen(s), p->key);
    memcpy(&v, h, sizeof v);
    size_t i = (size_t)v & p->mask;
    while (p->slots[i] && strcmp(p->list + p->slots[i] - 1, s) != 0)
        i = (i + 1) & p->mask;
    return i;
}

static bool list_has(const struct af_pwpolicy *p, const char *s)
{
    return p->slots && *s && p->slots[list_slot(p, s)];
}

static int list_load(struct af_pwpolicy *p, const char *path, char *err, size_t errlen)
{
    p->list = af_read_file(path);
    if (!p->list) {
        snprintf(err, errlen, "[passwords] common_list: cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    size_t size = strlen(p->list), lines = 1, n = 16;
    if (size >= UINT32_MAX) {
        snprintf(err, errlen, "[passwords] common_list: %s is too large", path);
        return -1;
    }
    for (const char *c = p->list; *c; c++)
        lines += *c == '\n';
    while (n < lines + lines / 3) /* at most 3/4 full */
        n *= 2;
    if (!(p->slots = calloc(n, sizeof *p->slots))) {
        snprintf(err, errlen, "[passwords] common_list: out of memory");
        return -1;
    }
    p->mask = n - 1;
    randombytes_buf(p->key, sizeof p->key);
    for (char *line = p->list, *next; *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : line + strlen(line);
        if (nl)
            *nl = '\0';
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        if (!len || line[0] == '#')
            continue;
        ascii_lower(line);
        size_t i = list_slot(p, line);
        if (!p->slots[i])
            p->slots[i] = (uint32_t)(line - p->list) + 1;
    }
    return 0;
}

/* libpwquality with settings of our own, never /etc/security/pwquality.conf:
 * the length rule is ours (6 is pwquality's floor), no character classes. */
static int dictionary_load(struct af_pwpolicy *p, char *err, size_t errlen)
{
    static const int settings[][2] = {
        {PWQ_SETTING_MIN_LENGTH, 6}, {PWQ_SETTING_DIG_CREDIT, 0}, {PWQ_SETTING_UP_CREDIT, 0},
        {PWQ_SETTING_LOW_CREDIT, 0}, {PWQ_SETTING_OTH_CREDIT, 0}, {PWQ_SETTING_MIN_CLASS, 0},
        {PWQ_SETTING_MAX_REPEAT, 0}, {PWQ_SETTING_MAX_CLASS_REPEAT, 0},
        {PWQ_SETTING_MAX_SEQUENCE, 0}, {PWQ_SETTING_GECOS_CHECK, 0},
        {PWQ_SETTING_DICT_CHECK, 1}, {PWQ_SETTING_USER_CHECK, 1},
    };
    char buf[PWQ_MAX_ERROR_MESSAGE_LEN];
    void *aux = NULL;
    if (!(p->pwq = pwquality_default_settings())) {
        snprintf(err, errlen, "[passwords] dictionary_check: out of memory");
        return -1;
    }
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        int rc = pwquality_set_int_value(p->pwq, settings[i][0], settings[i][1]);
        if (rc != 0) {
            snprintf(err, errlen, "[passwords] dictionary_check: libpwquality: %s",
                     pwquality_strerror(buf, sizeof buf, rc, NULL));
            return -1;
        }
    }
    /* cracklib refuses every password when its dictionary is missing or the
     * process's user has no passwd entry: better not to start. */
    int rc = pwquality_check(p->pwq, "Vq7#kXz2!mWp9", NULL, NULL, &aux);
    if (rc < 0) {
        snprintf(err, errlen,
                 "[passwords] dictionary_check: libpwquality refuses every password here (%s); "
                 "install cracklib-runtime or set it to false",
                 pwquality_strerror(buf, sizeof buf, rc, aux));
        return -1;
    }
    /* How cracklib words its verdict on a plain sequence (see dictionary()). */
    rc = pwquality_check(p->pwq, "abcdefghijklmnop", NULL, NULL, &aux);
    if (rc == PWQ_ERROR_CRACKLIB_CHECK && aux && !(p->systematic = strdup(aux))) {
        snprintf(err, errlen, "[passwords] dictionary_check: out of memory");
        return -1;
    }
    return 0;
}

int af_pwpolicy_load(struct af_pwpolicy **out, const struct af_config *cfg, char *err,
                     size_t errlen)
{
    *out = NULL;
    struct af_pwpolicy *p = calloc(1, sizeof *p);
    const char *product = cfg->product_name ? cfg->product_name : "";
    size_t n = sizeof "authflow " + strlen(product);
    if (!p || !(p->service = malloc(n))) {
        free(p);
        snprintf(err, errlen, "[passwords]: out of memory");
        return -1;
    }
    snprintf(p->service, n, "authflow %s", product);
    p->min_length = cfg->password_min_length;
    if (sodium_init() < 0) {
        snprintf(err, errlen, "[passwords]: libsodium failed to initialise");
        goto fail;
    }
    if (cfg->password_common_list && *cfg->password_common_list &&
        list_load(p, cfg->password_common_list, err, errlen) < 0)
        goto fail;
    if (cfg->password_dictionary_check && dictionary_load(p, err, errlen) < 0)
        goto fail;
    *out = p;
    return 0;
fail:
    af_pwpolicy_free(p);
    return -1;
}

void af_pwpolicy_free(struct af_pwpolicy *p)
{
    if (!p)
        return;
    if (p->pwq)
        pwquality_free_settings(p->pwq);
    free(p->systematic);
    free(p->slots);
    free(p->list);
    free(p->service);
    free(p);
}

static bool core_letter(char c, bool keep_at_dollar)
{
    return (c >= 'a' && c <= 'z') || (keep_at_dollar && (c == '@' || c == '$'));
}

/* s without its leading and trailing digits, symbols, spaces and non-ASCII
 * characters ("p@ssw0rd!2024" -> "p@ssw0rd"); '@' and '$' stay when they
 * may stand for letters. s is lower-cased. */
static void strip_ends(const char *s, bool keep_at_dollar, char out[PW_BYTES])
{
    const char *b = s, *e = s + strlen(s);
    while (b < e && !core_letter(*b, keep_at_dollar))
        b++;
    while (e > b && !core_letter(e[-1], keep_at_dollar))
        e--;
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = '\0';
}

/* Common substitutions undone: "p@55w0rd" -> "password", '1' read as one
 * ('i' or 'l'). */
static void unleet(const char *s, char one, char out[PW_BYTES])
{
    static const char from[] = "013457@$", to[] = "o?eastas"; /* '?': one */
    size_t i = 0;
    for (; s[i]; i++) {
        const char *f = strchr(from, s[i]);
        out[i] = !f ? s[i] : *f == '1' ? one : to[f - from];
    }
    out[i] = '\0';
}

struct pw_forms {
    char lower[PW_BYTES];       /* the password, ASCII lower-cased */
    char leet_i[PW_BYTES], leet_l[PW_BYTES];
    char unit[PW_BYTES], core[PW_BYTES], core_leet[PW_BYTES];
    char word[4 * AF_NAME_MAX + 1];
};

/* Is s, or its core (ends stripped, substitutions undone), on the list? */
static bool common_form(const struct af_pwpolicy *p, struct pw_forms *f, const char *s)
{
    if (list_has(p, s))
        return true;
    for (int keep = 1; keep >= 0; keep--) {
        strip_ends(s, keep, f->core);
        if (list_has(p, f->core))
            return true;
        for (const char *one = "il"; *one; one++) {
            unleet(f->core, *one, f->core_leet);
            if (list_has(p, f->core_leet))
                return true;
        }
    }
    return false;
}

/* The password as it is, or the unit it repeats ("trustno1trustno1"). */
static bool common(const struct af_pwpolicy *p, struct pw_forms *f)
{
    if (!p->slots)
        return false;
    if (common_form(p, f, f->lower))
        return true;
    size_t len = strlen(f->lower);
    for (size_t d = 1; d <= len / 2; d++)
        if (len % d == 0 && memcmp(f->lower + d, f->lower, len - d) == 0) {
            memcpy(f->unit, f->lower, d);
            f->unit[d] = '\0';
            return common_form(p, f, f->unit);
        }
    return false;
}

static bool contains(const struct pw_forms *f, const char *word)
{
    return strstr(f->lower, word) || strstr(f->leet_i, word) || strstr(f->leet_l, word);
}

/* A byte of a word: an ASCII letter, or part of a non-ASCII character. */
static bool word_byte(unsigned char c)
{
    return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c >= 0x80;
}

/* Does the password contain a word of text: a run of letters (ASCII or
 * not) of WORD_MIN code points or more, case aside? */
static bool contains_word_of(struct pw_forms *f, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    while (*s) {
        while (*s && !word_byte(*s))
            s++;
        const unsigned char *b = s;
        size_t cps = 0;
        for (; *s && word_byte(*s); s++)
            cps += (*s & 0xc0) != 0x80;
        size_t len = (size_t)(s - b);
        if (cps >= WORD_MIN && len < sizeof f->word) {
            memcpy(f->word, b, len);
            f->word[len] = '\0';
            ascii_lower(f->word);
            if (contains(f, f->word))
                return true;
        }
    }
    return false;
}

/* Whether more than a quarter of the adjacent pairs of pw are neighbours
 * (ab, ba, 12, ...), case aside. */
static bool systematic(const char *pw)
{
    size_t pairs = 0, steps = 0;
    for (const unsigned char *c = (const unsigned char *)pw; c[0] && c[1]; c++, pairs++) {
        int a = c[0] | (c[0] >= 'A' && c[0] <= 'Z' ? 0x20 : 0);
        int b = c[1] | (c[1] >= 'A' && c[1] <= 'Z' ? 0x20 : 0);
        steps += a - b == 1 || b - a == 1;
    }
    return steps * 4 > pairs;
}

static const char *dictionary(const struct af_pwpolicy *p, const char *pw, const char *user)
{
    void *aux = NULL;
    char buf[PWQ_MAX_ERROR_MESSAGE_LEN];
    int rc = pwquality_check(p->pwq, pw, NULL, user, &aux);
    switch (rc) {
    case PWQ_ERROR_USER_CHECK:
    case PWQ_ERROR_GECOS_CHECK:
    case PWQ_ERROR_BAD_WORDS:
        return MSG_CONTEXT;
    case PWQ_ERROR_MEM_ALLOC:
    case PWQ_ERROR_FATAL_FAILURE:
        /* A screening aid that failed: the other rules still held. */
        af_log(AF_LOG_WARN, "password_dictionary_failed", "error",
               pwquality_strerror(buf, sizeof buf, rc, aux), NULL);
        return NULL;
    case PWQ_ERROR_CRACKLIB_CHECK:
        /* cracklib calls a password systematic when more than 3 + 0.09 *
         * length of its adjacent pairs are neighbours: right for short
         * strings, but a long passphrase of ordinary words ("lenders options
         * almonds cicada") crosses that line by chance. There a quarter of
         * the pairs must be. (The verdict comes before cracklib's dictionary
         * look-up, which passphrases that long never match anyway.) */
        if (p->systematic && aux && !strcmp(aux, p->systematic) && !systematic(pw))
            return NULL;
        return MSG_SIMPLE;
    default:
        return rc < 0 ? MSG_SIMPLE : NULL;
    }
}

const char *af_pwpolicy_check(const struct af_pwpolicy *p, const char *pw, const char *email,
                              const char *name)
{
    const char *why = af_password_check(pw, p->min_length);
    if (why)
        return why;
    struct pw_forms f;
    char local[AF_EMAIL_MAX + 1] = "";
    snprintf(f.lower, sizeof f.lower, "%s", pw);
    ascii_lower(f.lower);
    unleet(f.lower, 'i', f.leet_i);
    unleet(f.lower, 'l', f.leet_l);
    if (email) {
        snprintf(local, sizeof local, "%.*s", (int)strcspn(email, "@"), email);
        ascii_lower(local);
    }
    if (common(p, &f))
        why = MSG_COMMON;
    else if ((strlen(local) >= WORD_MIN && contains(&f, local)) || contains_word_of(&f, local) ||
             (name && contains_word_of(&f, name)) || contains_word_of(&f, p->service))
        why = MSG_CONTEXT;
    else if (p->pwq)
        why = dictionary(p, pw, *local ? local : NULL);
    sodium_memzero(&f, sizeof f);
    return why;
}
