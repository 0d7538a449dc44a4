/* log.c — structured JSON log lines (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum af_log_level min_level = AF_LOG_INFO;
static const char *program = "authflow";

static const char *level_names[] = {"debug", "info", "warn", "error"};

void af_log_set_level(enum af_log_level level) { min_level = level; }
void af_log_set_program(const char *p) { program = p; }

int af_log_level_parse(const char *s, enum af_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum af_log_level)i;
            return 0;
        }
    return -1;
}

/* A line is built in a fixed buffer and written with one write(2), so lines
 * from concurrent processes sharing stderr never interleave. */
struct line {
    char buf[4096];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->len + n > sizeof l->buf - 2)
        n = sizeof l->buf - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

static void put_field(struct line *l, const char *key, const char *val)
{
    put(l, ",", 1);
    put_str(l, key);
    put(l, ":", 1);
    put_str(l, val);
}

static void begin(struct line *l, enum af_log_level level, const char *event)
{
    struct timespec ts;
    struct tm tm;
    char t[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(t + n, sizeof t - n, ".%06ldZ", ts.tv_nsec / 1000);
    l->len = 0;
    put(l, "{\"ts\":", 6);
    put_str(l, t);
    put_field(l, "level", level_names[level]);
    put_field(l, "prog", program);
    /* Which of a program's processes wrote the line. */
    static pid_t pid;
    if (!pid)
        pid = getpid();
    snprintf(t, sizeof t, ",\"pid\":%ld", (long)pid);
    put(l, t, strlen(t));
    put_field(l, "event", event);
}

static void end(struct line *l)
{
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    ssize_t w = write(STDERR_FILENO, l->buf, l->len);
    (void)w;
}

void af_log(enum af_log_level level, const char *event, ...)
{
    if (level < min_level)
        return;
    struct line l;
    begin(&l, level, event);
    va_list ap;
    va_start(ap, event);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        put_field(&l, k, v ? v : "");
    }
    va_end(ap);
    end(&l);
}

void af_log_request(const struct af_log_request *r)
{
    enum af_log_level level = r->status >= 500 ? AF_LOG_ERROR : AF_LOG_INFO;
    if (level < min_level)
        return;
    struct line l;
    char num[32];
    begin(&l, level, "request");
    if (r->request_id)
        put_field(&l, "request_id", r->request_id);
    put_field(&l, "method", r->method ? r->method : "");
    put_field(&l, "path", r->path ? r->path : "");
    snprintf(num, sizeof num, ",\"status\":%d", r->status);
    put(&l, num, strlen(num));
    snprintf(num, sizeof num, ",\"duration_us\":%ld", r->duration_us);
    put(&l, num, strlen(num));
    if (r->user_id)
        put_field(&l, "user_id", r->user_id);
    if (r->remote_addr)
        put_field(&l, "ip", r->remote_addr);
    if (r->error)
        put_field(&l, "error", r->error);
    end(&l);
}
