/* authflow-gate — the verification gateway in front of other applications'
 * locations: a FastCGI Authorizer for lighttpd and Apache, and the
 * GET /auth/verify responder for nginx auth_request and scripts (see
 * gate.h for the checks and the answers). */
#include "ctx.h"
#include "gate.h"
#include "http.h"

static const struct af_route routes[] = {
    /* Authorizer requests (and GATE_MODE=1 ones) for any path. */
    {"*", "*", af_gate, AF_PUBLIC},
    {"GET", "/auth/verify", af_gate, AF_PUBLIC},
};

int main(int argc, char **argv)
{
    (void)argc;
    af_ctx_slim(argv);
    struct af_ctx ctx;
    if (af_ctx_init(&ctx, "authflow-gate", NULL, AF_NEED_KEYS) < 0)
        return 1;
    ctx.no_user_prefetch = true;
    ctx.remember_sessions = true;
    /* A subrequest (nginx auth_request) may announce the main request's
     * Content-Length without sending its body. */
    ctx.ignore_body = true;
    int rc = af_serve(&ctx, routes, sizeof routes / sizeof routes[0]);
    af_ctx_free(&ctx);
    return rc;
}
