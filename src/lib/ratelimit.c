/* ratelimit.c — request rate limits and login throttling (see ratelimit.h). */
#include "ratelimit.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "ctx.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define MAX_LIMITS 2
#define LOCAL_SLOTS 4096

/* GCRA over KEYS, with (emission interval, period, cost) in microseconds
 * and requests as ARGV triples: takes cost requests from every key, or,
 * without counting anything, answers how long (microseconds) until it
 * could; 0: taken. */
static struct af_cache_script gcra_script = {
    .source =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
        "local wait, tats = 0, {}\n"
        "for i = 1, #KEYS do\n"
        "  local tat = tonumber(redis.call('GET', KEYS[i])) or now\n"
        "  if tat < now then tat = now end\n"
        "  tats[i] = tat\n"
        "  local w = tat - now + tonumber(ARGV[3 * i]) * tonumber(ARGV[3 * i - 2]) - tonumber(ARGV[3 * i - 1])\n"
        "  if w > wait then wait = w end\n"
        "end\n"
        "if wait > 0 then return wait end\n"
        "for i = 1, #KEYS do\n"
        "  local nt = tats[i] + tonumber(ARGV[3 * i]) * tonumber(ARGV[3 * i - 2])\n"
        "  redis.call('SET', KEYS[i], string.format('%.0f', nt), 'PX', math.ceil((nt - now) / 1000))\n"
        "end\n"
        "return 0\n",
};

/* KEYS: the account's throttle hash, the address's failure count;
 * ARGV[1]: failures allowed per address. Returns the wait in
 * microseconds. */
static struct af_cache_script login_check_script = {
    .source =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
        "local wait = 0\n"
        "local u = tonumber(redis.call('HGET', KEYS[1], 'until')) or 0\n"
        "if u > now then wait = u - now end\n"
        "if (tonumber(redis.call('GET', KEYS[2])) or 0) >= tonumber(ARGV[1]) then\n"
        "  local ttl = redis.call('PTTL', KEYS[2]) * 1000\n"
        "  if ttl > wait then wait = ttl end\n"
        "end\n"
        "return wait\n",
};

/* KEYS as above; ARGV: failures before the lockout, window, lockout and
 * longest lockout (microseconds). Counts one failure; returns the lockout
 * it starts (microseconds, 0 for none). */
static struct af_cache_script login_fail_script = {
    .source =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
        "local f, window = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
        "local n = redis.call('HINCRBY', KEYS[1], 'n', 1)\n"
        "local lock = 0\n"
        "if n >= f then\n"
        "  lock = math.min(tonumber(ARGV[3]) * 2 ^ math.min(n - f, 40), tonumber(ARGV[4]))\n"
        "  redis.call('HSET', KEYS[1], 'until', string.format('%.0f', now + lock))\n"
        "end\n"
        "redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(window, lock) / 1000))\n"
        "if redis.call('INCR', KEYS[2]) == 1 then\n"
        "  redis.call('PEXPIRE', KEYS[2], math.ceil(window / 1000))\n"
        "end\n"
        "return lock\n",
};

/* The per-process stand-in: one slot per key hash; a slot taken by
 * another key simply starts over. */
struct slot {
    uint64_t h;
    int64_t a, b;           /* GCRA: a = TAT; account: a = failures, b = lockout end;
                               address: a = failures */
    int64_t expires;
};

/* Requests taken from Redis ahead, for one key: a client that sends many
 * requests to this process costs one Redis round trip per lease, not per
 * request. A lease (good for a second) that was used up in time is
 * followed by one twice as large, up to a fiftieth of the limit; one that
 * lapsed by one half as large, so the size follows the client's rate.
 * Unused requests of a lease stay counted: a lease can only refuse a
 * little early, never let more through. */
#define LEASE_SLOTS 1024
#define LEASE_US 1000000
struct lease {
    uint64_t h;
    int64_t until;
    long left, size;
};

struct af_ratelimit {
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    bool local;             /* Redis is unreachable: limits are per process */
    struct slot slots[LOCAL_SLOTS];
    struct lease leases[LEASE_SLOTS];
};

static struct af_ratelimit *state(struct af_ctx *ctx)
{
    if (!ctx->rl) {
        ctx->rl = calloc(1, sizeof *ctx->rl);
        if (ctx->rl)
            crypto_shorthash_keygen(ctx->rl->hkey);
    }
    return ctx->rl;
}

/* Notes the way the last limit was kept, logging each change. */
static void note_redis(struct af_ctx *ctx, bool reachable)
{
    if (reachable && !(ctx->rl && ctx->rl->local))
        return;
    struct af_ratelimit *rl = state(ctx);
    if (!rl || rl->local == !reachable)
        return;
    rl->local = !reachable;
    if (rl->local)
        af_log(AF_LOG_WARN, "ratelimit_local", "detail",
               "Redis is unreachable: rate limits and login throttling are kept per process", NULL);
    else
        af_log(AF_LOG_INFO, "ratelimit_shared", "detail", "Redis is back: rate limits are shared again", NULL);
}

/* Runs a script; true with its integer answer in *out when Redis answered,
 * false (limits then kept in this process) when it did not. */
static bool shared(struct af_ctx *ctx, struct af_cache_script *script, int nkeys, const char *const *keys,
                   int nargs, const char *const *args, int64_t *out)
{
    redisReply *r = af_cache_eval(ctx->cache, script, nkeys, keys, nargs, args);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    if (ok)
        *out = r->integer;
    freeReplyObject(r);
    note_redis(ctx, ok);
    return ok;
}

static uint64_t key_hash(struct af_ratelimit *rl, const char *key)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, strlen(key), rl->hkey);
    return h;
}

static struct slot *slot_for(struct af_ratelimit *rl, const char *key, int64_t now)
{
    uint64_t h = key_hash(rl, key);
    struct slot *s = &rl->slots[h % LOCAL_SLOTS];
    if (s->h != h || s->expires <= now)
        *s = (struct slot){.h = h};
    return s;
}

static long seconds(int64_t us)
{
    long s = (long)((us + 999999) / 1000000);
    return s < 1 ? 1 : s;
}

static long long interval_us(const struct af_limit *l)
{
    return (long long)l->period_s * 1000000 / l->limit;
}

static long long period_us(const struct af_limit *l)
{
    return (long long)l->period_s * 1000000;
}

static int64_t take_local(struct af_ratelimit *rl, char keys[][160], const struct af_limit *limits, int n)
{
    int64_t now = af_now_us(), wait = 0;
    struct slot *s[MAX_LIMITS];
    for (int i = 0; i < n; i++) {
        s[i] = slot_for(rl, keys[i], now);
        int64_t tat = s[i]->a > now ? s[i]->a : now;
        int64_t w = tat - now + interval_us(&limits[i]) - period_us(&limits[i]);
        if (w > wait)
            wait = w;
    }
    if (wait > 0)
        return wait;
    for (int i = 0; i < n; i++) {
        int64_t tat = s[i]->a > now ? s[i]->a : now;
        s[i]->a = s[i]->expires = tat + interval_us(&limits[i]);
    }
    return 0;
}

/* Takes need[i] requests from Redis for each key with need[i] > 0: 0, a
 * wait (microseconds), or -1 when Redis did not answer. */
static int64_t take_shared(struct af_ctx *ctx, char keys[][160], const struct af_limit *limits,
                           const long *need, int n)
{
    char args[3 * MAX_LIMITS][24];
    const char *kp[MAX_LIMITS], *ap[3 * MAX_LIMITS];
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!need[i])
            continue;
        snprintf(args[3 * m], sizeof args[0], "%lld", interval_us(&limits[i]));
        snprintf(args[3 * m + 1], sizeof args[0], "%lld", period_us(&limits[i]));
        snprintf(args[3 * m + 2], sizeof args[0], "%ld", need[i]);
        kp[m] = keys[i];
        for (int j = 0; j < 3; j++)
            ap[3 * m + j] = args[3 * m + j];
        m++;
    }
    int64_t wait = 0;
    return shared(ctx, &gcra_script, m, kp, 3 * m, ap, &wait) ? wait : -1;
}

bool af_ratelimit_take(struct af_ctx *ctx, const struct af_limit *limits, int n, long *retry_after)
{
    struct af_ratelimit *rl = state(ctx);
    if (!rl)
        return true;                /* out of memory: no limit rather than no service */
    if (n > MAX_LIMITS)
        n = MAX_LIMITS;
    char keys[MAX_LIMITS][160];
    struct lease *ls[MAX_LIMITS];
    long need[MAX_LIMITS], one[MAX_LIMITS];
    bool any = false, bigger = false;
    int64_t now = af_now_us();
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "af:rl:%s", limits[i].key);
        uint64_t h = key_hash(rl, keys[i]);
        ls[i] = &rl->leases[h % LEASE_SLOTS];
        if (ls[i]->h != h)
            *ls[i] = (struct lease){.h = h};
        one[i] = need[i] = 0;
        if (ls[i]->left > 0 && ls[i]->until > now)
            continue;
        /* Used up in time: twice as large; lapsed just now: half; a client
         * back after a pause starts again at one request. */
        long cap = limits[i].limit / 50 > 1 ? limits[i].limit / 50 : 1;
        long size = ls[i]->left == 0 && ls[i]->until > now ? 2 * ls[i]->size
                    : ls[i]->until > now - LEASE_US ? ls[i]->size / 2 : 1;
        need[i] = size < 1 ? 1 : size > cap ? cap : size;
        one[i] = 1;
        any = true;
        bigger |= need[i] > 1;
    }
    int64_t wait = 0;
    bool leased = false;
    if (any) {
        wait = take_shared(ctx, keys, limits, need, n);
        /* Near the limit a large lease is refused where one request is not. */
        if (wait > 0 && bigger) {
            memcpy(need, one, sizeof need);
            wait = take_shared(ctx, keys, limits, need, n);
        }
        if (wait < 0) {
            wait = take_local(rl, keys, limits, n);
        } else if (wait == 0) {
            leased = true;
            for (int i = 0; i < n; i++)
                if (need[i])
                    *ls[i] = (struct lease){.h = ls[i]->h, .until = now + LEASE_US, .left = need[i],
                                            .size = need[i]};
        }
    }
    if (wait > 0) {
        *retry_after = seconds(wait);
        return false;
    }
    /* Each key's request comes out of its lease (kept one, or new one). */
    for (int i = 0; i < n; i++)
        if (!need[i] || leased)
            ls[i]->left--;
    return true;
}

/* The endpoint group's per-address limit: "auth" from "authflow-auth";
 * social login (authflow-oauth) has the auth group's;
 * 0 for programs without one (the gate answers at line rate for the
 * applications behind it). */
static long group_limit(struct af_ctx *ctx, const char **group)
{
    const char *g = strncmp(ctx->program, "authflow-", 9) ? ctx->program : ctx->program + 9;
    *group = g;
    if (!strcmp(g, "auth") || !strcmp(g, "oauth")) /* the same limit, counted apart */
        return ctx->cfg.rl_auth_per_ip;
    if (!strcmp(g, "users"))
        return ctx->cfg.rl_users_per_ip;
    if (!strcmp(g, "admin"))
        return ctx->cfg.rl_admin_per_ip;
    return 0;
}

bool af_ratelimit_request(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *group;
    long per_ip = group_limit(ctx, &group);
    if (!ctx->cfg.rl_enabled || per_ip == 0)
        return true;
    struct af_limit l[MAX_LIMITS];
    int n = 0;
    l[n++] = (struct af_limit){af_arena_printf(req->arena, "%s:ip:%s", group,
                                               req->remote_addr ? req->remote_addr : "-"),
                               per_ip, 60};
    if (req->authenticated)
        l[n++] = (struct af_limit){af_arena_printf(req->arena, "acct:%s", req->claims.sub),
                                   ctx->cfg.rl_per_account, 60};
    long retry;
    if (af_ratelimit_take(ctx, l, n, &retry))
        return true;
    af_metrics_incf("authflow_rate_limited_total{group=\"%s\",limit=\"requests\"}", group);
    af_resp_problem(resp, req, 429, "rate_limited", "Too many requests; slow down and try again later.");
    af_resp_header(resp, req, "Retry-After", af_arena_printf(req->arena, "%ld", retry));
    return false;
}

/* The throttle's keys: the account by a hash of its email (unknown
 * addresses are throttled like known ones), the address as it is. */
static void login_keys(struct af_req *req, const char *email, char acct[80], char ip[80])
{
    char h[AF_SHA256_HEX];
    af_sha256_hex(email, strlen(email), h);
    snprintf(acct, 80, "af:lt:a:%.40s", h);
    snprintf(ip, 80, "af:lt:ip:%.60s", req && req->remote_addr ? req->remote_addr : "-");
}

bool af_login_throttle_check(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                             const char *email)
{
    if (!ctx->cfg.rl_enabled)
        return true;
    char acct[80], ip[80], per_ip[24];
    login_keys(req, email, acct, ip);
    snprintf(per_ip, sizeof per_ip, "%ld", ctx->cfg.rl_login_failures_per_ip);
    const char *keys[] = {acct, ip}, *args[] = {per_ip};
    int64_t wait = 0;
    if (!shared(ctx, &login_check_script, 2, keys, 1, args, &wait) && state(ctx)) {
        int64_t now = af_now_us();
        struct slot *a = slot_for(ctx->rl, acct, now), *i = slot_for(ctx->rl, ip, now);
        if (a->b > now)
            wait = a->b - now;
        if (i->a >= ctx->cfg.rl_login_failures_per_ip && i->expires - now > wait)
            wait = i->expires - now;
    }
    if (wait <= 0)
        return true;
    af_metrics_add("authflow_rate_limited_total{group=\"auth\",limit=\"login_failures\"}", 1);
    af_resp_problem(resp, req, 429, "too_many_attempts",
                    "Too many failed logins for this account; wait before trying again, or reset the password.");
    af_resp_header(resp, req, "Retry-After", af_arena_printf(req->arena, "%ld", seconds(wait)));
    return false;
}

void af_login_throttle_failed(struct af_ctx *ctx, struct af_req *req, const char *email)
{
    if (!ctx->cfg.rl_enabled)
        return;
    char acct[80], ip[80], a[4][24];
    login_keys(req, email, acct, ip);
    int64_t window = (int64_t)ctx->cfg.rl_login_window * 1000000;
    int64_t lockout = (int64_t)ctx->cfg.rl_login_lockout * 1000000;
    int64_t lockout_max = (int64_t)ctx->cfg.rl_login_lockout_max * 1000000;
    snprintf(a[0], sizeof a[0], "%ld", ctx->cfg.rl_login_failures);
    snprintf(a[1], sizeof a[1], "%lld", (long long)window);
    snprintf(a[2], sizeof a[2], "%lld", (long long)lockout);
    snprintf(a[3], sizeof a[3], "%lld", (long long)lockout_max);
    const char *keys[] = {acct, ip}, *args[] = {a[0], a[1], a[2], a[3]};
    int64_t lock = 0;
    struct af_ratelimit *rl;
    if (shared(ctx, &login_fail_script, 2, keys, 4, args, &lock) || !(rl = state(ctx)))
        return;
    int64_t now = af_now_us();
    struct slot *s = slot_for(rl, acct, now);
    s->a++;
    if (s->a >= ctx->cfg.rl_login_failures) {
        lock = lockout;
        for (int64_t k = s->a - ctx->cfg.rl_login_failures; k > 0 && lock < lockout_max; k--)
            lock *= 2;
        if (lock > lockout_max)
            lock = lockout_max;
        s->b = now + lock;
    }
    s->expires = now + (lock > window ? lock : window);
    s = slot_for(rl, ip, now);
    if (s->a++ == 0)
        s->expires = now + window;
}

void af_login_throttle_clear(struct af_ctx *ctx, const char *email)
{
    char acct[80], ip[80];
    login_keys(NULL, email, acct, ip);
    redisReply *r = af_cache_command(ctx->cache, "DEL %s", acct);
    freeReplyObject(r);
    if (ctx->rl) {
        int64_t now = af_now_us();
        struct slot *s = slot_for(ctx->rl, acct, now);
        *s = (struct slot){0};
    }
}

void af_ratelimit_free(struct af_ctx *ctx)
{
    free(ctx->rl);
    ctx->rl = NULL;
}
