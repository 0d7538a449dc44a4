/* fuzz_cookie.c — cookies and the other request headers authflow parses.
 *
 * The input is up to four NUL-separated fields: a Cookie header; a name (of
 * a cookie, a header, a list item); a value (a cookie value, User-Agent,
 * X-CSRF-Token); and a path or address (Origin, REMOTE_ADDR, the request
 * path and query string). They reach af_cookie_get and af_cookie_format,
 * af_list_contains, af_is_uuid, and through a request built in memory (no
 * FastCGI connection) af_req_header, af_req_cookie, af_req_query,
 * af_query_limit, af_fingerprint, af_csrf_check, af_route_match and
 * af_gate_return_path.
 *
 * Properties: a cookie value is a piece of the header without ';'; a
 * Set-Cookie that af_cookie_format accepts has no CR or LF and reads back
 * as the same value; every item of a list is found in it; a request path's
 * route parameters are non-empty single segments; a login return path is
 * "/" or a path on this site; the CSRF check passes only when the header
 * equals the cookie. */
#include <stdbool.h>

#include "authn.h"
#include "body.h"
#include "cookie.h"
#include "ctx.h"
#include "fuzz.h"
#include "gate.h"
#include "http.h"
#include "util.h"

#define NFIELDS 4

static void cookies(af_arena *a, const char *header, const char *name, const char *value,
                    const char *path)
{
    const char *names[] = {af_cookie_access_name(true), af_cookie_access_name(false),
                           af_cookie_refresh_name(true), af_cookie_refresh_name(false),
                           AF_COOKIE_CSRF, name};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = af_cookie_get(a, header, names[i]);
        if (v) {
            FUZZ_CHECK(!strchr(v, ';'));
            FUZZ_CHECK(strstr(header, v) != NULL);
        }
    }
    struct af_cookie c = {name, value, *path ? path : NULL, (long)strlen(path) - 2, true,
                          strlen(value) % 2 == 0, strlen(name) % 2 ? AF_SAMESITE_STRICT : AF_SAMESITE_LAX};
    const char *set = af_cookie_format(a, &c);
    if (set) {
        FUZZ_CHECK(!strpbrk(set, "\r\n"));
        const char *back = af_cookie_get(a, set, name);
        FUZZ_CHECK(back && strcmp(back, value) == 0);
    }
}

/* Every item of the list is in it, by the same separators. */
static void list(const char *l, const char *item)
{
    size_t n = strlen(item);
    bool exact = af_list_contains(l, item, n, false), nocase = af_list_contains(l, item, n, true);
    FUZZ_CHECK(!exact || nocase);
    for (const char *p = l; *p;) {
        size_t k = strcspn(p, " ,");
        if (k)
            FUZZ_CHECK(af_list_contains(l, p, k, false));
        p += k;
        p += strspn(p, " ,");
    }
    if (af_is_uuid(item))
        FUZZ_CHECK(n == 36);
}

static void routes(af_arena *a, const char *path)
{
    static const char *const patterns[] = {"/auth/login", "/users/{id}",
                                           "/users/me/sessions/{id}", "/admin/users/{id}/roles/{role}",
                                           "/{a}/{b}/{c}/{d}", "/{a}/{b}/{c}/{d}/{e}"};
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        const char *params[AF_MAX_PARAMS] = {0}, *names[AF_MAX_PARAMS] = {0};
        if (!af_route_match(patterns[i], path, params, names, a))
            continue;
        for (int j = 0; j < AF_MAX_PARAMS && names[j]; j++)
            FUZZ_CHECK(params[j][0] && !strchr(params[j], '/'));
    }
    const char *back = af_gate_return_path(path);
    FUZZ_CHECK(!strcmp(back, "/") ||
               (back == path && path[0] == '/' && path[1] != '/' && path[1] != '\\' &&
                !strpbrk(path, " \t\r\n\\")));
}

/* The request layer over an environment of CGI variables. */
static void request(af_arena *a, char **f)
{
    char *env[] = {
        af_arena_printf(a, "HTTP_COOKIE=%s", f[0]),
        af_arena_printf(a, "HTTP_ACCEPT_LANGUAGE=%s", f[1]),
        af_arena_printf(a, "HTTP_USER_AGENT=%s", f[2]),
        af_arena_printf(a, "HTTP_X_CSRF_TOKEN=%s", f[2]),
        af_arena_printf(a, "HTTP_ORIGIN=%s", f[3]),
        NULL,
    };
    struct af_ctx ctx = {0};
    ctx.cfg.fingerprint = "user_agent accept_language ip_prefix";
    ctx.cfg.public_url = "https://auth.example.test/base";
    ctx.cfg.allowed_origins = "https://app.example.test, http://localhost:3000";
    struct af_req req = {0};
    struct af_resp resp = {0};
    req.arena = a;
    req.envp = env;
    req.method = "POST";
    req.path = f[3];
    req.query = f[3];
    req.remote_addr = f[3];

    const char *h = af_req_header(&req, f[1]);
    (void)h;
    const char *c = af_req_cookie(&req, AF_COOKIE_CSRF), *direct = af_cookie_get(a, f[0], AF_COOKIE_CSRF);
    FUZZ_CHECK((!c && !direct) || (c && direct && !strcmp(c, direct)));

    char fp[65];
    af_fingerprint(&ctx, &req, fp);
    FUZZ_CHECK(strlen(fp) == 64 && strspn(fp, "0123456789abcdef") == 64);

    if (af_csrf_check(&ctx, &req, &resp))
        FUZZ_CHECK(c && *c && !strcmp(c, f[2]));
    else
        FUZZ_CHECK(resp.status == 403 && resp.body);

    memset(&resp, 0, sizeof resp);
    json_object *q = af_req_query(&req, &resp);
    if (q) {
        struct af_field_errors fe = {0};
        int limit = af_query_limit(q, &fe);
        FUZZ_CHECK(limit >= 1 && limit <= 200);
        af_query_string(q, "cursor", &fe);
        json_object_put(fe.list);
        json_object_put(q);
    } else {
        FUZZ_CHECK(resp.status == 400 && resp.body);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *f[NFIELDS];
    fuzz_fields(data, size, f, NFIELDS);
    af_arena *a = af_arena_new(0);
    cookies(a, f[0], f[1], f[2], f[3]);
    list(f[0], f[1]);
    routes(a, f[3]);
    request(a, f);
    af_arena_free(a);
    fuzz_free_fields(f, NFIELDS);
    return 0;
}
