/* authn.c — request authentication (see authn.h). */
#include "authn.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cookie.h"
#include "ctx.h"
#include "http.h"
#include "session.h"
#include "user.h"
#include "util.h"

bool af_has_role(const struct af_req *req, const char *role)
{
    /* Role names are [a-z][a-z0-9_-]* (the roles table's CHECK), so the
     * quoted name found in the claims' JSON array is the role itself. */
    char quoted[80];
    size_t n = strlen(role);
    if (!req->authenticated || n == 0 || n > 64 || strpbrk(role, "\"\\"))
        return false;
    snprintf(quoted, sizeof quoted, "\"%s\"", role);
    return strstr(req->claims.roles, quoted) != NULL;
}

bool af_require_role(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, const char *role)
{
    if (!af_has_role(req, role)) {
        af_resp_problem(resp, req, 403, "forbidden", "This needs another role.");
        return false;
    }
    const char *json;
    bool found;
    enum af_db_status st = af_user_json_text(ctx, req, req->claims.sub, &json, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return false;
    }
    if (!found) {
        af_resp_problem(resp, req, 401, "unauthorized", "The account no longer exists.");
        return false;
    }
    json_object *u = json_tokener_parse(json), *roles, *disabled;
    bool ok = false;
    if (u && json_object_object_get_ex(u, "roles", &roles) && json_object_is_type(roles, json_type_array) &&
        !(json_object_object_get_ex(u, "disabled", &disabled) && json_object_get_boolean(disabled))) {
        for (size_t i = 0; i < json_object_array_length(roles) && !ok; i++) {
            const char *r = json_object_get_string(json_object_array_get_idx(roles, i));
            ok = r && !strcmp(r, role);
        }
    }
    json_object_put(u);
    if (!ok)
        af_resp_problem(resp, req, 403, "forbidden", "This needs another role.");
    return ok;
}

void af_fingerprint(struct af_ctx *ctx, struct af_req *req, char out[65])
{
    const char *parts = ctx->cfg.fingerprint;
    const char *ua = strstr(parts, "user_agent") ? af_req_header(req, "User-Agent") : NULL;
    const char *al = strstr(parts, "accept_language") ? af_req_header(req, "Accept-Language") : NULL;
    char ip[64] = "";
    if (strstr(parts, "ip_prefix") && req->remote_addr) {
        /* The /24 of IPv4, the /64 (first four groups) of IPv6. */
        const char *a = req->remote_addr;
        if (strchr(a, ':')) {
            int groups = 0;
            size_t i = 0;
            for (; a[i] && i < sizeof ip - 1 && groups < 4; i++) {
                if (a[i] == ':')
                    groups++;
                ip[i] = a[i];
            }
            ip[i] = '\0';
        } else {
            const char *last = strrchr(a, '.');
            size_t n = last ? (size_t)(last - a) : strlen(a);
            if (n >= sizeof ip)
                n = sizeof ip - 1;
            memcpy(ip, a, n);
            ip[n] = '\0';
        }
    }
    char *s = af_arena_printf(req->arena, "ua=%s\nal=%s\nip=%s", ua ? ua : "", al ? al : "", ip);
    af_sha256_hex(s, strlen(s), out);
}

bool af_origin_allowed(struct af_ctx *ctx, const char *origin)
{
    size_t n = strlen(origin);
    const char *pub = ctx->cfg.public_url;
    /* The public URL's own origin is always allowed. */
    const char *slash = strchr(strstr(pub, "://") ? strstr(pub, "://") + 3 : pub, '/');
    size_t pn = slash ? (size_t)(slash - pub) : strlen(pub);
    if (n == pn && !strncasecmp(origin, pub, pn))
        return true;
    return af_list_contains(ctx->cfg.allowed_origins, origin, n, true);
}

bool af_csrf_check(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *origin = af_req_header(req, "Origin");
    const char *header = af_req_header(req, "X-CSRF-Token");
    const char *cookie = af_req_cookie(req, AF_COOKIE_CSRF);
    if (origin && !af_origin_allowed(ctx, origin)) {
        af_resp_problem(resp, req, 403, "csrf_failed", "The request's Origin is not allowed.");
        return false;
    }
    if (!header || !cookie || !*cookie || !af_streq_ct(header, cookie)) {
        af_resp_problem(resp, req, 403, "csrf_failed",
                        "Cookie-authenticated requests must send X-CSRF-Token equal to the csrf cookie.");
        return false;
    }
    return true;
}

bool af_authenticate(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *token = NULL;
    const char *auth = af_req_header(req, "Authorization");
    if (auth && *auth) {
        if (strncasecmp(auth, "Bearer ", 7) != 0) {
            af_resp_problem(resp, req, 401, "unauthorized", "Use Authorization: Bearer <access token>.");
            af_resp_header(resp, req, "WWW-Authenticate", "Bearer");
            return false;
        }
        token = auth + 7;
        while (*token == ' ')
            token++;
    } else {
        token = af_req_cookie(req, af_cookie_access_name(ctx->cfg.cookies_secure));
        if (token && *token) {
            req->cookie_mode = true;
            if (af_req_unsafe_method(req) && !af_csrf_check(ctx, req, resp))
                return false;
        }
    }
    if (!token || !*token) {
        af_resp_problem(resp, req, 401, "unauthorized", "An access token is required.");
        af_resp_header(resp, req, "WWW-Authenticate", "Bearer");
        return false;
    }
    enum af_token_status ts = af_token_verify(ctx->keys, &ctx->token_params, token, time(NULL), &req->claims);
    /* Signed with a key added a moment ago by another host's or process's
     * `keys rotate`? Look at the key directory now rather than within the
     * second. */
    if (ts == AF_TOKEN_INVALID && af_ctx_reload_keys(ctx, true))
        ts = af_token_verify(ctx->keys, &ctx->token_params, token, time(NULL), &req->claims);
    switch (ts) {
    case AF_TOKEN_OK:
        break;
    case AF_TOKEN_EXPIRED:
        af_resp_problem(resp, req, 401, "token_expired", "The access token has expired.");
        af_resp_header(resp, req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        return false;
    default:
        af_resp_problem(resp, req, 401, "invalid_token", "The access token is not valid.");
        af_resp_header(resp, req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        return false;
    }
    switch (af_session_check(ctx, req, req->claims.sid, req->claims.sub,
                             ctx->no_user_prefetch ? NULL : &req->cached_user)) {
    case AF_SESSION_LIVE:
        break;
    case AF_SESSION_UNAVAILABLE:
        af_resp_unavailable(resp, req, "session check: stores unavailable");
        return false;
    default:
        af_resp_problem(resp, req, 401, "session_revoked", "The session has ended.");
        return false;
    }
    /* The device after the session, in API.md's order. */
    char dfp[65];
    af_fingerprint(ctx, req, dfp);
    if (!af_streq_ct(dfp, req->claims.dfp)) {
        af_resp_problem(resp, req, 401, "invalid_token", "The access token belongs to another device.");
        return false;
    }
    req->authenticated = true;
    return true;
}
