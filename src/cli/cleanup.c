/* cleanup.c — `authflowctl cleanup`: deletes what has outlived its use.
 *
 * Expired verification codes, reset tokens, second-factor login
 * challenges and social sign-ins never completed; TOTP set-ups never
 * finished within a day; sessions ended (expired,
 * idle or revoked) more than [cleanup] keep_days ago, with their refresh
 * tokens; refresh tokens rotated longer ago than a session may stay idle;
 * sent and dead mail older than [mail] retention_days; revocations queued
 * for Redis (session_cache_repairs) older than an access token can live;
 * audit rows older than [cleanup] audit_keep_days, through af_audit_prune(),
 * which removes only the chain's oldest rows and moves its anchor, so that
 * `authflowctl audit verify` still checks what is left. Pending mail is
 * never touched. Each step deletes in batches of at most 5,000 rows, each
 * batch its own short transaction, so the command is idempotent, holds no
 * long locks and can run from several hosts at once: concurrent runs share
 * the work. Prints one line per table: "<table> <rows deleted>". */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "db.h"
#include "token.h"

enum arg {
    ARG_NONE, ARG_KEEP_DAYS, ARG_RETENTION_DAYS, ARG_IDLE_SECONDS, ARG_ACCESS_SECONDS, ARG_AUDIT_DAYS
};

struct step {
    const char *table;
    const char *where;      /* $1, when used, is the value arg names; NULL: prune_audit */
    enum arg arg;
};

/* The audit trail is a hash chain: only its oldest rows may go, and the
 * anchor must move with them. Returns the number deleted. */
static const char prune_audit[] = "SELECT af_audit_prune($1::int, 5000)";

static const struct step steps[] = {
    {"email_verifications", "expires_at < now()", ARG_NONE},
    {"password_resets", "expires_at < now()", ARG_NONE},
    {"mfa_challenges", "expires_at < now()", ARG_NONE},
    {"user_totp", "enabled_at IS NULL AND created_at < now() - interval '1 day'", ARG_NONE},
    {"oauth_states", "expires_at < now()", ARG_NONE},
    {"sessions",
     "least(expires_at, idle_expires_at, COALESCE(revoked_at, 'infinity')) "
     "< now() - make_interval(days => $1::int)", ARG_KEEP_DAYS},
    {"refresh_tokens", "rotated_at < now() - make_interval(secs => $1::int)", ARG_IDLE_SECONDS},
    {"mail_outbox",
     "status IN ('sent', 'dead') AND created_at < now() - make_interval(days => $1::int)",
     ARG_RETENTION_DAYS},
    {"session_cache_repairs", "created_at < now() - make_interval(secs => $1::int)", ARG_ACCESS_SECONDS},
    {"audit_log", NULL, ARG_AUDIT_DAYS},
};

int af_cli_cleanup(const struct af_config *cfg, int argc, char **argv)
{
    (void)argv;
    if (argc != 0) {
        fprintf(stderr, "usage: authflowctl cleanup\n");
        return 2;
    }
    struct af_db *db = af_db_new(cfg->db_dsn, cfg->db_connect_timeout);
    char args[ARG_AUDIT_DAYS + 1][24] = {""};
    snprintf(args[ARG_KEEP_DAYS], sizeof args[0], "%ld", cfg->cleanup_keep_days);
    snprintf(args[ARG_RETENTION_DAYS], sizeof args[0], "%ld", cfg->mail_retention_days);
    snprintf(args[ARG_IDLE_SECONDS], sizeof args[0], "%ld", cfg->refresh_idle_ttl);
    snprintf(args[ARG_ACCESS_SECONDS], sizeof args[0], "%ld", cfg->access_ttl + 2 * cfg->clock_skew);
    snprintf(args[ARG_AUDIT_DAYS], sizeof args[0], "%ld", cfg->audit_keep_days);
    int rc = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0] && rc == 0; i++) {
        char sql[1024];
        const char *stmt = prune_audit;
        if (steps[i].where) {
            /* ctid batches: no key needed, and SKIP LOCKED lets a concurrent
             * run take other rows instead of waiting for these. */
            snprintf(sql, sizeof sql,
                     "DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE %s "
                     "LIMIT 5000 FOR UPDATE SKIP LOCKED))",
                     steps[i].table, steps[i].table, steps[i].where);
            stmt = sql;
        }
        long total = 0;
        const char *p[] = {args[steps[i].arg]};
        for (;;) {
            PGresult *r;
            enum af_db_status st = af_db_exec(db, &r, stmt, steps[i].arg == ARG_NONE ? 0 : 1, p);
            if (st != AF_DB_OK) {
                fprintf(stderr, "authflowctl: cleanup of %s: %s\n", steps[i].table, af_db_error(db));
                rc = 1;
                break;
            }
            long n = atol(steps[i].where ? PQcmdTuples(r) : PQgetvalue(r, 0, 0));
            PQclear(r);
            total += n;
            if (n < 5000)
                break;
        }
        if (rc == 0)
            printf("%s %ld\n", steps[i].table, total);
    }
    af_db_free(db);
    return rc;
}
