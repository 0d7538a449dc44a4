/* http.c — FastCGI request/response layer (see http.h). */
#include "http.h"

#include <errno.h>
#include <fcgiapp.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "authn.h"
#include "body.h"
#include "cookie.h"
#include "ctx.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "reads.h"
#include "util.h"

/* Bodies over the limit are read and thrown away up to this size, so the
 * web server sees a clean answer; past it the connection is dropped. */
#define DRAIN_MAX (8u << 20)

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
    FCGX_ShutdownPending();
}

const char *af_req_header(struct af_req *req, const char *name)
{
    char env[128] = "HTTP_";
    size_t i = 5;
    for (const char *p = name; *p && i < sizeof env - 1; p++, i++)
        env[i] = *p == '-' ? '_' : (char)((*p >= 'a' && *p <= 'z') ? *p - 32 : *p);
    env[i] = '\0';
    if (!strcmp(env, "HTTP_CONTENT_TYPE"))
        return req->content_type;
    return FCGX_GetParam(env, (char **)req->envp);
}

json_object *af_req_query(struct af_req *req, struct af_resp *resp)
{
    json_object *q;
    const char *why = NULL;
    const char *s = req->query ? req->query : "";
    if (!*s)
        return json_object_new_object();
    if (af_body_decode_form(s, strlen(s), &q, &why) != AF_BODY_OK) {
        struct af_field_errors fe = {0};
        af_field_error(&fe, "query", why ? why : "is not valid");
        af_resp_field_errors(resp, req, &fe);
        return NULL;
    }
    return q;
}

int af_query_limit(json_object *query, struct af_field_errors *fe)
{
    const char *s = af_body_string(query, "limit", false, fe);
    if (!s)
        return 50;
    char *end;
    long n = strtol(s, &end, 10);
    if (!*s || *end || n < 1 || n > 200) {
        af_field_error(fe, "limit", "must be a whole number from 1 to 200");
        return 50;
    }
    return (int)n;
}

const char *af_query_string(json_object *query, const char *field, struct af_field_errors *fe)
{
    const char *s = af_body_string(query, field, false, fe);
    return s && *s ? s : NULL;
}

const char *af_req_cookie(struct af_req *req, const char *name)
{
    return af_cookie_get(req->arena, af_req_header(req, "Cookie"), name);
}

const char *af_req_var(struct af_req *req, const char *name)
{
    return FCGX_GetParam(name, (char **)req->envp);
}

const char *af_req_param(struct af_req *req, const char *name)
{
    for (int i = 0; i < AF_MAX_PARAMS && req->param_names[i]; i++)
        if (!strcmp(req->param_names[i], name))
            return req->params[i];
    return NULL;
}

bool af_req_unsafe_method(const struct af_req *req)
{
    return strcmp(req->method, "GET") && strcmp(req->method, "HEAD") && strcmp(req->method, "OPTIONS");
}

json_object *af_req_json(struct af_req *req, struct af_resp *resp)
{
    if (req->json)
        return req->json;
    const char *why = "the body is not valid";
    enum af_body_status st = af_body_decode(req->content_type, req->body, req->body_len, &req->json, &why);
    switch (st) {
    case AF_BODY_OK:
        return req->json;
    case AF_BODY_EMPTY:
        /* A body-less POST reads as an empty object: missing fields are
         * then reported one by one. */
        req->json = json_object_new_object();
        return req->json;
    case AF_BODY_UNSUPPORTED:
        af_resp_problem(resp, req, 415, "unsupported_media_type", why);
        return NULL;
    default:
        af_resp_problem(resp, req, 400, "invalid_json", why);
        return NULL;
    }
}

void af_resp_header(struct af_resp *resp, struct af_req *req, const char *name, const char *value)
{
    (void)req;
    if (resp->nheaders < AF_MAX_HEADERS) {
        resp->headers[resp->nheaders].name = name;
        resp->headers[resp->nheaders].value = value;
        resp->nheaders++;
    }
}

void af_resp_json(struct af_resp *resp, struct af_req *req, int status, json_object *obj)
{
    size_t len;
    const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = af_arena_strndup(req->arena, s, len);
    resp->body_len = len;
    json_object_put(obj);
}

void af_resp_empty(struct af_resp *resp, int status)
{
    resp->status = status;
    resp->content_type = NULL;
    resp->body = NULL;
    resp->body_len = 0;
}

static const struct {
    const char *code, *title;
} titles[] = {
    {"validation_failed", "Validation failed"},
    {"invalid_json", "Malformed request body"},
    {"payload_too_large", "Request body too large"},
    {"unsupported_media_type", "Unsupported media type"},
    {"email_taken", "Email already registered"},
    {"invalid_code", "Invalid code"},
    {"invalid_credentials", "Invalid credentials"},
    {"email_not_verified", "Email not verified"},
    {"account_disabled", "Account disabled"},
    {"mfa_required", "Second factor required"},
    {"mfa_already_enabled", "Two-factor authentication already enabled"},
    {"too_many_attempts", "Too many attempts"},
    {"rate_limited", "Rate limited"},
    {"invalid_token", "Invalid token"},
    {"token_expired", "Token expired"},
    {"token_reused", "Refresh token reused"},
    {"session_revoked", "Session revoked"},
    {"csrf_failed", "CSRF check failed"},
    {"unauthorized", "Authentication required"},
    {"forbidden", "Forbidden"},
    {"not_found", "Not found"},
    {"method_not_allowed", "Method not allowed"},
    {"last_admin", "Last administrator"},
    {"service_unavailable", "Service unavailable"},
    {"internal_error", "Internal error"},
};

const char *af_problem_title(const char *code)
{
    for (size_t i = 0; i < sizeof titles / sizeof titles[0]; i++)
        if (!strcmp(titles[i].code, code))
            return titles[i].title;
    return "Error";
}

void af_resp_problem_fields(struct af_resp *resp, struct af_req *req, int status,
                            const char *code, const char *detail, json_object *errors)
{
    json_object *extra = NULL;
    if (errors) {
        extra = json_object_new_object();
        json_object_object_add(extra, "errors", errors);
    }
    af_resp_problem_with(resp, req, status, code, detail, extra);
}

void af_resp_problem_with(struct af_resp *resp, struct af_req *req, int status, const char *code,
                          const char *detail, json_object *members)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string(af_arena_printf(req->arena, "urn:authflow:problem:%s", code)));
    json_object_object_add(o, "title", json_object_new_string(af_problem_title(code)));
    json_object_object_add(o, "status", json_object_new_int(status));
    json_object_object_add(o, "detail", json_object_new_string(detail ? detail : af_problem_title(code)));
    json_object_object_add(o, "code", json_object_new_string(code));
    if (members) {
        json_object_object_foreach(members, k, v)
            json_object_object_add(o, k, json_object_get(v));
        json_object_put(members);
    }
    af_resp_json(resp, req, status, o);
    resp->content_type = "application/problem+json";
    resp->code = code;
}

void af_resp_problem(struct af_resp *resp, struct af_req *req, int status, const char *code,
                     const char *detail)
{
    af_resp_problem_fields(resp, req, status, code, detail, NULL);
}

void af_resp_unavailable(struct af_resp *resp, struct af_req *req, const char *cause)
{
    resp->log_error = cause;
    af_resp_problem(resp, req, 503, "service_unavailable",
                    "A service authflow depends on is unavailable; try again shortly.");
    af_resp_header(resp, req, "Retry-After", "5");
}

void af_resp_internal(struct af_resp *resp, struct af_req *req, const char *cause)
{
    resp->log_error = cause;
    af_resp_problem(resp, req, 500, "internal_error", "An internal error occurred.");
}

void af_resp_db_failure(struct af_resp *resp, struct af_req *req, struct af_ctx *ctx, int db_status)
{
    if (db_status == AF_DB_UNAVAILABLE)
        af_resp_unavailable(resp, req, af_db_error(ctx->db));
    else
        af_resp_internal(resp, req, af_db_error(ctx->db));
}

bool af_resp_field_errors(struct af_resp *resp, struct af_req *req, struct af_field_errors *fe)
{
    if (!fe->list)
        return false;
    af_resp_problem_fields(resp, req, 400, "validation_failed", "Some fields are not valid.", fe->list);
    fe->list = NULL;
    return true;
}

bool af_route_match(const char *pattern, const char *path, const char *params[AF_MAX_PARAMS],
                    const char *names[AF_MAX_PARAMS], af_arena *a)
{
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            size_t seg = strcspn(s, "/");
            if (!pe || seg == 0 || np == AF_MAX_PARAMS)
                return false;
            params[np] = af_arena_strndup(a, s, seg);
            names[np] = af_arena_strndup(a, p + 1, (size_t)(pe - p - 1));
            np++;
            p = pe + 1;
            s += seg;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    if (np < AF_MAX_PARAMS)
        names[np] = NULL;
    return *s == '\0';
}

static bool root_pattern(const char *pattern)
{
    return !strncmp(pattern, "/.well-known/", 13) || !strncmp(pattern, "/health", 7) ||
           !strcmp(pattern, "/metrics");
}

/* Picks the route; answers 404/405 itself. */
static const struct af_route *route(struct af_ctx *ctx, const struct af_route *routes, size_t n,
                                    struct af_req *req, struct af_resp *resp)
{
    const char *prefix = ctx->cfg.api_prefix;
    size_t pl = strlen(prefix);
    const char *rel = !strncmp(req->path, prefix, pl) && req->path[pl] == '/' ? req->path + pl : NULL;
    char allow[128] = "";
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(routes[i].pattern, "*")) {
            /* Only the gate has such a route: other programs never look up
             * GATE_MODE. */
            const char *gate_mode = af_req_var(req, "GATE_MODE");
            if ((req->role && !strcmp(req->role, "AUTHORIZER")) || (gate_mode && !strcmp(gate_mode, "1")))
                return &routes[i];
            continue;
        }
        const char *target = root_pattern(routes[i].pattern) ? req->path : rel;
        if (!target || !af_route_match(routes[i].pattern, target, req->params, req->param_names, req->arena))
            continue;
        if (!strcmp(routes[i].method, req->method) ||
            (!strcmp(req->method, "HEAD") && !strcmp(routes[i].method, "GET")))
            return &routes[i];
        if (!strstr(allow, routes[i].method) && strlen(allow) + strlen(routes[i].method) + 3 < sizeof allow) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, routes[i].method);
        }
    }
    if (allow[0]) {
        af_resp_problem(resp, req, 405, "method_not_allowed", "This path does not accept that method.");
        af_resp_header(resp, req, "Allow", af_arena_strdup(req->arena, allow));
    } else {
        af_resp_problem(resp, req, 404, "not_found", "No such resource.");
    }
    return NULL;
}

/* The client's address: the peer's, unless the peer is a trusted proxy;
 * then the right-most X-Forwarded-For entry that is not itself a trusted
 * proxy (entries further left are the client's own claims). */
static const char *client_ip(struct af_ctx *ctx, FCGX_Request *r, af_arena *a)
{
    const char *peer = FCGX_GetParam("REMOTE_ADDR", r->envp);
    const char *xff = FCGX_GetParam("HTTP_X_FORWARDED_FOR", r->envp);
    if (!peer || !xff || !ctx->cfg.trusted_proxies[0] ||
        !af_list_contains(ctx->cfg.trusted_proxies, peer, strlen(peer), false))
        return peer;
    const char *end = xff + strlen(xff);
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *s = start, *e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        size_t n = (size_t)(e - s);
        if (n == 0 || n > 45 || strspn(s, "0123456789abcdefABCDEF.:") < n)
            return peer;            /* not an address: trust nothing further */
        if (!af_list_contains(ctx->cfg.trusted_proxies, s, n, false))
            return af_arena_strndup(a, s, n);
        end = start > xff ? start - 1 : xff;
    }
    return peer;
}

/* Request ids need to be unique, not secret: a random per-process prefix
 * and a counter, without a system call per request. */
static const char *next_request_id(af_arena *a)
{
    static char prefix[17];
    static unsigned long long n;
    if (!prefix[0]) {
        unsigned char b[8];
        randombytes_buf(b, sizeof b);
        sodium_bin2hex(prefix, sizeof prefix, b, sizeof b);
    }
    return af_arena_printf(a, "%s-%llu", prefix, ++n);
}

static bool sane_request_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

static void read_body(struct af_ctx *ctx, FCGX_Request *r, struct af_req *req)
{
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", r->envp);
    char *end;
    errno = 0;
    unsigned long long len = cl && *cl ? strtoull(cl, &end, 10) : 0;
    if (errno || (cl && *cl && *end))
        len = 0;
    if (len == 0)
        return;
    if (len > (unsigned long long)ctx->cfg.max_body_bytes) {
        req->body_too_large = true;
        char sink[8192];
        unsigned long long left = len > DRAIN_MAX ? DRAIN_MAX : len;
        while (left > 0) {
            int got = FCGX_GetStr(sink, left > sizeof sink ? (int)sizeof sink : (int)left, r->in);
            if (got <= 0)
                break;
            left -= (unsigned long long)got;
        }
        return;
    }
    req->body = af_arena_alloc(req->arena, (size_t)len + 1);
    int got = FCGX_GetStr(req->body, (int)len, r->in);
    req->body_len = got > 0 ? (size_t)got : 0;
    req->body[req->body_len] = '\0';
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Internal Server Error" : "Error";
    }
}

/* CORS: a browser page of an allowed origin may call authflow with its
 * cookies and read the answer; every other origin gets no CORS header, so
 * its pages cannot read anything. */
static void cors_headers(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    const char *origin = af_req_header(req, "Origin");
    if (!origin)
        return;
    af_resp_header(resp, req, "Vary", "Origin");
    if (!af_origin_allowed(ctx, origin))
        return;
    af_resp_header(resp, req, "Access-Control-Allow-Origin", origin);
    af_resp_header(resp, req, "Access-Control-Allow-Credentials", "true");
    af_resp_header(resp, req, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After, Location");
}

/* A CORS preflight (OPTIONS with Access-Control-Request-Method): 204 with
 * the path's methods for an allowed origin, 403 without CORS headers for
 * any other; 404 for a path that does not exist. */
static void preflight(struct af_ctx *ctx, const struct af_route *routes, size_t n, struct af_req *req,
                      struct af_resp *resp)
{
    struct af_resp probe;
    memset(&probe, 0, sizeof probe);
    route(ctx, routes, n, req, &probe);
    const char *allow = NULL;
    for (int i = 0; i < probe.nheaders; i++)
        if (!strcmp(probe.headers[i].name, "Allow"))
            allow = probe.headers[i].value;
    const char *origin = af_req_header(req, "Origin");
    if (!allow) {
        af_resp_problem(resp, req, 404, "not_found", "No such resource.");
    } else if (!origin || !af_origin_allowed(ctx, origin)) {
        af_resp_problem(resp, req, 403, "forbidden", "This origin may not call authflow from a browser.");
    } else {
        af_resp_empty(resp, 204);
        af_resp_header(resp, req, "Access-Control-Allow-Methods", allow);
        af_resp_header(resp, req, "Access-Control-Allow-Headers",
                       "Authorization, Content-Type, X-CSRF-Token, X-Request-Id");
        af_resp_header(resp, req, "Access-Control-Max-Age", "600");
    }
}

static void write_response(FCGX_Request *r, struct af_req *req, struct af_resp *resp)
{
    FCGX_FPrintF(r->out, "Status: %d %s\r\n", resp->status, reason(resp->status));
    if (resp->bare) {
        for (int i = 0; i < resp->nheaders; i++)
            FCGX_FPrintF(r->out, "%s: %s\r\n", resp->headers[i].name, resp->headers[i].value);
        FCGX_PutS("\r\n", r->out);
        return;
    }
    if (resp->content_type)
        FCGX_FPrintF(r->out, "Content-Type: %s\r\n", resp->content_type);
    FCGX_FPrintF(r->out, "X-Request-Id: %s\r\n", req->request_id);
    FCGX_PutS("X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n", r->out);
    if (resp->no_store)
        FCGX_PutS("Cache-Control: no-store\r\nPragma: no-cache\r\n", r->out);
    for (int i = 0; i < resp->nheaders; i++)
        FCGX_FPrintF(r->out, "%s: %s\r\n", resp->headers[i].name, resp->headers[i].value);
    FCGX_PutS("\r\n", r->out);
    if (resp->body_len && strcmp(req->method, "HEAD"))
        FCGX_PutStr(resp->body, (int)resp->body_len, r->out);
}

/* The endpoint group: the program's name without "authflow-". */
static const char *group_of(const struct af_ctx *ctx)
{
    return strncmp(ctx->program, "authflow-", 9) ? ctx->program : ctx->program + 9;
}

/* Labels come from the route table, never from the request: a client
 * cannot add series. */
static void count_request(struct af_ctx *ctx, const struct af_route *rt, bool is_preflight,
                          const struct af_resp *resp, long duration_us)
{
    if (!af_metrics_enabled())
        return;
    const char *group = group_of(ctx);
    const char *pattern = rt ? rt->pattern : is_preflight ? "preflight" : "unmatched";
    const char *method = rt ? rt->method : is_preflight ? "OPTIONS" : "other";
    af_metrics_incf("authflow_http_requests_total{group=\"%s\",route=\"%s\",method=\"%s\",status=\"%d\"}",
                    group, pattern, method, resp->status);
    char key[160];
    int n = snprintf(key, sizeof key, "authflow_http_request_duration_seconds{group=\"%s\",route=\"%s\"}",
                     group, pattern);
    if (n > 0 && (size_t)n < sizeof key)
        af_metrics_observe(key, duration_us / 1e6);
}

static void handle(struct af_ctx *ctx, const struct af_route *routes, size_t n, FCGX_Request *r,
                   af_arena *arena)
{
    struct af_req req;
    struct af_resp resp;
    memset(&req, 0, sizeof req);
    memset(&resp, 0, sizeof resp);
    resp.no_store = true;
    req.arena = arena;
    req.envp = r->envp;
    req.start_us = af_now_us();
    af_ctx_reload_keys(ctx, false);
    req.method = FCGX_GetParam("REQUEST_METHOD", r->envp);
    if (!req.method)
        req.method = "GET";
    const char *uri = FCGX_GetParam("REQUEST_URI", r->envp);
    if (!uri) {
        const char *sn = FCGX_GetParam("SCRIPT_NAME", r->envp), *pi = FCGX_GetParam("PATH_INFO", r->envp);
        uri = af_arena_printf(arena, "%s%s", sn ? sn : "", pi ? pi : "");
    }
    size_t pl = strcspn(uri, "?");
    req.path = af_arena_strndup(arena, uri, pl);
    req.query = uri[pl] ? uri + pl + 1 : "";
    req.content_type = FCGX_GetParam("CONTENT_TYPE", r->envp);
    req.remote_addr = client_ip(ctx, r, arena);
    req.role = FCGX_GetParam("FCGI_ROLE", r->envp);
    const char *rid = FCGX_GetParam("HTTP_X_REQUEST_ID", r->envp);
    if (sane_request_id(rid)) {
        req.request_id = rid;
    } else {
        req.request_id = next_request_id(arena);
    }
    if (!ctx->ignore_body)
        read_body(ctx, r, &req);
    /* Read the input to its end (a GET's is the empty stdin record): a web
     * server still writing it when the connection closes counts an error
     * (Apache's mod_proxy_fcgi: "sending empty stdin"). An Authorizer gets
     * no stdin at all. */
    if (!req.role || !strcmp(req.role, "RESPONDER")) {
        char sink[512];
        int left = 64;
        while (left-- > 0 && FCGX_GetStr(sink, sizeof sink, r->in) > 0) {
        }
    }

    const struct af_route *rt = NULL;
    bool is_preflight = !strcmp(req.method, "OPTIONS") && af_req_header(&req, "Access-Control-Request-Method");
    if (is_preflight)
        preflight(ctx, routes, n, &req, &resp);
    else
        rt = route(ctx, routes, n, &req, &resp);
    if (rt) {
        bool pass = false;
        if (req.body_too_large) {
            char detail[96];
            snprintf(detail, sizeof detail, "The body must not exceed %ld bytes.", ctx->cfg.max_body_bytes);
            af_resp_problem(&resp, &req, 413, "payload_too_large", detail);
        } else {
            pass = rt->access == AF_PUBLIC || af_authenticate(ctx, &req, &resp);
        }
        /* Health and key documents are exempt: monitors poll them. A
         * refused request is answered 429 whatever else it would get. */
        struct af_resp limited;
        memset(&limited, 0, sizeof limited);
        limited.no_store = true;
        if (!req.body_too_large && !root_pattern(rt->pattern) &&
            !af_ratelimit_request(ctx, &req, &limited)) {
            resp = limited;
        } else if (pass && (rt->access != AF_ADMIN || af_require_role(ctx, &req, &resp, "admin"))) {
            rt->handler(ctx, &req, &resp);
            if (resp.status == 0)
                af_resp_internal(&resp, &req, "handler set no status");
        }
    }
    if (ctx->replica && af_req_unsafe_method(&req) && resp.status >= 200 && resp.status < 400)
        af_read_mark_writer(ctx, req.authenticated ? req.claims.sub : resp.user_id);
    if (!resp.bare)
        cors_headers(ctx, &req, &resp);
    write_response(r, &req, &resp);

    struct af_log_request lr = {
        .request_id = req.request_id, .method = req.method, .path = req.path,
        .user_id = req.authenticated ? req.claims.sub : resp.user_id,
        .remote_addr = req.remote_addr, .error = resp.log_error, .status = resp.status,
        .duration_us = (long)(af_now_us() - req.start_us),
    };
    af_log_request(&lr);
    count_request(ctx, rt, is_preflight, &resp, lr.duration_us);
    if (req.json)
        json_object_put(req.json);
}

int af_serve(struct af_ctx *ctx, const struct af_route *routes, size_t nroutes)
{
    if (FCGX_Init() != 0 || FCGX_IsCGI()) {
        fprintf(stderr, "%s: not started as a FastCGI application; run it under spawn-fcgi "
                        "or the web server's FastCGI process manager\n", ctx->program);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;            /* no SA_RESTART: accept() must return */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* libfcgi closes each connection with a lingering shutdown (wait for the
     * web server to close first) so that a TCP reset cannot destroy the
     * answer in flight. A unix socket has no resets: close at once, which
     * saves three system calls and a wait on the web server per request. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    bool unix_socket = getsockname(0, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX;

    FCGX_Request r;
    FCGX_InitRequest(&r, 0, FCGI_FAIL_ACCEPT_ON_INTR);
    af_arena *arena = af_arena_new(32768);
    af_metrics_open(&ctx->cfg);
    /* Requests must not wait on a pooler whose server is gone; the
     * command-line tools may run long statements. */
    af_db_set_timeout(ctx->db, ctx->cfg.db_query_timeout_ms);
    af_log(AF_LOG_INFO, "start", NULL);
    while (!stopping) {
        if (FCGX_Accept_r(&r) < 0)
            break;
        handle(ctx, routes, nroutes, &r, arena);
        if (unix_socket)
            FCGX_Detach(&r);
        FCGX_Finish_r(&r);
        af_arena_reset(arena);
    }
    af_arena_free(arena);
    af_log(AF_LOG_INFO, "stop", NULL);
    return 0;
}
