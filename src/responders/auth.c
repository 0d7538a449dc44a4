/* authflow-auth — the auth endpoint group: registration and email
 * verification, login and its second factor (TOTP), token refresh, logout,
 * password reset and change, the JWKS document and health.
 *
 * The route table below is the whole surface of this program. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "authn.h"
#include "body.h"
#include "cookie.h"
#include "ctx.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "mfa.h"
#include "ratelimit.h"
#include "reads.h"
#include "session.h"
#include "user.h"
#include "validate.h"

/* Reads and checks email and password; email is "" unless valid. An
 * existing password only needs a length that could match; a new one is
 * left to the caller, which screens it with the account's name too. */
static const char *credentials(struct af_ctx *ctx, json_object *body, struct af_field_errors *fe,
                               char email[AF_EMAIL_MAX + 1], bool new_password)
{
    const char *email_in = af_body_string(body, "email", true, fe);
    const char *password = af_body_string(body, "password", true, fe);
    const char *why;
    email[0] = '\0';
    if (email_in && (why = af_email_normalize(email_in, email))) {
        af_field_error(fe, "email", why);
        email[0] = '\0';
    }
    if (password && !new_password && (why = af_password_check(password, 1)))
        af_field_error(fe, "password", why);
    return password;
}

static void do_register(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    char email[AF_EMAIL_MAX + 1];
    const char *password = credentials(ctx, body, &fe, email, true);
    const char *name = af_body_string(body, "full_name", false, &fe);
    const char *why;
    if (password && (why = af_pwpolicy_check(ctx->pwpolicy, password, *email ? email : NULL, name)))
        af_field_error(&fe, "password", why);
    if (name && (why = af_name_check(name)))
        af_field_error(&fe, "full_name", why);
    if (af_resp_field_errors(resp, req, &fe))
        return;

    char hash[AF_HASH_LEN];
    if (af_password_hash(&ctx->cost, password, hash) != 0) {
        af_resp_internal(resp, req, "password hashing failed (out of memory?)");
        return;
    }
    struct af_user u;
    char code[7];
    af_account_new_code(code);
    enum af_db_status st = af_user_create(ctx, req, email, hash, name ? name : "", code, &u);
    sodium_memzero(code, sizeof code);
    if (st == AF_DB_CONFLICT) {
        af_resp_problem(resp, req, 409, "email_taken", "An account with this email already exists.");
        return;
    }
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    af_account_cooldown_start(ctx, email);
    resp->user_id = af_arena_strdup(req->arena, u.id);
    af_resp_json(resp, req, 201, af_user_to_json(&u));
    af_resp_header(resp, req, "Location",
                   af_arena_printf(req->arena, "%s/users/me", ctx->cfg.api_prefix));
}

/* The "email" field, normalised; NULL after answering 400. */
static const char *email_field(json_object *body, struct af_req *req, struct af_resp *resp,
                               char email[AF_EMAIL_MAX + 1])
{
    struct af_field_errors fe = {0};
    const char *in = af_body_string(body, "email", true, &fe);
    const char *why;
    if (in && (why = af_email_normalize(in, email)))
        af_field_error(&fe, "email", why);
    return af_resp_field_errors(resp, req, &fe) ? NULL : email;
}

static void do_verify_email(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *code = af_body_string(body, "code", true, &fe);
    char email[AF_EMAIL_MAX + 1];
    const char *in = af_body_string(body, "email", true, &fe);
    const char *why;
    if (in && (why = af_email_normalize(in, email)))
        af_field_error(&fe, "email", why);
    if (code && strlen(code) > 64)
        af_field_error(&fe, "code", "is too long");
    if (af_resp_field_errors(resp, req, &fe))
        return;
    af_account_verify_email(ctx, req, resp, email, code);
}

static void do_resend(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    char email[AF_EMAIL_MAX + 1];
    if (body && email_field(body, req, resp, email))
        af_account_resend_code(ctx, req, resp, email);
}

static void do_forgot(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    char email[AF_EMAIL_MAX + 1];
    if (body && email_field(body, req, resp, email))
        af_account_forgot(ctx, req, resp, email);
}

/* Reads a new password into *out under the policy, as far as it goes
 * without the account: account.c screens it again against the account's
 * email and name once the link or the session names it. */
static bool new_password_field(struct af_ctx *ctx, json_object *body, struct af_field_errors *fe,
                               const char **out)
{
    const char *why;
    *out = af_body_string(body, "new_password", true, fe);
    if (*out && (why = af_pwpolicy_check(ctx->pwpolicy, *out, NULL, NULL)))
        af_field_error(fe, "new_password", why);
    return *out != NULL;
}

static void do_reset(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *token = af_body_string(body, "token", true, &fe);
    const char *password;
    new_password_field(ctx, body, &fe, &password);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    af_account_reset(ctx, req, resp, token, password);
}

static void do_change(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *current = af_body_string(body, "current_password", true, &fe);
    const char *password;
    new_password_field(ctx, body, &fe, &password);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    af_account_change_password(ctx, req, resp, current, password);
}

static void login(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    char email[AF_EMAIL_MAX + 1];
    const char *password = credentials(ctx, body, &fe, email, false);
    if (af_resp_field_errors(resp, req, &fe))
        return;

    /* Throttled before anything is looked up: a waiting account's answer
     * says nothing about its password or its existence. */
    if (!af_login_throttle_check(ctx, req, resp, email))
        return;
    struct af_user u;
    bool found;
    enum af_db_status st = af_user_by_email(ctx, req, email, &u, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    /* An unknown email costs the same hash verification as a wrong
     * password and gets the same answer. */
    bool ok;
    if (found && u.password_hash) {
        ok = af_password_verify(u.password_hash, password);
    } else {
        af_password_verify_dummy(&ctx->cost, password);
        ok = false;
    }
    if (!ok) {
        af_login_throttle_failed(ctx, req, email);
        af_audit(ctx, req, "login_failure", found ? u.id : NULL, found ? u.id : NULL, NULL,
                 found ? "{\"reason\":\"wrong_password\"}" : "{\"reason\":\"unknown_email\"}");
        af_resp_problem(resp, req, 401, "invalid_credentials", "The email or password is wrong.");
        return;
    }
    if (u.disabled) {
        af_audit(ctx, req, "login_failure", u.id, u.id, NULL, "{\"reason\":\"account_disabled\"}");
        af_resp_problem(resp, req, 403, "account_disabled", "This account is disabled.");
        return;
    }
    if (ctx->cfg.require_verified_email && !u.email_verified) {
        af_audit(ctx, req, "login_failure", u.id, u.id, NULL, "{\"reason\":\"email_not_verified\"}");
        af_resp_problem(resp, req, 403, "email_not_verified", "Verify your email address first.");
        return;
    }
    if (af_password_needs_rehash(&ctx->cost, u.password_hash)) {
        char hash[AF_HASH_LEN];
        if (af_password_hash(&ctx->cost, password, hash) == 0 &&
            af_user_set_password_hash(ctx, u.id, hash) == AF_DB_OK)
            af_log(AF_LOG_INFO, "password_rehashed", "user_id", u.id, NULL);
    }
    /* With TOTP on, the account's failure count is cleared only once the
     * second factor passed: a known password must not reset the count of
     * wrong codes. */
    if (u.mfa_enabled) {
        af_mfa_challenge(ctx, req, resp, &u, "pwd", NULL);
        return;
    }
    af_login_throttle_clear(ctx, email);
    af_session_login(ctx, req, resp, &u, "[\"pwd\"]");
}

/* Reads the second factor of a body: exactly one of "code" and
 * "recovery_code". */
static void factor_fields(json_object *body, struct af_field_errors *fe, const char **code,
                          const char **recovery)
{
    *code = af_body_string(body, "code", false, fe);
    *recovery = af_body_string(body, "recovery_code", false, fe);
    /* By value, not by key: {"code": null} gives neither. */
    if (!*code == !*recovery)
        af_field_error(fe, "code", "give either code or recovery_code");
    else if ((*code && strlen(*code) > 64) || (*recovery && strlen(*recovery) > 64))
        af_field_error(fe, *code ? "code" : "recovery_code", "is too long");
}

static void mfa_verify(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *token = af_body_string(body, "mfa_token", true, &fe);
    const char *code, *recovery;
    factor_fields(body, &fe, &code, &recovery);
    if (token && strlen(token) > 128)
        af_field_error(&fe, "mfa_token", "is too long");
    if (af_resp_field_errors(resp, req, &fe))
        return;
    af_mfa_verify(ctx, req, resp, token, code, recovery);
}

static void do_mfa_verify(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    mfa_verify(ctx, req, resp);
    af_metrics_incf("authflow_mfa_verifications_total{result=\"%s\"}",
                    resp->status == 200 ? "success" : resp->code ? resp->code : "error");
}

static void do_totp_setup(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    af_mfa_setup(ctx, req, resp);
}

static void do_totp_enable(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *code = af_body_string(body, "code", true, &fe);
    if (code && strlen(code) > 64)
        af_field_error(&fe, "code", "is too long");
    if (af_resp_field_errors(resp, req, &fe))
        return;
    af_mfa_enable(ctx, req, resp, code);
}

static void do_totp_disable(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *password = af_body_string(body, "password", true, &fe);
    const char *code, *recovery;
    factor_fields(body, &fe, &code, &recovery);
    const char *why;
    if (password && (why = af_password_check(password, 1)))
        af_field_error(&fe, "password", why);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    af_mfa_disable(ctx, req, resp, password, code, recovery);
}

static void do_login(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    login(ctx, req, resp);
    af_metrics_incf("authflow_logins_total{result=\"%s\"}",
                    resp->status == 200 ? "success" : resp->code ? resp->code : "error");
}

static void do_refresh(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *token = af_body_string(body, "refresh_token", false, &fe);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    if (!token) {
        /* Browser mode: the refresh cookie, guarded by the CSRF double submit. */
        token = af_req_cookie(req, af_cookie_refresh_name(ctx->cfg.cookies_secure));
        if (!token || !*token) {
            af_field_error(&fe, "refresh_token", "is required");
            af_resp_field_errors(resp, req, &fe);
            return;
        }
        if (!af_csrf_check(ctx, req, resp))
            return;
    }
    af_session_refresh(ctx, req, resp, token);
}

static void do_logout(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    if (af_session_revoke(ctx, req->claims.sid, "logout") != 0) {
        af_resp_unavailable(resp, req, af_db_error(ctx->db));
        return;
    }
    af_audit(ctx, req, "logout", req->claims.sub, req->claims.sub, req->claims.sid, NULL);
    af_resp_empty(resp, 204);
    af_session_clear_cookies(ctx, req, resp);
}

static void do_logout_all(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    long n = af_session_revoke_all(ctx, req->claims.sub, NULL, "logout_all");
    if (n < 0) {
        af_resp_unavailable(resp, req, af_db_error(ctx->db));
        return;
    }
    af_audit(ctx, req, "logout_all", req->claims.sub, req->claims.sub, req->claims.sid,
             af_arena_printf(req->arena, "{\"sessions_revoked\":%ld}", n));
    af_resp_empty(resp, 204);
    af_session_clear_cookies(ctx, req, resp);
}

static void do_jwks(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body = af_keyset_jwks(ctx->keys);
    resp->body_len = strlen(resp->body);
    resp->no_store = false;
    af_resp_header(resp, req, "Cache-Control", "public, max-age=300");
}

/* A latency in ms, written with µs precision (json-c would print 17
 * significant digits: 0.47699999999999998). */
static json_object *ms(long us)
{
    char s[32];
    snprintf(s, sizeof s, "%.3f", us / 1000.0);
    return json_object_new_double_s(us / 1000.0, s);
}

static json_object *check(bool ok, long latency_us)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string(ok ? "ok" : "down"));
    json_object_object_add(o, "latency_ms", ms(latency_us));
    return o;
}

static void do_health(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    long pg_us, redis_us;
    bool pg = af_db_ping(ctx->db, &pg_us) == AF_DB_OK;
    bool redis = af_cache_ping(ctx->cache, &redis_us);
    json_object *checks = json_object_new_object();
    json_object_object_add(checks, "postgres", check(pg, pg_us));
    json_object_object_add(checks, "redis", check(redis, redis_us));
    long replica_us, lag_ms;
    const char *rs = af_read_replica_health(ctx, &replica_us, &lag_ms);
    json_object *replica = json_object_new_object();
    json_object_object_add(replica, "status", json_object_new_string(rs));
    if (strcmp(rs, "not_configured")) {
        json_object_object_add(replica, "latency_ms", ms(replica_us));
        if (strcmp(rs, "down"))
            json_object_object_add(replica, "lag_ms", json_object_new_int64(lag_ms));
    }
    json_object_object_add(checks, "replica", replica);
    json_object *o = json_object_new_object();
    /* Redis is a cache and the replica optional: without them authflow
     * still answers, from the primary. */
    bool replica_ok = !strcmp(rs, "ok") || !strcmp(rs, "not_configured");
    json_object_object_add(o, "status",
                           json_object_new_string(!pg ? "fail" : redis && replica_ok ? "ok" : "degraded"));
    json_object_object_add(o, "checks", checks);
    af_resp_json(resp, req, pg ? 200 : 503, o);
    if (!pg)
        af_resp_header(resp, req, "Retry-After", "5");
}

/* Gauges read from PostgreSQL at scrape time: the mail outbox. */
static char *mail_gauges(struct af_ctx *ctx)
{
    PGresult *r;
    if (af_db_exec(ctx->db, &r,
                   "SELECT count(*) FILTER (WHERE status = 'pending'), "
                   "count(*) FILTER (WHERE status = 'sending'), count(*) FILTER (WHERE status = 'dead') "
                   "FROM mail_outbox WHERE status <> 'sent'", 0, NULL) != AF_DB_OK)
        return NULL;
    char *out = malloc(1024);
    if (out && snprintf(out, 1024,
                 "# HELP authflow_mail_queue_messages Messages in the mail outbox waiting to be sent, by state.\n"
                 "# TYPE authflow_mail_queue_messages gauge\n"
                 "authflow_mail_queue_messages{state=\"pending\"} %s\n"
                 "authflow_mail_queue_messages{state=\"sending\"} %s\n"
                 "# HELP authflow_mail_dead_messages Messages given up on (dead letters) still kept in the outbox.\n"
                 "# TYPE authflow_mail_dead_messages gauge\n"
                 "authflow_mail_dead_messages %s\n",
                 PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2)) >= 1024) {
        free(out);
        out = NULL;
    }
    PQclear(r);
    return out;
}

/* Prometheus text. Only for [metrics] allow_from; anyone else gets the
 * 404 of a path that does not exist. */
static void do_metrics(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    if (!af_metrics_enabled() || !req->remote_addr ||
        !af_addr_in_list(ctx->cfg.metrics_allow_from, req->remote_addr)) {
        af_resp_problem(resp, req, 404, "not_found", "No such resource.");
        return;
    }
    char *extra = mail_gauges(ctx);
    char *text = af_metrics_render(extra ? extra : "");
    free(extra);
    if (!text) {
        af_resp_internal(resp, req, "metrics rendering failed");
        return;
    }
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp->body = af_arena_strdup(req->arena, text);
    resp->body_len = strlen(resp->body);
    free(text);
}

static void do_health_live(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    (void)ctx;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("ok"));
    af_resp_json(resp, req, 200, o);
}

static const struct af_route routes[] = {
    {"POST", "/auth/register", do_register, AF_PUBLIC},
    {"POST", "/auth/login", do_login, AF_PUBLIC},
    {"POST", "/auth/refresh", do_refresh, AF_PUBLIC},
    {"POST", "/auth/logout", do_logout, AF_USER},
    {"POST", "/auth/logout-all", do_logout_all, AF_USER},
    {"POST", "/auth/verify-email", do_verify_email, AF_PUBLIC},
    {"POST", "/auth/verify-email/resend", do_resend, AF_PUBLIC},
    {"POST", "/auth/password/forgot", do_forgot, AF_PUBLIC},
    {"POST", "/auth/password/reset", do_reset, AF_PUBLIC},
    {"POST", "/auth/password/change", do_change, AF_USER},
    {"POST", "/auth/mfa/verify", do_mfa_verify, AF_PUBLIC},
    {"POST", "/auth/mfa/totp/setup", do_totp_setup, AF_USER},
    {"POST", "/auth/mfa/totp/enable", do_totp_enable, AF_USER},
    {"POST", "/auth/mfa/totp/disable", do_totp_disable, AF_USER},
    {"GET", "/.well-known/jwks.json", do_jwks, AF_PUBLIC},
    {"GET", "/health", do_health, AF_PUBLIC},
    {"GET", "/health/live", do_health_live, AF_PUBLIC},
    {"GET", "/metrics", do_metrics, AF_PUBLIC},
};

int main(int argc, char **argv)
{
    (void)argc;
    af_ctx_slim(argv);
    struct af_ctx ctx;
    if (af_ctx_init(&ctx, "authflow-auth", NULL, AF_NEED_KEYS | AF_NEED_PWPOLICY | AF_NEED_REPLICA) < 0)
        return 1;
    /* Make the first unknown-email login as slow as the others. */
    af_password_verify_dummy(&ctx.cost, "");
    int rc = af_serve(&ctx, routes, sizeof routes / sizeof routes[0]);
    af_ctx_free(&ctx);
    return rc;
}
