/* authflow-admin — user administration and the audit trail, for callers
 * holding the admin role (checked in the token and against the user's
 * current roles). The rules (last admin, audit rows, revocations) are in
 * src/lib/admin.c and PostgreSQL, shared with authflowctl. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "body.h"
#include "ctx.h"
#include "http.h"
#include "password.h"
#include "user.h"
#include "util.h"
#include "validate.h"

static struct af_actor actor(struct af_req *req)
{
    return (struct af_actor){.user_id = req->claims.sub, .via = NULL};
}

/* Was the body a urlencoded form? Its values are all strings. */
static bool form_body(const struct af_req *req)
{
    return req->content_type && !strncasecmp(req->content_type, "application/x-www-form-urlencoded", 33);
}

/* An optional boolean field: -1 absent, else 0/1 ("true"/"false" from a form). */
static int bool_field(const struct af_req *req, json_object *body, const char *field,
                      struct af_field_errors *fe)
{
    json_object *v;
    if (!json_object_object_get_ex(body, field, &v) || json_object_is_type(v, json_type_null))
        return -1;
    if (json_object_is_type(v, json_type_boolean))
        return json_object_get_boolean(v);
    if (form_body(req) && json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        if (!strcmp(s, "true"))
            return 1;
        if (!strcmp(s, "false"))
            return 0;
    }
    af_field_error(fe, field, "must be true or false");
    return -1;
}

/* An optional list of role names: a JSON array of strings, or (from a
 * form, whose values are strings) comma-separated names. false when absent
 * or invalid. */
static bool roles_field(struct af_req *req, json_object *body, struct af_field_errors *fe,
                        const char ***names, int *n)
{
    json_object *v;
    if (!json_object_object_get_ex(body, "roles", &v) || json_object_is_type(v, json_type_null))
        return false;
    const char **out = NULL;
    int count = 0;
    if (json_object_is_type(v, json_type_array)) {
        size_t len = json_object_array_length(v);
        if (len > 64) {
            af_field_error(fe, "roles", "has too many roles");
            return false;
        }
        out = af_arena_alloc(req->arena, (len + 1) * sizeof *out);
        for (size_t i = 0; i < len; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            if (!json_object_is_type(e, json_type_string)) {
                af_field_error(fe, "roles", "must be a list of role names");
                return false;
            }
            out[count++] = json_object_get_string(e);
        }
    } else if (form_body(req) && json_object_is_type(v, json_type_string)) {
        char *s = af_arena_strdup(req->arena, json_object_get_string(v));
        out = af_arena_alloc(req->arena, 65 * sizeof *out);
        char *save = NULL;
        for (char *t = strtok_r(s, ", ", &save); t && count < 64; t = strtok_r(NULL, ", ", &save))
            out[count++] = t;
    } else {
        af_field_error(fe, "roles", "must be a list of role names");
        return false;
    }
    for (int i = 0; i < count; i++) {
        size_t len = strlen(out[i]);
        if (len == 0 || len > 63) {
            af_field_error(fe, "roles", "has a name that is not a role");
            return false;
        }
    }
    *names = out;
    *n = count;
    return true;
}

static void do_list_users(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *q = af_req_query(req, resp);
    if (!q)
        return;
    struct af_field_errors fe = {0};
    struct af_user_filter f = {
        .q = af_query_string(q, "q", &fe),
        .role = af_query_string(q, "role", &fe),
        .status = af_query_string(q, "status", &fe),
        .cursor = af_query_string(q, "cursor", &fe),
        .limit = af_query_limit(q, &fe),
    };
    if (f.q && strlen(f.q) > 254)
        af_field_error(&fe, "q", "is too long");
    if (af_resp_field_errors(resp, req, &fe)) {
        json_object_put(q);
        return;
    }
    json_object *page;
    const char *detail = NULL;
    enum af_admin_status st = af_admin_list_users(ctx, req, &f, &page, &detail);
    if (st == AF_ADMIN_OK)
        af_resp_json(resp, req, 200, page);
    else
        af_admin_resp_failure(resp, req, ctx, st, detail);
    json_object_put(q);
}

static void do_create_user(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    char email[AF_EMAIL_MAX + 1];
    const char *email_in = af_body_string(body, "email", true, &fe);
    const char *password = af_body_string(body, "password", false, &fe);
    const char *name = af_body_string(body, "full_name", false, &fe);
    const char *why;
    email[0] = '\0';
    if (email_in && (why = af_email_normalize(email_in, email))) {
        af_field_error(&fe, "email", why);
        email[0] = '\0';
    }
    if (password && (why = af_pwpolicy_check(ctx->pwpolicy, password, *email ? email : NULL, name)))
        af_field_error(&fe, "password", why);
    if (name && (why = af_name_check(name)))
        af_field_error(&fe, "full_name", why);
    struct af_new_user nu = {.email = email, .full_name = name};
    const char **roles;
    if (roles_field(req, body, &fe, &roles, &nu.nroles))
        nu.roles = roles;
    nu.email_verified = bool_field(req, body, "email_verified", &fe) == 1;
    if (af_resp_field_errors(resp, req, &fe))
        return;
    char hash[AF_HASH_LEN];
    if (password) {
        if (af_password_hash(&ctx->cost, password, hash) != 0) {
            af_resp_internal(resp, req, "password hashing failed (out of memory?)");
            return;
        }
        nu.password_hash = hash;
    }
    struct af_actor who = actor(req);
    json_object *user;
    const char *detail = NULL;
    enum af_admin_status st = af_admin_create_user(ctx, req, &who, &nu, &user, &detail);
    sodium_memzero(hash, sizeof hash);
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, detail);
        return;
    }
    json_object *id;
    if (json_object_object_get_ex(user, "id", &id))
        af_resp_header(resp, req, "Location",
                       af_arena_printf(req->arena, "%s/admin/users/%s", ctx->cfg.api_prefix,
                                       json_object_get_string(id)));
    af_resp_json(resp, req, 201, user);
}

static void do_get_user(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *id = af_req_param(req, "id");
    json_object *user;
    enum af_admin_status st = af_is_uuid(id) ? af_admin_get_user(ctx, req, id, &user) : AF_ADMIN_NOT_FOUND;
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, NULL);
        return;
    }
    af_audit(ctx, req, "admin_user_read", req->claims.sub, id, req->claims.sid, NULL);
    af_resp_json(resp, req, 200, user);
}

static void do_update_user(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *id = af_req_param(req, "id");
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    struct af_user_change c = {.disabled = -1, .email_verified = -1};
    const char *why;
    c.full_name = af_body_string(body, "full_name", false, &fe);
    if (c.full_name && (why = af_name_check(c.full_name)))
        af_field_error(&fe, "full_name", why);
    const char **roles;
    if (roles_field(req, body, &fe, &roles, &c.nroles)) {
        c.roles = roles;
        c.set_roles = true;
    }
    c.disabled = bool_field(req, body, "disabled", &fe);
    c.email_verified = bool_field(req, body, "email_verified", &fe);
    if (af_resp_field_errors(resp, req, &fe))
        return;
    struct af_actor who = actor(req);
    const char *detail = NULL;
    enum af_admin_status st = af_is_uuid(id) ? af_admin_update_user(ctx, req, &who, id, &c, &detail)
                                             : AF_ADMIN_NOT_FOUND;
    json_object *user = NULL;
    if (st == AF_ADMIN_OK)
        st = af_admin_get_user(ctx, req, id, &user);
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, detail);
        return;
    }
    af_resp_json(resp, req, 200, user);
}

static void do_delete_user(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *id = af_req_param(req, "id");
    struct af_actor who = actor(req);
    enum af_admin_status st = af_is_uuid(id) ? af_admin_delete_user(ctx, req, &who, id) : AF_ADMIN_NOT_FOUND;
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, NULL);
        return;
    }
    af_resp_empty(resp, 204);
}

/* The user must exist: 404 otherwise (an empty list would hide a typo). */
static bool user_exists(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, const char *id)
{
    json_object *user;
    enum af_admin_status st = af_is_uuid(id) ? af_admin_get_user(ctx, req, id, &user) : AF_ADMIN_NOT_FOUND;
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, NULL);
        return false;
    }
    json_object_put(user);
    return true;
}

static void do_user_sessions(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *id = af_req_param(req, "id");
    if (!user_exists(ctx, req, resp, id))
        return;
    json_object *list;
    enum af_admin_status st = af_admin_list_sessions(ctx, req, id, &list);
    if (st != AF_ADMIN_OK) {
        af_admin_resp_failure(resp, req, ctx, st, NULL);
        return;
    }
    af_audit(ctx, req, "admin_user_read", req->claims.sub, id, req->claims.sid, "{\"what\":\"sessions\"}");
    af_resp_json(resp, req, 200, list);
}

static void do_revoke_user_sessions(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *id = af_req_param(req, "id");
    if (!user_exists(ctx, req, resp, id))
        return;
    struct af_actor who = actor(req);
    if (af_admin_revoke_sessions(ctx, req, &who, id) < 0) {
        af_resp_unavailable(resp, req, af_db_error(ctx->db));
        return;
    }
    af_resp_empty(resp, 204);
}

static void do_audit(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    af_admin_audit_page(ctx, req, resp, NULL);
}

static const struct af_route routes[] = {
    {"GET", "/admin/users", do_list_users, AF_ADMIN},
    {"POST", "/admin/users", do_create_user, AF_ADMIN},
    {"GET", "/admin/users/{id}", do_get_user, AF_ADMIN},
    {"PATCH", "/admin/users/{id}", do_update_user, AF_ADMIN},
    {"DELETE", "/admin/users/{id}", do_delete_user, AF_ADMIN},
    {"GET", "/admin/users/{id}/sessions", do_user_sessions, AF_ADMIN},
    {"DELETE", "/admin/users/{id}/sessions", do_revoke_user_sessions, AF_ADMIN},
    {"GET", "/admin/audit", do_audit, AF_ADMIN},
};

int main(int argc, char **argv)
{
    (void)argc;
    af_ctx_slim(argv);
    struct af_ctx ctx;
    if (af_ctx_init(&ctx, "authflow-admin", NULL, AF_NEED_KEYS | AF_NEED_PWPOLICY | AF_NEED_REPLICA) < 0)
        return 1;
    int rc = af_serve(&ctx, routes, sizeof routes / sizeof routes[0]);
    af_ctx_free(&ctx);
    return rc;
}
