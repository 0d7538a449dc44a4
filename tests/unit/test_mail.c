/* test_mail.c — the pure parts of mail.c: quoted-printable bodies, RFC 2047
 * header values, addr-specs, template loading and message rendering.
 *
 * Rendered messages are taken apart here the way a mail reader would: the
 * header block up to the first empty line, unfolded; the MIME parts split on
 * their boundary; quoted-printable and base64 encoded-words decoded by the
 * small decoders below (written independently of mail.c).
 *
 * The real templates are read from $AUTHFLOW_SRCDIR/etc/templates (the test
 * runs from the build directory with AUTHFLOW_SRCDIR exported; "." when
 * unset). Broken templates are written into a mkdtemp directory under /tmp.
 */
#define _GNU_SOURCE /* asprintf, strndup */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "mail.h"
#include "tap.h"

#define NOW 1700000000 /* Tue, 14 Nov 2023 22:13:20 +0000 */
#define DATE "Tue, 14 Nov 2023 22:13:20 +0000"

/* ------------------------------------------------------------ helpers */

/* s with every lone LF turned into CRLF (lone CRs stay). */
static char *crlf(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(2 * n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            *o++ = '\r';
        *o++ = s[i];
    }
    *o = '\0';
    return out;
}

static char *repeat(const char *unit, size_t times, const char *tail)
{
    size_t u = strlen(unit), t = tail ? strlen(tail) : 0;
    char *s = malloc(u * times + t + 1), *p = s;
    for (size_t i = 0; i < times; i++, p += u)
        memcpy(p, unit, u);
    memcpy(p, tail ? tail : "", t);
    p[t] = '\0';
    return s;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Checks quoted-printable output against RFC 2045: CRLF line ends only,
 * lines of at most 76 characters, only printable ASCII, space and tab, '='
 * followed by two upper-case hex digits or ending a line (a soft break),
 * no white space at the end of a line. Writes why not into why. */
static bool qp_well_formed(const char *qp, char *why, size_t whylen)
{
    const char *line = qp;
    for (;;) {
        const char *eol = strstr(line, "\r\n");
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > 76) {
            snprintf(why, whylen, "a line of %zu characters: %.*s", len, (int)len, line);
            return false;
        }
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c == '\r' || c == '\n') {
                snprintf(why, whylen, "a bare %s at column %zu", c == '\r' ? "CR" : "LF", i);
                return false;
            }
            if (!((c >= 33 && c <= 126) || c == ' ' || c == '\t')) {
                snprintf(why, whylen, "a raw byte 0x%02X at column %zu", c, i);
                return false;
            }
            if (c == '=' && i + 1 != len) {
                if (i + 2 >= len || hexval(line[i + 1]) < 0 || hexval(line[i + 2]) < 0) {
                    snprintf(why, whylen, "a '=' not followed by two hex digits: %.*s", (int)len, line);
                    return false;
                }
            }
        }
        if (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t')) {
            snprintf(why, whylen, "white space at the end of a line: '%.*s'", (int)len, line);
            return false;
        }
        if (!eol)
            return true;
        line = eol + 2;
    }
}

/* Decodes quoted-printable: "=XX" bytes, "=" CRLF soft breaks. NULL when
 * malformed. */
static char *qp_decode(const char *qp)
{
    size_t n = strlen(qp);
    char *out = malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (qp[i] != '=') {
            *o++ = qp[i];
            continue;
        }
        if (qp[i + 1] == '\r' && qp[i + 2] == '\n') {
            i += 2;
            continue;
        }
        if (qp[i + 1] == '\0') { /* a soft break ending the text */
            break;
        }
        int h = hexval(qp[i + 1]), l = h < 0 ? -1 : hexval(qp[i + 2]);
        if (h < 0 || l < 0) {
            free(out);
            return NULL;
        }
        *o++ = (char)(h * 16 + l);
        i += 2;
    }
    *o = '\0';
    return out;
}

/* af_mail_qp(in): well formed, and decoding it gives in back with LF→CRLF. */
static void qp_roundtrip(const char *in, const char *what)
{
    char why[256] = "";
    char *qp = af_mail_qp(in);
    ok(qp && qp_well_formed(qp, why, sizeof why), "qp %s: well formed", what);
    if (why[0])
        diag("%s", why);
    char *dec = qp ? qp_decode(qp) : NULL;
    char *want = crlf(in);
    ok(dec && !strcmp(dec, want), "qp %s: decodes back to the input", what);
    if (!dec || strcmp(dec, want))
        diag("qp: %s", qp ? qp : "NULL");
    free(want);
    free(dec);
    free(qp);
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with padding into out (appended at *outlen). */
static bool b64_decode(const char *s, size_t n, char *out, size_t *outlen)
{
    if (n % 4)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if ((v[k] = b64val(s[i + k])) < 0 || pad) {
                return false;
            }
        }
        unsigned long w = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                          (unsigned long)v[2] << 6 | (unsigned long)v[3];
        out[(*outlen)++] = (char)(w >> 16);
        if (pad < 2)
            out[(*outlen)++] = (char)(w >> 8 & 255);
        if (pad < 1)
            out[(*outlen)++] = (char)(w & 255);
    }
    return true;
}

/* Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF. */
static bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    while (p < e) {
        unsigned c = *p;
        size_t k = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
                 : c >= 0xF0 && c <= 0xF4 ? 3 : 9;
        if (k == 9 || k >= (size_t)(e - p))
            return false;
        for (size_t j = 1; j <= k; j++)
            if ((p[j] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) ||
            (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
            return false;
        p += k + 1;
    }
    return true;
}

struct words {
    char text[4096];    /* the decoded words, concatenated */
    size_t len;
    int count, longest; /* number of words, longest word's length */
    bool each_utf8;     /* every word decodes to valid UTF-8 on its own */
};

/* Decodes a header value made only of "=?UTF-8?B?...?=" words separated by
 * "\r\n " folds (or by single spaces once unfolded). False when anything
 * else is in it. */
static bool decode_words(const char *v, struct words *w)
{
    memset(w, 0, sizeof *w);
    w->each_utf8 = true;
    const char *p = v;
    while (*p) {
        if (w->count > 0) {
            if (!strncmp(p, "\r\n ", 3))
                p += 3;
            else if (*p == ' ')
                p++;
            else
                return false;
        }
        if (strncmp(p, "=?UTF-8?B?", 10))
            return false;
        const char *b = p + 10, *e = strstr(b, "?=");
        if (!e)
            return false;
        int wl = (int)(e + 2 - p);
        if (wl > w->longest)
            w->longest = wl;
        size_t before = w->len;
        if ((size_t)(e - b) / 4 * 3 + w->len >= sizeof w->text ||
            !b64_decode(b, (size_t)(e - b), w->text, &w->len))
            return false;
        if (!utf8_valid(w->text + before, w->len - before))
            w->each_utf8 = false;
        w->count++;
        p = e + 2;
    }
    w->text[w->len] = '\0';
    return w->count > 0;
}

/* ------------------------------------------------------------ af_mail_qp */

static void qp_is(const char *in, const char *want, const char *what)
{
    char *got = af_mail_qp(in);
    is_str(got, want, "qp: %s", what);
    free(got);
}

static void test_qp(void)
{
    qp_is("Hello, world! (1+1) [x] {y} ~`'\"?", "Hello, world! (1+1) [x] {y} ~`'\"?",
          "printable ASCII passes through");
    qp_is("a=b", "a=3Db", "'=' becomes =3D");
    qp_is("==", "=3D=3D", "two '=' in a row");
    qp_is("caf\xc3\xa9", "caf=C3=A9", "UTF-8 e-acute becomes =C3=A9");
    qp_is("\xe2\x82\xac 5", "=E2=82=AC 5", "a 3-byte sequence is encoded byte by byte");
    qp_is("\xf0\x9f\x94\x91", "=F0=9F=94=91", "a 4-byte sequence is encoded byte by byte");
    qp_is("a\x01" "b\x7f" "c", "a=01b=7Fc", "control characters and DEL are encoded");
    qp_is("a\rb", "a=0Db", "a lone CR is encoded, not passed as a line break");
    qp_is("a\nb\n", "a\r\nb\r\n", "LF line ends become CRLF");
    qp_is("a\r\nb\r\n", "a\r\nb\r\n", "CRLF line ends stay CRLF");
    qp_is("a\r\nb\nc", "a\r\nb\r\nc", "mixed LF and CRLF, no final line end");
    qp_is("\n\n", "\r\n\r\n", "empty lines");
    qp_is("", "", "empty input gives empty output");
    qp_is("a b  c\td", "a b  c\td", "inner spaces and tabs are kept");
    qp_is("end \n", "end=20\r\n", "a space ending a line (LF) becomes =20");
    qp_is("end \r\n", "end=20\r\n", "a space ending a line (CRLF) becomes =20");
    qp_is("end\t\n", "end=09\r\n", "a tab ending a line becomes =09");
    qp_is("end  \nx", "end =20\r\nx", "only the last of trailing spaces is encoded");
    qp_is("end ", "end=20", "a space ending the input becomes =20");
    qp_is(" \n", "=20\r\n", "a line of one space");

    /* Exact soft breaks: a '=' at the end, 76 characters at most. */
    char *x80 = repeat("x", 80, NULL);
    char *want = repeat("x", 75, "=\r\nxxxxx");
    qp_is(x80, want, "80 characters: soft break after 75, the '=' makes 76");
    free(x80);
    free(want);

    static const size_t lens[] = {74, 75, 76, 77, 78, 151, 152, 153};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char what[96];
        char *s = repeat("x", lens[i], "\n");
        snprintf(what, sizeof what, "a line of exactly %zu characters", lens[i]);
        qp_roundtrip(s, what);
        free(s);
        s = repeat("x", lens[i] - 1, "=\nnext");
        snprintf(what, sizeof what, "a line of %zu characters ending in '='", lens[i]);
        qp_roundtrip(s, what);
        free(s);
        s = repeat("x", lens[i] - 1, " \nnext");
        snprintf(what, sizeof what, "a line of %zu characters ending in a space", lens[i]);
        qp_roundtrip(s, what);
        free(s);
    }
    char *s = repeat("x", 75, "\n");
    want = repeat("x", 75, "\r\n");
    qp_is(s, want, "a line of 75 characters needs no soft break");
    free(s);
    free(want);

    s = repeat("word ", 200, "\n");
    qp_roundtrip(s, "a 1000-character line of words");
    free(s);
    s = repeat("\xc3\xa9", 100, "\n");
    qp_roundtrip(s, "a run of 100 encoded characters");
    free(s);
    s = repeat("=", 100, NULL);
    qp_roundtrip(s, "a run of 100 '=' without line end");
    free(s);
    s = repeat("a\xe2\x82\xac", 60, "\r\n");
    qp_roundtrip(s, "mixed plain and encoded bytes, CRLF");
    free(s);
    s = repeat(" ", 100, "\n");
    qp_roundtrip(s, "a line of 100 spaces");
    free(s);
    s = repeat("\t", 30, " \nx");
    qp_roundtrip(s, "tabs then a trailing space");
    free(s);

    qp_roundtrip("Your code is:\n\n    123456\n", "a 6-digit code");
    qp_roundtrip("Open https://auth.example.test/reset?token=AbC-_9=&next=%2Fhome&x=1\n",
                 "a URL with '=' and '&'");
    qp_roundtrip("https://auth.example.test/verify?t=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa==&a=b\n",
                 "a URL longer than a line with '==' at a break");
    qp_roundtrip("Hello Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x94\x91,\r\n \r\n\t\n=\n",
                 "UTF-8, blank-looking lines and a lone '='");
    qp_roundtrip("--=_af_boundary\nContent-Type: text/html\n", "a fake MIME boundary");

    char *b = af_mail_qp("--=_af_x\n");
    ok(b && !strstr(b, "=_af_x"), "a boundary-like '=_' never appears as is in the output");
    free(b);
}

/* ------------------------------------------------------------ af_mail_header_value */

/* Every CR or LF in v is part of a "\r\n " fold followed by another word. */
static bool folds_only(const char *v)
{
    for (const char *p = v; (p = strpbrk(p, "\r\n")); p++) {
        if (*p == '\n' || strncmp(p, "\r\n =?", 5) != 0)
            return false;
        p++; /* past the LF of the fold */
    }
    return true;
}

static void hv_words(const char *in, const char *want_decoded, const char *what)
{
    char *v = af_mail_header_value(in);
    struct words w;
    bool parsed = v && decode_words(v, &w);
    ok(parsed, "header %s: only encoded-words and folds", what);
    if (!parsed) {
        diag("value: %s", v ? v : "NULL");
        free(v);
        return;
    }
    ok(folds_only(v), "header %s: CR and LF only in the \"\\r\\n \" folds between words", what);
    ok(w.longest <= 75, "header %s: every encoded-word at most 75 characters (longest %d)", what,
       w.longest);
    ok(w.each_utf8, "header %s: every word is valid UTF-8 on its own", what);
    is_str(w.text, want_decoded, "header %s: decodes to the expected text", what);
    free(v);
}

static void test_header_value(void)
{
    char *v = af_mail_header_value("Your Acme verification code");
    is_str(v, "Your Acme verification code", "printable ASCII is kept as is");
    free(v);
    v = af_mail_header_value("\"Doe, John\" <j@x> (x) =?;:!~");
    is_str(v, "\"Doe, John\" <j@x> (x) =?;:!~", "printable ASCII specials are kept as is");
    free(v);
    v = af_mail_header_value("");
    is_str(v, "", "empty value stays empty");
    free(v);

    hv_words("x\r\nBcc: evil@example.test", "x  Bcc: evil@example.test",
             "CRLF + Bcc injection");
    v = af_mail_header_value("x\r\nBcc: evil@example.test");
    {
        /* Unfolded, no line of the value starts with "Bcc:". */
        bool bcc_line = false;
        for (const char *p = v; p && *p; p++)
            if ((p == v || p[-1] == '\n') && !strncasecmp(p, "Bcc:", 4))
                bcc_line = true;
        ok(v && !bcc_line && !strstr(v, "Bcc:"), "injected Bcc: is not visible in the value");
    }
    free(v);
    hv_words("a\nb", "a b", "a lone LF");
    hv_words("a\rb", "a b", "a lone CR");
    hv_words("tab\there", "tab here", "a tab");
    hv_words("nul-free \x01\x1f\x7f end", "nul-free     end", "other control characters");
    hv_words("Zo\xc3\xab", "Zo\xc3\xab", "non-ASCII");

    /* Multi-byte sequences at every offset around the 45-byte word limit. */
    for (int pre = 0; pre < 4; pre++) {
        char what[64];
        char *s = repeat("\xc3\xa9", 40, NULL), *t;
        if (asprintf(&t, "%.*s%s", pre, "abc", s) < 0)
            abort();
        snprintf(what, sizeof what, "%d ASCII then 40 two-byte characters", pre);
        hv_words(t, t, what);
        free(t);
        free(s);
        s = repeat("\xe6\x97\xa5", 40, NULL);
        if (asprintf(&t, "%.*s%s", pre, "abc", s) < 0)
            abort();
        snprintf(what, sizeof what, "%d ASCII then 40 three-byte characters", pre);
        hv_words(t, t, what);
        free(t);
        free(s);
        s = repeat("\xf0\x9f\x94\x91", 30, NULL);
        if (asprintf(&t, "%.*s%s", pre, "abc", s) < 0)
            abort();
        snprintf(what, sizeof what, "%d ASCII then 30 four-byte characters", pre);
        hv_words(t, t, what);
        free(t);
        free(s);
    }

    char *s = repeat("a", 900, NULL);
    v = af_mail_header_value(s);
    is_str(v, s, "900 ASCII characters are kept as is");
    free(v);
    free(s);
    s = repeat("a", 901, NULL);
    hv_words(s, s, "901 ASCII characters");
    free(s);
    s = repeat("0123456789", 100, NULL);
    hv_words(s, s, "1000 ASCII characters");
    free(s);
}

/* ------------------------------------------------------------ af_mail_addr_spec */

static void addr_is(const char *in, const char *want, const char *what)
{
    char out[320] = "untouched";
    bool r = af_mail_addr_spec(in, out, sizeof out);
    if (want)
        ok(r && !strcmp(out, want), "addr_spec %s -> %s", what, want);
    else
        ok(!r, "addr_spec %s is refused", what);
    if (want && (!r || strcmp(out, want)))
        diag("returned %s, out '%s'", r ? "true" : "false", out);
}

static void test_addr_spec(void)
{
    addr_is("Name <a@b.example>", "a@b.example", "name and angle address");
    addr_is("a@b.example", "a@b.example", "bare address");
    addr_is("  a@b  ", "a@b", "bare address with spaces around");
    addr_is("\t a@b \t", "a@b", "bare address with tabs around");
    addr_is("<a@b.example>", "a@b.example", "angle address without a name");
    addr_is("\"Doe, John\" <john@example.test>", "john@example.test", "quoted name with a comma");
    addr_is("\"Doe, John, Jr.\" <john.jr+tag@sub.example.test>", "john.jr+tag@sub.example.test",
            "quoted name with commas, plus and dots in the address");
    addr_is("\"a <b@c> d\" <x@y.test>", "x@y.test", "quoted name holding an angle address");

    addr_is("no-at.example", NULL, "no '@'");
    addr_is("Name <no-at.example>", NULL, "no '@' in angle address");
    addr_is("", NULL, "empty");
    addr_is("   ", NULL, "only spaces");
    addr_is("Name <>", NULL, "empty angle address");
    addr_is("Name <a@b.example", NULL, "'<' without '>'");
    addr_is("a@b.example>", NULL, "'>' without '<'");
    addr_is("a b@c.example", NULL, "space inside the address");
    addr_is("Name <a b@c.example>", NULL, "space inside the angle address");
    addr_is("a\tb@c.example", NULL, "tab inside the address");
    addr_is("a@b.example\r\nBcc: evil@example.test", NULL, "CRLF + Bcc after the address");
    addr_is("Name <a@b.example\r\n>", NULL, "CRLF inside the angle address");
    addr_is("a\x01@b.example", NULL, "control character inside the address");
    addr_is("a\x7f@b.example", NULL, "DEL inside the address");
    addr_is("a,b@c.example", NULL, "comma inside the address");
    addr_is("a@b.example,evil@example.test", NULL, "two addresses");
    addr_is("a\"b@c.example", NULL, "quote inside the address");
    addr_is("Name <\"a\"@b.example>", NULL, "quoted local part");
    addr_is("a;b@c.example", NULL, "';' inside the address");
    addr_is("a(b)@c.example", NULL, "comment inside the address");
    addr_is("a\\b@c.example", NULL, "backslash inside the address");
    addr_is("caf\xc3\xa9@b.example", NULL, "non-ASCII inside the address");
    addr_is("@b.example", NULL, "'@' first");
    addr_is("a@", NULL, "'@' last");
    addr_is("Name <@b.example>", NULL, "'@' first in angle address");
    addr_is("Name <a@>", NULL, "'@' last in angle address");

    char out[12];
    ok(af_mail_addr_spec("a@b.example", out, 12) && !strcmp(out, "a@b.example"),
       "addr_spec: 11 characters fit in 12 bytes");
    ok(!af_mail_addr_spec("a@b.example", out, 11), "addr_spec: 11 characters do not fit in 11 bytes");
    ok(!af_mail_addr_spec("Name <a@b.example>", out, 5), "addr_spec: too long for outlen");
    char *big = repeat("a", 400, "@b.example");
    char out320[320];
    ok(!af_mail_addr_spec(big, out320, sizeof out320), "addr_spec: 410 characters into 320 bytes");
    free(big);
}

/* ------------------------------------------------------------ templates */

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        diag("cannot write %s", path);
        abort();
    }
}

static void remove_file(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
}

/* A valid set of templates: {{name}} in a subject, an HTML alternative for
 * one kind, CRLF line ends in another. */
static void write_good_templates(void)
{
    write_file("verify_email.txt", "Subject: Code for {{name}}\n\n"
                                   "Hi {{name}}, code {{code}} ({{minutes}} min) for {{email}} "
                                   "at {{product}}.\n");
    write_file("verify_email.html", "<p>{{name}} {{code}} {{link}}</p>\n");
    write_file("password_reset.txt", "Subject: Reset\n\n{{link}}\n");
    remove_file("password_reset.html");
    write_file("password_changed.txt", "Subject: Changed\r\n\r\nHello {{name}},\r\nchanged.\r\n");
    remove_file("password_changed.html");
    write_file("invite.txt", "Subject: Welcome\n\n{{link}} works for {{days}} days.\n");
    remove_file("invite.html");
    write_file("test.txt", "Subject: Test\n\nTest from {{product}}.");
    remove_file("test.html");
}

/* Loading fails, and the message names each of w1 and w2. */
static void load_fails(const char *what, const char *w1, const char *w2)
{
    char err[512] = "";
    struct af_templates *t = af_templates_load(tmpdir, err, sizeof err);
    ok(!t, "load: %s is refused", what);
    ok(strstr(err, w1) && (!w2 || strstr(err, w2)), "load: %s: message names %s%s%s", what, w1,
       w2 ? " and " : "", w2 ? w2 : "");
    if (!strstr(err, w1) || (w2 && !strstr(err, w2)))
        diag("message: %s", err);
    af_templates_free(t);
    write_good_templates();
}

static void test_templates_load(const char *real_dir)
{
    char err[512] = "";
    struct af_templates *t = af_templates_load(real_dir, err, sizeof err);
    ok(t != NULL, "the real templates in %s load", real_dir);
    if (!t)
        diag("message: %s", err);
    af_templates_free(t);

    err[0] = '\0';
    t = af_templates_load("/nonexistent/authflow-templates", err, sizeof err);
    ok(!t && strstr(err, "/nonexistent/authflow-templates/"), "a missing directory is refused, named");
    af_templates_free(t);

    write_good_templates();
    err[0] = '\0';
    t = af_templates_load(tmpdir, err, sizeof err);
    ok(t != NULL, "the test templates load (no .html for four kinds, CRLF for one)");
    if (!t)
        diag("message: %s", err);
    af_templates_free(t);

    remove_file("verify_email.txt");
    load_fails("a missing verify_email.txt", "verify_email.txt", NULL);
    remove_file("test.txt");
    load_fails("a missing test.txt (the last kind)", "test.txt", NULL);
    remove_file("password_changed.txt");
    load_fails("a missing password_changed.txt", "password_changed.txt", NULL);
    write_file("password_reset.txt", "Reset\n\n{{link}}\n");
    load_fails("a first line without \"Subject:\"", "password_reset.txt", "Subject");
    write_file("password_reset.txt", "\nSubject: Reset\n\n{{link}}\n");
    load_fails("an empty line before \"Subject:\"", "password_reset.txt", NULL);
    write_file("password_reset.txt", "Subject: Reset\n{{link}}\n");
    load_fails("no empty line after the subject", "password_reset.txt", NULL);
    write_file("password_reset.txt", "Subject: Reset\r\n{{link}}\r\n");
    load_fails("no empty line after the subject (CRLF)", "password_reset.txt", NULL);
    write_file("password_reset.txt", "Subject: Reset");
    load_fails("a subject line without a line end", "password_reset.txt", NULL);
    write_file("password_reset.txt", "");
    load_fails("an empty file", "password_reset.txt", NULL);
    write_file("test.txt", "Subject: Test\n\nHello {{nope}}.\n");
    load_fails("an unknown placeholder in the body", "test.txt", "{{nope}}");
    write_file("test.txt", "Subject: Test {{nope}}\n\nHello.\n");
    load_fails("an unknown placeholder in the subject", "test.txt", "{{nope}}");
    write_file("verify_email.html", "<p>{{Name}}</p>\n");
    load_fails("a placeholder in the wrong case in the .html", "verify_email.html", "{{Name}}");
    write_file("verify_email.html", "<p>{{nope}}</p>\n");
    load_fails("an unknown placeholder in the .html", "verify_email.html", "{{nope}}");
    write_file("test.txt", "Subject: Test\n\nHello {{name}.\n");
    load_fails("an unclosed placeholder", "test.txt", NULL);
}

/* ------------------------------------------------------------ rendering */

/* Every line ends in CRLF: no bare LF, no bare CR. */
static bool all_crlf(const char *m)
{
    for (const char *p = m; *p; p++) {
        if (*p == '\n' && (p == m || p[-1] != '\r'))
            return false;
        if (*p == '\r' && p[1] != '\n')
            return false;
    }
    return true;
}

/* The header block up to the first empty line, unfolded: one header a
 * line, lines separated by LF. */
static char *unfolded_headers(const char *m)
{
    const char *end = strstr(m, "\r\n\r\n");
    if (!end)
        return NULL;
    size_t n = (size_t)(end - m);
    char *h = malloc(n + 1), *o = h;
    for (size_t i = 0; i < n; i++) {
        if (m[i] == '\r' && m[i + 1] == '\n') {
            if (m[i + 2] != ' ' && m[i + 2] != '\t')
                *o++ = '\n';
            i++;
            continue;
        }
        *o++ = m[i];
    }
    *o = '\0';
    return h;
}

static int count_header(const char *h, const char *name)
{
    int c = 0;
    size_t n = strlen(name);
    for (const char *p = h; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncasecmp(p, name, n) && p[n] == ':')
            c++;
    return c;
}

/* The value of the first header called name (after ": "), malloc'd. */
static char *get_header(const char *h, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = h; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncasecmp(p, name, n) && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            const char *e = strchr(v, '\n');
            return strndup(v, e ? (size_t)(e - v) : strlen(v));
        }
    return NULL;
}

/* Every unfolded header line is "name: value" with a valid field name. */
static bool header_lines_valid(const char *h)
{
    for (const char *p = h; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *c = p;
        while (*c > 32 && *c < 127 && *c != ':')
            c++;
        if (c == p || *c != ':')
            return false;
    }
    return true;
}

/* A To (or From) value holds exactly one address, addr: outside quoted
 * strings there is one '<', no ',' and the value ends in "<addr>". Without
 * a display name the value is addr itself. */
static bool one_address(const char *v, const char *addr)
{
    if (!v)
        return false;
    if (!strcmp(v, addr))
        return true;
    int lts = 0, commas = 0;
    const char *lt = NULL;
    bool q = false;
    for (const char *p = v; *p; p++) {
        if (q && *p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p == '"')
            q = !q;
        else if (!q && *p == '<') {
            lts++;
            lt = p;
        } else if (!q && *p == ',')
            commas++;
    }
    if (q || lts != 1 || commas)
        return false;
    size_t n = strlen(addr);
    return !strncmp(lt + 1, addr, n) && !strcmp(lt + 1 + n, ">");
}

struct msg {
    char *raw, *headers;    /* the message; its unfolded header block */
    char *text, *html;      /* the decoded parts (html NULL when none) */
    bool multipart;
    int delimiters;         /* "--boundary" lines, "--boundary--" included */
    char *to_name;          /* the To display name, decoded ("" when none) */
};

static void msg_free(struct msg *m)
{
    free(m->raw);
    free(m->headers);
    free(m->text);
    free(m->html);
    free(m->to_name);
    memset(m, 0, sizeof *m);
}

/* The part content between a part's header block and the next delimiter
 * (the CRLF before a delimiter belongs to it), decoded. */
static char *part_content(const char *start, const char *end, char **ctype)
{
    const char *hend = strstr(start, "\r\n\r\n");
    if (!hend || hend > end)
        return NULL;
    char *full = strndup(start, (size_t)(hend + 4 - start));
    char *h = unfolded_headers(full);
    free(full);
    *ctype = get_header(h, "Content-Type");
    char *cte = get_header(h, "Content-Transfer-Encoding");
    char *body = strndup(hend + 4, (size_t)(end - hend - 4));
    char *dec = cte && !strcasecmp(cte, "quoted-printable") ? qp_decode(body) : NULL;
    free(cte);
    free(body);
    free(h);
    return dec;
}

/* Takes a rendered message apart; the To display name decoded. */
static bool parse(char *raw, struct msg *m)
{
    memset(m, 0, sizeof *m);
    m->raw = raw;
    if (!raw || !(m->headers = unfolded_headers(raw)))
        return false;
    const char *body = strstr(raw, "\r\n\r\n") + 4;
    char *ct = get_header(m->headers, "Content-Type");
    if (ct && !strncasecmp(ct, "multipart/alternative;", 22)) {
        m->multipart = true;
        const char *b = strstr(ct, "boundary=\"");
        char delim[256];
        if (!b || !strchr(b + 10, '"')) {
            free(ct);
            return false;
        }
        snprintf(delim, sizeof delim, "--%.*s", (int)(strchr(b + 10, '"') - b - 10), b + 10);
        size_t dl = strlen(delim);
        /* Delimiter lines, in order; the parts between them. */
        const char *lines[16];
        int n = 0;
        for (const char *p = body; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
            if (!strncmp(p, delim, dl) && (!strncmp(p + dl, "\r\n", 2) || !strncmp(p + dl, "--", 2))) {
                if (n < 16)
                    lines[n] = p;
                n++;
            }
        }
        m->delimiters = n;
        for (int i = 0; i + 1 < n && i + 1 < 16; i++) {
            const char *start = lines[i] + dl + 2, *end = lines[i + 1] - 2;
            char *pct = NULL;
            char *dec = part_content(start, end, &pct);
            if (pct && !strncasecmp(pct, "text/plain", 10) && !m->text)
                m->text = dec;
            else if (pct && !strncasecmp(pct, "text/html", 9) && !m->html)
                m->html = dec;
            else
                free(dec);
            free(pct);
        }
    } else {
        char *cte = get_header(m->headers, "Content-Transfer-Encoding");
        if (ct && !strncasecmp(ct, "text/plain", 10) && cte && !strcasecmp(cte, "quoted-printable"))
            m->text = qp_decode(body);
        free(cte);
    }
    free(ct);
    char *to = get_header(m->headers, "To");
    const char *lt = to ? strrchr(to, '<') : NULL;
    if (to && !lt) {
        m->to_name = strdup("");
    } else if (to) {
        char *name = strndup(to, (size_t)(lt - to));
        size_t l = strlen(name);
        if (l && name[l - 1] == ' ')
            name[l - 1] = '\0';
        struct words w;
        if (name[0] == '"') {
            /* A quoted string: drop the quotes, undo the escapes. */
            char *o = name;
            for (const char *p = name + 1; *p && !(*p == '"' && !p[1]); p++) {
                if (*p == '\\' && p[1])
                    p++;
                *o++ = *p;
            }
            *o = '\0';
            m->to_name = name;
        } else if (decode_words(name, &w)) {
            m->to_name = strdup(w.text);
            free(name);
        } else {
            m->to_name = name;
        }
    }
    free(to);
    return true;
}

/* The checks every rendered message must pass. */
static void check_message(const struct msg *m, const char *what, const char *rcpt,
                          const char *msgid)
{
    ok(m->raw && all_crlf(m->raw), "%s: every line ends in CRLF", what);
    ok(m->headers && header_lines_valid(m->headers), "%s: the header block is only header lines",
       what);
    if (m->headers && !header_lines_valid(m->headers))
        diag("headers:\n%s", m->headers);
    static const char *const once[] = {"Date", "From", "To", "Subject", "Message-ID",
                                       "MIME-Version", "Auto-Submitted", "Content-Type"};
    bool each_once = m->headers != NULL;
    for (size_t i = 0; m->headers && i < sizeof once / sizeof once[0]; i++)
        if (count_header(m->headers, once[i]) != 1) {
            diag("%s appears %d times", once[i], count_header(m->headers, once[i]));
            each_once = false;
        }
    ok(each_once, "%s: Date, From, To, Subject, Message-ID, MIME-Version, Auto-Submitted, "
                  "Content-Type each once", what);
    ok(m->headers && !count_header(m->headers, "Bcc") && !count_header(m->headers, "Cc"),
       "%s: no Bcc or Cc header", what);
    char *v = m->headers ? get_header(m->headers, "Date") : NULL;
    is_str(v, DATE, "%s: Date", what);
    free(v);
    char want[256];
    snprintf(want, sizeof want, "<%s@example.test>", msgid);
    v = m->headers ? get_header(m->headers, "Message-ID") : NULL;
    is_str(v, want, "%s: Message-ID is <id@domain of [mail] from>", what);
    free(v);
    v = m->headers ? get_header(m->headers, "MIME-Version") : NULL;
    is_str(v, "1.0", "%s: MIME-Version", what);
    free(v);
    v = m->headers ? get_header(m->headers, "Auto-Submitted") : NULL;
    is_str(v, "auto-generated", "%s: Auto-Submitted", what);
    free(v);
    v = m->headers ? get_header(m->headers, "From") : NULL;
    is_str(v, "\"Example\" <no-reply@example.test>", "%s: From", what);
    free(v);
    v = m->headers ? get_header(m->headers, "To") : NULL;
    ok(one_address(v, rcpt), "%s: To holds exactly the recipient's address", what);
    if (!one_address(v, rcpt))
        diag("To: %s", v ? v : "NULL");
    free(v);
    ok(m->text != NULL, "%s: a decodable text/plain part", what);
}

/* got is want, then nothing but line ends (a single-part message ends with
 * one more CRLF after its body). */
static bool text_is(const char *got, const char *want, const char *what)
{
    size_t n = strlen(want);
    const char *rest = got && !strncmp(got, want, n) ? got + n : NULL;
    while (rest && !strncmp(rest, "\r\n", 2))
        rest += 2;
    bool r = ok(rest && !*rest, "%s", what);
    if (!r) {
        diag("     got: '%s'", got ? got : "NULL");
        diag("expected: '%s' then only CRLFs", want);
    }
    return r;
}

static char *render(const struct af_templates *t, const struct af_config *cfg, const char *kind,
                    const char *id, const char *rcpt, json_object *params, char *err, size_t errlen)
{
    err[0] = '\0';
    return af_mail_render(t, cfg, kind, id, rcpt, params, NOW, err, errlen);
}

static json_object *params_of(const char *name, const char *code, const char *link,
                              const char *minutes)
{
    json_object *p = json_object_new_object();
    if (name)
        json_object_object_add(p, "name", json_object_new_string(name));
    if (code)
        json_object_object_add(p, "code", json_object_new_string(code));
    if (link)
        json_object_object_add(p, "link", json_object_new_string(link));
    if (minutes)
        json_object_object_add(p, "minutes", json_object_new_string(minutes));
    return p;
}

#define RCPT "jane@example.test"
#define LINK "https://auth.example.test/reset?token=AbC-_9=x&next=%2Fhome"

static void test_render_real(const char *real_dir, const struct af_config *cfg)
{
    char err[256];
    struct af_templates *t = af_templates_load(real_dir, err, sizeof err);
    if (!t) {
        ok(false, "the real templates load for rendering: %s", err);
        return;
    }
    struct msg m;
    json_object *p;

    /* verify_email: text and HTML. */
    p = params_of("Jane Doe", "123456", NULL, "10");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id1", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "verify_email", RCPT, "id1");
    char *subj = m.headers ? get_header(m.headers, "Subject") : NULL;
    is_str(subj, "Your Acme verification code", "verify_email: Subject with the product");
    free(subj);
    ok(m.multipart, "verify_email: multipart/alternative (the .html exists)");
    is_int(m.delimiters, 3, "verify_email: two parts and the closing delimiter");
    ok(m.raw && strstr(m.raw, "boundary=\"=_af_id1\"") && strstr(m.raw, "\r\n--=_af_id1--\r\n"),
       "verify_email: the boundary is declared and closes the message");
    ok(m.text && strstr(m.text, "\r\n    123456\r\n"), "verify_email: the code in the text part");
    ok(m.text && strstr(m.text, "Hello Jane Doe,\r\n"), "verify_email: the name in the text part");
    ok(m.text && strstr(m.text, "expires in 10 minutes"), "verify_email: minutes in the text part");
    ok(m.html && strstr(m.html, "<strong>123456</strong>"), "verify_email: the code in the html part");
    ok(m.html && strstr(m.html, "<p>Hello Jane Doe,</p>"), "verify_email: the name in the html part");
    ok(m.text && !strchr(m.text, '{') && m.html && !strstr(m.html, "{{"),
       "verify_email: no placeholder left");
    is_str(m.to_name, "Jane Doe", "verify_email: the name is the To display name");
    msg_free(&m);

    /* password_reset: a link with '=' and '&'. */
    p = params_of("Jane", NULL, LINK, "30");
    parse(render(t, cfg, AF_MAIL_PASSWORD_RESET, "id2", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "password_reset", RCPT, "id2");
    ok(m.text && strstr(m.text, "\r\n" LINK "\r\n"), "password_reset: the link whole in the text part");
    ok(m.html && strstr(m.html, "href=\"https://auth.example.test/reset?token=AbC-_9=x&amp;next=%2Fhome\""),
       "password_reset: the link HTML-escaped in the href");
    msg_free(&m);

    /* password_changed: empty name, the email used in its place. */
    p = params_of("", NULL, NULL, NULL);
    parse(render(t, cfg, AF_MAIL_PASSWORD_CHANGED, "id3", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "password_changed, empty name", RCPT, "id3");
    ok(m.text && strstr(m.text, "Hello " RCPT ",\r\n"), "empty name: the email greets in the text part");
    ok(m.html && strstr(m.html, "<p>Hello " RCPT ",</p>"), "empty name: the email greets in the html part");
    ok(m.text && strstr(m.text, "account (" RCPT ")"), "password_changed: {{email}} is the recipient");
    msg_free(&m);

    /* NULL params and a JSON null name: the email again. */
    parse(render(t, cfg, AF_MAIL_PASSWORD_CHANGED, "id4", RCPT, NULL, err, sizeof err), &m);
    check_message(&m, "password_changed, NULL params", RCPT, "id4");
    ok(m.text && strstr(m.text, "Hello " RCPT ",\r\n"), "NULL params: the email greets");
    msg_free(&m);
    p = json_object_new_object();
    json_object_object_add(p, "name", NULL);
    parse(render(t, cfg, AF_MAIL_PASSWORD_CHANGED, "id4", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    ok(m.text && strstr(m.text, "Hello " RCPT ",\r\n"), "a null name: the email greets");
    msg_free(&m);

    /* test: no .html, a single text/plain message. */
    parse(render(t, cfg, AF_MAIL_TEST, "id5", RCPT, NULL, err, sizeof err), &m);
    check_message(&m, "test", RCPT, "id5");
    ok(!m.multipart && m.raw && !strstr(m.raw, "multipart") && !strstr(m.raw, "=_af_"),
       "test: no .html, no multipart, no boundary");
    char *ct = m.headers ? get_header(m.headers, "Content-Type") : NULL;
    is_str(ct, "text/plain; charset=UTF-8", "test: Content-Type text/plain UTF-8");
    free(ct);
    ok(m.text && strstr(m.text, "from Acme (authflowctl"), "test: the product in the text");
    msg_free(&m);

    /* A name trying to add headers. */
    p = params_of("x\r\nBcc: evil@example.test", "123456", NULL, "10");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id6", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "name with CRLF Bcc", RCPT, "id6");
    {
        bool bcc_line = false;
        for (const char *q = m.headers; q; q = strchr(q, '\n'), q = q ? q + 1 : NULL)
            if (!strncasecmp(q, "bcc:", 4))
                bcc_line = true;
        ok(m.headers && !bcc_line, "name with CRLF Bcc: no header line starts with Bcc:");
    }
    is_str(m.to_name, "x  Bcc: evil@example.test", "name with CRLF Bcc: an encoded display name");
    msg_free(&m);

    p = params_of("Jane\nSubject: spam\n\nbody", "123456", NULL, "10");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id7", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "name with LF Subject and an empty line", RCPT, "id7");
    msg_free(&m);

    /* A name trying to add a MIME part: the boundary is QP-encoded. */
    p = params_of("\r\n--=_af_id8\r\nContent-Type: text/html\r\n\r\n<script>", "123456", NULL, "10");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id8", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "name with the boundary", RCPT, "id8");
    is_int(m.delimiters, 3, "name with the boundary: still two parts");
    ok(m.html && !strstr(m.html, "<script>") && strstr(m.html, "&lt;script&gt;"),
       "name with the boundary: the html part escapes it");
    msg_free(&m);

    /* HTML escaping. */
    p = params_of("<b>&\"'", "12<34", NULL, "10");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id9", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "name with markup", RCPT, "id9");
    ok(m.html && strstr(m.html, "<p>Hello &lt;b&gt;&amp;&quot;&#39;,</p>"),
       "name with markup: &lt;b&gt;&amp;&quot;&#39; in the html part");
    ok(m.html && strstr(m.html, "<strong>12&lt;34</strong>"), "code with '<': escaped in the html part");
    ok(m.html && !strstr(m.html, "<b>"), "name with markup: no <b> in the html part");
    ok(m.text && strstr(m.text, "Hello <b>&\"',\r\n"), "name with markup: as is in the text part");
    is_str(m.to_name, "<b>&\"'", "name with markup: the To display name, quoted");
    msg_free(&m);

    /* Names with specials and non-ASCII. */
    p = params_of("Doe, John \"JD\" \\ <x@y>", "1", NULL, "1");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id10", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "name with comma, quotes, backslash, angle address", RCPT, "id10");
    is_str(m.to_name, "Doe, John \"JD\" \\ <x@y>", "name with specials: the To display name round-trips");
    msg_free(&m);

    p = params_of("Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac", "1", NULL, "1");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id11", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "non-ASCII name", RCPT, "id11");
    is_str(m.to_name, "Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac", "non-ASCII name: To display name encoded-words");
    ok(m.text && strstr(m.text, "Hello Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac,"), "non-ASCII name: in the text part");
    msg_free(&m);

    /* A plain ASCII name that looks like an encoded-word is quoted all the
     * same: its specials must not add the recipient evil@attacker.test
     * (sendmail -t reads To:). */
    p = params_of("=?a?=<evil@attacker.test>, Bob", "1", NULL, "1");
    char *raw = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id12", RCPT, p, err, sizeof err);
    json_object_put(p);
    parse(raw, &m);
    ok(m.raw && all_crlf(m.raw) && m.headers && header_lines_valid(m.headers),
       "name starting with =?: still one header a line");
    char *to = m.headers ? get_header(m.headers, "To") : NULL;
    ok(one_address(to, RCPT), "name starting with =? cannot add a recipient to To:");
    if (!one_address(to, RCPT))
        diag("To: %s", to ? to : "NULL");
    free(to);
    msg_free(&m);

    /* Refusals. */
    err[0] = '\0';
    char *r = render(t, cfg, "welcome", "id", RCPT, NULL, err, sizeof err);
    ok(!r && strstr(err, "welcome"), "unknown kind -> NULL, err names it");
    free(r);
    r = render(t, cfg, "", "id", RCPT, NULL, err, sizeof err);
    ok(!r && err[0], "empty kind -> NULL with err");
    free(r);

    p = json_object_new_object();
    json_object_object_add(p, "code", json_object_new_int(123456));
    r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "a number code -> NULL with err");
    free(r);
    json_object_put(p);
    p = json_object_new_object();
    json_object_object_add(p, "name", json_object_new_object());
    r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "an object name -> NULL with err");
    free(r);
    json_object_put(p);
    p = json_object_new_object();
    json_object_object_add(p, "minutes", json_object_new_boolean(1));
    r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "a boolean minutes -> NULL with err");
    free(r);
    json_object_put(p);
    p = json_object_new_object();
    json_object_object_add(p, "link", json_object_new_array());
    r = render(t, cfg, AF_MAIL_PASSWORD_RESET, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "an array link -> NULL with err");
    free(r);
    json_object_put(p);
    p = json_object_new_array();
    r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "parameters that are an array -> NULL with err");
    free(r);
    json_object_put(p);
    p = json_object_new_string("x");
    r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "parameters that are a string -> NULL with err");
    free(r);
    json_object_put(p);
    p = params_of("bad \xc3 utf-8", NULL, NULL, NULL);
    r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", RCPT, p, err, sizeof err);
    ok(!r && err[0], "a name that is not UTF-8 -> NULL with err");
    free(r);
    json_object_put(p);

    static const struct { const char *rcpt, *what; } bad_rcpt[] = {
        {"Jane <jane@example.test>", "recipient with a name and '<'"},
        {"<jane@example.test>", "recipient in angle brackets"},
        {"jane@example.test\r\nBcc: evil@example.test", "recipient with CRLF Bcc"},
        {"jane@example.test\n", "recipient with a LF"},
        {"jane@example.test, evil@example.test", "two recipients"},
        {"jane", "recipient without '@'"},
        {"", "empty recipient"},
    };
    for (size_t i = 0; i < sizeof bad_rcpt / sizeof bad_rcpt[0]; i++) {
        r = render(t, cfg, AF_MAIL_VERIFY_EMAIL, "id", bad_rcpt[i].rcpt, NULL, err, sizeof err);
        ok(!r && err[0], "%s -> NULL with err", bad_rcpt[i].what);
        free(r);
    }
    af_templates_free(t);
}

static void test_render_own(const struct af_config *cfg)
{
    char err[256];
    write_good_templates();
    struct af_templates *t = af_templates_load(tmpdir, err, sizeof err);
    if (!t) {
        ok(false, "the test templates load for rendering: %s", err);
        return;
    }
    struct msg m;
    json_object *p;

    /* {{name}} in the subject: an injected header stays inside Subject. */
    p = params_of("x\r\nBcc: evil@example.test", "42", NULL, "5");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "o1", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "own verify_email, CRLF Bcc name in the subject", RCPT, "o1");
    char *subj = m.headers ? get_header(m.headers, "Subject") : NULL;
    struct words w;
    ok(subj && decode_words(subj, &w) && !strcmp(w.text, "Code for x  Bcc: evil@example.test"),
       "the subject is encoded-words holding the name without CR/LF");
    free(subj);
    ok(m.text && strstr(m.text, "for " RCPT " at Acme."), "own verify_email: email and product");
    ok(m.html && strstr(m.html, "<p>x\r\nBcc: evil@example.test 42 </p>"),
       "own verify_email: the html part, an absent link empty");
    msg_free(&m);

    /* A long ASCII name in the subject is encoded. */
    char *longname = repeat("n", 950, NULL);
    p = params_of(longname, "42", NULL, "5");
    parse(render(t, cfg, AF_MAIL_VERIFY_EMAIL, "o2", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "own verify_email, 950-character name", RCPT, "o2");
    subj = m.headers ? get_header(m.headers, "Subject") : NULL;
    char *want_subj = repeat("n", 950, NULL);
    char *tmp;
    if (asprintf(&tmp, "Code for %s", want_subj) < 0)
        abort();
    ok(subj && decode_words(subj, &w) && w.longest <= 75 && !strcmp(w.text, tmp),
       "a 959-character subject: encoded-words of at most 75 characters");
    free(tmp);
    free(want_subj);
    free(subj);
    is_str(m.to_name, longname, "a 950-character name: the To display name round-trips");
    msg_free(&m);
    free(longname);

    /* A template with CRLF line ends: no doubled CR. */
    p = params_of("Jane", NULL, NULL, NULL);
    parse(render(t, cfg, AF_MAIL_PASSWORD_CHANGED, "o3", RCPT, p, err, sizeof err), &m);
    json_object_put(p);
    check_message(&m, "own password_changed, CRLF template", RCPT, "o3");
    text_is(m.text, "Hello Jane,\r\nchanged.\r\n", "CRLF template: the text part exactly");
    ok(!m.multipart, "CRLF template: no .html, not multipart");
    msg_free(&m);

    /* A template without a final line end: the message still ends in CRLF. */
    parse(render(t, cfg, AF_MAIL_TEST, "o4", RCPT, NULL, err, sizeof err), &m);
    check_message(&m, "own test, no final line end", RCPT, "o4");
    ok(m.raw && strlen(m.raw) >= 2 && !strcmp(m.raw + strlen(m.raw) - 2, "\r\n"),
       "the message ends in CRLF");
    ok(m.text && !strncmp(m.text, "Test from Acme.", 15), "own test: the text part");
    msg_free(&m);

    /* A long link in the text part: QP soft breaks, decoded whole. */
    char *longlink = repeat("a=b&", 60, NULL), *url;
    if (asprintf(&url, "https://auth.example.test/r?%s", longlink) < 0)
        abort();
    p = params_of(NULL, NULL, url, NULL);
    char *raw = render(t, cfg, AF_MAIL_PASSWORD_RESET, "o5", RCPT, p, err, sizeof err);
    json_object_put(p);
    parse(raw, &m);
    check_message(&m, "own password_reset, 268-character link", RCPT, "o5");
    {
        bool short_lines = raw != NULL;
        for (const char *q = raw; q && *q;) {
            const char *e = strstr(q, "\r\n");
            size_t len = e ? (size_t)(e - q) : strlen(q);
            if (len > 998 || (q > strstr(raw, "\r\n\r\n") && len > 76))
                short_lines = false;
            q = e ? e + 2 : q + len;
        }
        ok(short_lines, "a long link: body lines of at most 76 characters");
    }
    char *want;
    if (asprintf(&want, "%s\r\n", url) < 0)
        abort();
    text_is(m.text, want, "a long link: decoded whole from the text part");
    free(want);
    free(url);
    free(longlink);
    msg_free(&m);

    af_templates_free(t);
}

static void test_render_config(const char *real_dir)
{
    char err[256];
    struct af_templates *t = af_templates_load(real_dir, err, sizeof err);
    struct af_config cfg = {0};
    if (!t || af_config_load_string(&cfg, "[mail]\nfrom = bounce@mail.example.org\n"
                                          "reply_to = Support Team <help@example.test>\n"
                                          "product_name = Acm\xc3\xa9\n",
                                    false, err, sizeof err) != 0) {
        ok(false, "templates and a second configuration: %s", err);
        af_templates_free(t);
        af_config_free(&cfg);
        return;
    }
    struct msg m;
    parse(render(t, &cfg, AF_MAIL_TEST, "c1", RCPT, NULL, err, sizeof err), &m);
    char *v = m.headers ? get_header(m.headers, "From") : NULL;
    is_str(v, "bounce@mail.example.org", "From without a display name: the address alone");
    free(v);
    v = m.headers ? get_header(m.headers, "Message-ID") : NULL;
    is_str(v, "<c1@mail.example.org>", "Message-ID takes the domain of [mail] from");
    free(v);
    is_int(m.headers ? count_header(m.headers, "Reply-To") : -1, 1, "Reply-To once when configured");
    v = m.headers ? get_header(m.headers, "Reply-To") : NULL;
    is_str(v, "\"Support Team\" <help@example.test>", "Reply-To with its display name");
    free(v);
    v = m.headers ? get_header(m.headers, "Subject") : NULL;
    struct words w;
    ok(v && decode_words(v, &w) && !strcmp(w.text, "Acm\xc3\xa9 test message"),
       "a non-ASCII product name: the subject is encoded-words");
    free(v);
    ok(m.raw && all_crlf(m.raw), "second configuration: every line ends in CRLF");
    ok(m.text && strstr(m.text, "from Acm\xc3\xa9 (authflowctl"), "non-ASCII product in the text part");
    msg_free(&m);
    af_config_free(&cfg);

    memset(&cfg, 0, sizeof cfg);
    if (af_config_load_string(&cfg, "[mail]\nfrom = Nobody\n", false, err, sizeof err) == 0) {
        char *r = render(t, &cfg, AF_MAIL_TEST, "c2", RCPT, NULL, err, sizeof err);
        ok(!r && err[0], "[mail] from without an address -> NULL with err");
        free(r);
    } else {
        ok(true, "[mail] from without an address is refused by the configuration (%s)", err);
    }
    af_config_free(&cfg);
    af_templates_free(t);
}

int main(void)
{
    const char *srcdir = getenv("AUTHFLOW_SRCDIR");
    char real_dir[4096];
    snprintf(real_dir, sizeof real_dir, "%s/etc/templates", srcdir && *srcdir ? srcdir : ".");

    strcpy(tmpdir, "/tmp/af_test_mail.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }

    test_qp();
    test_header_value();
    test_addr_spec();
    test_templates_load(real_dir);

    struct af_config cfg = {0};
    char err[256];
    if (af_config_load_string(&cfg, "[mail]\nfrom = Example <no-reply@example.test>\n"
                                    "product_name = Acme\n",
                              false, err, sizeof err) != 0) {
        ok(false, "the test configuration loads: %s", err);
    } else {
        test_render_real(real_dir, &cfg);
        test_render_own(&cfg);
    }
    af_config_free(&cfg);
    test_render_config(real_dir);

    static const char *const files[] = {"verify_email.txt", "verify_email.html",
                                        "password_reset.txt", "password_reset.html",
                                        "password_changed.txt", "password_changed.html",
                                        "test.txt", "test.html"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove_file(files[i]);
    rmdir(tmpdir);
    return done_testing();
}
