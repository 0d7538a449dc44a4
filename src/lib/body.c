/* body.c — request body decoding (see body.h). */
#include "body.h"

#include <string.h>
#include <strings.h>

#include "util.h"

/* A strict RFC 8259 validator run before json-c, which is lenient (it takes
 * single quotes, NaN, "1." and raw control characters, and cuts keys at an
 * escaped NUL). It also counts object members: json-c merges duplicate keys
 * silently, so the count of members it kept differs from the count in the
 * text exactly when a key was repeated. */
struct scan {
    const unsigned char *p, *e;
    int depth;
    size_t members;
    const char *why;
};

static void ws(struct scan *c)
{
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = p[i] >= '0' && p[i] <= '9' ? p[i] - '0'
              : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
              : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static bool fail(struct scan *c, const char *why)
{
    if (!c->why)
        c->why = why;
    return false;
}

static bool string(struct scan *c)
{
    c->p++; /* opening quote */
    while (c->p < c->e) {
        unsigned char ch = *c->p++;
        if (ch == '"')
            return true;
        if (ch < 0x20)
            return fail(c, "a string contains a raw control character");
        if (ch != '\\')
            continue;
        if (c->p >= c->e)
            break;
        ch = *c->p++;
        if (strchr("\"\\/bfnrt", ch))
            continue;
        if (ch != 'u' || c->e - c->p < 4)
            return fail(c, "a string has a bad escape");
        int v = hex4(c->p);
        c->p += 4;
        if (v < 0)
            return fail(c, "a string has a bad escape");
        if (v == 0)
            return fail(c, "a string contains a NUL character");
        if (v >= 0xdc00 && v <= 0xdfff)
            return fail(c, "a string has an unpaired surrogate");
        if (v >= 0xd800 && v <= 0xdbff) {
            int lo = c->e - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u' ? hex4(c->p + 2) : -1;
            if (lo < 0xdc00 || lo > 0xdfff)
                return fail(c, "a string has an unpaired surrogate");
            c->p += 6;
        }
    }
    return fail(c, "a string is not terminated");
}

static bool digits(struct scan *c)
{
    const unsigned char *s = c->p;
    while (c->p < c->e && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > s;
}

static bool number(struct scan *c)
{
    if (*c->p == '-')
        c->p++;
    if (c->p < c->e && *c->p == '0')
        c->p++;
    else if (!digits(c))
        return fail(c, "the body is not valid JSON");
    if (c->p < c->e && *c->p == '.') {
        c->p++;
        if (!digits(c))
            return fail(c, "the body is not valid JSON");
    }
    if (c->p < c->e && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->e && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!digits(c))
            return fail(c, "the body is not valid JSON");
    }
    return true;
}

static bool literal(struct scan *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->e - c->p) < n || memcmp(c->p, word, n) != 0)
        return fail(c, "the body is not valid JSON");
    c->p += n;
    return true;
}

static bool value(struct scan *c);

static bool container(struct scan *c, bool object)
{
    if (++c->depth > AF_BODY_MAX_DEPTH)
        return fail(c, "the JSON is nested too deeply");
    unsigned char close = object ? '}' : ']';
    c->p++;
    ws(c);
    if (c->p < c->e && *c->p == close) {
        c->p++;
        c->depth--;
        return true;
    }
    for (;;) {
        if (object) {
            if (c->p >= c->e || *c->p != '"' || !string(c))
                return fail(c, "the body is not valid JSON");
            ws(c);
            if (c->p >= c->e || *c->p != ':')
                return fail(c, "the body is not valid JSON");
            c->p++;
            c->members++;
        }
        if (!value(c))
            return false;
        ws(c);
        if (c->p < c->e && *c->p == ',') {
            c->p++;
            ws(c);
            continue;
        }
        if (c->p < c->e && *c->p == close) {
            c->p++;
            c->depth--;
            return true;
        }
        return fail(c, "the body is not valid JSON");
    }
}

static bool value(struct scan *c)
{
    ws(c);
    if (c->p >= c->e)
        return fail(c, "the body is not valid JSON");
    switch (*c->p) {
    case '{': return container(c, true);
    case '[': return container(c, false);
    case '"': return string(c);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return number(c);
        return fail(c, "the body is not valid JSON");
    }
}

static size_t kept_members(json_object *o)
{
    size_t n = 0;
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, k, v) {
            (void)k;
            n += 1 + kept_members(v);
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t len = json_object_array_length(o);
        for (size_t i = 0; i < len; i++)
            n += kept_members(json_object_array_get_idx(o, i));
    }
    return n;
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
    struct scan c = {(const unsigned char *)body, (const unsigned char *)body + len, 0, 0, NULL};
    ws(&c);
    bool is_object = c.p < c.e && *c.p == '{';
    bool valid = value(&c);
    ws(&c);
    if (!valid || c.p != c.e) {
        *why = c.why ? c.why : "the body has data after the JSON value";
        return AF_BODY_INVALID_JSON;
    }
    if (!is_object) {
        *why = "the body must be a JSON object";
        return AF_BODY_NOT_OBJECT;
    }
    /* The scan bounds the depth; json-c counts one level more. */
    json_tokener *tok = json_tokener_new_ex(AF_BODY_MAX_DEPTH + 1);
    json_object *o = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
    bool parsed = o && json_tokener_get_error(tok) == json_tokener_success;
    if (tok)
        json_tokener_free(tok);
    if (!parsed) {
        json_object_put(o);
        *why = "the body is not valid JSON";
        return AF_BODY_INVALID_JSON;
    }
    if (kept_members(o) != c.members) {
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
    if (memchr(body, 0, len)) {
        *why = "the form body contains a NUL byte";
        return AF_BODY_INVALID_FORM;
    }
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
