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
#include "user.h"

#define LIVE_CACHE_TTL 60

static long revoked_mark_ttl(struct af_ctx *ctx)
{
    return ctx->cfg.access_ttl + 2 * AF_CLOCK_SKEW;
}

enum af_session_state af_session_check(struct af_ctx *ctx, struct af_req *req, const char *sid,
                                       const char *user_id, const char **cached_user)
{
    redisReply *r = cached_user
                        ? af_cache_command(ctx->cache, "MGET af:rev:%s af:sess:%s af:user:%s", sid, sid, user_id)
                        : af_cache_command(ctx->cache, "MGET af:rev:%s af:sess:%s", sid, sid);
    bool cache_up = r != NULL;
    size_t want = cached_user ? 3 : 2;
    if (cached_user)
        *cached_user = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == want) {
        bool revoked = r->element[0]->type == REDIS_REPLY_STRING;
        bool live = r->element[1]->type == REDIS_REPLY_STRING;
        if (cached_user && r->element[2]->type == REDIS_REPLY_STRING)
            *cached_user = af_arena_strndup(req->arena, r->element[2]->str, r->element[2]->len);
        freeReplyObject(r);
        if (revoked)
            return AF_SESSION_REVOKED;
        if (live)
            return AF_SESSION_LIVE;
    } else {
        freeReplyObject(r);
    }
    const char *p[] = {sid};
    PGresult *res;
    enum af_db_status st = af_db_exec(ctx->db, &res,
        "SELECT revoked_at IS NULL AND expires_at > now() FROM sessions WHERE id = $1", 1, p);
    if (st != AF_DB_OK)
        return AF_SESSION_UNAVAILABLE;
    bool live = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (cache_up) {
        if (live)
            freeReplyObject(af_cache_command(ctx->cache, "SET af:sess:%s 1 EX %d", sid, LIVE_CACHE_TTL));
        else
            af_session_mark_revoked(ctx, sid);
    }
    return live ? AF_SESSION_LIVE : AF_SESSION_REVOKED;
}

void af_session_mark_revoked(struct af_ctx *ctx, const char *sid)
{
    char rev[64], live[64], ttl[24];
    snprintf(rev, sizeof rev, "af:rev:%s", sid);
    snprintf(live, sizeof live, "af:sess:%s", sid);
    snprintf(ttl, sizeof ttl, "%ld", revoked_mark_ttl(ctx));
    const char *set[] = {"SET", rev, "1", "EX", ttl};
    const char *del[] = {"DEL", live};
    const char *const *cmds[] = {set, del};
    size_t argc[] = {5, 2};
    redisReply *replies[2];
    if (!af_cache_pipeline(ctx->cache, 2, cmds, argc, replies))
        af_log(AF_LOG_WARN, "revocation_not_cached", "session_id", sid, NULL);
    freeReplyObject(replies[0]);
    freeReplyObject(replies[1]);
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

void af_session_list(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *p[] = {req->claims.sub};
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "SELECT id, " AF_TS_SQL("created_at") ", " AF_TS_SQL("last_seen_at") ", "
        AF_TS_SQL("least(expires_at, idle_expires_at)") ", ip, user_agent, array_to_json(amr)::text "
        "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL "
        "AND expires_at > now() AND idle_expires_at > now() ORDER BY created_at DESC, id LIMIT 200",
        1, p);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
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
        json_object_object_add(o, "current", json_object_new_boolean(!strcmp(id, req->claims.sid)));
        json_object *amr = json_tokener_parse(PQgetvalue(r, i, 6));
        json_object_object_add(o, "amr", amr ? amr : json_object_new_array());
        json_object_array_add(list, o);
    }
    PQclear(r);
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
