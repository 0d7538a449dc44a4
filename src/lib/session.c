/* session.c — sessions and refresh tokens (see session.h). */
#include "session.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authn.h"
#include "cookie.h"
#include "ctx.h"
#include "http.h"
#include "log.h"
#include "reads.h"
#include "metrics.h"
#include "user.h"

#define LIVE_CACHE_TTL 60
#define REPAIR_INTERVAL_US 1000000
#define REVOKED_CHANNEL "af:revoked"
/* Seconds between two updates of a session's last_seen_at. */
#define SEEN_INTERVAL 60
#define AF_STR_(x) #x
#define AF_STR(x) AF_STR_(x)

/* Sessions a gate process found live ([gate] session_memory_ms): sid ->
 * when it was checked. Set-associative, oldest way replaced; a revocation
 * published on REVOKED_CHANNEL removes its session. Per process. */
#define MEMORY_SETS 1024
#define MEMORY_WAYS 4
struct remembered {
    char sid[37];
    int64_t checked_us;
};
static struct remembered *memory;

static struct remembered *memory_set(const char *sid)
{
    if (!memory && !(memory = calloc((size_t)MEMORY_SETS * MEMORY_WAYS, sizeof *memory)))
        return NULL;
    /* Session ids are random: any of their characters spread well. */
    unsigned h = 0;
    for (int i = 0; sid[i] && i < 8; i++)
        h = h * 31 + (unsigned char)sid[i];
    return &memory[h % MEMORY_SETS * MEMORY_WAYS];
}

static void forget(void *arg, const char *sid, size_t len)
{
    (void)arg;
    char id[37];
    if (len != 36)
        return;
    memcpy(id, sid, 36);
    id[36] = '\0';
    struct remembered *set = memory_set(id);
    for (int w = 0; set && w < MEMORY_WAYS; w++)
        if (!strcmp(set[w].sid, id))
            set[w].sid[0] = '\0';
}

static void remember(const char *sid, int64_t at)
{
    struct remembered *set = memory_set(sid), *victim = NULL;
    for (int w = 0; set && w < MEMORY_WAYS; w++) {
        if (!strcmp(set[w].sid, sid)) {
            victim = &set[w];
            break;
        }
        if (!victim || (victim->sid[0] && (!set[w].sid[0] || set[w].checked_us < victim->checked_us)))
            victim = &set[w];
    }
    if (victim) {
        snprintf(victim->sid, sizeof victim->sid, "%s", sid);
        victim->checked_us = at;
    }
}

/* Found live not before covered_since, and recently: each session is
 * remembered for between half of max_us and max_us (the share fixed by its
 * id), so that sessions first seen together are not all checked again at
 * the same moment. */
static bool remembered(const char *sid, int64_t now, int64_t max_us, int64_t covered_since)
{
    struct remembered *set = memory_set(sid);
    unsigned spread = 0;
    for (size_t i = 24; i < 36 && i < strlen(sid); i++)
        spread = spread * 31 + (unsigned char)sid[i];
    int64_t keep = max_us / 2 + (int64_t)(spread % 1024) * (max_us / 2) / 1024;
    for (int w = 0; set && w < MEMORY_WAYS; w++)
        if (!strcmp(set[w].sid, sid))
            return set[w].checked_us >= covered_since && now - set[w].checked_us <= keep;
    return false;
}

static long revoked_mark_ttl(struct af_ctx *ctx)
{
    return ctx->cfg.access_ttl + 2 * ctx->cfg.clock_skew;
}

/* The session check in one Redis round trip. A live mark holds the
 * generation it was written in, and counts only while that is still the
 * current one. Whenever Redis has answered no session check for longer
 * than a pause (ARGV[1] ms, below the command timeout), a new generation
 * starts: a Redis that hung long enough for a revocation to time out, or
 * that restarted from a snapshot, vouches for no session it saw before.
 * A live session also gets af:seen:<sid> for a minute; when that is new,
 * the caller moves the session's last_seen_at in PostgreSQL: at most once a
 * minute, never per request.
 * KEYS: af:rev:<sid>, af:sess:<sid>, af:sessgen (a hash: g generation, c the
 * last check's time in ms), af:seen:<sid>[, af:user:<uid>].
 * ARGV: the longest pause (ms), the af:seen lifetime (s).
 * Returns {revoked 0|1, live 0|1, generation, cached user or nil, seen is
 * new 0|1}. */
static struct af_cache_script check_script = {
    .source =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local g = redis.call('HMGET', KEYS[3], 'g', 'c')\n"
        "local gen, last = g[1], tonumber(g[2]) or 0\n"
        "if not gen or now < last or now - last > tonumber(ARGV[1]) then\n"
        "  gen = t[1] .. '.' .. t[2]\n"
        "  redis.call('HSET', KEYS[3], 'g', gen, 'c', now)\n"
        "elseif now - last >= 10 then\n"
        "  redis.call('HSET', KEYS[3], 'c', now)\n"
        "end\n"
        "local v = redis.call('MGET', KEYS[1], KEYS[2], KEYS[5] or KEYS[1])\n"
        "local rev = v[1] and 1 or 0\n"
        "local live = (not v[1] and v[2] == gen) and 1 or 0\n"
        "local seen = 0\n"
        "if live == 1 and redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[2]) then seen = 1 end\n"
        "return {rev, live, gen, KEYS[5] and v[3] or false, seen}\n",
};

/* The longest pause (ms) Redis may take between two session checks and
 * still vouch for what it remembered: below both timeouts, so a Redis that
 * hung long enough to fail a revocation has always paused longer. */
static long pause_ms(struct af_ctx *ctx)
{
    long t = ctx->cfg.redis_command_timeout_ms < ctx->cfg.redis_connect_timeout_ms
                 ? ctx->cfg.redis_command_timeout_ms
                 : ctx->cfg.redis_connect_timeout_ms;
    return t > 1 ? t / 2 : 1;
}

static bool mark_revoked(struct af_ctx *ctx, const char *sid)
{
    char rev[64], live[64], ttl[24];
    snprintf(rev, sizeof rev, "af:rev:%s", sid);
    snprintf(live, sizeof live, "af:sess:%s", sid);
    snprintf(ttl, sizeof ttl, "%ld", revoked_mark_ttl(ctx));
    const char *set[] = {"SET", rev, "1", "EX", ttl};
    const char *del[] = {"DEL", live};
    const char *pub[] = {"PUBLISH", REVOKED_CHANNEL, sid};
    const char *const *cmds[] = {set, del, pub};
    size_t argc[] = {5, 2, 3};
    redisReply *replies[3];
    /* A revocation does not wait out an earlier failure's pause, and tries
     * a fresh connection once when the one it had failed (closed by Redis
     * or a firewall while idle). The commands can be repeated. */
    bool ok = false;
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        af_cache_retry_now(ctx->cache);
        ok = af_cache_pipeline(ctx->cache, 3, cmds, argc, replies) && replies[0] && replies[1] && replies[2];
        for (int i = 0; i < 3; i++)
            freeReplyObject(replies[i]);
    }
    return ok;
}

/* Writes the revocations waiting in session_cache_repairs to Redis, and
 * drops the cached user objects waiting in user_cache_repairs; true when
 * everything waiting was done. Rows too old to matter are deleted. */
static bool apply_repairs(struct af_ctx *ctx)
{
    char ttl[24], user_ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", revoked_mark_ttl(ctx));
    snprintf(user_ttl, sizeof user_ttl, "%d", AF_USER_CACHE_TTL);
    const char *p[] = {ttl, user_ttl};
    PGresult *r;
    /* The common case (nothing waiting) is one cheap read. */
    if (af_db_exec(ctx->db, &r,
                   "SELECT 's', session_id, created_at < now() - make_interval(secs => $1::int) "
                   "FROM session_cache_repairs "
                   "UNION ALL SELECT 'u', user_id, created_at < now() - make_interval(secs => $2::int) "
                   "FROM user_cache_repairs LIMIT 1000",
                   2, p) != AF_DB_OK)
        return false;
    bool ok = true;
    for (int i = 0; i < PQntuples(r) && ok; i++) {
        bool session = PQgetvalue(r, i, 0)[0] == 's';
        const char *id = PQgetvalue(r, i, 1);
        bool stale = PQgetvalue(r, i, 2)[0] == 't';
        if (!stale) {
            ok = session ? mark_revoked(ctx, id) : af_user_cache_forget(ctx, id);
            if (!ok)
                break;
            af_log(AF_LOG_INFO, session ? "revocation_cached" : "user_cache_dropped",
                   session ? "session_id" : "user_id", id, NULL);
        }
        const char *d[] = {id};
        af_db_run(ctx->db, session ? "DELETE FROM session_cache_repairs WHERE session_id = $1"
                                   : "DELETE FROM user_cache_repairs WHERE user_id = $1", 1, d);
    }
    PQclear(r);
    return ok;
}

static enum af_session_state check(struct af_ctx *ctx, struct af_req *req, const char *sid,
                                   const char *user_id, const char **cached_user, int64_t now);

enum af_session_state af_session_check(struct af_ctx *ctx, struct af_req *req, const char *sid,
                                       const char *user_id, const char **cached_user)
{
    int64_t now = af_now_us();
    /* Revocations Redis missed are written (and published) at least once a
     * second, before any answer from memory. */
    if (now >= ctx->repair_due_us) {
        ctx->repair_due_us = now + REPAIR_INTERVAL_US;
        apply_repairs(ctx);
    }
    /* The gate first asks its memory: sound while its subscription to
     * revocations has missed nothing since the session was checked. */
    long memory_ms = ctx->remember_sessions && !cached_user ? ctx->cfg.gate_session_memory_ms : 0;
    int64_t covered_since = 0;
    bool listening = memory_ms > 0 &&
                     af_cache_listen(ctx->cache, REVOKED_CHANNEL, pause_ms(ctx), forget, NULL, &covered_since);
    if (listening && remembered(sid, now, memory_ms * 1000, covered_since))
        return AF_SESSION_LIVE;
    enum af_session_state st = check(ctx, req, sid, user_id, cached_user, now);
    /* Remembered only if the subscription covered the whole check: a hang
     * during it could hide a revocation that failed meanwhile. */
    int64_t covered_after = 0;
    if (listening && st == AF_SESSION_LIVE &&
        af_cache_listen(ctx->cache, REVOKED_CHANNEL, pause_ms(ctx), forget, NULL, &covered_after) &&
        covered_after <= now)
        remember(sid, now);
    return st;
}

/* Moves last_seen_at (Redis said a minute has passed since the last time;
 * PostgreSQL checks again). A failure costs only the timestamp. */
static void touch(struct af_ctx *ctx, const char *sid)
{
    const char *p[] = {sid};
    af_db_run(ctx->db,
              "UPDATE sessions SET last_seen_at = now() WHERE id = $1 "
              "AND last_seen_at < now() - make_interval(secs => " AF_STR(SEEN_INTERVAL) ")", 1, p);
}

/* The session check through Redis, or PostgreSQL. */
static enum af_session_state check(struct af_ctx *ctx, struct af_req *req, const char *sid,
                                   const char *user_id, const char **cached_user, int64_t now)
{
    char rev[64], live_key[64], seen_key[64], user_key[64], pause[24], seen_ttl[24];
    snprintf(rev, sizeof rev, "af:rev:%s", sid);
    snprintf(live_key, sizeof live_key, "af:sess:%s", sid);
    snprintf(seen_key, sizeof seen_key, "af:seen:%s", sid);
    snprintf(user_key, sizeof user_key, "af:user:%s", user_id);
    snprintf(pause, sizeof pause, "%ld", pause_ms(ctx));
    snprintf(seen_ttl, sizeof seen_ttl, "%d", SEEN_INTERVAL);
    const char *keys[] = {rev, live_key, "af:sessgen", seen_key, user_key};
    const char *args[] = {pause, seen_ttl};
    redisReply *r = af_cache_eval(ctx->cache, &check_script, cached_user ? 5 : 4, keys, 2, args);
    bool cache_up = r && r->type == REDIS_REPLY_ARRAY && r->elements == 5 &&
                    r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len < 40;
    char gen[40] = "";
    if (cached_user)
        *cached_user = NULL;
    if (cache_up) {
        bool revoked = r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1;
        bool live = r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer == 1;
        bool seen = r->element[4]->type == REDIS_REPLY_INTEGER && r->element[4]->integer == 1;
        memcpy(gen, r->element[2]->str, r->element[2]->len);
        gen[r->element[2]->len] = '\0';
        if (cached_user && r->element[3]->type == REDIS_REPLY_STRING)
            *cached_user = af_arena_strndup(req->arena, r->element[3]->str, r->element[3]->len);
        freeReplyObject(r);
        /* A new connection to Redis: revocations it may have missed are
         * written first, and this answer is not trusted. */
        if (af_cache_connections(ctx->cache) != ctx->repaired_connection) {
            unsigned long conn = af_cache_connections(ctx->cache);
            if (apply_repairs(ctx))
                ctx->repaired_connection = conn;
        } else if (revoked) {
            return AF_SESSION_REVOKED;
        } else if (live) {
            if (seen)
                touch(ctx, sid);
            return AF_SESSION_LIVE;
        }
    } else {
        freeReplyObject(r);
    }
    const char *p[] = {sid};
    PGresult *res;
    /* Also moves last_seen_at of a live session, at most once a minute. */
    enum af_db_status st = af_db_exec(ctx->db, &res,
        "WITH s AS (SELECT id, revoked_at IS NULL AND expires_at > now() AS live, "
        "    last_seen_at < now() - make_interval(secs => " AF_STR(SEEN_INTERVAL) ") AS stale "
        "  FROM sessions WHERE id = $1), "
        "u AS (UPDATE sessions SET last_seen_at = now() FROM s WHERE sessions.id = s.id AND s.live AND s.stale) "
        "SELECT live FROM s", 1, p);
    if (st != AF_DB_OK)
        return AF_SESSION_UNAVAILABLE;
    bool live = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (cache_up) {
        if (live) {
            /* The live mark, and the minute the statement above covered. */
            const char *mark[] = {"SET", live_key, gen, "EX", AF_STR(LIVE_CACHE_TTL)};
            const char *seen[] = {"SET", seen_key, "1", "NX", "EX", seen_ttl};
            const char *const *cmds[] = {mark, seen};
            size_t argc[] = {5, 6};
            redisReply *replies[2];
            af_cache_pipeline(ctx->cache, 2, cmds, argc, replies);
            freeReplyObject(replies[0]);
            freeReplyObject(replies[1]);
        } else {
            af_session_mark_revoked(ctx, sid);
        }
    }
    return live ? AF_SESSION_LIVE : AF_SESSION_REVOKED;
}

void af_session_mark_revoked_list(struct af_ctx *ctx, const char *array)
{
    const char *p = array;
    while (*p) {
        while (*p == '{' || *p == ',' || *p == '}')
            p++;
        size_t n = strcspn(p, ",}");
        if (n == 36) {
            char sid[37];
            memcpy(sid, p, 36);
            sid[36] = '\0';
            af_session_mark_revoked(ctx, sid);
        }
        p += n;
    }
}

void af_session_mark_revoked(struct af_ctx *ctx, const char *sid)
{
    if (mark_revoked(ctx, sid))
        return;
    /* Redis did not take it: the id waits in PostgreSQL until a responder
     * can write it (apply_repairs). */
    af_log(AF_LOG_WARN, "revocation_not_cached", "session_id", sid, NULL);
    const char *p[] = {sid};
    af_db_run(ctx->db, "INSERT INTO session_cache_repairs (session_id) VALUES ($1) "
                       "ON CONFLICT (session_id) DO UPDATE SET created_at = now()", 1, p);
}

int af_session_revoke(struct af_ctx *ctx, const char *sid, const char *reason)
{
    const char *p[] = {sid, reason};
    if (af_db_run(ctx->db,
                  "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 "
                  "WHERE id = $1 AND revoked_at IS NULL", 2, p) != AF_DB_OK)
        return -1;
    af_session_mark_revoked(ctx, sid);
    return 0;
}

/* Runs an UPDATE of sessions that returns the ids it revoked, then marks
 * them in Redis; the number revoked, or -1 when PostgreSQL failed. */
static long revoke_returning(struct af_ctx *ctx, const char *sql, int n, const char *const *p)
{
    PGresult *r;
    if (af_db_exec(ctx->db, &r, sql, n, p) != AF_DB_OK)
        return -1;
    long count = PQntuples(r);
    for (long i = 0; i < count; i++)
        af_session_mark_revoked(ctx, PQgetvalue(r, (int)i, 0));
    PQclear(r);
    return count;
}

long af_session_revoke_all(struct af_ctx *ctx, const char *user_id, const char *except_sid,
                           const char *reason)
{
    const char *p[] = {user_id, except_sid, reason};
    return revoke_returning(ctx,
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3 "
        "WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2::uuid) "
        "RETURNING id", 3, p);
}

int af_session_revoke_own(struct af_ctx *ctx, const char *user_id, const char *sid,
                          const char *reason)
{
    const char *p[] = {user_id, sid, reason};
    long n = revoke_returning(ctx,
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3 "
        "WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL AND expires_at > now() "
        "RETURNING id", 3, p);
    return n < 0 ? -1 : n > 0;
}

enum af_db_status af_session_list_json(struct af_ctx *ctx, struct af_req *req, const char *user_id,
                                       const char *current_sid, json_object **out)
{
    const char *p[] = {user_id};
    PGresult *r;
    enum af_db_status st = af_read(ctx, req, &r,
        "SELECT id, " AF_TS_SQL("created_at") ", " AF_TS_SQL("last_seen_at") ", "
        AF_TS_SQL("least(expires_at, idle_expires_at)") ", ip, user_agent, array_to_json(amr)::text "
        "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL "
        "AND expires_at > now() AND idle_expires_at > now() ORDER BY created_at DESC, id LIMIT 200",
        1, p);
    if (st != AF_DB_OK)
        return st;
    json_object *list = json_object_new_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_object *o = json_object_new_object();
        const char *id = PQgetvalue(r, i, 0);
        json_object_object_add(o, "id", json_object_new_string(id));
        json_object_object_add(o, "created_at", json_object_new_string(PQgetvalue(r, i, 1)));
        json_object_object_add(o, "last_seen_at", json_object_new_string(PQgetvalue(r, i, 2)));
        json_object_object_add(o, "expires_at", json_object_new_string(PQgetvalue(r, i, 3)));
        json_object_object_add(o, "ip", PQgetisnull(r, i, 4) ? NULL : json_object_new_string(PQgetvalue(r, i, 4)));
        json_object_object_add(o, "user_agent",
                               PQgetisnull(r, i, 5) ? NULL : json_object_new_string(PQgetvalue(r, i, 5)));
        json_object_object_add(o, "current",
                               json_object_new_boolean(current_sid && !strcmp(id, current_sid)));
        json_object *amr = json_tokener_parse(PQgetvalue(r, i, 6));
        json_object_object_add(o, "amr", amr ? amr : json_object_new_array());
        json_object_array_add(list, o);
    }
    PQclear(r);
    *out = list;
    return AF_DB_OK;
}

void af_session_list(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *list;
    enum af_db_status st = af_session_list_json(ctx, req, req->claims.sub, req->claims.sid, &list);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    af_resp_json(resp, req, 200, list);
}

static void set_cookie(struct af_req *req, struct af_resp *resp, const char *name, const char *value,
                       const char *path, long max_age, bool http_only, bool secure,
                       enum af_samesite same_site)
{
    struct af_cookie c = {.name = name, .value = value, .path = path, .max_age = max_age,
                          .http_only = http_only, .secure = secure, .same_site = same_site};
    const char *h = af_cookie_format(req->arena, &c);
    if (h)
        af_resp_header(resp, req, "Set-Cookie", h);
}

static const char *refresh_path(struct af_ctx *ctx, struct af_req *req)
{
    return af_arena_printf(req->arena, "%s/auth", ctx->cfg.api_prefix);
}

void af_session_clear_cookies(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    if (!ctx->cfg.cookies_enabled)
        return;
    bool sec = ctx->cfg.cookies_secure;
    set_cookie(req, resp, af_cookie_access_name(sec), "", "/", 0, true, sec, AF_SAMESITE_LAX);
    set_cookie(req, resp, af_cookie_refresh_name(sec), "", refresh_path(ctx, req), 0, true, sec,
               AF_SAMESITE_STRICT);
    set_cookie(req, resp, AF_COOKIE_CSRF, "", "/", 0, false, sec, AF_SAMESITE_STRICT);
}

/* Signs an access token for the session and answers 200 with the pair. */
static void respond_pair(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                         const struct af_user *u, const char *sid, const char *amr,
                         const char *dfp, const char *refresh, long refresh_expires_in)
{
    struct af_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", u->id);
    snprintf(c.sid, sizeof c.sid, "%s", sid);
    snprintf(c.email, sizeof c.email, "%s", u->email);
    snprintf(c.roles, sizeof c.roles, "%s", u->roles);
    snprintf(c.amr, sizeof c.amr, "%s", amr);
    snprintf(c.dfp, sizeof c.dfp, "%s", dfp);
    c.email_verified = u->email_verified;
    char *access = NULL;
    if (af_token_sign(ctx->keys, &ctx->token_params, &c, &access) != 0) {
        af_resp_internal(resp, req, "token signing failed");
        return;
    }
    af_metrics_add("authflow_tokens_issued_total{kind=\"access\"}", 1);
    af_metrics_add("authflow_tokens_issued_total{kind=\"refresh\"}", 1);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "access_token", json_object_new_string(access));
    json_object_object_add(o, "token_type", json_object_new_string("Bearer"));
    json_object_object_add(o, "expires_in", json_object_new_int64(ctx->cfg.access_ttl));
    json_object_object_add(o, "refresh_token", json_object_new_string(refresh));
    json_object_object_add(o, "refresh_expires_in", json_object_new_int64(refresh_expires_in));
    json_object_object_add(o, "session_id", json_object_new_string(sid));
    af_resp_json(resp, req, 200, o);
    resp->user_id = af_arena_strdup(req->arena, u->id);
    if (ctx->cfg.cookies_enabled) {
        bool sec = ctx->cfg.cookies_secure;
        char csrf[AF_TOKEN_CHARS + 1];
        af_random_token(csrf);
        set_cookie(req, resp, af_cookie_access_name(sec), access, "/", ctx->cfg.access_ttl, true,
                   sec, AF_SAMESITE_LAX);
        set_cookie(req, resp, af_cookie_refresh_name(sec), refresh, refresh_path(ctx, req),
                   refresh_expires_in, true, sec, AF_SAMESITE_STRICT);
        set_cookie(req, resp, AF_COOKIE_CSRF, af_arena_strdup(req->arena, csrf), "/",
                   refresh_expires_in, false, sec, AF_SAMESITE_STRICT);
    }
    sodium_memzero(access, strlen(access));
    free(access);
}

void af_session_login(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                      const struct af_user *user, const char *amr)
{
    char refresh[AF_TOKEN_CHARS + 1], dfp[65], abs_ttl[24], idle_ttl[24];
    unsigned char hash[32];
    af_random_token(refresh);
    af_sha256(refresh, strlen(refresh), hash);
    char hash_hex[70] = "\\x";
    sodium_bin2hex(hash_hex + 2, sizeof hash_hex - 2, hash, sizeof hash);
    af_fingerprint(ctx, req, dfp);
    snprintf(abs_ttl, sizeof abs_ttl, "%ld", ctx->cfg.refresh_ttl);
    snprintf(idle_ttl, sizeof idle_ttl, "%ld", ctx->cfg.refresh_idle_ttl);
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {user->id, abs_ttl, idle_ttl, req->remote_addr, ua, dfp, amr, hash_hex,
                       req->request_id};
    PGresult *r;
    /* One round trip: the session, its first refresh token, the login time
     * and the audit row. */
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "WITH s AS (INSERT INTO sessions (user_id, expires_at, idle_expires_at, ip, user_agent, dfp, amr) "
        "  VALUES ($1, now() + make_interval(secs => $2::int), "
        "          now() + make_interval(secs => least($2::int, $3::int)), $4, left($5, 512), $6, "
        "          ARRAY(SELECT json_array_elements_text($7::json))) RETURNING id), "
        "t AS (INSERT INTO refresh_tokens (token_hash, session_id) SELECT $8::bytea, id FROM s), "
        "u AS (UPDATE users SET last_login_at = now() WHERE id = $1), "
        "a AS (INSERT INTO audit_log (type, actor_id, subject_id, session_id, ip, user_agent, request_id, detail) "
        "  SELECT 'login', $1, $1, id, $4, left($5, 512), $9, jsonb_build_object('amr', $7::jsonb) FROM s) "
        "SELECT id FROM s", 9, p);
    if (st == AF_DB_UNAVAILABLE) {
        af_resp_unavailable(resp, req, af_db_error(ctx->db));
        return;
    }
    if (st != AF_DB_OK) {
        af_resp_internal(resp, req, af_db_error(ctx->db));
        return;
    }
    char sid[37];
    snprintf(sid, sizeof sid, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    /* last_login_at moved: the cached user object is stale. */
    af_user_cache_drop(ctx, user->id);
    long refresh_in = ctx->cfg.refresh_idle_ttl < ctx->cfg.refresh_ttl ? ctx->cfg.refresh_idle_ttl
                                                                          : ctx->cfg.refresh_ttl;
    respond_pair(ctx, req, resp, user, sid, amr, dfp, refresh, refresh_in);
    sodium_memzero(refresh, sizeof refresh);
}

void af_session_refresh(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                        const char *refresh_token)
{
    if (strlen(refresh_token) != AF_TOKEN_CHARS) {
        af_resp_problem(resp, req, 401, "invalid_token", "The refresh token is not valid.");
        return;
    }
    char fresh[AF_TOKEN_CHARS + 1], dfp[65], grace[24], idle[24];
    char old_hex[70] = "\\x", new_hex[70] = "\\x";
    unsigned char h[32];
    af_sha256(refresh_token, AF_TOKEN_CHARS, h);
    sodium_bin2hex(old_hex + 2, sizeof old_hex - 2, h, sizeof h);
    af_random_token(fresh);
    af_sha256(fresh, AF_TOKEN_CHARS, h);
    sodium_bin2hex(new_hex + 2, sizeof new_hex - 2, h, sizeof h);
    af_fingerprint(ctx, req, dfp);
    snprintf(grace, sizeof grace, "%ld", ctx->cfg.refresh_reuse_grace);
    snprintf(idle, sizeof idle, "%ld", ctx->cfg.refresh_idle_ttl);
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {old_hex, new_hex, dfp, grace, idle, req->remote_addr, ua, req->request_id};
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "SELECT status, session_id, user_id, array_to_json(amr)::text, refresh_expires_in, "
        "  email, email_verified, disabled, roles "
        "FROM af_refresh_rotate($1::bytea, $2::bytea, $3, $4::int, $5::int, $6, left($7, 512), $8)",
        8, p);
    if (st != AF_DB_OK || PQntuples(r) != 1) {
        PQclear(r);
        af_resp_db_failure(resp, req, ctx, st == AF_DB_OK ? AF_DB_ERROR : st);
        return;
    }
    const char *status = af_arena_strdup(req->arena, PQgetvalue(r, 0, 0));
    char sid[37] = "";
    struct af_user u;
    memset(&u, 0, sizeof u);
    snprintf(sid, sizeof sid, "%s", PQgetvalue(r, 0, 1));
    snprintf(u.id, sizeof u.id, "%s", PQgetvalue(r, 0, 2));
    const char *amr = af_arena_strdup(req->arena, PQgetvalue(r, 0, 3));
    long refresh_in = atol(PQgetvalue(r, 0, 4));
    u.email = af_arena_strdup(req->arena, PQgetvalue(r, 0, 5));
    u.email_verified = PQgetvalue(r, 0, 6)[0] == 't';
    u.disabled = PQgetvalue(r, 0, 7)[0] == 't';
    u.roles = af_arena_strdup(req->arena, PQgetvalue(r, 0, 8));
    PQclear(r);

    if (!strcmp(status, "reused")) {
        af_session_mark_revoked(ctx, sid);
        af_metrics_add("authflow_refresh_reuse_detected_total", 1);
        af_log(AF_LOG_WARN, "refresh_token_reuse", "session_id", sid, "user_id", u.id,
               "request_id", req->request_id, NULL);
        af_session_clear_cookies(ctx, req, resp);
        af_resp_problem(resp, req, 401, "token_reused",
                        "This refresh token was already used; the session has been revoked.");
        return;
    }
    if (!strcmp(status, "revoked")) {
        af_resp_problem(resp, req, 401, "session_revoked", "The session has ended.");
        return;
    }
    if (strcmp(status, "ok") != 0) {
        af_resp_problem(resp, req, 401, "invalid_token", "The refresh token is not valid.");
        return;
    }
    if (u.disabled) {
        af_session_revoke(ctx, sid, "account_disabled");
        af_resp_problem(resp, req, 403, "account_disabled", "The account is disabled.");
        return;
    }
    respond_pair(ctx, req, resp, &u, sid, amr, dfp, fresh, refresh_in);
    sodium_memzero(fresh, sizeof fresh);
}
