/* mail.c — message rendering and the SMTP and sendmail transports (see
 * mail.h). */
#include "mail.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

/* ------------------------------------------------------------ buffers */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static char *done(struct buf *b)
{
    if (b->oom || !b->p) {
        free(b->p);
        return b->oom ? NULL : strdup("");
    }
    return b->p;
}

/* ------------------------------------------------------------ encodings */

char *af_mail_qp(const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    struct buf b = {0};
    const unsigned char *s = (const unsigned char *)text;
    size_t col = 0;
    while (*s) {
        if (*s == '\r' && s[1] == '\n')
            s++;
        if (*s == '\n') {
            put(&b, "\r\n", 2);
            col = 0;
            s++;
            continue;
        }
        char enc[4];
        size_t n;
        bool at_eol = s[1] == '\0' || s[1] == '\n' || (s[1] == '\r' && s[2] == '\n');
        /* Printable ASCII but '=' stays; a space or tab stays unless it ends
         * a line (mail software strips trailing white space). */
        if ((*s >= 33 && *s <= 126 && *s != '=') || ((*s == ' ' || *s == '\t') && !at_eol)) {
            enc[0] = (char)*s;
            n = 1;
        } else {
            enc[0] = '=';
            enc[1] = hex[*s >> 4];
            enc[2] = hex[*s & 15];
            n = 3;
        }
        /* 76 characters a line at most, the soft break '=' included. */
        if (col + n > 75 && !(at_eol && col + n <= 76)) {
            put(&b, "=\r\n", 3);
            col = 0;
        }
        put(&b, enc, n);
        col += n;
        s++;
    }
    return done(&b);
}

static bool plain_header_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 32 || (unsigned char)*s > 126)
            return false;
    return true;
}

char *af_mail_header_value(const char *text)
{
    if (plain_header_ok(text) && strlen(text) <= 900)
        return strdup(text);
    /* Encoded-words of at most 45 input bytes (60 base64 characters, the
     * word under 75), never splitting a UTF-8 sequence. Control characters
     * (CR and LF among them) become spaces first: a header value is one line. */
    struct buf b = {0};
    size_t len = strlen(text);
    char *clean = malloc(len + 1);
    if (!clean)
        return NULL;
    for (size_t i = 0; i <= len; i++)
        clean[i] = (i < len && ((unsigned char)text[i] < 32 || text[i] == 127)) ? ' ' : text[i];
    const unsigned char *s = (const unsigned char *)clean;
    size_t i = 0;
    bool first = true;
    while (i < len) {
        size_t n = len - i < 45 ? len - i : 45;
        while (n > 0 && i + n < len && (s[i + n] & 0xC0) == 0x80)
            n--;
        if (n == 0)
            n = len - i < 45 ? len - i : 45;
        char word[128];
        sodium_bin2base64(word, sizeof word, s + i, n, sodium_base64_VARIANT_ORIGINAL);
        if (!first)
            put(&b, "\r\n ", 3);
        puts_(&b, "=?UTF-8?B?");
        puts_(&b, word);
        puts_(&b, "?=");
        first = false;
        i += n;
    }
    free(clean);
    return done(&b);
}

bool af_mail_addr_spec(const char *from, char *out, size_t outlen)
{
    const char *lt = strrchr(from, '<');
    const char *start = from, *end;
    if (lt) {
        start = lt + 1;
        end = strchr(start, '>');
        if (!end)
            return false;
    } else {
        while (*start == ' ' || *start == '\t')
            start++;
        end = start + strlen(start);
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
    }
    size_t n = (size_t)(end - start);
    if (n == 0 || n >= outlen)
        return false;
    const char *at = NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)start[i];
        if (c <= 32 || c >= 127 || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' ||
            c == ';' || c == '"' || c == '\\')
            return false;
        if (c == '@')
            at = start + i;
    }
    if (!at || at == start || at == end - 1)
        return false;
    memcpy(out, start, n);
    out[n] = '\0';
    return true;
}

/* ------------------------------------------------------------ templates */

static const char *const kinds[] = {AF_MAIL_VERIFY_EMAIL, AF_MAIL_PASSWORD_RESET,
                                    AF_MAIL_PASSWORD_CHANGED, AF_MAIL_INVITE, AF_MAIL_TEST};
#define NKINDS (sizeof kinds / sizeof kinds[0])
static const char *const placeholders[] = {"name", "email", "code", "link", "minutes", "days", "product"};
#define NPLACEHOLDERS (sizeof placeholders / sizeof placeholders[0])

struct tmpl {
    char *subject, *text, *html;    /* html may be NULL */
};

struct af_templates {
    struct tmpl t[NKINDS];
};

/* Every {{...}} in s must be a known placeholder. */
static bool check_placeholders(const char *s, char *bad, size_t badlen)
{
    const char *p = s;
    while ((p = strstr(p, "{{"))) {
        const char *e = strstr(p + 2, "}}");
        if (!e) {
            snprintf(bad, badlen, "an unclosed {{");
            return false;
        }
        size_t n = (size_t)(e - p - 2);
        bool ok = false;
        for (size_t i = 0; i < NPLACEHOLDERS; i++)
            if (strlen(placeholders[i]) == n && !strncmp(placeholders[i], p + 2, n))
                ok = true;
        if (!ok) {
            snprintf(bad, badlen, "unknown placeholder {{%.*s}}", (int)(n > 40 ? 40 : n), p + 2);
            return false;
        }
        p = e + 2;
    }
    return true;
}

static void tmpl_free(struct tmpl *t)
{
    free(t->subject);
    free(t->text);
    free(t->html);
    memset(t, 0, sizeof *t);
}

static int load_one(const char *dir, const char *kind, struct tmpl *out, char *err, size_t errlen)
{
    char path[4096], bad[96];
    snprintf(path, sizeof path, "%s/%s.txt", dir, kind);
    char *txt = af_read_file(path);
    if (!txt) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* "Subject: ..." then an empty line. */
    char *nl = strchr(txt, '\n');
    if (strncmp(txt, "Subject:", 8) != 0 || !nl || (nl[1] != '\n' && strncmp(nl + 1, "\r\n", 2))) {
        snprintf(err, errlen, "%s: must start with a \"Subject: ...\" line and an empty line", path);
        free(txt);
        return -1;
    }
    char *subj_end = nl > txt && nl[-1] == '\r' ? nl - 1 : nl;
    const char *subj = txt + 8;
    while (*subj == ' ')
        subj++;
    out->subject = strndup(subj, (size_t)(subj_end - subj));
    out->text = strdup(nl + (nl[1] == '\n' ? 2 : 3));
    free(txt);
    if (!out->subject || !out->text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!check_placeholders(out->subject, bad, sizeof bad) ||
        !check_placeholders(out->text, bad, sizeof bad)) {
        snprintf(err, errlen, "%s: %s", path, bad);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s.html", dir, kind);
    out->html = af_read_file(path);
    if (!out->html && errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (out->html && !check_placeholders(out->html, bad, sizeof bad)) {
        snprintf(err, errlen, "%s: %s", path, bad);
        return -1;
    }
    return 0;
}

struct af_templates *af_templates_load(const char *dir, char *err, size_t errlen)
{
    struct af_templates *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < NKINDS; i++)
        if (load_one(dir, kinds[i], &t->t[i], err, errlen) < 0) {
            af_templates_free(t);
            return NULL;
        }
    return t;
}

void af_templates_free(struct af_templates *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < NKINDS; i++)
        tmpl_free(&t->t[i]);
    free(t);
}

/* ------------------------------------------------------------ rendering */

enum esc { ESC_NONE, ESC_HTML };

static void put_escaped(struct buf *b, const char *v, enum esc esc)
{
    if (esc == ESC_NONE) {
        puts_(b, v);
        return;
    }
    for (; *v; v++) {
        switch (*v) {
        case '&': puts_(b, "&amp;"); break;
        case '<': puts_(b, "&lt;"); break;
        case '>': puts_(b, "&gt;"); break;
        case '"': puts_(b, "&quot;"); break;
        case '\'': puts_(b, "&#39;"); break;
        default: put(b, v, 1);
        }
    }
}

/* Replaces the placeholders of s with vals (indexed as placeholders[]). */
static char *expand(const char *s, const char *const vals[NPLACEHOLDERS], enum esc esc)
{
    struct buf b = {0};
    const char *p = s;
    for (;;) {
        const char *o = strstr(p, "{{");
        const char *e = o ? strstr(o + 2, "}}") : NULL;
        if (!o || !e) {
            puts_(&b, p);
            break;
        }
        put(&b, p, (size_t)(o - p));
        size_t n = (size_t)(e - o - 2);
        for (size_t i = 0; i < NPLACEHOLDERS; i++)
            if (strlen(placeholders[i]) == n && !strncmp(placeholders[i], o + 2, n))
                put_escaped(&b, vals[i], esc);
        p = e + 2;
    }
    return done(&b);
}

static const char *param(json_object *params, const char *key, bool *bad)
{
    json_object *v;
    if (!params || !json_object_object_get_ex(params, key, &v) || json_object_is_type(v, json_type_null))
        return "";
    if (!json_object_is_type(v, json_type_string)) {
        *bad = true;
        return "";
    }
    return json_object_get_string(v);
}

/* Header values come from configuration and users: one line each. */
static void put_header(struct buf *b, const char *name, const char *value)
{
    puts_(b, name);
    puts_(b, ": ");
    char *v = af_mail_header_value(value);
    if (!v)
        b->oom = true;
    else
        puts_(b, v);
    free(v);
    puts_(b, "\r\n");
}

/* "Display Name <addr>" with the name encoded as needed. */
static void put_address_header(struct buf *b, const char *name, const char *display, const char *addr)
{
    puts_(b, name);
    puts_(b, ": ");
    if (display && *display) {
        char *v = af_mail_header_value(display);
        if (!v) {
            b->oom = true;
            return;
        }
        /* A name the encoding left alone goes in quotes, with quotes and
         * backslashes escaped: whatever it holds ("=?", commas, angle
         * brackets) stays one display name. */
        if (!strcmp(v, display)) {
            put(b, "\"", 1);
            for (const char *c = v; *c; c++) {
                if (*c == '"' || *c == '\\')
                    put(b, "\\", 1);
                put(b, c, 1);
            }
            put(b, "\"", 1);
        } else {
            puts_(b, v);
        }
        free(v);
        puts_(b, " <");
        puts_(b, addr);
        puts_(b, ">\r\n");
    } else {
        puts_(b, addr);
        puts_(b, "\r\n");
    }
}

/* The display name part of "Name <addr>" (trimmed, quotes removed). */
static void display_name(const char *from, char *out, size_t outlen)
{
    const char *lt = strrchr(from, '<');
    out[0] = '\0';
    if (!lt)
        return;
    const char *s = from, *e = lt;
    while (s < e && (*s == ' ' || *s == '"'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '"'))
        e--;
    snprintf(out, outlen, "%.*s", (int)(e - s), s);
}

char *af_mail_render(const struct af_templates *t, const struct af_config *cfg, const char *kind,
                     const char *message_id, const char *recipient, json_object *params,
                     time_t now, char *err, size_t errlen)
{
    const struct tmpl *tp = NULL;
    for (size_t i = 0; i < NKINDS; i++)
        if (!strcmp(kinds[i], kind))
            tp = &t->t[i];
    if (!tp) {
        snprintf(err, errlen, "unknown kind of message '%.40s'", kind);
        return NULL;
    }
    char to[320], from_addr[320], from_name[256];
    if (!af_mail_addr_spec(recipient, to, sizeof to) || strchr(recipient, '<')) {
        snprintf(err, errlen, "the recipient is not an email address");
        return NULL;
    }
    if (!af_mail_addr_spec(cfg->mail_from, from_addr, sizeof from_addr)) {
        snprintf(err, errlen, "[mail] from has no address");
        return NULL;
    }
    display_name(cfg->mail_from, from_name, sizeof from_name);
    if (params && !json_object_is_type(params, json_type_object)) {
        snprintf(err, errlen, "the parameters are not a JSON object");
        return NULL;
    }
    bool bad = false;
    const char *name = param(params, "name", &bad);
    const char *vals[NPLACEHOLDERS] = {
        *name ? name : to, to, param(params, "code", &bad), param(params, "link", &bad),
        param(params, "minutes", &bad), param(params, "days", &bad), cfg->product_name,
    };
    if (bad) {
        snprintf(err, errlen, "a parameter is not a string");
        return NULL;
    }
    for (size_t i = 0; i < NPLACEHOLDERS; i++)
        if (!af_utf8_valid(vals[i], strlen(vals[i]))) {
            snprintf(err, errlen, "a parameter is not UTF-8");
            return NULL;
        }

    char *subject = expand(tp->subject, vals, ESC_NONE);
    char *text = expand(tp->text, vals, ESC_NONE);
    char *html = tp->html ? expand(tp->html, vals, ESC_HTML) : NULL;
    char *text_qp = text ? af_mail_qp(text) : NULL;
    char *html_qp = html ? af_mail_qp(html) : NULL;
    struct buf b = {0};
    if (!subject || !text || !text_qp || (tp->html && (!html || !html_qp)))
        b.oom = true;

    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *domain = strchr(from_addr, '@') + 1;

    puts_(&b, "Date: ");
    puts_(&b, date);
    puts_(&b, "\r\n");
    put_address_header(&b, "From", from_name, from_addr);
    char ra[320];
    if (cfg->mail_reply_to && af_mail_addr_spec(cfg->mail_reply_to, ra, sizeof ra)) {
        char rn[256];
        display_name(cfg->mail_reply_to, rn, sizeof rn);
        put_address_header(&b, "Reply-To", rn, ra);
    }
    put_address_header(&b, "To", name, to);
    if (subject)
        put_header(&b, "Subject", subject);
    puts_(&b, "Message-ID: <");
    puts_(&b, message_id);
    puts_(&b, "@");
    puts_(&b, domain);
    puts_(&b, ">\r\nMIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n");
    if (html) {
        /* The boundary holds '=' and '_': quoted-printable text never
         * contains "=_" followed by our id. */
        puts_(&b, "Content-Type: multipart/alternative; boundary=\"=_af_");
        puts_(&b, message_id);
        puts_(&b, "\"\r\n\r\n--=_af_");
        puts_(&b, message_id);
        puts_(&b, "\r\n");
    }
    puts_(&b, "Content-Type: text/plain; charset=UTF-8\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    if (text_qp)
        puts_(&b, text_qp);
    if (html) {
        puts_(&b, "\r\n--=_af_");
        puts_(&b, message_id);
        puts_(&b, "\r\nContent-Type: text/html; charset=UTF-8\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        if (html_qp)
            puts_(&b, html_qp);
        puts_(&b, "\r\n--=_af_");
        puts_(&b, message_id);
        puts_(&b, "--");
    }
    puts_(&b, "\r\n");
    free(subject);
    if (text)
        sodium_memzero(text, strlen(text));
    free(text);
    free(html);
    free(text_qp);
    free(html_qp);
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return b.p;
}

/* ------------------------------------------------------------ transports */

struct af_transport {
    const struct af_config *cfg;
    bool sendmail;
    CURL *curl;
    char url[600];
    char from[320];
};

struct af_transport *af_transport_new(const struct af_config *cfg, char *err, size_t errlen)
{
    struct af_transport *tr = calloc(1, sizeof *tr);
    if (!tr) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    tr->cfg = cfg;
    if (!af_mail_addr_spec(cfg->mail_from, tr->from, sizeof tr->from)) {
        snprintf(err, errlen, "[mail] from: '%s' has no usable address", cfg->mail_from);
        free(tr);
        return NULL;
    }
    if (!strcmp(cfg->mail_transport, "sendmail")) {
        tr->sendmail = true;
        if (access(cfg->sendmail_path, X_OK) != 0) {
            snprintf(err, errlen, "[mail] sendmail_path: %s: %s", cfg->sendmail_path, strerror(errno));
            free(tr);
            return NULL;
        }
        return tr;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(tr->curl = curl_easy_init())) {
        snprintf(err, errlen, "libcurl initialisation failed");
        free(tr);
        return NULL;
    }
    bool v6 = strchr(cfg->smtp_host, ':') != NULL;
    snprintf(tr->url, sizeof tr->url, "%s://%s%s%s:%ld", !strcmp(cfg->smtp_tls, "tls") ? "smtps" : "smtp",
             v6 ? "[" : "", cfg->smtp_host, v6 ? "]" : "", cfg->smtp_port);
    return tr;
}

void af_transport_free(struct af_transport *tr)
{
    if (!tr)
        return;
    if (tr->curl)
        curl_easy_cleanup(tr->curl);
    free(tr);
}

struct upload {
    const char *data;
    size_t len, pos;
};

static size_t read_cb(char *out, size_t size, size_t nitems, void *ud)
{
    struct upload *u = ud;
    size_t n = size * nitems;
    if (n > u->len - u->pos)
        n = u->len - u->pos;
    memcpy(out, u->data + u->pos, n);
    u->pos += n;
    return n;
}

static enum af_mail_result send_smtp(struct af_transport *tr, const char *rcpt, const char *msg,
                                     char *err, size_t errlen)
{
    const struct af_config *cfg = tr->cfg;
    CURL *c = tr->curl;
    char errbuf[CURL_ERROR_SIZE] = "", from[330], to[330];
    snprintf(from, sizeof from, "<%s>", tr->from);
    snprintf(to, sizeof to, "<%s>", rcpt);
    struct curl_slist *rcpts = curl_slist_append(NULL, to);
    if (!rcpts) {
        snprintf(err, errlen, "out of memory");
        return AF_MAIL_RETRY;
    }
    struct upload up = {msg, strlen(msg), 0};
    /* The handle keeps its connection between messages. */
    curl_easy_setopt(c, CURLOPT_URL, tr->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, cfg->smtp_timeout);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, cfg->smtp_timeout);
    curl_easy_setopt(c, CURLOPT_USE_SSL, !strcmp(cfg->smtp_tls, "none") ? (long)CURLUSESSL_NONE
                                                                          : (long)CURLUSESSL_ALL);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, cfg->smtp_verify_peer ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, cfg->smtp_verify_peer ? 2L : 0L);
    if (*cfg->smtp_ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, cfg->smtp_ca_file);
    if (*cfg->smtp_username) {
        curl_easy_setopt(c, CURLOPT_USERNAME, cfg->smtp_username);
        curl_easy_setopt(c, CURLOPT_PASSWORD, cfg->smtp_password);
    }
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &up);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up.len);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(rcpts);
    if (rc == CURLE_OK)
        return AF_MAIL_SENT;
    snprintf(err, errlen, "smtp: %s (%ld)", *errbuf ? errbuf : curl_easy_strerror(rc), code);
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
        rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_SSL_CONNECT_ERROR ||
        rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_LOGIN_DENIED || code == 0)
        return AF_MAIL_DOWN;
    /* 5xx is final, but not the authentication answers: those are ours to fix. */
    if (code >= 500 && code <= 599 && code != 530 && code != 534 && code != 535 && code != 538)
        return AF_MAIL_FAILED;
    return AF_MAIL_RETRY;
}

/* sendmail -t -i with the message on stdin, LF line ends. */
static enum af_mail_result send_sendmail(struct af_transport *tr, const char *msg, char *err,
                                         size_t errlen)
{
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(err, errlen, "sendmail: pipe: %s", strerror(errno));
        return AF_MAIL_RETRY;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        snprintf(err, errlen, "sendmail: fork: %s", strerror(errno));
        return AF_MAIL_RETRY;
    }
    if (pid == 0) {
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 1);
        signal(SIGPIPE, SIG_DFL);
        char from_arg[330];
        snprintf(from_arg, sizeof from_arg, "-f%s", tr->from);
        execl(tr->cfg->sendmail_path, tr->cfg->sendmail_path, "-t", "-i", from_arg, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    bool write_failed = false;
    const char *p = msg;
    while (*p && !write_failed) {
        const char *cr = strstr(p, "\r\n");
        size_t n = cr ? (size_t)(cr - p) : strlen(p);
        const char *chunks[2] = {p, "\n"};
        size_t lens[2] = {n, cr ? 1 : 0};
        for (int k = 0; k < 2 && !write_failed; k++) {
            size_t off = 0;
            while (off < lens[k]) {
                ssize_t w = write(fds[1], chunks[k] + off, lens[k] - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    write_failed = true;
                    break;
                }
                off += (size_t)w;
            }
        }
        p = cr ? cr + 2 : p + n;
    }
    close(fds[1]);
    signal(SIGPIPE, old);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, errlen, "sendmail: waitpid: %s", strerror(errno));
            return AF_MAIL_RETRY;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !write_failed)
        return AF_MAIL_SENT;
    if (WIFEXITED(status)) {
        int x = WEXITSTATUS(status);
        snprintf(err, errlen, "sendmail: exit status %d%s", x, write_failed ? " (input not taken)" : "");
        /* sysexits.h: 75 is EX_TEMPFAIL; the other 64..78 are final. */
        if (x >= 64 && x <= 78 && x != 75)
            return AF_MAIL_FAILED;
        return AF_MAIL_RETRY;
    }
    snprintf(err, errlen, "sendmail: killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return AF_MAIL_RETRY;
}

enum af_mail_result af_transport_send(struct af_transport *tr, const char *recipient,
                                      const char *message, char *err, size_t errlen)
{
    char to[320];
    if (!af_mail_addr_spec(recipient, to, sizeof to)) {
        snprintf(err, errlen, "the recipient is not an email address");
        return AF_MAIL_FAILED;
    }
    err[0] = '\0';
    return tr->sendmail ? send_sendmail(tr, message, err, errlen)
                        : send_smtp(tr, to, message, err, errlen);
}
