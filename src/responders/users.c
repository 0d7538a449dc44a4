/* authflow-users — the signed-in user's own account: profile, changes,
 * deletion and sessions. Every route needs a valid access token of a live session. */
#include <string.h>

#include "admin.h"
#include "body.h"
#include "ctx.h"
#include "http.h"
#include "session.h"
#include "user.h"
#include "util.h"
#include "validate.h"

static void gone(struct af_req *req, struct af_resp *resp)
{
    af_resp_problem(resp, req, 401, "unauthorized", "The account no longer exists.");
}

static void do_me(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *json;
    bool found;
    enum af_db_status st = af_user_json_text(ctx, req, req->claims.sub, &json, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (!found) {
        gone(req, resp);
        return;
    }
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body = json;
    resp->body_len = strlen(json);
}

static void do_update_me(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *name = af_body_string(body, "full_name", true, &fe);
    const char *why;
    if (name && (why = af_name_check(name)))
        af_field_error(&fe, "full_name", why);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    struct af_user u;
    bool found;
    enum af_db_status st = af_user_set_name(ctx, req, req->claims.sub, name, &u, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (!found) {
        gone(req, resp);
        return;
    }
    af_audit(ctx, req, "profile_updated", u.id, u.id, req->claims.sid, NULL);
    af_resp_json(resp, req, 200, af_user_to_json(&u));
}

static void do_delete_me(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *password = af_body_string(body, "password", true, &fe);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    struct af_user u;
    if (!af_user_reauth(ctx, req, resp, password, &u))
        return;
    struct af_actor who = {.user_id = u.id};
    enum af_admin_status st = af_admin_delete_user(ctx, req, &who, u.id);
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, NULL);
        return;
    }
    af_resp_empty(resp, 204);
    af_session_clear_cookies(ctx, req, resp);
}

static void do_sessions(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    af_session_list(ctx, req, resp);
}

static void do_revoke_session(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *sid = af_req_param(req, "id");
    int rc = sid && af_is_uuid(sid) ? af_session_revoke_own(ctx, req->claims.sub, sid, "user_revoked") : 0;
    if (rc < 0) {
        af_resp_unavailable(resp, req, af_db_error(ctx->db));
        return;
    }
    if (rc == 0) {
        /* Another user's session is as unknown as a made-up id. */
        af_resp_problem(resp, req, 404, "not_found", "No such session.");
        return;
    }
    af_audit(ctx, req, "session_revoked", req->claims.sub, req->claims.sub, sid, NULL);
    af_resp_empty(resp, 204);
    if (!strcmp(sid, req->claims.sid))
        af_session_clear_cookies(ctx, req, resp);
}

static void do_activity(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    af_admin_audit_page(ctx, req, resp, req->claims.sub);
}

static const struct af_route routes[] = {
    {"GET", "/users/me", do_me, AF_USER},
    {"PATCH", "/users/me", do_update_me, AF_USER},
    {"DELETE", "/users/me", do_delete_me, AF_USER},
    {"GET", "/users/me/sessions", do_sessions, AF_USER},
    {"DELETE", "/users/me/sessions/{id}", do_revoke_session, AF_USER},
    {"GET", "/users/me/activity", do_activity, AF_USER},
};

int main(int argc, char **argv)
{
    (void)argc;
    af_ctx_slim(argv);
    struct af_ctx ctx;
    if (af_ctx_init(&ctx, "authflow-users", NULL, AF_NEED_KEYS | AF_NEED_REPLICA) < 0)
        return 1;
    int rc = af_serve(&ctx, routes, sizeof routes / sizeof routes[0]);
    af_ctx_free(&ctx);
    return rc;
}
