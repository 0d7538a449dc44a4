/* account.h — the flows that prove an email address or replace a
 * password: verification codes, reset links, password changes.
 *
 * Codes and link tokens are stored as SHA-256 digests; the mail carrying
 * them is an outbox row written by the same statement as the change, so a
 * change that fails sends nothing and one that commits cannot lose its mail.
 * Each function answers the request itself (success or problem+json). */
#ifndef AF_ACCOUNT_H
#define AF_ACCOUNT_H
#include <stdbool.h>

struct af_ctx;
struct af_req;
struct af_resp;

/* A fresh 6-digit code (out: 7 bytes). */
void af_account_new_code(char out[7]);

/* Starts the per-address mail cooldown after a registration's mail. */
void af_account_cooldown_start(struct af_ctx *ctx, const char *email);

/* POST /auth/verify-email: email (normalised) and the code as typed. */
void af_account_verify_email(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                             const char *email, const char *code);
/* POST /auth/verify-email/resend. */
void af_account_resend_code(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                            const char *email);
/* POST /auth/password/forgot. */
/* A new reset link (from [auth] reset_url or public_url, never the
 * request), in the arena, and the SHA-256 of its token as a bytea literal
 * ("\\x" + hex) for password_resets; wipe the link after use. */
char *af_account_reset_link(struct af_ctx *ctx, struct af_req *req, char hash_hex[70]);
void af_account_forgot(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                       const char *email);
/* POST /auth/password/reset: the link token and the new password (its
 * length already checked; screened here against the account's email and
 * name). A reset ends the account's login lockout. */
void af_account_reset(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                      const char *token, const char *new_password);
/* POST /auth/password/change for the authenticated user of req. */
void af_account_change_password(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                                const char *current, const char *new_password);
#endif
