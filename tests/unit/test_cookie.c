/* test_cookie.c — Cookie header lookup, Set-Cookie building and the cookie
 * names for each mode. */
#include "cookie.h"
#include "tap.h"

static void test_get(af_arena *a)
{
    is_str(af_cookie_get(a, "af_access=tok", "af_access"), "tok", "single cookie");
    is_str(af_cookie_get(a, "a=1; af_access=tok; b=2", "af_access"), "tok", "cookie in the middle");
    is_str(af_cookie_get(a, "a=1; b=2; af_access=tok", "af_access"), "tok", "last cookie");
    is_str(af_cookie_get(a, "af_access=one; af_access=two", "af_access"), "one",
           "the first occurrence wins");
    is_str(af_cookie_get(a, "a=1;af_access=tok;b=2", "af_access"), "tok", "no spaces after ';'");
    is_str(af_cookie_get(a, "  a=1 ;   af_access = tok  ; b=2", "af_access"), "tok",
           "spaces around name, '=' and value");
    is_str(af_cookie_get(a, "a=1;\taf_access=tok\t", "af_access"), "tok", "tabs around a cookie");
    is_str(af_cookie_get(a, "af_access=\"quoted\"", "af_access"), "quoted", "quoted value");
    is_str(af_cookie_get(a, "af_access=\"\"", "af_access"), "", "empty quoted value");
    is_str(af_cookie_get(a, "af_access=\"", "af_access"), "\"", "a lone quote is kept");
    is_str(af_cookie_get(a, "af_access=", "af_access"), "", "empty value");
    is_str(af_cookie_get(a, "af_access=a=b", "af_access"), "a=b", "'=' inside a value");
    is_str(af_cookie_get(a, "xaf_access=1; af_access=2", "af_access"), "2",
           "a longer name ending in the name is not it");
    is_str(af_cookie_get(a, "af_access_old=1; af_access=2", "af_access"), "2",
           "a longer name starting with the name is not it");
    is_str(af_cookie_get(a, "__Host-af_access=h; af_access=p", "af_access"), "p",
           "prefixed and plain names are distinct");
    is_str(af_cookie_get(a, "__Host-af_access=h; af_access=p", "__Host-af_access"), "h",
           "prefixed name read");
    is_str(af_cookie_get(a, "AF_ACCESS=x", "af_access"), NULL, "names are case-sensitive");
    is_str(af_cookie_get(a, "a=1; b=2", "af_access"), NULL, "missing cookie -> NULL");
    is_str(af_cookie_get(a, "af_access", "af_access"), NULL, "name without '=' -> NULL");
    is_str(af_cookie_get(a, "x=af_access=1", "af_access"), NULL, "name inside a value -> NULL");
    is_str(af_cookie_get(a, "", "af_access"), NULL, "empty header -> NULL");
    is_str(af_cookie_get(a, " ; ;; ", "af_access"), NULL, "header of separators -> NULL");
    is_str(af_cookie_get(a, NULL, "af_access"), NULL, "no header -> NULL");
    is_str(af_cookie_get(a, "csrf=abc", AF_COOKIE_CSRF), "abc", "csrf cookie");
}

static struct af_cookie base(void)
{
    struct af_cookie c = {
        .name = "af_access", .value = "tok", .path = "/api/v1",
        .max_age = 900, .http_only = true, .secure = true, .same_site = AF_SAMESITE_STRICT,
    };
    return c;
}

static void format_is(af_arena *a, struct af_cookie c, const char *want, const char *what)
{
    is_str(af_cookie_format(a, &c), want, "%s", what);
}

static void test_format(af_arena *a)
{
    struct af_cookie c = base();
    format_is(a, c, "af_access=tok; Path=/api/v1; Max-Age=900; HttpOnly; Secure; SameSite=Strict",
              "all attributes");

    c = base();
    c.http_only = false;
    c.secure = false;
    c.same_site = AF_SAMESITE_LAX;
    format_is(a, c, "af_access=tok; Path=/api/v1; Max-Age=900; SameSite=Lax",
              "no HttpOnly, no Secure, Lax");

    c = base();
    c.max_age = -1;
    c.path = NULL;
    format_is(a, c, "af_access=tok; Path=/; HttpOnly; Secure; SameSite=Strict",
              "session cookie, default path");

    c = base();
    c.value = "";
    c.max_age = 0;
    format_is(a, c, "af_access=; Path=/api/v1; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
              "deletion cookie");

    c = base();
    c.value = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
    const char *s = af_cookie_format(a, &c);
    ok(s && strstr(s, "af_access=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_; ") == s,
       "a JWT value is carried as is");

    c = base();
    c.name = "__Host-af_access";
    c.path = "/";
    s = af_cookie_format(a, &c);
    ok(s && strstr(s, "__Host-af_access=tok; Path=/;") == s, "__Host- name with Path=/");

    static const struct { const char *value, *what; } bad_values[] = {
        {"a;b", "';' in a value"},
        {"a\r\nSet-Cookie: x=y", "CRLF in a value"},
        {"a\nb", "LF in a value"},
        {"a b", "space in a value"},
        {"a\tb", "tab in a value"},
        {"a,b", "',' in a value"},
        {"a\"b", "'\"' in a value"},
        {"a\\b", "backslash in a value"},
        {"a\x7f", "DEL in a value"},
        {"caf\xc3\xa9", "non-ASCII in a value"},
    };
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        c = base();
        c.value = bad_values[i].value;
        is_str(af_cookie_format(a, &c), NULL, "%s -> NULL", bad_values[i].what);
    }

    static const struct { const char *name, *what; } bad_names[] = {
        {"", "empty name"},
        {"a=b", "'=' in a name"},
        {"a b", "space in a name"},
        {"a;b", "';' in a name"},
        {"a\r\nb", "CRLF in a name"},
        {"a:b", "':' in a name"},
        {"a(b)", "parentheses in a name"},
    };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        c = base();
        c.name = bad_names[i].name;
        is_str(af_cookie_format(a, &c), NULL, "%s -> NULL", bad_names[i].what);
    }

    c = base();
    c.path = "/; Domain=evil.test";
    is_str(af_cookie_format(a, &c), NULL, "';' in a path -> NULL");
    c.path = "/a\r\nb";
    is_str(af_cookie_format(a, &c), NULL, "CRLF in a path -> NULL");
}

static void test_names(void)
{
    is_str(af_cookie_access_name(true), "__Host-af_access", "secure access cookie name");
    is_str(af_cookie_refresh_name(true), "__Secure-af_refresh", "secure refresh cookie name");
    is_str(af_cookie_access_name(false), "af_access", "plain access cookie name");
    is_str(af_cookie_refresh_name(false), "af_refresh", "plain refresh cookie name");
    is_str(AF_COOKIE_CSRF, "csrf", "csrf cookie name");
}

int main(void)
{
    af_arena *a = af_arena_new(4096);
    test_get(a);
    test_format(a);
    test_names();
    af_arena_free(a);
    return done_testing();
}
