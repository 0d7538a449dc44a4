/* account.c — email verification, password reset and change (see
 * account.h). */
#include "account.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "ctx.h"
#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "session.h"
#include "user.h"
#include "util.h"
#include "validate.h"

void af_account_new_code(char out[7])
{
    snprintf(out, 7, "%06u", (unsigned)randombytes_uniform(1000000));
}

/* The Redis key of an address's mail cooldown: a digest, so Redis never
 * holds the address. */
static void cooldown_key(const char *email, char out[80])
{
    char h[AF_SHA256_HEX];
    af_sha256_hex(email, strlen(email), h);
    snprintf(out, 80, "af:cool:%s", h);
}

void af_account_cooldown_start(struct af_ctx *ctx, const char *email)
{
    char key[80];
    if (ctx->cfg.email_code_cooldown <= 0)
        return;
    cooldown_key(email, key);
    freeReplyObject(af_cache_command(ctx->cache, "SET %s 1 EX %ld", key, ctx->cfg.email_code_cooldown));
}

/* Takes the address's cooldown. false (and *retry_after) when a mail went
 * to it less than the cooldown ago. Without Redis the answer is yes: the
 * database still enforces the cooldown for accounts that exist. */
static bool cooldown_take(struct af_ctx *ctx, const char *email, long *retry_after)
{
    char key[80];
    *retry_after = ctx->cfg.email_code_cooldown;
    if (ctx->cfg.email_code_cooldown <= 0)
        return true;
    cooldown_key(email, key);
    redisReply *r = af_cache_command(ctx->cache, "SET %s 1 EX %ld NX", key, ctx->cfg.email_code_cooldown);
    bool taken = !r || r->type != REDIS_REPLY_NIL;
    freeReplyObject(r);
    if (taken)
        return true;
    r = af_cache_command(ctx->cache, "TTL %s", key);
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        *retry_after = r->integer;
    freeReplyObject(r);
    return false;
}

static void too_soon(struct af_req *req, struct af_resp *resp, long retry_after)
{
    af_resp_problem(resp, req, 429, "rate_limited",
                    "A message was sent to this address a moment ago; wait before asking again.");
    af_resp_header(resp, req, "Retry-After", af_arena_printf(req->arena, "%ld", retry_after));
}

static void accepted(struct af_req *req, struct af_resp *resp)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("accepted"));
    af_resp_json(resp, req, 202, o);
}

void af_account_verify_email(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                             const char *email, const char *code)
{
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {email, code, req->remote_addr, ua, req->request_id};
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "SELECT status, user_id FROM af_email_verify($1, $2, $3, left($4, 512), $5)", 5, p);
    if (st != AF_DB_OK || PQntuples(r) != 1) {
        PQclear(r);
        af_resp_db_failure(resp, req, ctx, st == AF_DB_OK ? AF_DB_ERROR : st);
        return;
    }
    bool ok = !strcmp(PQgetvalue(r, 0, 0), "ok");
    char id[37];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    if (!ok) {
        af_resp_problem(resp, req, 400, "invalid_code", "The code is wrong or has expired.");
        return;
    }
    af_user_cache_drop(ctx, id);
    struct af_user u;
    bool found;
    st = af_user_by_id_full(ctx, req, id, &u, &found);
    if (st != AF_DB_OK || !found) {
        af_resp_db_failure(resp, req, ctx, st == AF_DB_OK ? AF_DB_ERROR : st);
        return;
    }
    resp->user_id = af_arena_strdup(req->arena, id);
    af_resp_json(resp, req, 200, af_user_to_json(&u));
}

void af_account_resend_code(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                            const char *email)
{
    long retry_after;
    if (!cooldown_take(ctx, email, &retry_after)) {
        too_soon(req, resp, retry_after);
        return;
    }
    char code[7], ttl[24], tries[24], cool[24], minutes[24];
    af_account_new_code(code);
    snprintf(ttl, sizeof ttl, "%ld", ctx->cfg.email_code_ttl);
    snprintf(tries, sizeof tries, "%ld", ctx->cfg.email_code_attempts);
    snprintf(cool, sizeof cool, "%ld", ctx->cfg.email_code_cooldown);
    snprintf(minutes, sizeof minutes, "%ld", ctx->cfg.email_code_ttl / 60);
    const char *p[] = {email, code, ttl, tries, cool, minutes};
    PGresult *r;
    /* A new code replaces the old one (and its spent tries) unless the old
     * one was mailed less than the cooldown ago. */
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "WITH u AS (SELECT id, email, full_name FROM users "
        "           WHERE lower(email) = lower($1) AND NOT email_verified AND NOT disabled), "
        "v AS (INSERT INTO email_verifications AS e (user_id, code_hash, expires_at, attempts_left) "
        "      SELECT id, sha256(convert_to(id::text || ':' || $2, 'UTF8')), "
        "             now() + make_interval(secs => $3::int), $4::int FROM u "
        "      ON CONFLICT (user_id) DO UPDATE SET code_hash = EXCLUDED.code_hash, "
        "         expires_at = EXCLUDED.expires_at, attempts_left = EXCLUDED.attempts_left, sent_at = now() "
        "      WHERE e.sent_at <= now() - make_interval(secs => $5::int) RETURNING user_id), "
        "m AS (INSERT INTO mail_outbox (kind, user_id, recipient, params) "
        "      SELECT 'verify_email', u.id, u.email, "
        "             jsonb_build_object('name', u.full_name, 'code', $2::text, 'minutes', $6::text) "
        "      FROM u JOIN v ON v.user_id = u.id RETURNING id) "
        "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM m)", 6, p);
    sodium_memzero(code, sizeof code);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool exists = PQgetvalue(r, 0, 0)[0] != '0';
    bool sent = PQgetvalue(r, 0, 1)[0] != '0';
    PQclear(r);
    /* Only reachable for an existing account when Redis forgot the
     * cooldown: the database's answer is the same as Redis's would be. */
    if (exists && !sent) {
        too_soon(req, resp, ctx->cfg.email_code_cooldown);
        return;
    }
    accepted(req, resp);
}

char *af_account_reset_link(struct af_ctx *ctx, struct af_req *req, char hash_hex[70])
{
    char token[AF_TOKEN_CHARS + 1];
    unsigned char h[32];
    af_random_token(token);
    af_sha256(token, AF_TOKEN_CHARS, h);
    memcpy(hash_hex, "\\x", 2);
    sodium_bin2hex(hash_hex + 2, 68, h, sizeof h);
    const char *base = *ctx->cfg.reset_url
                           ? ctx->cfg.reset_url
                           : af_arena_printf(req->arena, "%s/reset-password", ctx->cfg.public_url);
    char *link = af_arena_printf(req->arena, "%s%stoken=%s", base, strchr(base, '?') ? "&" : "?", token);
    sodium_memzero(token, sizeof token);
    return link;
}

void af_account_forgot(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                       const char *email)
{
    char ttl[24], cool[24], minutes[24], hash_hex[70];
    char *link = af_account_reset_link(ctx, req, hash_hex);
    snprintf(ttl, sizeof ttl, "%ld", ctx->cfg.reset_token_ttl);
    snprintf(cool, sizeof cool, "%ld", ctx->cfg.email_code_cooldown);
    snprintf(minutes, sizeof minutes, "%ld", ctx->cfg.reset_token_ttl / 60);
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {email, hash_hex, ttl, link, minutes, cool, req->remote_addr, ua, req->request_id};
    /* At most one link per account per cooldown; the answer is 202 in every
     * case, so it says nothing about the account. */
    enum af_db_status st = af_db_run(ctx->db,
        "WITH u AS (SELECT id, email, full_name FROM users WHERE lower(email) = lower($1) AND NOT disabled), "
        "t AS (INSERT INTO password_resets (token_hash, user_id, expires_at) "
        "      SELECT $2::bytea, id, now() + make_interval(secs => $3::int) FROM u "
        "      WHERE NOT EXISTS (SELECT 1 FROM password_resets r WHERE r.user_id = u.id "
        "                        AND r.created_at > now() - make_interval(secs => $6::int)) "
        "      RETURNING user_id), "
        "a AS (INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id) "
        "      SELECT 'password_reset_requested', NULL, user_id, $7, left($8, 512), $9 FROM t) "
        "INSERT INTO mail_outbox (kind, user_id, recipient, params) "
        "SELECT 'password_reset', u.id, u.email, "
        "       jsonb_build_object('name', u.full_name, 'link', $4::text, 'minutes', $5::text) "
        "FROM u JOIN t ON t.user_id = u.id", 9, p);
    sodium_memzero(link, strlen(link));
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    accepted(req, resp);
}

/* 400 validation_failed: the new password fails the policy once screened
 * against the account's email and name. */
static void refuse_password(struct af_req *req, struct af_resp *resp, const char *why)
{
    struct af_field_errors fe = {0};
    af_field_error(&fe, "new_password", why);
    af_resp_field_errors(resp, req, &fe);
}

static void invalid_link(struct af_req *req, struct af_resp *resp)
{
    af_resp_problem(resp, req, 400, "invalid_token", "The reset link is not valid or has expired.");
}

/* The one row a query on a live reset link gives, or NULL after answering
 * (503, or 400 invalid_token when the link is unknown, spent or expired). */
static PGresult *link_row(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                          const char *sql, int n, const char *const *params)
{
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r, sql, n, params);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return NULL;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        invalid_link(req, resp);
        return NULL;
    }
    return r;
}

void af_account_reset(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                      const char *token, const char *new_password)
{
    if (strlen(token) != AF_TOKEN_CHARS) {
        invalid_link(req, resp);
        return;
    }
    unsigned char h[32];
    char hash_hex[70] = "\\x";
    af_sha256(token, AF_TOKEN_CHARS, h);
    sodium_bin2hex(hash_hex + 2, sizeof hash_hex - 2, h, sizeof h);
    /* The account the link is for, to screen the new password against its
     * email and name; the link stays unspent until af_password_reset. */
    const char *q[] = {hash_hex};
    PGresult *r = link_row(ctx, req, resp,
        "SELECT u.email, u.full_name FROM password_resets t JOIN users u ON u.id = t.user_id "
        "WHERE t.token_hash = $1::bytea AND t.used_at IS NULL AND t.expires_at > now() "
        "AND NOT u.disabled", 1, q);
    if (!r)
        return;
    const char *why = af_pwpolicy_check(ctx->pwpolicy, new_password, PQgetvalue(r, 0, 0),
                                        PQgetvalue(r, 0, 1));
    char email[AF_EMAIL_MAX + 1];
    snprintf(email, sizeof email, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (why) {
        refuse_password(req, resp, why);
        return;
    }
    char hash[AF_HASH_LEN];
    if (af_password_hash(&ctx->cost, new_password, hash) != 0) {
        af_resp_internal(resp, req, "password hashing failed (out of memory?)");
        return;
    }
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {hash_hex, hash, req->remote_addr, ua, req->request_id};
    r = link_row(ctx, req, resp,
        "SELECT user_id, revoked::text FROM af_password_reset($1::bytea, $2, $3, left($4, 512), $5)", 5, p);
    if (!r)
        return;
    char id[37];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    af_session_mark_revoked_list(ctx, PQgetvalue(r, 0, 1));
    PQclear(r);
    af_user_cache_drop(ctx, id);
    /* The link proved the mailbox: a login lockout ends with the reset. */
    af_login_throttle_clear(ctx, email);
    resp->user_id = af_arena_strdup(req->arena, id);
    af_resp_empty(resp, 204);
}

void af_account_change_password(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                                const char *current, const char *new_password)
{
    struct af_user u;
    if (!af_user_reauth(ctx, req, resp, current, &u))
        return;
    const char *why = af_pwpolicy_check(ctx->pwpolicy, new_password, u.email, u.full_name);
    if (why) {
        refuse_password(req, resp, why);
        return;
    }
    char hash[AF_HASH_LEN];
    if (af_password_hash(&ctx->cost, new_password, hash) != 0) {
        af_resp_internal(resp, req, "password hashing failed (out of memory?)");
        return;
    }
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {req->claims.sub, hash, req->claims.sid, req->remote_addr, ua, req->request_id};
    PGresult *r;
    /* The new hash, the other sessions revoked, the audit row and the
     * notice: one statement. */
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "WITH u AS (UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1 "
        "           RETURNING id, email, full_name), "
        "s AS (UPDATE sessions SET revoked_at = now(), revoke_reason = 'password_change' "
        "      WHERE user_id = $1 AND id <> $3 AND revoked_at IS NULL AND EXISTS (SELECT 1 FROM u) "
        "      RETURNING id), "
        "a AS (INSERT INTO audit_log (type, actor_id, subject_id, session_id, ip, user_agent, request_id, detail) "
        "      SELECT 'password_change', id, id, $3, $4, left($5, 512), $6, "
        "             jsonb_build_object('sessions_revoked', (SELECT count(*) FROM s)) FROM u), "
        "m AS (INSERT INTO mail_outbox (kind, user_id, recipient, params) "
        "      SELECT 'password_changed', id, email, jsonb_build_object('name', full_name) FROM u) "
        "SELECT (SELECT count(*) FROM u), COALESCE((SELECT array_agg(id) FROM s), '{}')::text", 6, p);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool changed = PQgetvalue(r, 0, 0)[0] != '0';
    af_session_mark_revoked_list(ctx, PQgetvalue(r, 0, 1));
    PQclear(r);
    if (!changed) {
        af_resp_problem(resp, req, 401, "unauthorized", "The account no longer exists.");
        return;
    }
    af_user_cache_drop(ctx, req->claims.sub);
    af_resp_empty(resp, 204);
}
