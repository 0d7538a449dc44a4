/* gate.h — the verification gateway: is this request, aimed at another
 * application's location, from a live session with the required role?
 *
 * One check for every way a web server asks: as a FastCGI Authorizer
 * (lighttpd "mode" => "authorizer", Apache mod_authnz_fcgi), as a plain
 * responder (GET /auth/verify, for scripts), and for nginx auth_request
 * subrequests (GATE_MODE=1, any path): nginx answers a subrequest's 401 or
 * 403 itself, so there the denial also travels in X-Auth-Status,
 * X-Auth-Problem (the problem+json) and X-Auth-Redirect (the login page)
 * for etc/nginx/authflow.conf to answer with. The order of
 * the checks is API.md's: a token is present; signature, kid, alg, iss,
 * aud, exp/nbf; the session is live (Redis, else PostgreSQL); the device
 * fingerprint; the role the location requires.
 *
 * The required role comes from the web server's configuration, as the
 * request variable AUTHFLOW_REQUIRE_ROLE (lighttpd setenv.add-environment,
 * Apache SetEnvIf, nginx fastcgi_param). On success an authorizer answers
 * 200 with nothing but Variable- headers: AUTH_USER (Apache's user name),
 * X_AUTH_USER_ID, X_AUTH_EMAIL, X_AUTH_ROLES (comma separated),
 * X_AUTH_SESSION_ID; a responder answers 200 with the identity as JSON and
 * as X-Auth-* headers. */
#ifndef AF_GATE_H
#define AF_GATE_H
#include <stdbool.h>

struct af_ctx;
struct af_req;
struct af_resp;

/* The whole gate check and answer for req (any path, any method). */
void af_gate(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);

/* A safe relative return path for a login redirect: uri itself when it is a
 * path on this site ("/..." but not "//" or "/\"), else "/". Exposed for
 * tests. */
const char *af_gate_return_path(const char *uri);
#endif
