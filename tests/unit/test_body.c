/* test_body.c — request body decoding: JSON and form bodies become one
 * json-c object; everything malformed, ambiguous or not valid UTF-8 is
 * refused with the right status. */
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "tap.h"

static const char *status_name(enum af_body_status s)
{
    switch (s) {
    case AF_BODY_OK: return "OK";
    case AF_BODY_EMPTY: return "EMPTY";
    case AF_BODY_INVALID_JSON: return "INVALID_JSON";
    case AF_BODY_INVALID_FORM: return "INVALID_FORM";
    case AF_BODY_NOT_OBJECT: return "NOT_OBJECT";
    case AF_BODY_UNSUPPORTED: return "UNSUPPORTED";
    }
    return "?";
}

/* Decodes body (len bytes) with decoder and checks the status; on OK the
 * object is returned for the caller to inspect and put. */
typedef enum af_body_status (*decoder)(const char *, size_t, json_object **, const char **);

static json_object *expect_n(decoder dec, const char *body, size_t len,
                             enum af_body_status want, const char *what)
{
    json_object *o = (json_object *)1;
    const char *why = NULL;
    enum af_body_status st = dec(body, len, &o, &why);
    is_str(status_name(st), status_name(want), "%s -> %s", what, status_name(want));
    if (st != AF_BODY_OK) {
        ok(o == NULL, "%s: no object on failure", what);
        if (st != AF_BODY_EMPTY && !why)
            diag("%s: no reason given", what);
    } else if (st != want) {
        diag("decoded as %s", json_object_to_json_string(o));
    }
    if (st != AF_BODY_OK)
        return NULL;
    if (want != AF_BODY_OK) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static json_object *expect(decoder dec, const char *body, enum af_body_status want,
                           const char *what)
{
    return expect_n(dec, body, strlen(body), want, what);
}

static void json_is(const char *body, enum af_body_status want, const char *what)
{
    json_object_put(expect_n(af_body_decode_json, body, strlen(body), want, what));
}

static void form_is(const char *body, enum af_body_status want, const char *what)
{
    json_object_put(expect_n(af_body_decode_form, body, strlen(body), want, what));
}

static const char *field(json_object *o, const char *k)
{
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

/* {"a":{"a":...{"a":1}...}} with depth objects. */
static char *nested_objects(int depth)
{
    char *s = malloc((size_t)depth * 6 + 8), *p = s;
    for (int i = 0; i < depth; i++)
        p += sprintf(p, i + 1 < depth ? "{\"a\":" : "{\"a\":1");
    for (int i = 0; i < depth; i++)
        *p++ = '}';
    *p = '\0';
    return s;
}

/* {"a":[[...[]...]]}: one object holding depth - 1 nested arrays. */
static char *nested_arrays(int depth)
{
    char *s = malloc((size_t)depth * 2 + 16), *p = s;
    p += sprintf(p, "{\"a\":");
    for (int i = 1; i < depth; i++)
        *p++ = '[';
    for (int i = 1; i < depth; i++)
        *p++ = ']';
    strcpy(p, "}");
    return s;
}

static void test_json(void)
{
    json_object *o = expect(af_body_decode_json, "{\"email\":\"a@b.c\",\"password\":\"pw\"}",
                            AF_BODY_OK, "valid object");
    is_str(field(o, "email"), "a@b.c", "email field read");
    is_str(field(o, "password"), "pw", "password field read");
    json_object_put(o);

    json_is("{}", AF_BODY_OK, "empty object");
    json_is(" \r\n\t{\"a\":1} \r\n\t", AF_BODY_OK, "surrounding whitespace");
    json_is("{\"name\":\"Zo\xc3\xab \xf0\x9f\x98\x80 \xe6\x9d\x8e\"}", AF_BODY_OK,
            "multi-byte UTF-8 in a value");
    json_is("{\"a\":\"\\u00e9\\ud83d\\ude00\"}", AF_BODY_OK, "escaped BMP and surrogate pair");

    json_is("{\"a\":", AF_BODY_INVALID_JSON, "truncated JSON");
    json_is("{\"a\" 1}", AF_BODY_INVALID_JSON, "missing colon");
    json_is("{a:1}", AF_BODY_INVALID_JSON, "unquoted key");
    json_is("{'a':1}", AF_BODY_INVALID_JSON, "single-quoted key");
    json_is("{\"a\":1,}", AF_BODY_INVALID_JSON, "trailing comma");
    json_is("{\"a\":01}", AF_BODY_INVALID_JSON, "leading zero");
    json_is("{\"a\":NaN}", AF_BODY_INVALID_JSON, "NaN");
    json_is("{\"a\":Infinity}", AF_BODY_INVALID_JSON, "Infinity");
    json_is("{\"a\":1.}", AF_BODY_INVALID_JSON, "number ending in '.'");
    json_is("{\"a\":.5}", AF_BODY_INVALID_JSON, "number starting with '.'");
    json_is("{\"a\":\"\\x\"}", AF_BODY_INVALID_JSON, "unknown escape");
    json_is("{/*c*/\"a\":1}", AF_BODY_INVALID_JSON, "comment");
    json_is("{\"a\":\"x\ty\"}", AF_BODY_INVALID_JSON, "raw tab inside a string");
    json_is("{\"a\":1} x", AF_BODY_INVALID_JSON, "trailing garbage");
    json_is("{\"a\":1}{\"b\":2}", AF_BODY_INVALID_JSON, "two objects");
    json_is("{\"a\":1}}", AF_BODY_INVALID_JSON, "extra closing brace");

    json_is("[1,2]", AF_BODY_NOT_OBJECT, "top-level array");
    json_is("[{\"a\":1}]", AF_BODY_NOT_OBJECT, "object inside a top-level array");
    json_is("\"str\"", AF_BODY_NOT_OBJECT, "top-level string");
    json_is("null", AF_BODY_NOT_OBJECT, "top-level null");

    json_is("{\"a\":1,\"a\":2}", AF_BODY_INVALID_JSON, "duplicate key");
    json_is("{\"a\":1,\"a\":1}", AF_BODY_INVALID_JSON, "duplicate key with the same value");
    json_is("{\"x\":{\"a\":1,\"a\":2}}", AF_BODY_INVALID_JSON, "nested duplicate key");
    json_is("{\"x\":[{\"a\":1},{\"b\":1,\"b\":2}]}", AF_BODY_INVALID_JSON,
            "duplicate key in an object inside an array");
    json_is("{\"a\":1,\"\\u0061\":2}", AF_BODY_INVALID_JSON,
            "duplicate key spelled with an escape");
    json_is("{\"a\":{\"a\":1}}", AF_BODY_OK, "same key at different levels");
    json_is("{\"x\":[{\"a\":1},{\"a\":2}]}", AF_BODY_OK, "same key in sibling objects");
    json_is("{\"a:b\":1,\"c\":\"x:y\"}", AF_BODY_OK, "':' inside keys and values");
    json_is("{\"a\\\":b\":1,\"c\":\"x\\\\\"}", AF_BODY_OK, "escaped quote and backslash near ':'");
    json_is("{\"a\\\\\":\":\",\"b\":\"\\\":\"}", AF_BODY_OK,
            "string ending in an escaped backslash, then ':' strings");

    char *s = nested_objects(10);
    json_is(s, AF_BODY_OK, "objects nested 10 deep");
    free(s);
    s = nested_objects(31);
    json_is(s, AF_BODY_OK, "objects nested 31 deep");
    free(s);
    s = nested_objects(33);
    json_is(s, AF_BODY_INVALID_JSON, "objects nested 33 deep");
    free(s);
    s = nested_objects(1000);
    json_is(s, AF_BODY_INVALID_JSON, "objects nested 1000 deep");
    free(s);
    s = nested_arrays(10);
    json_is(s, AF_BODY_OK, "arrays nested 10 deep");
    free(s);
    s = nested_arrays(33);
    json_is(s, AF_BODY_INVALID_JSON, "arrays nested 33 deep");
    free(s);

    json_is("{\"a\":\"\xc3\x28\"}", AF_BODY_INVALID_JSON, "invalid UTF-8 continuation");
    json_is("{\"a\":\"\xc0\xaf\"}", AF_BODY_INVALID_JSON, "overlong UTF-8 '/'");
    json_is("{\"a\":\"\xe0\x80\xaf\"}", AF_BODY_INVALID_JSON, "three-byte overlong");
    json_is("{\"a\":\"\xed\xa0\x80\"}", AF_BODY_INVALID_JSON, "UTF-8 encoded surrogate");
    json_is("{\"a\":\"\xf4\x90\x80\x80\"}", AF_BODY_INVALID_JSON, "code point above U+10FFFF");
    json_is("{\"a\":\"\xff\"}", AF_BODY_INVALID_JSON, "byte 0xFF");
    json_is("{\"a\":\"\x80\"}", AF_BODY_INVALID_JSON, "lone continuation byte");
    json_is("{\"\xc3\x28\":1}", AF_BODY_INVALID_JSON, "invalid UTF-8 in a key");
    json_is("{\"a\":1}\xe2\x82", AF_BODY_INVALID_JSON, "truncated sequence at the end");

    json_is("{\"a\":\"x\\u0000y\"}", AF_BODY_INVALID_JSON, "\\u0000 inside a value");
    json_is("{\"a\":[\"\\u0000\"]}", AF_BODY_INVALID_JSON, "\\u0000 inside an array value");
    json_is("{\"a\\u0000b\":1}", AF_BODY_INVALID_JSON, "\\u0000 inside a key");
    static const char nul_body[] = "{\"a\":\"x\0y\"}";
    json_object_put(expect_n(af_body_decode_json, nul_body, sizeof nul_body - 1,
                             AF_BODY_INVALID_JSON, "raw NUL byte in a string"));
    static const char nul_tail[] = "{\"a\":1}\0";
    json_object_put(expect_n(af_body_decode_json, nul_tail, sizeof nul_tail - 1,
                             AF_BODY_INVALID_JSON, "raw NUL byte after the object"));

    json_object_put(expect_n(af_body_decode_json, "", 0, AF_BODY_EMPTY, "empty JSON body"));
}

static void test_form(void)
{
    json_object *o = expect(af_body_decode_form, "email=a%40b.c&password=x+y", AF_BODY_OK,
                            "form body");
    is_str(field(o, "email"), "a@b.c", "%%40 decodes to '@'");
    is_str(field(o, "password"), "x y", "'+' decodes to a space");
    json_object_put(o);

    o = expect(af_body_decode_form, "n=Zo%C3%AB%20%2B1&flag&&e=", AF_BODY_OK,
               "escapes, bare field, empty segment");
    is_str(field(o, "n"), "Zo\xc3\xab +1", "UTF-8 escapes and %%2B decode");
    is_str(field(o, "flag"), "", "a field without '=' is empty");
    is_str(field(o, "e"), "", "a field with '=' and nothing after is empty");
    json_object_put(o);

    o = expect(af_body_decode_form, "a=b=c", AF_BODY_OK, "'=' inside a value");
    is_str(field(o, "a"), "b=c", "the first '=' splits");
    json_object_put(o);

    form_is("a=%4", AF_BODY_INVALID_FORM, "truncated %-escape");
    form_is("a=%", AF_BODY_INVALID_FORM, "lone '%'");
    form_is("a=%zz", AF_BODY_INVALID_FORM, "non-hex %-escape");
    form_is("a=%4g&b=1", AF_BODY_INVALID_FORM, "half-hex %-escape");
    form_is("%=1", AF_BODY_INVALID_FORM, "malformed escape in a key");
    form_is("a=x%00y", AF_BODY_INVALID_FORM, "%00 in a value");
    form_is("a%00=1", AF_BODY_INVALID_FORM, "%00 in a key");
    form_is("a=1&a=2", AF_BODY_INVALID_FORM, "repeated field");
    form_is("a=1&%61=2", AF_BODY_INVALID_FORM, "repeated field spelled with an escape");
    form_is("a=%C3%28", AF_BODY_INVALID_FORM, "invalid UTF-8 after decoding");
    form_is("a=%C0%AF", AF_BODY_INVALID_FORM, "overlong UTF-8 after decoding");
    form_is("a=%ED%A0%80", AF_BODY_INVALID_FORM, "surrogate after decoding");
    form_is("a=%FF", AF_BODY_INVALID_FORM, "byte 0xFF after decoding");
    form_is("a=\xc3\x28", AF_BODY_INVALID_FORM, "raw invalid UTF-8");
    static const char nul_form[] = "a=x\0y";
    json_object_put(expect_n(af_body_decode_form, nul_form, sizeof nul_form - 1,
                             AF_BODY_INVALID_FORM, "raw NUL byte in a form value"));
    json_object_put(expect_n(af_body_decode_form, "", 0, AF_BODY_EMPTY, "empty form body"));
}

static void decode_is(const char *type, const char *body, enum af_body_status want,
                      const char *what)
{
    json_object *o = (json_object *)1;
    const char *why = NULL;
    enum af_body_status st = af_body_decode(type, body, strlen(body), &o, &why);
    is_str(status_name(st), status_name(want), "%s -> %s", what, status_name(want));
    if (st == AF_BODY_OK)
        json_object_put(o);
    else
        ok(o == NULL, "%s: no object on failure", what);
}

static void test_content_type(void)
{
    decode_is("application/json", "{\"a\":1}", AF_BODY_OK, "application/json");
    decode_is("application/json; charset=utf-8", "{\"a\":1}", AF_BODY_OK,
              "application/json with charset");
    decode_is("Application/JSON", "{\"a\":1}", AF_BODY_OK, "content type is case-insensitive");
    decode_is("application/x-www-form-urlencoded", "a=1", AF_BODY_OK, "form content type");
    decode_is("application/x-www-form-urlencoded; charset=UTF-8", "a=1", AF_BODY_OK,
              "form content type with charset");
    decode_is("application/json", "a=1", AF_BODY_INVALID_JSON, "form text sent as JSON");
    decode_is("text/plain", "{\"a\":1}", AF_BODY_UNSUPPORTED, "text/plain");
    decode_is("application/jsonx", "{\"a\":1}", AF_BODY_UNSUPPORTED, "application/jsonx");
    decode_is("application/json-patch+json", "{\"a\":1}", AF_BODY_UNSUPPORTED,
              "application/json-patch+json");
    decode_is("multipart/form-data; boundary=x", "--x--", AF_BODY_UNSUPPORTED,
              "multipart/form-data");
    decode_is(NULL, "{\"a\":1}", AF_BODY_UNSUPPORTED, "no content type with a body");
    decode_is("", "{\"a\":1}", AF_BODY_UNSUPPORTED, "empty content type with a body");
    decode_is(NULL, "", AF_BODY_EMPTY, "no content type, no body");
    decode_is("application/json", "", AF_BODY_EMPTY, "JSON content type, no body");
    decode_is("text/plain", "", AF_BODY_UNSUPPORTED, "text/plain without a body");
}

static size_t error_count(const struct af_field_errors *fe)
{
    return fe->list ? json_object_array_length(fe->list) : 0;
}

static const char *error_at(const struct af_field_errors *fe, size_t i, const char *member)
{
    json_object *e = fe->list ? json_object_array_get_idx(fe->list, i) : NULL;
    return field(e, member);
}

static void test_body_string(void)
{
    json_object *o = NULL;
    const char *why;
    const char *body = "{\"email\":\"a@b.c\",\"age\":42,\"nick\":null,\"tags\":[\"x\"]}";
    af_body_decode_json(body, strlen(body), &o, &why);
    ok(o != NULL, "body for field tests decodes");

    struct af_field_errors fe = {NULL};
    is_str(af_body_string(o, "email", true, &fe), "a@b.c", "required present string");
    is_str(af_body_string(o, "email", false, &fe), "a@b.c", "optional present string");
    is_int((long)error_count(&fe), 0, "present strings add no errors");

    is_str(af_body_string(o, "name", false, &fe), NULL, "optional missing -> NULL");
    is_int((long)error_count(&fe), 0, "optional missing adds no error");

    is_str(af_body_string(o, "password", true, &fe), NULL, "required missing -> NULL");
    is_int((long)error_count(&fe), 1, "required missing adds an error");
    is_str(error_at(&fe, 0, "field"), "password", "error names the field");
    is_str(error_at(&fe, 0, "message"), "is required", "error says it is required");

    is_str(af_body_string(o, "age", true, &fe), NULL, "number where a string is wanted -> NULL");
    is_int((long)error_count(&fe), 2, "wrong type adds an error");
    is_str(error_at(&fe, 1, "field"), "age", "wrong-type error names the field");
    is_str(error_at(&fe, 1, "message"), "must be a string", "wrong-type message");

    is_str(af_body_string(o, "tags", false, &fe), NULL, "array where a string is wanted -> NULL");
    is_int((long)error_count(&fe), 3, "wrong type is an error even when optional");

    is_str(af_body_string(o, "nick", true, &fe), NULL, "null value -> NULL");
    is_int((long)error_count(&fe), 4, "required null adds an error");
    is_str(error_at(&fe, 3, "message"), "is required", "null counts as missing");
    is_str(af_body_string(o, "nick", false, &fe), NULL, "optional null -> NULL");
    is_int((long)error_count(&fe), 4, "optional null adds no error");

    is_str(af_body_string(NULL, "email", true, &fe), NULL, "no body -> NULL");
    is_int((long)error_count(&fe), 5, "no body: required field error");

    json_object_put(fe.list);
    json_object_put(o);
}

int main(void)
{
    test_json();
    test_form();
    test_content_type();
    test_body_string();
    return done_testing();
}
