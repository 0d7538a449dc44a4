/* cache.c — Redis access (see cache.h). */
#include "cache.h"

#include <errno.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define RETRY_AFTER_US 500000
#define SUB_GIVE_UP_US 5000000

struct af_cache {
    const struct af_config *cfg;
    redisContext *ctx;
    int64_t down_until;
    unsigned long connections;
    /* The subscription (af_cache_listen). ping_at: when the unanswered
     * PING was sent (0: none); answered_ping_at: when the last answered
     * one was sent; covered_since: see af_cache_listen. */
    redisContext *sub;
    int64_t sub_down_until, ping_at, answered_ping_at, covered_since;
    long lag_us;
};

struct af_cache *af_cache_new(const struct af_config *cfg)
{
    struct af_cache *c = calloc(1, sizeof *c);
    if (c)
        c->cfg = cfg;
    return c;
}

/* Closes a connection that failed (logging event with hiredis's reason,
 * else why) and makes the next attempt wait a moment. */
static void close_failed(redisContext **x, int64_t *down_until, const char *event, const char *why)
{
    if (*x) {
        af_log(AF_LOG_WARN, event, "error", (*x)->errstr[0] ? (*x)->errstr : why, NULL);
        af_metrics_add("authflow_redis_errors_total{kind=\"connection\"}", 1);
        redisFree(*x);
        *x = NULL;
    }
    *down_until = af_now_us() + RETRY_AFTER_US;
}

static void drop(struct af_cache *c, const char *why)
{
    close_failed(&c->ctx, &c->down_until, "redis_unavailable", why);
}

void af_cache_free(struct af_cache *c)
{
    if (!c)
        return;
    if (c->sub)
        redisFree(c->sub);
    if (c->ctx)
        redisFree(c->ctx);
    free(c);
}

static struct timeval ms(long v)
{
    struct timeval tv = {v / 1000, (v % 1000) * 1000};
    return tv;
}

/* A connection with the configured timeouts, authenticated; NULL (and
 * *why set) when Redis cannot be reached or refuses it. */
static redisContext *open_connection(const struct af_config *cfg, const char **why)
{
    struct timeval ct = ms(cfg->redis_connect_timeout_ms);
    redisContext *x = cfg->redis_socket[0] ? redisConnectUnixWithTimeout(cfg->redis_socket, ct)
                                           : redisConnectWithTimeout(cfg->redis_host, (int)cfg->redis_port, ct);
    *why = "connect failed";
    if (!x)
        return NULL;
    if (x->err) {
        af_log(AF_LOG_WARN, "redis_unavailable", "error", x->errstr, NULL);
        af_metrics_add("authflow_redis_errors_total{kind=\"connect\"}", 1);
        redisFree(x);
        return NULL;
    }
    redisSetTimeout(x, ms(cfg->redis_command_timeout_ms));
    if (cfg->redis_password[0]) {
        redisReply *r = redisCommand(x, "AUTH %s", cfg->redis_password);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            *why = "AUTH failed";
            af_log(AF_LOG_WARN, "redis_unavailable", "error", *why, NULL);
            redisFree(x);
            return NULL;
        }
    }
    return x;
}

static bool ensure(struct af_cache *c)
{
    if (c->ctx && !c->ctx->err)
        return true;
    if (c->ctx)
        drop(c, "broken connection");
    if (af_now_us() < c->down_until)
        return false;
    const struct af_config *cfg = c->cfg;
    const char *why;
    c->ctx = open_connection(cfg, &why);
    if (!c->ctx) {
        c->down_until = af_now_us() + RETRY_AFTER_US;
        return false;
    }
    if (cfg->redis_db) {
        redisReply *r = redisCommand(c->ctx, "SELECT %ld", cfg->redis_db);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            drop(c, "SELECT failed");
            return false;
        }
    }
    if (c->connections++ > 0)
        af_metrics_add("authflow_redis_reconnects_total", 1);
    return true;
}

unsigned long af_cache_connections(const struct af_cache *c)
{
    return c->connections;
}

void af_cache_retry_now(struct af_cache *c)
{
    c->down_until = 0;
}

static redisReply *checked(struct af_cache *c, redisReply *r)
{
    if (!r) {
        drop(c, "no reply");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        af_log(AF_LOG_WARN, "redis_error", "error", r->str, NULL);
        af_metrics_add("authflow_redis_errors_total{kind=\"reply\"}", 1);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *af_cache_command(struct af_cache *c, const char *fmt, ...)
{
    if (!ensure(c))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c->ctx, fmt, ap);
    va_end(ap);
    return checked(c, r);
}

bool af_cache_pipeline(struct af_cache *c, int n, const char *const *cmds[], const size_t *argc,
                       redisReply **replies)
{
    for (int i = 0; i < n; i++)
        replies[i] = NULL;
    if (!ensure(c))
        return false;
    for (int i = 0; i < n; i++)
        if (redisAppendCommandArgv(c->ctx, (int)argc[i], (const char **)cmds[i], NULL) != REDIS_OK) {
            drop(c, "append failed");
            return false;
        }
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(c->ctx, &r) != REDIS_OK) {
            for (int j = 0; j < i; j++) {
                freeReplyObject(replies[j]);
                replies[j] = NULL;
            }
            drop(c, "pipeline failed");
            return false;
        }
        replies[i] = checked(c, r);
    }
    return true;
}

bool af_cache_ping(struct af_cache *c, long *latency_us)
{
    int64_t t0 = af_now_us();
    redisReply *r = af_cache_command(c, "PING");
    *latency_us = (long)(af_now_us() - t0);
    bool ok = r != NULL;
    freeReplyObject(r);
    return ok;
}

/* Loads the script; false when Redis is unreachable or refused it. */
static bool load_script(struct af_cache *c, struct af_cache_script *s)
{
    redisReply *r = af_cache_command(c, "SCRIPT LOAD %s", s->source);
    bool ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(s->sha, r->str, 41);
    freeReplyObject(r);
    return ok;
}

redisReply *af_cache_eval(struct af_cache *c, struct af_cache_script *s, int nkeys,
                          const char *const *keys, int nargs, const char *const *args)
{
    enum { MAX_ARGS = 16 };
    if (nkeys < 0 || nargs < 0 || nkeys + nargs > MAX_ARGS - 3)
        return NULL;
    if (!ensure(c) || (!s->sha[0] && !load_script(c, s)))
        return NULL;
    char n[12];
    snprintf(n, sizeof n, "%d", nkeys);
    const char *argv[MAX_ARGS] = {"EVALSHA", s->sha, n};
    int argc = 3;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    for (int attempt = 0; attempt < 2; attempt++) {
        redisReply *r = redisCommandArgv(c->ctx, argc, argv, NULL);
        if (!r) {
            drop(c, "no reply");
            return NULL;
        }
        /* Redis restarted or its script cache was flushed: load again. */
        if (attempt == 0 && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
            freeReplyObject(r);
            if (!load_script(c, s))
                return NULL;
            continue;
        }
        return checked(c, r);
    }
    return NULL;
}

static void sub_drop(struct af_cache *c, const char *why)
{
    close_failed(&c->sub, &c->sub_down_until, "redis_subscription_lost", why);
}

static bool sub_open(struct af_cache *c, const char *channel)
{
    const char *why;
    c->sub = open_connection(c->cfg, &why);
    if (!c->sub) {
        c->sub_down_until = af_now_us() + RETRY_AFTER_US;
        return false;
    }
    /* Waits for the confirmation (within the command timeout): from then
     * on every message published reaches this connection. */
    redisReply *r = redisCommand(c->sub, "SUBSCRIBE %s", channel);
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
              r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "subscribe");
    freeReplyObject(r);
    if (!ok) {
        sub_drop(c, "SUBSCRIBE failed");
        return false;
    }
    /* The confirmation counts as an answered PING; coverage starts once it
     * is here. */
    c->ping_at = 0;
    c->answered_ping_at = c->covered_since = af_now_us();
    return true;
}

/* A PONG: Redis ran between the PING's sending and now. Coverage goes on
 * when the previous answered PING was sent at most the lag before;
 * otherwise Redis may have hung at any moment until now, and coverage
 * starts again from now. */
static void sub_pong(struct af_cache *c)
{
    int64_t now = af_now_us();
    if (!c->ping_at)
        return;
    if (now - c->answered_ping_at > c->lag_us)
        c->covered_since = now;
    c->answered_ping_at = c->ping_at;
    c->ping_at = 0;
}

/* One reply read on the subscription. */
static void sub_reply(struct af_cache *c, redisReply *r, af_cache_message_fn *fn, void *arg)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (!strcmp(kind, "message") && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING)
        fn(arg, r->element[2]->str, r->element[2]->len);
    else if (!strcmp(kind, "pong"))
        sub_pong(c);
}

bool af_cache_listen(struct af_cache *c, const char *channel, long max_lag_ms, af_cache_message_fn *fn,
                     void *arg, int64_t *covered_since)
{
    c->lag_us = max_lag_ms * 1000;
    if (!c->sub && (af_now_us() < c->sub_down_until || !sub_open(c, channel)))
        return false;
    /* Replies already read (with the SUBSCRIBE confirmation), then
     * everything that has arrived, without waiting. */
    void *pending;
    while (redisReaderGetReply(c->sub->reader, &pending) == REDIS_OK && pending) {
        sub_reply(c, pending, fn, arg);
        freeReplyObject(pending);
    }
    for (;;) {
        char buf[16384];
        ssize_t n = recv(c->sub->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            if (redisReaderFeed(c->sub->reader, buf, (size_t)n) != REDIS_OK) {
                sub_drop(c, "protocol error");
                return false;
            }
            void *r;
            while (redisReaderGetReply(c->sub->reader, &r) == REDIS_OK && r) {
                sub_reply(c, r, fn, arg);
                freeReplyObject(r);
            }
            if (c->sub->reader->err) {
                sub_drop(c, "protocol error");
                return false;
            }
            if ((size_t)n < sizeof buf)
                break;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        sub_drop(c, n == 0 ? "connection closed" : strerror(errno));
        return false;
    }
    int64_t now = af_now_us();
    /* A connection that no longer answers at all (a peer that vanished
     * without closing it) is dropped, to be opened afresh. */
    if (c->ping_at && now - c->ping_at > SUB_GIVE_UP_US) {
        sub_drop(c, "PING unanswered");
        return false;
    }
    if (!c->ping_at && now - c->answered_ping_at >= c->lag_us / 2) {
        static const char ping[] = "*1\r\n$4\r\nPING\r\n";
        if (send(c->sub->fd, ping, sizeof ping - 1, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)(sizeof ping - 1)) {
            sub_drop(c, "PING failed");
            return false;
        }
        c->ping_at = now;
    }
    *covered_since = c->covered_since;
    return now - c->answered_ping_at <= c->lag_us;
}
