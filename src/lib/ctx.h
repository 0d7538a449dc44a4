/* ctx.h — the one per-process context: configuration, the PostgreSQL and
 * Redis connections and the key set, created at start-up and passed
 * explicitly to every handler. A responder process handles one request at a
 * time; concurrency comes from running several processes. */
#ifndef AF_CTX_H
#define AF_CTX_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "cache.h"
#include "config.h"
#include "db.h"
#include "password.h"
#include "token.h"

struct af_ctx {
    const char *program;
    struct af_config cfg;
    struct af_db *db;
    struct af_db *replica;          /* [database] read_dsn, or NULL (reads.h) */
    int replica_state;              /* reads.c */
    long replica_lag_ms;
    int64_t replica_checked_us, replica_backoff_us;
    struct af_cache *cache;
    struct af_keyset *keys;         /* NULL for programs that need none */
    struct af_token_params token_params;
    struct af_password_cost cost;
    bool no_user_prefetch;          /* the gate: authentication needs no user object */
    bool remember_sessions;         /* the gate: [gate] session_memory_ms applies */
    bool ignore_body;               /* the gate: never reads a request body */
    struct af_pwpolicy *pwpolicy;   /* password screening lists (validate.c), or NULL */
    struct af_ratelimit *rl;        /* per-process limiter state (ratelimit.c), or NULL */
    /* Waiting revocations (session.c): the Redis connection they were
     * last written to, and when to look for them again. */
    unsigned long repaired_connection;
    int64_t repair_due_us;
    /* The key directory as last loaded (af_ctx_reload_keys). */
    int64_t keys_checked_us;
    struct timespec keys_mtime;
    ino_t keys_ino;
    bool keys_reload_failing;
};

/* AF_NEED_PWPOLICY: the program takes new passwords and loads the
 * screening lists (validate.h) at start-up; the others keep the memory. */
/* AF_NEED_REPLICA: the program sends list reads to [database] read_dsn
 * (reads.h); the others, the command-line tools among them, read the
 * primary only (a script's next command must see what the last wrote). */
enum af_ctx_needs { AF_NEED_KEYS = 1, AF_NEED_PWPOLICY = 2, AF_NEED_REPLICA = 4 };

/* Called first in main(): re-executes the program once with GnuTLS's
 * load-time initialisation switched off. libpq pulls GnuTLS in (through
 * libldap, which initialises it itself if it ever needs it); authflow never
 * uses it, and its constructor costs each process about 0.8 MiB. */
void af_ctx_slim(char **argv);

/* Loads config (path NULL = default), sets up logging and the stores.
 * Prints the reason to stderr and returns -1 on failure. */
int af_ctx_init(struct af_ctx *ctx, const char *program, const char *config_path, unsigned needs);
void af_ctx_free(struct af_ctx *ctx);

/* Loads the key set again when [tokens] keys_dir changed (a key added,
 * made current or retired: each changes the directory's mtime), looking at
 * most once a second, or at once when soon is set (a stat):
 * a token with a kid this process does not know yet. The old set stays
 * when the new one cannot be read. Returns true when the set changed. */
bool af_ctx_reload_keys(struct af_ctx *ctx, bool soon);

#endif
