/* cache.c — Redis access (see cache.h). */
#include "cache.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define RETRY_AFTER_US 500000

struct af_cache {
    const struct af_config *cfg;
    redisContext *ctx;
    int64_t down_until;
};

struct af_cache *af_cache_new(const struct af_config *cfg)
{
    struct af_cache *c = calloc(1, sizeof *c);
    if (c)
        c->cfg = cfg;
    return c;
}

static void drop(struct af_cache *c, const char *why)
{
    if (c->ctx) {
        af_log(AF_LOG_WARN, "redis_unavailable", "error", c->ctx->errstr[0] ? c->ctx->errstr : why,
               NULL);
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    c->down_until = af_now_us() + RETRY_AFTER_US;
}

void af_cache_free(struct af_cache *c)
{
    if (!c)
        return;
    if (c->ctx)
        redisFree(c->ctx);
    free(c);
}

static struct timeval ms(long v)
{
    struct timeval tv = {v / 1000, (v % 1000) * 1000};
    return tv;
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
    struct timeval ct = ms(cfg->redis_connect_timeout_ms);
    c->ctx = cfg->redis_socket[0] ? redisConnectUnixWithTimeout(cfg->redis_socket, ct)
                                  : redisConnectWithTimeout(cfg->redis_host, (int)cfg->redis_port, ct);
    if (!c->ctx || c->ctx->err) {
        if (!c->ctx) {
            c->down_until = af_now_us() + RETRY_AFTER_US;
            return false;
        }
        drop(c, "connect failed");
        return false;
    }
    redisSetTimeout(c->ctx, ms(cfg->redis_command_timeout_ms));
    redisReply *r = NULL;
    if (cfg->redis_password[0])
        r = redisCommand(c->ctx, "AUTH %s", cfg->redis_password);
    if (cfg->redis_password[0] && (!r || r->type == REDIS_REPLY_ERROR)) {
        freeReplyObject(r);
        drop(c, "AUTH failed");
        return false;
    }
    freeReplyObject(r);
    if (cfg->redis_db) {
        r = redisCommand(c->ctx, "SELECT %ld", cfg->redis_db);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            drop(c, "SELECT failed");
            return false;
        }
    }
    return true;
}

static redisReply *checked(struct af_cache *c, redisReply *r)
{
    if (!r) {
        drop(c, "no reply");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        af_log(AF_LOG_WARN, "redis_error", "error", r->str, NULL);
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
