/* ratelimit.h — request rate limits and login throttling.
 *
 * Limits live in Redis so that every process on every host shares them:
 * request rates with GCRA (a limit of L per period allows a burst of L,
 * then one request every period/L), login failures as a count per account
 * with a lockout that doubles with each failure past the threshold, and a
 * count per client address. Each check is one atomic script, one round
 * trip; a busy client's requests are taken in leases (see ratelimit.c) so
 * that most of them need none. A refused request does not count, so a
 * client that keeps trying gets in again at the allowed rate.
 *
 * When Redis is unreachable each process applies the same limits on its
 * own, in a small table allocated on first need (keyed with a random hash
 * key, so clients cannot choose which entries collide), and says so in the
 * log once per outage: the door narrows to the limit times the number of
 * processes, never opens. */
#ifndef AF_RATELIMIT_H
#define AF_RATELIMIT_H
#include <stdbool.h>

struct af_ctx;
struct af_req;
struct af_resp;

/* Takes one request from each of n limits (key suffixes with their limit
 * per period_s), all or none. false, with *retry_after in seconds (>= 1),
 * when one of them is exhausted. */
struct af_limit {
    const char *key;
    long limit, period_s;
};
bool af_ratelimit_take(struct af_ctx *ctx, const struct af_limit *limits, int n, long *retry_after);

/* The per-address limit of this program's endpoint group, and the
 * per-account one when the request is authenticated; answers 429
 * rate_limited with Retry-After itself and returns false. The HTTP layer
 * calls it before every handler. */
bool af_ratelimit_request(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);

/* Login throttling for one (normalised) email and the client's address.
 * check: false after answering 429 too_many_attempts with Retry-After,
 * before any password is looked at. failed: counts a failure (a wrong
 * password or an unknown email alike). clear: after a successful login or
 * password reset. */
bool af_login_throttle_check(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                             const char *email);
void af_login_throttle_failed(struct af_ctx *ctx, struct af_req *req, const char *email);
void af_login_throttle_clear(struct af_ctx *ctx, const char *email);

void af_ratelimit_free(struct af_ctx *ctx);

#endif
