/* authn.h — who is calling: the access token (Bearer or cookie), the CSRF
 * double submit for cookie-mode unsafe requests, the session's liveness and
 * the device binding. One function, used by every responder (and the gate),
 * so the rules cannot drift apart. */
#ifndef AF_AUTHN_H
#define AF_AUTHN_H
#include <stdbool.h>

struct af_ctx;
struct af_req;
struct af_resp;

/* On success fills req->claims, sets req->authenticated and returns true;
 * otherwise the 401/403/503 answer is in resp. */
bool af_authenticate(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);
/* The CSRF double submit and Origin check for cookie-mode unsafe requests;
 * false with 403 csrf_failed in resp. */
bool af_csrf_check(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);
/* Whether a browser origin ("https://app.example") may call authflow with
 * credentials: the public URL's own, or one of [server] allowed_origins. */
bool af_origin_allowed(struct af_ctx *ctx, const char *origin);
/* Does the authenticated caller's token carry role? The one role check of
 * authflow: the gate asks only this (the token is all it reads). */
bool af_has_role(const struct af_req *req, const char *role);
/* For the admin API: the token must carry role and the user must still hold
 * it (their current roles, from the user cache or PostgreSQL), so a
 * demotion takes effect at once. false with 403 forbidden (or 401, 503) in
 * resp. */
bool af_require_role(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, const char *role);
/* The device fingerprint of a request (SHA-256 hex of the configured parts). */
void af_fingerprint(struct af_ctx *ctx, struct af_req *req, char out[65]);

#endif
