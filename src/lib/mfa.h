/* mfa.h — two-factor login: TOTP set-up, enabling and disabling, the
 * recovery codes, and the second step of a login.
 *
 * A user's TOTP secret is sealed at rest under the key in [tokens]
 * keys_dir/totp.key (made by `authflowctl keys rotate` or `keys init`), and
 * recovery codes are stored as BLAKE2b hashes keyed with it. A login whose
 * first factor passed for a user with TOTP on gets no session yet: it gets
 * a challenge (an opaque mfa_token, stored as SHA-256, 5 minutes, 5 tries),
 * and POST /auth/mfa/verify with a code opens the session. Wrong codes count
 * as login failures of the account (ratelimit.h), and the account's
 * failure count is cleared only after the second factor. Each function
 * answers the request itself. */
#ifndef AF_MFA_H
#define AF_MFA_H
#include <stdbool.h>

#include "db.h"

struct af_ctx;
struct af_req;
struct af_resp;
struct af_user;

#define AF_MFA_CHALLENGE_TTL 300
#define AF_MFA_CHALLENGE_TRIES 5
#define AF_MFA_RECOVERY_CODES 10

/* POST /auth/mfa/totp/setup for the authenticated user. */
void af_mfa_setup(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);
/* POST /auth/mfa/totp/enable with the code as typed. */
void af_mfa_enable(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, const char *code);
/* POST /auth/mfa/totp/disable: the password, and a code or a recovery code. */
void af_mfa_disable(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                    const char *password, const char *code, const char *recovery_code);
/* Turns TOTP off for user_id and drops its recovery codes and pending
 * challenges, with an audit row mfa_disabled (actor NULL: an operator;
 * detail a JSON object text). *found is false when there is no such user.
 * Also for an operator whose user lost both the app and the codes. */
enum af_db_status af_mfa_turn_off(struct af_ctx *ctx, struct af_req *req, const char *actor,
                                  const char *user_id, const char *sid, const char *detail, bool *found);
/* After the first factor (method "pwd" or "oauth") of a user with TOTP on:
 * answers 401 mfa_required with a new mfa_token, which is also copied to
 * token_out (AF_TOKEN_CHARS + 1 bytes) unless it is NULL, for a caller
 * that answers otherwise (a browser's social login). */
void af_mfa_challenge(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                      const struct af_user *u, const char *method, char *token_out);
/* POST /auth/mfa/verify: opens the session on a right code. */
void af_mfa_verify(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                   const char *mfa_token, const char *code, const char *recovery_code);

#endif
