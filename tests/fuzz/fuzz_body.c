/* fuzz_body.c — request bodies: af_body_decode under the Content-Type the
 * first byte picks (JSON, form, with parameters, odd spellings, bogus), then
 * what handlers do with the object: af_body_string on its fields, field
 * errors, serialisation.
 *
 * Properties: a decoded body is an object no deeper than AF_BODY_MAX_DEPTH
 * whose keys and strings are valid UTF-8 without NUL (body.h's promise to
 * handlers); a refused body yields no object and a reason; every object is
 * released, so a leak fails the run. */
#include <json-c/json.h>
#include <stdbool.h>

#include "body.h"
#include "fuzz.h"
#include "util.h"

static const char *const types[] = {
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON;charset=UTF-8",
    "application/json ; charset=\"utf-8\"",
    "application/json\t; q=1",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=UTF-8",
    "APPLICATION/X-WWW-FORM-URLENCODED;charset=iso-8859-1",
    "application/jsonx",
    "application/x-www-form-urlencoded-x",
    "multipart/form-data; boundary=x",
    "text/plain",
    "",
    NULL,
};
#define NTYPES (sizeof types / sizeof types[0])

static bool clean_string(const char *s, size_t len)
{
    return strlen(s) == len && af_utf8_valid(s, len);
}

/* Walks a decoded value (depth: containers so far, this one included):
 * every key and string clean, nesting bounded. */
static void walk(json_object *o, int depth)
{
    switch (json_object_get_type(o)) {
    case json_type_object: {
        FUZZ_CHECK(depth <= AF_BODY_MAX_DEPTH);
        json_object_object_foreach(o, k, v) {
            FUZZ_CHECK(clean_string(k, strlen(k)));
            walk(v, depth + 1);
        }
        break;
    }
    case json_type_array:
        FUZZ_CHECK(depth <= AF_BODY_MAX_DEPTH);
        for (size_t i = 0; i < json_object_array_length(o); i++)
            walk(json_object_array_get_idx(o, i), depth + 1);
        break;
    case json_type_string:
        FUZZ_CHECK(clean_string(json_object_get_string(o), (size_t)json_object_get_string_len(o)));
        break;
    default:
        break;
    }
}

/* What a handler does: read the fields it knows, then every field. */
static void handle(json_object *o)
{
    static const char *const fields[] = {"email", "password", "name", "code", "token",
                                         "refresh_token", "current_password", "new_password"};
    struct af_field_errors fe = {0};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *s = af_body_string(o, fields[i], i % 2 == 0, &fe);
        if (s)
            FUZZ_CHECK(clean_string(s, strlen(s)));
    }
    json_object_object_foreach(o, k, v) {
        (void)v;
        af_body_string(o, k, true, &fe);
    }
    if (fe.list)
        FUZZ_CHECK(json_object_to_json_string(fe.list) != NULL);
    json_object_put(fe.list);
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    FUZZ_CHECK(text && text[0] == '{');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *type = types[data[0] % NTYPES];
    size_t len = size - 1;
    /* The body keeps its exact length (no terminator), as the request
     * reader hands it over. */
    char *body = malloc(len ? len : 1);
    if (!body)
        abort();
    if (len)
        memcpy(body, data + 1, len);
    json_object *o = (json_object *)&o;
    const char *why = NULL;
    enum af_body_status st = af_body_decode(type, body, len, &o, &why);
    if (st == AF_BODY_OK) {
        FUZZ_CHECK(o && json_object_is_type(o, json_type_object));
        walk(o, 1);
        handle(o);
        json_object_put(o);
    } else {
        FUZZ_CHECK(o == NULL);
        FUZZ_CHECK(st == AF_BODY_EMPTY ? len == 0 : why != NULL);
    }
    free(body);
    return 0;
}
