/* admin.c — user administration (see admin.h). */
#include "admin.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "body.h"
#include "ctx.h"
#include "http.h"
#include "log.h"
#include "mail.h"
#include "reads.h"
#include "session.h"
#include "user.h"
#include "util.h"

void af_req_local(struct af_req *req, void *arena)
{
    memset(req, 0, sizeof *req);
    req->arena = arena;
    req->method = "";
    req->path = "";
}

static enum af_admin_status from_db(enum af_db_status st)
{
    switch (st) {
    case AF_DB_OK: return AF_ADMIN_OK;
    case AF_DB_UNAVAILABLE: return AF_ADMIN_UNAVAILABLE;
    case AF_DB_CONFLICT: return AF_ADMIN_EMAIL_TAKEN;
    default: return AF_ADMIN_ERROR;
    }
}

/* A JSON array text of names (for unnest in SQL: no array-literal quoting). */
static const char *names_json(struct af_req *req, const char *const *names, int n)
{
    json_object *a = json_object_new_array();
    for (int i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_string(names[i]));
    const char *s = af_arena_strdup(req->arena, json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    return s;
}

#define JSON_TEXT_ARRAY(n) "ARRAY(SELECT json_array_elements_text(" n "::json))"

/* The User-Agent for an audit row: at most 512 bytes, cut on a character
 * boundary; none when it is not UTF-8 (PostgreSQL would refuse the row). */
static const char *user_agent(struct af_req *req)
{
    const char *ua = req->envp ? af_req_header(req, "User-Agent") : NULL;
    if (!ua)
        return NULL;
    size_t n = strnlen(ua, 512);
    while (n > 0 && ua[n] && ((unsigned char)ua[n] & 0xC0) == 0x80)
        n--;
    return af_utf8_valid(ua, n) ? af_arena_strndup(req->arena, ua, n) : NULL;
}

/* Sessions PostgreSQL has just revoked (a uuid[] column): tell Redis (the
 * gate); drop the user's cached object. */
static void after_change(struct af_ctx *ctx, const char *id, PGresult *r, int row, int col)
{
    if (r && !PQgetisnull(r, row, col))
        af_session_mark_revoked_list(ctx, PQgetvalue(r, row, col));
    af_user_cache_drop(ctx, id);
}

static const char *unknown_role(struct af_ctx *ctx, struct af_req *req, const char *roles_json,
                                enum af_db_status *st)
{
    const char *p[] = {roles_json};
    PGresult *r;
    *st = af_db_exec(ctx->db, &r,
        "SELECT min(x) FROM unnest(" JSON_TEXT_ARRAY("$1") ") x WHERE x NOT IN (SELECT name FROM roles)",
        1, p);
    if (*st != AF_DB_OK)
        return NULL;
    const char *missing = PQgetisnull(r, 0, 0) ? NULL : af_arena_strdup(req->arena, PQgetvalue(r, 0, 0));
    PQclear(r);
    return missing;
}

static enum af_admin_status user_json(struct af_ctx *ctx, struct af_req *req, const char *id,
                                      json_object **user)
{
    struct af_user u;
    bool found;
    enum af_db_status st = af_user_by_id_full(ctx, req, id, &u, &found);
    if (st != AF_DB_OK)
        return from_db(st);
    if (!found)
        return AF_ADMIN_NOT_FOUND;
    *user = af_user_to_json(&u);
    return AF_ADMIN_OK;
}

enum af_admin_status af_admin_create_user(struct af_ctx *ctx, struct af_req *req,
                                          const struct af_actor *who, const struct af_new_user *nu,
                                          json_object **user, const char **detail)
{
    static const char *const default_roles[] = {"user"};
    const char *roles = nu->roles ? names_json(req, nu->roles, nu->nroles) : names_json(req, default_roles, 1);
    enum af_db_status st;
    *detail = unknown_role(ctx, req, roles, &st);
    if (st != AF_DB_OK)
        return from_db(st);
    if (*detail)
        return AF_ADMIN_UNKNOWN_ROLE;

    /* No password: an invitation, i.e. a reset link valid for invite_ttl. */
    char hash_hex[70], ttl[24], days[24];
    char *link = nu->password_hash ? NULL : af_account_reset_link(ctx, req, hash_hex);
    snprintf(ttl, sizeof ttl, "%ld", ctx->cfg.invite_ttl);
    snprintf(days, sizeof days, "%ld", (ctx->cfg.invite_ttl + 86399) / 86400);
    const char *p[] = {nu->email, nu->password_hash, nu->full_name ? nu->full_name : "",
                       nu->email_verified ? "t" : "f", roles, who->user_id, req->remote_addr,
                       user_agent(req), req->request_id, who->via, link ? hash_hex : NULL, ttl, link,
                       days, link ? "t" : "f"};
    PGresult *r;
    /* One statement: the account, its roles, the audit row and — for an
     * invitation — the link's hash and its mail. */
    st = af_db_exec(ctx->db, &r,
        "WITH u AS (INSERT INTO users (email, password_hash, full_name, email_verified) "
        "           VALUES ($1, $2, $3, $4::boolean) RETURNING *), "
        "r AS (INSERT INTO user_roles (user_id, role) SELECT DISTINCT u.id, x FROM u, "
        "      unnest(" JSON_TEXT_ARRAY("$5") ") x), "
        "a AS (INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail) "
        "      SELECT 'user_created', $6::uuid, id, $7, $8, $9, "
        "             jsonb_strip_nulls(jsonb_build_object('via', $10::text, 'roles', $5::jsonb, "
        "                                                  'invited', $15::boolean)) FROM u), "
        "t AS (INSERT INTO password_resets (token_hash, user_id, expires_at) "
        "      SELECT $11::bytea, id, now() + make_interval(secs => $12::int) FROM u WHERE $11 IS NOT NULL), "
        "m AS (INSERT INTO mail_outbox (kind, user_id, recipient, params) "
        "      SELECT 'invite', id, email, jsonb_build_object('name', full_name, 'link', $13::text, "
        "                                                     'days', $14::text) "
        "      FROM u WHERE $11 IS NOT NULL) "
        "SELECT id FROM u", 15, p);
    if (link)
        sodium_memzero(link, strlen(link));
    if (st != AF_DB_OK)
        return from_db(st);
    char id[37];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return user_json(ctx, req, id, user);
}

enum af_admin_status af_admin_update_user(struct af_ctx *ctx, struct af_req *req,
                                          const struct af_actor *who, const char *id,
                                          const struct af_user_change *c, const char **detail)
{
    *detail = NULL;
    if (!af_is_uuid(id))
        return AF_ADMIN_NOT_FOUND;
    const char *p[] = {id, who->user_id, c->full_name,
                       c->set_roles ? names_json(req, c->roles, c->nroles) : NULL,
                       c->disabled < 0 ? NULL : c->disabled ? "t" : "f",
                       c->email_verified < 0 ? NULL : c->email_verified ? "t" : "f",
                       req->remote_addr, user_agent(req), req->request_id, who->via};
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "SELECT status, detail, revoked FROM af_admin_update_user($1::uuid, $2::uuid, $3, "
        "  CASE WHEN $4::text IS NULL THEN NULL ELSE " JSON_TEXT_ARRAY("$4") " END, "
        "  $5::boolean, $6::boolean, $7, $8, $9, $10)", 10, p);
    if (st != AF_DB_OK)
        return from_db(st);
    const char *status = PQgetvalue(r, 0, 0);
    enum af_admin_status out = AF_ADMIN_OK;
    if (!strcmp(status, "not_found")) {
        out = AF_ADMIN_NOT_FOUND;
    } else if (!strcmp(status, "last_admin")) {
        out = AF_ADMIN_LAST_ADMIN;
    } else if (!strcmp(status, "unknown_role")) {
        out = AF_ADMIN_UNKNOWN_ROLE;
        *detail = af_arena_strdup(req->arena, PQgetvalue(r, 0, 1));
    } else {
        after_change(ctx, id, r, 0, 2);
    }
    PQclear(r);
    return out;
}

enum af_admin_status af_admin_delete_user(struct af_ctx *ctx, struct af_req *req,
                                          const struct af_actor *who, const char *id)
{
    if (!af_is_uuid(id))
        return AF_ADMIN_NOT_FOUND;
    const char *p[] = {id, who->user_id, req->remote_addr, user_agent(req), req->request_id, who->via};
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "SELECT status, revoked FROM af_delete_user($1::uuid, $2::uuid, $3, $4, $5, $6)", 6, p);
    if (st != AF_DB_OK)
        return from_db(st);
    const char *status = PQgetvalue(r, 0, 0);
    enum af_admin_status out = !strcmp(status, "not_found")    ? AF_ADMIN_NOT_FOUND
                               : !strcmp(status, "last_admin") ? AF_ADMIN_LAST_ADMIN
                                                               : AF_ADMIN_OK;
    if (out == AF_ADMIN_OK)
        after_change(ctx, id, r, 0, 1);
    PQclear(r);
    return out;
}

enum af_admin_status af_admin_get_user(struct af_ctx *ctx, struct af_req *req, const char *id,
                                       json_object **user)
{
    const char *p[] = {id};
    PGresult *r;
    enum af_db_status st = af_read(ctx, req, &r,
        "SELECT " AF_USER_COLS ", (SELECT count(*) FROM sessions s WHERE s.user_id = u.id "
        "  AND s.revoked_at IS NULL AND s.expires_at > now() AND s.idle_expires_at > now()) "
        "FROM users u WHERE CASE WHEN $1 ~ '^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$' "
        "                        THEN u.id = $1::uuid "
        "                        ELSE lower(u.email) = lower(btrim($1)) END", 1, p);
    if (st != AF_DB_OK)
        return from_db(st);
    if (PQntuples(r) == 0) {
        PQclear(r);
        return AF_ADMIN_NOT_FOUND;
    }
    struct af_user u;
    af_user_from_row(req, r, 0, &u);
    *user = af_user_to_json(&u);
    json_object_object_add(*user, "session_count", json_object_new_int64(atoll(PQgetvalue(r, 0, AF_USER_NCOLS))));
    PQclear(r);
    return AF_ADMIN_OK;
}

/* Cursors: base64url of "<a>.<b>" — opaque to clients, checked on the way in. */
static const char *cursor_encode(struct af_req *req, const char *a, const char *b)
{
    const char *plain = af_arena_printf(req->arena, "%s.%s", a, b);
    size_t n = strlen(plain);
    char *out = af_arena_alloc(req->arena, ((n + 2) / 3) * 4 + 1);
    af_b64url((const unsigned char *)plain, n, out);
    return out;
}

/* Splits a cursor into its digits part and (when b is wanted) its uuid part;
 * false when it is not one of ours. */
static bool cursor_decode(struct af_req *req, const char *cursor, const char **a, const char **b)
{
    size_t n = strlen(cursor);
    if (n == 0 || n > 128)
        return false;
    unsigned char bin[100];
    size_t len;
    if (sodium_base642bin(bin, sizeof bin - 1, cursor, n, NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    bin[len] = '\0';
    char *s = af_arena_strdup(req->arena, (const char *)bin);
    if (strlen(s) != len)
        return false;
    char *dot = strchr(s, '.');
    if (!dot || dot == s || dot - s > 18)
        return false;
    *dot = '\0';
    for (const char *c = s; *c; c++)
        if (*c < '0' || *c > '9')
            return false;
    *a = s;
    if (b) {
        if (!af_is_uuid(dot + 1))
            return false;
        *b = dot + 1;
    } else if (strcmp(dot + 1, "0")) {
        return false;
    }
    return true;
}

enum af_admin_status af_admin_list_users(struct af_ctx *ctx, struct af_req *req,
                                         const struct af_user_filter *f, json_object **page,
                                         const char **detail)
{
    const char *after_us = NULL, *after_id = NULL;
    if (f->cursor && !cursor_decode(req, f->cursor, &after_us, &after_id)) {
        *detail = "cursor";
        return AF_ADMIN_INVALID;
    }
    if (f->status && strcmp(f->status, "active") && strcmp(f->status, "disabled") &&
        strcmp(f->status, "unverified")) {
        *detail = "status";
        return AF_ADMIN_INVALID;
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", f->limit + 1);
    const char *p[] = {f->q, f->role, f->status, after_us, after_id, limit};
    PGresult *r;
    /* Keyset order (created_at, id): rows added while a client pages through
     * cannot shift the pages it has not read yet. */
    enum af_db_status st = af_read(ctx, req, &r,
        "SELECT " AF_USER_COLS ", (extract(epoch FROM u.created_at) * 1000000)::bigint "
        "FROM users u "
        "WHERE ($1::text IS NULL OR strpos(lower(u.email), lower($1)) > 0 "
        "                        OR strpos(lower(u.full_name), lower($1)) > 0) "
        "  AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role = $2)) "
        "  AND ($3::text IS NULL OR ($3 = 'active' AND NOT u.disabled) OR ($3 = 'disabled' AND u.disabled) "
        "                        OR ($3 = 'unverified' AND NOT u.email_verified)) "
        "  AND ($4::bigint IS NULL OR (u.created_at, u.id) > "
        "       (timestamptz 'epoch' + $4::bigint * interval '1 microsecond', $5::uuid)) "
        "ORDER BY u.created_at, u.id LIMIT $6::int", 6, p);
    if (st != AF_DB_OK)
        return from_db(st);
    int n = PQntuples(r);
    json_object *items = json_object_new_array();
    for (int i = 0; i < n && i < f->limit; i++) {
        struct af_user u;
        af_user_from_row(req, r, i, &u);
        json_object_array_add(items, af_user_to_json(&u));
    }
    *page = json_object_new_object();
    json_object_object_add(*page, "items", items);
    json_object_object_add(*page, "next_cursor",
        n > f->limit ? json_object_new_string(cursor_encode(req, PQgetvalue(r, f->limit - 1, AF_USER_NCOLS),
                                                            PQgetvalue(r, f->limit - 1, 0)))
                     : NULL);
    PQclear(r);
    return AF_ADMIN_OK;
}

enum af_admin_status af_admin_list_audit(struct af_ctx *ctx, struct af_req *req,
                                         const struct af_audit_filter *f, bool full,
                                         json_object **page, const char **detail)
{
    const char *before = NULL;
    if (f->cursor && !cursor_decode(req, f->cursor, &before, NULL)) {
        *detail = "cursor";
        return AF_ADMIN_INVALID;
    }
    if ((f->user_id && !af_is_uuid(f->user_id)) || (f->subject_id && !af_is_uuid(f->subject_id))) {
        *detail = "user_id";
        return AF_ADMIN_INVALID;
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", f->limit + 1);
    const char *p[] = {f->user_id, f->subject_id, f->type, before, limit};
    PGresult *r;
    enum af_db_status st = af_read(ctx, req, &r,
        "SELECT id, type, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
        "       actor_id, subject_id, session_id, ip, user_agent, request_id, detail::text "
        "FROM audit_log "
        "WHERE ($1::uuid IS NULL OR actor_id = $1::uuid OR subject_id = $1::uuid) "
        "  AND ($2::uuid IS NULL OR subject_id = $2::uuid) "
        "  AND ($3::text IS NULL OR type = $3) AND ($4::bigint IS NULL OR id < $4::bigint) "
        "ORDER BY id DESC LIMIT $5::int", 5, p);
    if (st != AF_DB_OK)
        return from_db(st);
    int n = PQntuples(r);
    json_object *items = json_object_new_array();
    for (int i = 0; i < n && i < f->limit; i++) {
        json_object *o = json_object_new_object();
#define COL(name, c)                                                                            \
    json_object_object_add(o, name, PQgetisnull(r, i, c) ? NULL                               \
                                                         : json_object_new_string(PQgetvalue(r, i, c)))
        if (full)
            json_object_object_add(o, "id", json_object_new_int64(atoll(PQgetvalue(r, i, 0))));
        COL("type", 1);
        COL("at", 2);
        if (full) {
            COL("actor_id", 3);
            COL("subject_id", 4);
            COL("session_id", 5);
        }
        /* A user sees the address and browser of their own actions only,
         * not an admin's. */
        if (full || PQgetisnull(r, i, 3) || !strcmp(PQgetvalue(r, i, 3), PQgetvalue(r, i, 4))) {
            COL("ip", 6);
            COL("user_agent", 7);
        } else {
            json_object_object_add(o, "ip", NULL);
            json_object_object_add(o, "user_agent", NULL);
        }
        if (full)
            COL("request_id", 8);
#undef COL
        json_object *d = json_tokener_parse(PQgetvalue(r, i, 9));
        json_object_object_add(o, "detail", d ? d : json_object_new_object());
        json_object_array_add(items, o);
    }
    *page = json_object_new_object();
    json_object_object_add(*page, "items", items);
    json_object_object_add(*page, "next_cursor",
        n > f->limit ? json_object_new_string(cursor_encode(req, PQgetvalue(r, f->limit - 1, 0), "0"))
                     : NULL);
    PQclear(r);
    return AF_ADMIN_OK;
}

void af_admin_audit_page(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                         const char *subject)
{
    json_object *q = af_req_query(req, resp);
    if (!q)
        return;
    struct af_field_errors fe = {0};
    struct af_audit_filter f = {
        .subject_id = subject,
        .user_id = subject ? NULL : af_query_string(q, "user_id", &fe),
        .type = subject ? NULL : af_query_string(q, "type", &fe),
        .cursor = af_query_string(q, "cursor", &fe),
        .limit = af_query_limit(q, &fe),
    };
    json_object *page;
    const char *detail = NULL;
    if (!af_resp_field_errors(resp, req, &fe)) {
        enum af_admin_status st = af_admin_list_audit(ctx, req, &f, subject == NULL, &page, &detail);
        if (st == AF_ADMIN_OK)
            af_resp_json(resp, req, 200, page);
        else
            af_admin_resp_failure(resp, req, ctx, st, detail);
    }
    json_object_put(q);
}

long af_admin_revoke_sessions(struct af_ctx *ctx, struct af_req *req, const struct af_actor *who,
                              const char *id)
{
    long n = af_session_revoke_all(ctx, id, NULL, "admin_revoked");
    if (n >= 0) {
        char detail[96];
        snprintf(detail, sizeof detail, "{\"sessions_revoked\":%ld%s%s%s}", n, who->via ? ",\"via\":\"" : "",
                 who->via ? who->via : "", who->via ? "\"" : "");
        af_audit(ctx, req, "sessions_revoked", who->user_id, id, NULL, detail);
    }
    return n;
}

enum af_admin_status af_admin_list_sessions(struct af_ctx *ctx, struct af_req *req, const char *id,
                                            json_object **list)
{
    return from_db(af_session_list_json(ctx, req, id, NULL, list));
}

void af_admin_resp_failure(struct af_resp *resp, struct af_req *req, struct af_ctx *ctx,
                           enum af_admin_status st, const char *detail)
{
    switch (st) {
    case AF_ADMIN_OK:
        break;
    case AF_ADMIN_NOT_FOUND:
        af_resp_problem(resp, req, 404, "not_found", "No such user.");
        break;
    case AF_ADMIN_LAST_ADMIN:
        af_resp_problem(resp, req, 409, "last_admin",
                        "This would leave no active admin: make another user admin first.");
        break;
    case AF_ADMIN_EMAIL_TAKEN:
        af_resp_problem(resp, req, 409, "email_taken", "An account with this email already exists.");
        break;
    case AF_ADMIN_UNKNOWN_ROLE: {
        struct af_field_errors fe = {0};
        af_field_error(&fe, "roles", af_arena_printf(req->arena, "has an unknown role '%.64s'",
                                                     detail ? detail : ""));
        af_resp_field_errors(resp, req, &fe);
        break;
    }
    case AF_ADMIN_INVALID: {
        struct af_field_errors fe = {0};
        af_field_error(&fe, detail ? detail : "query", "is not valid");
        af_resp_field_errors(resp, req, &fe);
        break;
    }
    case AF_ADMIN_UNAVAILABLE:
        af_resp_db_failure(resp, req, ctx, AF_DB_UNAVAILABLE);
        break;
    case AF_ADMIN_ERROR:
        af_resp_db_failure(resp, req, ctx, AF_DB_ERROR);
        break;
    }
}
