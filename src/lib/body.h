/* body.h — request body decoding and field extraction.
 *
 * The one place where a request body becomes data. JSON and
 * application/x-www-form-urlencoded bodies both become a json-c object, so
 * handlers read fields one way. Everything that is not a well-formed object
 * of valid UTF-8 — malformed JSON, duplicate keys, nesting deeper than 32,
 * NUL characters, other content types — is refused here with the problem
 * code to answer. */
#ifndef AF_BODY_H
#define AF_BODY_H
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

enum af_body_status {
    AF_BODY_OK = 0,
    AF_BODY_EMPTY,          /* no body at all */
    AF_BODY_INVALID_JSON,   /* 400 invalid_json */
    AF_BODY_INVALID_FORM,   /* 400 invalid_json (bad encoding) */
    AF_BODY_NOT_OBJECT,     /* 400 invalid_json */
    AF_BODY_UNSUPPORTED,    /* 415 unsupported_media_type */
};

#define AF_BODY_MAX_DEPTH 32

/* Decodes body by content type into a new object (caller puts it). */
enum af_body_status af_body_decode(const char *content_type, const char *body, size_t len,
                                   json_object **out, const char **why);
enum af_body_status af_body_decode_json(const char *body, size_t len, json_object **out,
                                        const char **why);
enum af_body_status af_body_decode_form(const char *body, size_t len, json_object **out,
                                        const char **why);
/* Percent-decodes a urlencoded component ('+' is a space) into the arena.
 * NULL when the escape is malformed. */
char *af_url_decode(af_arena *a, const char *s, size_t len);

/* Field errors collected while reading a body: answered together as one
 * 400 validation_failed with an "errors" array. */
struct af_field_errors {
    json_object *list;      /* array of {field, message}, created on first error */
};
void af_field_error(struct af_field_errors *fe, const char *field, const char *message);

/* A string field: NULL (and, when required, an error) if missing or not a
 * string. Strings are valid UTF-8 without NUL (checked by the decoder). */
const char *af_body_string(json_object *body, const char *field, bool required,
                           struct af_field_errors *fe);

#endif
