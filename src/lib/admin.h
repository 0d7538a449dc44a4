/* admin.h — user administration, shared by authflow-admin and authflowctl.
 *
 * The rules live in PostgreSQL (sql/004_admin_audit.sql): the last active
 * admin cannot be demoted, disabled or deleted, every change writes its
 * audit rows in the same transaction. These functions add what PostgreSQL
 * cannot do: the Redis side (sessions revoked at once for the gate, the
 * cached user object dropped) and the invitation mail's link.
 *
 * A command-line caller passes a request made with af_req_local(): no
 * client address, no headers; its audit rows say "via": "authflowctl". */
#ifndef AF_ADMIN_H
#define AF_ADMIN_H
#include <json-c/json.h>
#include <stdbool.h>

struct af_ctx;
struct af_req;
struct af_resp;

enum af_admin_status {
    AF_ADMIN_OK,
    AF_ADMIN_NOT_FOUND,
    AF_ADMIN_LAST_ADMIN,        /* would leave no active admin */
    AF_ADMIN_UNKNOWN_ROLE,      /* *detail names it */
    AF_ADMIN_EMAIL_TAKEN,
    AF_ADMIN_INVALID,           /* *detail says what (a bad cursor, a bad filter) */
    AF_ADMIN_UNAVAILABLE,       /* PostgreSQL unreachable */
    AF_ADMIN_ERROR,             /* PostgreSQL refused the statement */
};

/* Who acts: actor is a user id, or NULL for authflowctl (then via names it). */
struct af_actor {
    const char *user_id;
    const char *via;
};

/* A change to a user; NULL / -1 leave a field as it is. */
struct af_user_change {
    const char *full_name;
    const char *const *roles;   /* with set_roles: the complete new set */
    int nroles;
    bool set_roles;
    int disabled;               /* -1, 0 or 1 */
    int email_verified;         /* -1, 0 or 1 */
};

struct af_new_user {
    const char *email;          /* normalised (af_email_normalise) */
    const char *password_hash;  /* NULL: invited; a link to choose one is mailed */
    const char *full_name;
    const char *const *roles;   /* NULL: the "user" role */
    int nroles;
    bool email_verified;
};

/* The filters of a user list; NULL: none. */
struct af_user_filter {
    const char *q;              /* substring of the email or the name, case-insensitive */
    const char *role;
    const char *status;         /* "active", "disabled" or "unverified" */
    const char *cursor;         /* from the previous page's next_cursor */
    int limit;                  /* 1..200 */
};

struct af_audit_filter {
    const char *user_id;        /* rows where this user is the actor or the subject */
    const char *subject_id;     /* rows about this user only (GET /users/me/activity) */
    const char *type;
    const char *cursor;
    int limit;
};

/* A request for command-line callers: only an arena. */
void af_req_local(struct af_req *req, void *arena);

enum af_admin_status af_admin_create_user(struct af_ctx *ctx, struct af_req *req,
                                          const struct af_actor *who, const struct af_new_user *nu,
                                          json_object **user, const char **detail);
enum af_admin_status af_admin_update_user(struct af_ctx *ctx, struct af_req *req,
                                          const struct af_actor *who, const char *id,
                                          const struct af_user_change *c, const char **detail);
enum af_admin_status af_admin_delete_user(struct af_ctx *ctx, struct af_req *req,
                                          const struct af_actor *who, const char *id);
/* The user object with "session_count" (live sessions); id may be an
 * email address instead. */
enum af_admin_status af_admin_get_user(struct af_ctx *ctx, struct af_req *req, const char *id,
                                       json_object **user);
/* A page: {"items": [user objects], "next_cursor": "..." | null}, oldest
 * account first; the cursor is opaque, stable while users are added. */
enum af_admin_status af_admin_list_users(struct af_ctx *ctx, struct af_req *req,
                                         const struct af_user_filter *f, json_object **page,
                                         const char **detail);
/* A page of audit rows, newest first. full: every column (the admin view);
 * otherwise what GET /users/me/activity shows (type, at, ip, user_agent,
 * detail). */
enum af_admin_status af_admin_list_audit(struct af_ctx *ctx, struct af_req *req,
                                         const struct af_audit_filter *f, bool full,
                                         json_object **page, const char **detail);
/* Answers a page of the audit trail from the request's query (limit,
 * cursor; without subject also user_id and type): subject's own events
 * as GET /users/me/activity shows them, or (subject NULL) every column for
 * GET /admin/audit. */
void af_admin_audit_page(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                         const char *subject);
/* Revokes every live session of the user (PostgreSQL, then Redis); the
 * number revoked, or -1. */
long af_admin_revoke_sessions(struct af_ctx *ctx, struct af_req *req, const struct af_actor *who,
                              const char *id);
/* The user's live sessions as a JSON array (API.md's session fields). */
enum af_admin_status af_admin_list_sessions(struct af_ctx *ctx, struct af_req *req, const char *id,
                                            json_object **list);

/* Answers resp for a failure status (404, 409 last_admin, 400, 503, 500). */
void af_admin_resp_failure(struct af_resp *resp, struct af_req *req, struct af_ctx *ctx,
                           enum af_admin_status st, const char *detail);

#endif
