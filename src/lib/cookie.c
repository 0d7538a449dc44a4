/* cookie.c — cookies (see cookie.h). */
#include "cookie.h"

#include <stdio.h>
#include <string.h>

const char *af_cookie_get(af_arena *a, const char *header, const char *name)
{
    if (!header)
        return NULL;
    size_t nl = strlen(name);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq) {
            const char *ke = eq;
            while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t'))
                ke--;
            if ((size_t)(ke - p) == nl && memcmp(p, name, nl) == 0) {
                const char *v = eq + 1, *ve = end;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    v++;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
                    v++;
                    ve--;
                }
                return af_arena_strndup(a, v, (size_t)(ve - v));
            }
        }
        p = end;
    }
    return NULL;
}

/* RFC 6265 cookie-octet and token characters. */
static bool valid(const char *s, bool is_name)
{
    if (!*s && is_name)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == ',' || *p == ';' || *p == '\\')
            return false;
        if (is_name && strchr("()<>@:/[]?={}", *p))
            return false;
    }
    return true;
}

const char *af_cookie_format(af_arena *a, const struct af_cookie *c)
{
    if (!valid(c->name, true) || !valid(c->value, false) || (c->path && !valid(c->path, false)))
        return NULL;
    char age[40] = "";
    if (c->max_age >= 0)
        snprintf(age, sizeof age, "; Max-Age=%ld", c->max_age);
    return af_arena_printf(a, "%s=%s; Path=%s%s%s%s; SameSite=%s", c->name, c->value,
                           c->path ? c->path : "/", age, c->http_only ? "; HttpOnly" : "",
                           c->secure ? "; Secure" : "",
                           c->same_site == AF_SAMESITE_STRICT ? "Strict" : "Lax");
}

const char *af_cookie_access_name(bool secure)
{
    return secure ? "__Host-af_access" : "af_access";
}

const char *af_cookie_refresh_name(bool secure)
{
    return secure ? "__Secure-af_refresh" : "af_refresh";
}
