/* session.h — sessions, refresh tokens and revocation.
 *
 * PostgreSQL holds every session and refresh token (as a SHA-256). Redis
 * only speeds up the question "is this session still live?": af:rev:<sid>
 * marks a revoked session for as long as its access tokens can live, and
 * af:sess:<sid> remembers a live one for a minute. The revoked mark wins, so
 * a revocation is seen on the very next request; when Redis is unreachable
 * or has lost its data the answer comes from PostgreSQL, never from a guess.
 *
 * A live mark must not outlive a revocation Redis never heard of (Redis hung
 * or restarted while a session was revoked), so: a live mark belongs to a
 * generation that ends whenever Redis pauses longer than half its timeout;
 * a revocation Redis could not take waits in PostgreSQL
 * (session_cache_repairs) and is written to Redis by the next responder to
 * connect to Redis, and by every responder at least once a second; and the
 * first answer on a new Redis connection is checked in PostgreSQL.
 * Reading a session writes to PostgreSQL only to move its last_seen_at, at
 * most once a minute (af:seen:<sid> in Redis, and the UPDATE's own
 * condition). */
#ifndef AF_SESSION_H
#define AF_SESSION_H
#include <json-c/json.h>
#include <stdbool.h>

#include "db.h"
#include "util.h"

struct af_ctx;
struct af_req;
struct af_resp;
struct af_user;

enum af_session_state {
    AF_SESSION_LIVE,
    AF_SESSION_REVOKED,         /* revoked, expired or unknown */
    AF_SESSION_UNAVAILABLE,     /* neither store answered */
};

/* Is the session live? In the same Redis round trip, fetches the cached
 * user object of user_id into *cached_user (arena string) when present, so
 * a profile read costs one round trip in all; cached_user NULL: no user. */
enum af_session_state af_session_check(struct af_ctx *ctx, struct af_req *req, const char *sid,
                                       const char *user_id, const char **cached_user);

/* Opens a session for user (amr: JSON array text such as ["pwd"]) and
 * answers 200 with the token pair (and cookies when enabled). */
void af_session_login(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                      const struct af_user *user, const char *amr);

/* POST /auth/refresh with the presented refresh token. */
void af_session_refresh(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                        const char *refresh_token);

/* Revokes one session (reason for the row); 0 or -1 when PostgreSQL failed. */
int af_session_revoke(struct af_ctx *ctx, const char *sid, const char *reason);
/* Revokes every live session of user_id but except_sid (NULL: all), in
 * PostgreSQL and then in Redis; the number revoked, or -1 when PostgreSQL
 * failed. */
long af_session_revoke_all(struct af_ctx *ctx, const char *user_id, const char *except_sid,
                           const char *reason);
/* Revokes session sid if it belongs to user_id: 1 revoked, 0 no such live
 * session of that user, -1 PostgreSQL failed. */
int af_session_revoke_own(struct af_ctx *ctx, const char *user_id, const char *sid,
                          const char *reason);
/* GET /users/me/sessions: the caller's live sessions, newest first. */
void af_session_list(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);
/* The live sessions of user_id as a JSON array (current_sid, may be NULL,
 * is marked "current"). */
enum af_db_status af_session_list_json(struct af_ctx *ctx, struct af_req *req, const char *user_id,
                                       const char *current_sid, json_object **out);
/* Marks a session revoked in Redis (after PostgreSQL has it); when Redis
 * cannot take it, queues it in session_cache_repairs. */
void af_session_mark_revoked(struct af_ctx *ctx, const char *sid);
/* The same for each id of a PostgreSQL uuid[] in text form ({a,b}). */
void af_session_mark_revoked_list(struct af_ctx *ctx, const char *array);
/* Expiring cookies, for logout. */
void af_session_clear_cookies(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp);

#endif
