/* http.h — the FastCGI request/response layer and the route table.
 *
 * Data flows one way: the FastCGI loop reads a request into struct af_req
 * (method, path, headers, cookies, a size-limited body), the route table
 * picks the handler, the authentication step fills in the caller's
 * identity, and the handler fills struct af_resp. Only this layer reads CGI
 * variables and prints headers; every answer gets X-Request-Id, and every
 * error is application/problem+json. */
#ifndef AF_HTTP_H
#define AF_HTTP_H
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "token.h"

struct af_ctx;
struct af_field_errors;
typedef struct FCGX_Request FCGX_Request;

#define AF_MAX_PARAMS 4
#define AF_MAX_HEADERS 24

struct af_req {
    af_arena *arena;
    char *const *envp;
    const char *method, *path, *query, *content_type, *remote_addr, *request_id;
    const char *role;               /* FCGI_ROLE: RESPONDER or AUTHORIZER */
    char *body;
    size_t body_len;
    bool body_too_large;
    const char *params[AF_MAX_PARAMS]; /* {name} segments of the route pattern */
    const char *param_names[AF_MAX_PARAMS];
    json_object *json;              /* decoded body, released after the response */
    int64_t start_us;
    /* Filled by authentication. */
    bool authenticated, cookie_mode;
    struct af_claims claims;
    const char *cached_user;        /* the caller's user object, if Redis had it */
};

struct af_header {
    const char *name, *value;
};

struct af_resp {
    int status;
    const char *content_type;
    const char *body;
    size_t body_len;
    struct af_header headers[AF_MAX_HEADERS];
    int nheaders;
    bool no_store;
    bool bare;                      /* status and own headers only (an authorizer's 200) */
    const char *user_id;            /* for the log line */
    const char *log_error;          /* internal cause, for the log line only */
    const char *code;               /* the problem code of an error answer */
};

/* A FastCGI request variable set by the web server ("REQUEST_URI"), or NULL. */
const char *af_req_var(struct af_req *req, const char *name);
/* A request header by its HTTP name ("X-CSRF-Token"), or NULL. */
const char *af_req_header(struct af_req *req, const char *name);
const char *af_req_cookie(struct af_req *req, const char *name);
const char *af_req_param(struct af_req *req, const char *name);
/* Decodes the body (JSON or form) as an object. On failure the problem
 * answer is already in resp and NULL is returned. The object lives until
 * the request ends. */
json_object *af_req_json(struct af_req *req, struct af_resp *resp);
/* The query string as an object of strings (the caller puts it); NULL with
 * 400 validation_failed in resp when it is malformed. */
json_object *af_req_query(struct af_req *req, struct af_resp *resp);
/* ?limit= of a list (API.md: 1..200, default 50); a field error otherwise. */
int af_query_limit(json_object *query, struct af_field_errors *fe);
/* A query field; NULL when absent or empty. */
const char *af_query_string(json_object *query, const char *field, struct af_field_errors *fe);
bool af_req_unsafe_method(const struct af_req *req);

void af_resp_header(struct af_resp *resp, struct af_req *req, const char *name, const char *value);
/* Serialises obj (and drops the reference). */
void af_resp_json(struct af_resp *resp, struct af_req *req, int status, json_object *obj);
void af_resp_empty(struct af_resp *resp, int status);
void af_resp_problem(struct af_resp *resp, struct af_req *req, int status, const char *code,
                     const char *detail);
void af_resp_problem_fields(struct af_resp *resp, struct af_req *req, int status,
                            const char *code, const char *detail, json_object *errors);
/* A problem with more members (an object whose members are added, and
 * which is dropped), such as the mfa_token of mfa_required. */
void af_resp_problem_with(struct af_resp *resp, struct af_req *req, int status, const char *code,
                          const char *detail, json_object *members);
/* 503 service_unavailable with Retry-After, logging the cause. */
void af_resp_unavailable(struct af_resp *resp, struct af_req *req, const char *cause);
/* 500 internal_error, logging the cause (never shown to the client). */
void af_resp_internal(struct af_resp *resp, struct af_req *req, const char *cause);
/* The answer to a failed store call: 503 when PostgreSQL is unreachable,
 * else 500. */
void af_resp_db_failure(struct af_resp *resp, struct af_req *req, struct af_ctx *ctx, int db_status);
/* 400 validation_failed with the collected field errors, if any; returns
 * whether it answered. */
struct af_field_errors;
bool af_resp_field_errors(struct af_resp *resp, struct af_req *req, struct af_field_errors *fe);

typedef void (*af_handler)(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);

enum af_access {
    AF_PUBLIC,          /* anyone */
    AF_USER,            /* a valid access token of a live session */
    AF_ADMIN,           /* AF_USER, and the admin role (af_require_role) */
};

struct af_route {
    const char *method;
    const char *pattern;    /* "/auth/login" under the API prefix; "/.well-known/..." and
                               "/health" at the root; "{id}" matches one segment; "*" (with
                               method "*") takes every FastCGI Authorizer request, and
                               responder requests marked GATE_MODE=1 (nginx auth_request) */
    af_handler handler;
    enum af_access access;
};

/* Runs the FastCGI accept loop until SIGTERM/SIGINT; returns the exit code. */
int af_serve(struct af_ctx *ctx, const struct af_route *routes, size_t nroutes);

/* Exposed for tests: matches path against a pattern, capturing {params}. */
bool af_route_match(const char *pattern, const char *path, const char *params[AF_MAX_PARAMS],
                    const char *names[AF_MAX_PARAMS], af_arena *a);
/* The title of a problem code, for problem+json. */
const char *af_problem_title(const char *code);

#endif
