/* cookie.h — Cookie header parsing and Set-Cookie building.
 *
 * Names follow API.md: with Secure on, the access cookie is __Host-af_access
 * and the refresh cookie __Secure-af_refresh; without it (plain http on
 * localhost) the prefixes are dropped, since browsers refuse them. */
#ifndef AF_COOKIE_H
#define AF_COOKIE_H
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

/* The value of cookie `name` in a Cookie header, or NULL. The first
 * occurrence wins. Values are copied into the arena. */
const char *af_cookie_get(af_arena *a, const char *header, const char *name);

enum af_samesite { AF_SAMESITE_LAX, AF_SAMESITE_STRICT };

struct af_cookie {
    const char *name, *value, *path;
    long max_age;           /* < 0: session cookie; 0: delete */
    bool http_only, secure;
    enum af_samesite same_site;
};
/* A Set-Cookie header value. NULL if a name or value holds characters a
 * cookie may not carry. */
const char *af_cookie_format(af_arena *a, const struct af_cookie *c);

/* Cookie names for the configured mode. */
const char *af_cookie_access_name(bool secure);
const char *af_cookie_refresh_name(bool secure);
#define AF_COOKIE_CSRF "csrf"

#endif
