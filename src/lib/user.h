/* user.h — the users table and the user object of API.md.
 *
 * The user object is cached in Redis (af:user:<id>) and dropped on every
 * change, so reads of a profile need no PostgreSQL round trip on a hit. The
 * cached form never holds the password hash. */
#ifndef AF_USER_H
#define AF_USER_H
#include <json-c/json.h>
#include <stdbool.h>

#include "db.h"

struct af_ctx;
struct af_req;
struct af_resp;

/* The columns of a user (table alias u), in the order af_user_from_row
 * reads them; AF_USER_COLS_WITH takes the SQL of the roles column. */
#define AF_USER_COLS_WITH(roles)                                                                  \
    "u.id, u.email, u.full_name, u.email_verified, u.disabled, u.mfa_enabled, "                  \
    AF_TS_SQL("u.created_at") ", " AF_TS_SQL("u.updated_at") ", " AF_TS_SQL("u.last_login_at") \
    ", " roles ", " AF_USER_IDENTITIES_OF_U ", u.password_hash"
#define AF_USER_ROLES_OF_U \
    "COALESCE((SELECT json_agg(role ORDER BY role) FROM user_roles WHERE user_id = u.id), '[]')::text"
/* The social-login identities: provider, the email it gave, when linked. */
#define AF_USER_IDENTITIES_OF_U                                                                  \
    "COALESCE((SELECT json_agg(json_build_object('provider', i.provider, 'email', i.email, "   \
    "'linked_at', " AF_TS_SQL("i.created_at") ") ORDER BY i.created_at, i.provider) "           \
    "FROM identities i WHERE i.user_id = u.id), '[]')::text"
#define AF_USER_COLS AF_USER_COLS_WITH(AF_USER_ROLES_OF_U)
#define AF_USER_NCOLS 12

#define AF_USER_CACHE_TTL 300   /* seconds */

struct af_user {
    char id[37];
    const char *email, *full_name, *created_at, *updated_at, *last_login_at; /* last may be NULL */
    const char *roles;          /* JSON array text */
    const char *identities;     /* JSON array text */
    const char *password_hash;  /* only from af_user_by_email / af_user_by_id_full */
    bool email_verified, disabled, mfa_enabled;
};

/* Strings point into the request arena. With a code (6 digits), the
 * account starts unverified with that code and its mail queued, in the same
 * statement. */
enum af_db_status af_user_create(struct af_ctx *ctx, struct af_req *req, const char *email,
                                 const char *hash, const char *full_name, const char *code,
                                 struct af_user *out);
/* AF_DB_OK with *found false when there is no such user. */
enum af_db_status af_user_by_email(struct af_ctx *ctx, struct af_req *req, const char *email,
                                   struct af_user *out, bool *found);
enum af_db_status af_user_by_id_full(struct af_ctx *ctx, struct af_req *req, const char *id,
                                     struct af_user *out, bool *found);
/* The user object as JSON text: from the cache, else PostgreSQL (then cached). */
enum af_db_status af_user_json_text(struct af_ctx *ctx, struct af_req *req, const char *id,
                                    const char **json, bool *found);
enum af_db_status af_user_set_name(struct af_ctx *ctx, struct af_req *req, const char *id,
                                   const char *full_name, struct af_user *out, bool *found);
enum af_db_status af_user_set_password_hash(struct af_ctx *ctx, const char *id, const char *hash);

json_object *af_user_to_json(const struct af_user *u);
/* Reads row of r, selected with AF_USER_COLS; strings in the request arena. */
void af_user_from_row(struct af_req *req, PGresult *r, int row, struct af_user *u);
/* Re-checks the password of the authenticated user of req before a
 * sensitive change. true with *u loaded; otherwise answers (401
 * invalid_credentials, 401 unauthorized when the account is gone, 503) and
 * returns false. */
bool af_user_reauth(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                    const char *password, struct af_user *u);
/* Drops the cached user object after a change; when Redis cannot be
 * reached, queues the drop in PostgreSQL (user_cache_repairs), done by the
 * next responder that reaches Redis (session.c's repairs). */
void af_user_cache_drop(struct af_ctx *ctx, const char *id);
/* The DEL alone: false when Redis did not take it. */
bool af_user_cache_forget(struct af_ctx *ctx, const char *id);

/* One audit row; never pass secrets in detail (a JSON object text or NULL). */
void af_audit(struct af_ctx *ctx, struct af_req *req, const char *type, const char *actor,
              const char *subject, const char *session, const char *detail);

#endif
