/* body.c — request body decoding (see body.h). */
#include "body.h"

#include <string.h>
#include <strings.h>

#include "util.h"

/* json-c merges duplicate keys silently. Count the members in the text (a
 * ':' outside a string is exactly one member) and the members json-c kept:
 * they differ exactly when a key was repeated. */
static size_t text_members(const char *s, size_t len)
{
    size_t n = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ':') {
            n++;
        }
    }
    return n;
}

/* Counts kept members and checks every string (keys included) for NUL. */
static bool walk(json_object *o, size_t *members)
{
    switch (json_object_get_type(o)) {
    case json_type_object: {
        json_object_object_foreach(o, k, v) {
            (*members)++;
            if (!walk(v, members))
                return false;
            (void)k;
        }
        return true;
    }
    case json_type_array: {
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n; i++)
            if (!walk(json_object_array_get_idx(o, i), members))
                return false;
        return true;
    }
    case json_type_string:
        return strlen(json_object_get_string(o)) == (size_t)json_object_get_string_len(o);
    default:
        return true;
    }
}

enum af_body_status af_body_decode_json(const char *body, size_t len, json_object **out,
                                        const char **why)
{
    *out = NULL;
    if (len == 0)
        return AF_BODY_EMPTY;
    if (!af_utf8_valid(body, len)) {
        *why = memchr(body, 0, len) ? "the body contains a NUL byte" : "the body is not valid UTF-8";
        return AF_BODY_INVALID_JSON;
    }
    json_tokener *tok = json_tokener_new_ex(AF_BODY_MAX_DEPTH);
    if (!tok) {
        *why = "out of memory";
        return AF_BODY_INVALID_JSON;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || jerr != json_tokener_success) {
        json_object_put(o);
        *why = jerr == json_tokener_error_depth ? "the JSON is nested too deeply"
                                                : "the body is not valid JSON";
        return AF_BODY_INVALID_JSON;
    }
    for (size_t i = used; i < len; i++)
        if (!strchr(" \t\r\n", body[i])) {
            json_object_put(o);
            *why = "the body has data after the JSON value";
            return AF_BODY_INVALID_JSON;
        }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *why = "the body must be a JSON object";
        return AF_BODY_NOT_OBJECT;
    }
    size_t kept = 0;
    if (!walk(o, &kept)) {
        json_object_put(o);
        *why = "a string contains a NUL character";
        return AF_BODY_INVALID_JSON;
    }
    if (kept != text_members(body, len)) {
        json_object_put(o);
        *why = "the JSON object has a duplicate key";
        return AF_BODY_INVALID_JSON;
    }
    *out = o;
    return AF_BODY_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *af_url_decode(af_arena *a, const char *s, size_t len)
{
    char *out = af_arena_alloc(a, len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            *o++ = ' ';
        } else if (s[i] == '%') {
            int h, l;
            if (i + 2 >= len || (h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0 ||
                h + l == 0)
                return NULL; /* malformed, or %00 */
            *o++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

enum af_body_status af_body_decode_form(const char *body, size_t len, json_object **out,
                                        const char **why)
{
    *out = NULL;
    if (len == 0)
        return AF_BODY_EMPTY;
    af_arena *a = af_arena_new(len * 2 + 256);
    json_object *o = json_object_new_object();
    const char *p = body, *end = body + len;
    enum af_body_status st = AF_BODY_OK;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (pe > p) {
            const char *ke = eq ? eq : pe;
            char *k = af_url_decode(a, p, (size_t)(ke - p));
            char *v = eq ? af_url_decode(a, eq + 1, (size_t)(pe - eq - 1)) : af_arena_strdup(a, "");
            if (!k || !v) {
                st = AF_BODY_INVALID_FORM;
                *why = "the form body has a malformed %-escape or a NUL";
                break;
            }
            if (!af_utf8_valid(k, strlen(k)) || !af_utf8_valid(v, strlen(v))) {
                st = AF_BODY_INVALID_FORM;
                *why = "the form body is not valid UTF-8 or contains a NUL";
                break;
            }
            if (json_object_object_get_ex(o, k, NULL)) {
                st = AF_BODY_INVALID_FORM;
                *why = "the form body repeats a field";
                break;
            }
            json_object_object_add(o, k, json_object_new_string(v));
        }
        p = amp ? amp + 1 : end;
    }
    af_arena_free(a);
    if (st != AF_BODY_OK) {
        json_object_put(o);
        return st;
    }
    *out = o;
    return AF_BODY_OK;
}

enum af_body_status af_body_decode(const char *content_type, const char *body, size_t len,
                                   json_object **out, const char **why)
{
    *out = NULL;
    if (!content_type || !*content_type) {
        if (len == 0)
            return AF_BODY_EMPTY;
        *why = "a body needs a Content-Type of application/json";
        return AF_BODY_UNSUPPORTED;
    }
    size_t n = strcspn(content_type, "; \t");
    if (n == 16 && !strncasecmp(content_type, "application/json", 16))
        return af_body_decode_json(body, len, out, why);
    if (n == 33 && !strncasecmp(content_type, "application/x-www-form-urlencoded", 33))
        return af_body_decode_form(body, len, out, why);
    *why = "use application/json or application/x-www-form-urlencoded";
    return AF_BODY_UNSUPPORTED;
}

void af_field_error(struct af_field_errors *fe, const char *field, const char *message)
{
    if (!fe->list)
        fe->list = json_object_new_array();
    json_object *e = json_object_new_object();
    json_object_object_add(e, "field", json_object_new_string(field));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_array_add(fe->list, e);
}

const char *af_body_string(json_object *body, const char *field, bool required,
                           struct af_field_errors *fe)
{
    json_object *v = NULL;
    if (!body || !json_object_object_get_ex(body, field, &v) || json_object_is_type(v, json_type_null)) {
        if (required)
            af_field_error(fe, field, "is required");
        return NULL;
    }
    if (!json_object_is_type(v, json_type_string)) {
        af_field_error(fe, field, "must be a string");
        return NULL;
    }
    return json_object_get_string(v);
}
