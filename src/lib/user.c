/* user.c — users (see user.h). */
#include "user.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "http.h"
#include "log.h"
#include "reads.h"
#include "password.h"
#include "session.h"


#define USER_COLS(roles) AF_USER_COLS_WITH(roles)
#define ROLES_OF_U AF_USER_ROLES_OF_U

void af_user_from_row(struct af_req *req, PGresult *r, int row, struct af_user *u)
{
    af_arena *a = req->arena;
    snprintf(u->id, sizeof u->id, "%s", PQgetvalue(r, row, 0));
    u->email = af_arena_strdup(a, PQgetvalue(r, row, 1));
    u->full_name = af_arena_strdup(a, PQgetvalue(r, row, 2));
    u->email_verified = PQgetvalue(r, row, 3)[0] == 't';
    u->disabled = PQgetvalue(r, row, 4)[0] == 't';
    u->mfa_enabled = PQgetvalue(r, row, 5)[0] == 't';
    u->created_at = af_arena_strdup(a, PQgetvalue(r, row, 6));
    u->updated_at = af_arena_strdup(a, PQgetvalue(r, row, 7));
    u->last_login_at = PQgetisnull(r, row, 8) ? NULL : af_arena_strdup(a, PQgetvalue(r, row, 8));
    u->roles = af_arena_strdup(a, PQgetvalue(r, row, 9));
    u->identities = af_arena_strdup(a, PQgetvalue(r, row, 10));
    u->password_hash = PQgetisnull(r, row, 11) ? NULL : af_arena_strdup(a, PQgetvalue(r, row, 11));
}

json_object *af_user_to_json(const struct af_user *u)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(u->id));
    json_object_object_add(o, "email", json_object_new_string(u->email));
    json_object_object_add(o, "email_verified", json_object_new_boolean(u->email_verified));
    json_object_object_add(o, "full_name", json_object_new_string(u->full_name));
    json_object *roles = json_tokener_parse(u->roles);
    json_object_object_add(o, "roles", roles ? roles : json_object_new_array());
    json_object_object_add(o, "mfa_enabled", json_object_new_boolean(u->mfa_enabled));
    json_object *ids = u->identities ? json_tokener_parse(u->identities) : NULL;
    json_object_object_add(o, "identities", ids ? ids : json_object_new_array());
    json_object_object_add(o, "disabled", json_object_new_boolean(u->disabled));
    json_object_object_add(o, "created_at", json_object_new_string(u->created_at));
    json_object_object_add(o, "updated_at", json_object_new_string(u->updated_at));
    json_object_object_add(o, "last_login_at",
                           u->last_login_at ? json_object_new_string(u->last_login_at) : NULL);
    return o;
}

void af_audit(struct af_ctx *ctx, struct af_req *req, const char *type, const char *actor,
              const char *subject, const char *session, const char *detail)
{
    const char *ua = req ? af_req_header(req, "User-Agent") : NULL;
    const char *p[] = {type, actor, subject, session, req ? req->remote_addr : NULL,
                       ua, req ? req->request_id : NULL, detail ? detail : "{}"};
    enum af_db_status st = af_db_run(ctx->db,
        "INSERT INTO audit_log (type, actor_id, subject_id, session_id, ip, user_agent, request_id, detail) "
        "VALUES ($1, $2, $3, $4, $5, left($6, 512), $7, $8::jsonb)", 8, p);
    if (st != AF_DB_OK)
        af_log(AF_LOG_ERROR, "audit_failed", "type", type, "error", af_db_error(ctx->db), NULL);
}

enum af_db_status af_user_create(struct af_ctx *ctx, struct af_req *req, const char *email,
                                 const char *hash, const char *full_name, const char *code,
                                 struct af_user *out)
{
    const char *ua = af_req_header(req, "User-Agent");
    char ttl[24], tries[24], minutes[24];
    snprintf(ttl, sizeof ttl, "%ld", ctx->cfg.email_code_ttl);
    snprintf(tries, sizeof tries, "%ld", ctx->cfg.email_code_attempts);
    snprintf(minutes, sizeof minutes, "%ld", ctx->cfg.email_code_ttl / 60);
    const char *p[] = {email, hash, full_name, req->remote_addr, ua, req->request_id,
                       code, ttl, tries, minutes};
    PGresult *r;
    /* One statement: the account, its role, the audit row and — with a
     * code — the hashed code and its mail in the outbox. Either all of it
     * exists afterwards or none. */
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "WITH u AS (INSERT INTO users (email, password_hash, full_name) VALUES ($1, $2, $3) RETURNING *), "
        "r AS (INSERT INTO user_roles (user_id, role) SELECT id, 'user' FROM u), "
        "a AS (INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id) "
        "      SELECT 'register', id, id, $4, left($5, 512), $6 FROM u), "
        "v AS (INSERT INTO email_verifications (user_id, code_hash, expires_at, attempts_left) "
        "      SELECT id, sha256(convert_to(id::text || ':' || $7, 'UTF8')), "
        "             now() + make_interval(secs => $8::int), $9::int FROM u WHERE $7 IS NOT NULL), "
        "m AS (INSERT INTO mail_outbox (kind, user_id, recipient, params) "
        "      SELECT 'verify_email', id, email, "
        "             jsonb_build_object('name', full_name, 'code', $7::text, 'minutes', $10::text) "
        "      FROM u WHERE $7 IS NOT NULL) "
        "SELECT " USER_COLS("'[\"user\"]'") " FROM u", 10, p);
    if (st != AF_DB_OK)
        return st;
    af_user_from_row(req, r, 0, out);
    PQclear(r);
    return AF_DB_OK;
}

static enum af_db_status one(struct af_ctx *ctx, struct af_req *req, const char *sql, int n,
                             const char *const *p, struct af_user *out, bool *found)
{
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r, sql, n, p);
    *found = false;
    if (st != AF_DB_OK)
        return st;
    if (PQntuples(r) > 0) {
        af_user_from_row(req, r, 0, out);
        *found = true;
    }
    PQclear(r);
    return AF_DB_OK;
}

enum af_db_status af_user_by_email(struct af_ctx *ctx, struct af_req *req, const char *email,
                                   struct af_user *out, bool *found)
{
    const char *p[] = {email};
    return one(ctx, req, "SELECT " USER_COLS(ROLES_OF_U) " FROM users u WHERE lower(u.email) = lower($1)",
               1, p, out, found);
}

enum af_db_status af_user_by_id_full(struct af_ctx *ctx, struct af_req *req, const char *id,
                                     struct af_user *out, bool *found)
{
    const char *p[] = {id};
    return one(ctx, req, "SELECT " USER_COLS(ROLES_OF_U) " FROM users u WHERE u.id = $1", 1, p, out, found);
}

static const char *cache_key(struct af_req *req, const char *id)
{
    return af_arena_printf(req->arena, "af:user:%s", id);
}

enum af_db_status af_user_json_text(struct af_ctx *ctx, struct af_req *req, const char *id,
                                    const char **json, bool *found)
{
    if (req->cached_user && req->authenticated && !strcmp(id, req->claims.sub)) {
        *json = req->cached_user;
        *found = true;
        return AF_DB_OK;
    }
    const char *key = cache_key(req, id);
    redisReply *r = af_cache_command(ctx->cache, "GET %s", key);
    if (r && r->type == REDIS_REPLY_STRING) {
        *json = af_arena_strndup(req->arena, r->str, r->len);
        *found = true;
        freeReplyObject(r);
        return AF_DB_OK;
    }
    bool cache_up = r != NULL;
    freeReplyObject(r);
    struct af_user u;
    enum af_db_status st = af_user_by_id_full(ctx, req, id, &u, found);
    if (st != AF_DB_OK || !*found)
        return st;
    json_object *o = af_user_to_json(&u);
    *json = af_arena_strdup(req->arena, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    if (cache_up)
        freeReplyObject(af_cache_command(ctx->cache, "SET %s %s EX %d", key, *json, AF_USER_CACHE_TTL));
    return AF_DB_OK;
}

bool af_user_reauth(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                    const char *password, struct af_user *u)
{
    bool found;
    enum af_db_status st = af_user_by_id_full(ctx, req, req->claims.sub, u, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return false;
    }
    if (!found) {
        af_resp_problem(resp, req, 401, "unauthorized", "The account no longer exists.");
        return false;
    }
    if (!u->password_hash) {
        af_password_verify_dummy(&ctx->cost, password);
    } else if (af_password_verify(u->password_hash, password)) {
        return true;
    }
    af_audit(ctx, req, "reauth_failure", u->id, u->id, req->claims.sid,
             "{\"reason\":\"wrong_password\"}");
    af_resp_problem(resp, req, 401, "invalid_credentials", "The password is wrong.");
    return false;
}

bool af_user_cache_forget(struct af_ctx *ctx, const char *id)
{
    redisReply *r = af_cache_command(ctx->cache, "DEL af:user:%s", id);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    return ok;
}

void af_user_cache_drop(struct af_ctx *ctx, const char *id)
{
    /* Someone wrote about this user: their own reads see it at once. */
    af_read_mark_writer(ctx, id);
    if (af_user_cache_forget(ctx, id))
        return;
    /* Redis missed it: the next responder to reach Redis drops it. */
    const char *p[] = {id};
    af_db_run(ctx->db, "INSERT INTO user_cache_repairs (user_id) VALUES ($1) "
                       "ON CONFLICT (user_id) DO UPDATE SET created_at = now()", 1, p);
}

enum af_db_status af_user_set_name(struct af_ctx *ctx, struct af_req *req, const char *id,
                                   const char *full_name, struct af_user *out, bool *found)
{
    const char *p[] = {id, full_name};
    enum af_db_status st = one(ctx, req,
        "UPDATE users u SET full_name = $2, updated_at = now() WHERE u.id = $1 RETURNING " USER_COLS(ROLES_OF_U),
        2, p, out, found);
    if (st == AF_DB_OK && *found)
        af_user_cache_drop(ctx, id);
    return st;
}

enum af_db_status af_user_set_password_hash(struct af_ctx *ctx, const char *id, const char *hash)
{
    const char *p[] = {id, hash};
    return af_db_run(ctx->db, "UPDATE users SET password_hash = $2 WHERE id = $1", 2, p);
}
