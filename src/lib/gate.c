/* gate.c — the verification gateway (see gate.h). */
#include "gate.h"

#include <stdio.h>
#include <string.h>

#include "authn.h"
#include "ctx.h"
#include "http.h"
#include "metrics.h"

const char *af_gate_return_path(const char *uri)
{
    if (!uri || uri[0] != '/' || uri[1] == '/' || uri[1] == '\\')
        return "/";
    for (const char *p = uri; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == 0x7f || *p == '\\')
            return "/";
    return uri;
}

static bool wants_html(struct af_req *req)
{
    const char *accept = af_req_header(req, "Accept");
    return accept && strstr(accept, "text/html") &&
           (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD"));
}

/* "a,b" from ["a","b"]. */
static const char *roles_csv(struct af_req *req)
{
    const char *in = req->claims.roles;
    char *out = af_arena_alloc(req->arena, strlen(in) + 1), *o = out;
    for (; *in; in++)
        if (*in != '[' && *in != ']' && *in != '"' && *in != ' ')
            *o++ = *in;
    *o = '\0';
    return out;
}

static void percent_encode(struct af_req *req, const char *s, char **out)
{
    static const char hex[] = "0123456789ABCDEF";
    char *b = af_arena_alloc(req->arena, strlen(s) * 3 + 1), *o = b;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    *out = b;
}

/* An nginx auth_request subrequest (GATE_MODE=1 from the location's
 * fastcgi_param) can only answer 2xx, 401 or 403, and nginx keeps its body:
 * the denial travels in headers for the configuration to answer with
 * (etc/nginx/authflow.conf, @authflow_denied): X-Auth-Status, the real
 * status; X-Auth-Problem, the problem+json body on one line. */
static void subrequest_denial(struct af_req *req, struct af_resp *resp)
{
    char *problem = af_arena_strdup(req->arena, resp->body ? resp->body : "");
    for (char *p = problem; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    af_resp_header(resp, req, "X-Auth-Status", af_arena_printf(req->arena, "%d", resp->status));
    af_resp_header(resp, req, "X-Auth-Problem", problem);
    if (resp->status != 401 && resp->status != 403)
        resp->status = 401;
}

static void decide(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    bool authorizer = req->role && !strcmp(req->role, "AUTHORIZER");
    const char *mode = authorizer ? NULL : af_req_var(req, "GATE_MODE");
    bool subrequest = mode && !strcmp(mode, "1");
    if (!af_authenticate(ctx, req, resp)) {
        /* A browser asking for a page is sent to the login page instead,
         * with where it was going as a relative path. */
        if (resp->status == 401 && *ctx->cfg.gate_login_url && wants_html(req)) {
            const char *uri = af_req_var(req, "REQUEST_URI");
            char *ret;
            percent_encode(req, af_gate_return_path(uri), &ret);
            const char *url = ctx->cfg.gate_login_url;
            const char *location = af_arena_printf(req->arena, "%s%sreturn_to=%s", url,
                                                   strchr(url, '?') ? "&" : "?", ret);
            if (subrequest) {
                af_resp_header(resp, req, "X-Auth-Redirect", location);
            } else {
                resp->nheaders = 0;
                af_resp_empty(resp, 302);
                af_resp_header(resp, req, "Location", location);
                return;
            }
        }
        if (subrequest)
            subrequest_denial(req, resp);
        return;
    }
    const char *need = af_req_var(req, "AUTHFLOW_REQUIRE_ROLE");
    if (need && *need && !af_has_role(req, need)) {
        af_resp_problem(resp, req, 403, "forbidden", "This location needs another role.");
        if (subrequest)
            subrequest_denial(req, resp);
        return;
    }
    const char *roles = roles_csv(req);
    if (authorizer) {
        /* Only Variable- headers: a web server may pass any other header of
         * an authorizer's 200 on to the client. */
        resp->status = 200;
        resp->bare = true;
        af_resp_header(resp, req, "Variable-AUTH_USER", req->claims.sub);
        af_resp_header(resp, req, "Variable-X_AUTH_USER_ID", req->claims.sub);
        af_resp_header(resp, req, "Variable-X_AUTH_EMAIL", req->claims.email);
        af_resp_header(resp, req, "Variable-X_AUTH_ROLES", roles);
        af_resp_header(resp, req, "Variable-X_AUTH_SESSION_ID", req->claims.sid);
        /* The id this request is logged under, for the application's logs. */
        af_resp_header(resp, req, "Variable-X_REQUEST_ID", req->request_id);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "user_id", json_object_new_string(req->claims.sub));
    json_object_object_add(o, "email", json_object_new_string(req->claims.email));
    json_object *r = json_tokener_parse(req->claims.roles);
    json_object_object_add(o, "roles", r ? r : json_object_new_array());
    json_object_object_add(o, "session_id", json_object_new_string(req->claims.sid));
    af_resp_json(resp, req, 200, o);
    af_resp_header(resp, req, "X-Auth-User-Id", req->claims.sub);
    af_resp_header(resp, req, "X-Auth-Email", req->claims.email);
    af_resp_header(resp, req, "X-Auth-Roles", roles);
    af_resp_header(resp, req, "X-Auth-Session-Id", req->claims.sid);
}

void af_gate(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    decide(ctx, req, resp);
    /* The code, not the status: a subrequest's denial travels as 401. */
    const char *result = resp->status == 200 ? "allow" : resp->status == 302 ? "redirect"
                         : resp->code ? resp->code : "error";
    af_metrics_incf("authflow_gate_decisions_total{result=\"%s\"}", result);
}
