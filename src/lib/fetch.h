/* fetch.h — outbound HTTP to OpenID providers (discovery, JWKS, token and
 * userinfo endpoints) through libcurl.
 *
 * The only outbound HTTP authflow does, so the rules live here once: http
 * and https only, https unless the host is loopback (a test provider on
 * 127.0.0.1), redirects never followed (a 3xx is handed back as an answer),
 * TLS peer and host name always verified, every call bounded in time and in
 * answer size. Error texts name the host and curl's reason, never a URL's
 * query, a form body, a client secret or a bearer token.
 *
 * Each thread has its own curl handle, made on first use and kept so that
 * connections and TLS sessions to a provider are reused; its options are
 * reset on every call. */
#ifndef AF_FETCH_H
#define AF_FETCH_H
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

enum af_fetch_method { AF_FETCH_GET, AF_FETCH_POST };

struct af_fetch_req {
    enum af_fetch_method method;
    const char *url;
    /* POST only: application/x-www-form-urlencoded, already encoded (see
     * af_form_encode); NULL sends an empty body. */
    const char *form;
    /* At most one of the two: "Authorization: Bearer <bearer>", or HTTP
     * Basic with basic_user/basic_password form-urlencoded first as RFC 6749
     * §2.3.1 requires of client_secret_basic. */
    const char *bearer;
    const char *basic_user, *basic_password;
    /* A CA bundle to trust instead of the system's (a provider under a
     * private CA); NULL: the system's. Verification is never off. */
    const char *ca_file;
    long timeout_ms;            /* the whole exchange, connecting included; > 0 */
    size_t max_bytes;           /* larger answers fail the call; > 0 */
};

struct af_fetch_resp {
    long status;                /* the HTTP status, 3xx included */
    char *body;                 /* malloc'd and NUL-terminated (may hold NULs: see len) */
    size_t len;
    char content_type[128];     /* "" when absent or too long */
};

/* Whether url may be fetched: https to any host, or http to a loopback
 * host (127.0.0.0/8, ::1, localhost). Parsed by curl's own URL parser, the
 * one the transfer uses. */
bool af_fetch_url_allowed(const char *url);

/* Performs rq. 0 for any HTTP answer, whatever its status (out filled; free
 * with af_fetch_resp_free); -1 when no answer was had (URL refused,
 * connection, TLS, timeout, answer over max_bytes), with the reason in err
 * and out empty. */
int af_fetch(const struct af_fetch_req *rq, struct af_fetch_resp *out, char *err, size_t errlen);
void af_fetch_resp_free(struct af_fetch_resp *r);

/* The answer's body as a JSON object, or NULL when it is not one. */
json_object *af_fetch_resp_json(const struct af_fetch_resp *r);

/* GET url and parse the answer as a JSON object; NULL and a reason in err
 * unless the status is 200 and the body is a JSON object. */
json_object *af_fetch_json(const char *url, long timeout_ms, size_t max_bytes, char *err,
                           size_t errlen);

/* "n1=v1&n2=v2..." from pairs: name, value, name, value, ..., NULL; values
 * NULL are left out. Malloc'd; NULL when out of memory. It may hold secrets
 * (a client secret, a code, a PKCE verifier): sodium_memzero before free. */
char *af_form_encode(const char *const *pairs);

/* Frees the calling thread's curl handle (a worker thread about to end). */
void af_fetch_thread_cleanup(void);

#endif
