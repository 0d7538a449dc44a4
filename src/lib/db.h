/* db.h — PostgreSQL access.
 *
 * Parameterised statements only (PQexecParams: unnamed, so it works through
 * pgbouncer's transaction pooling). The connection is opened lazily and
 * re-opened after the server restarts: a statement that fails because the
 * connection broke, outside a transaction, is retried once on a new
 * connection. While the server is down, calls fail fast (AF_DB_UNAVAILABLE,
 * answered as 503) instead of each waiting out a connect timeout. */
#ifndef AF_DB_H
#define AF_DB_H
#include <libpq-fe.h>
#include <stdbool.h>

/* SQL for a timestamptz column as RFC 3339 UTC text ("2026-01-02T03:04:05Z"). */
#define AF_TS_SQL(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

enum af_db_status {
    AF_DB_OK = 0,
    AF_DB_UNAVAILABLE,      /* cannot reach the server: 503 */
    AF_DB_CONFLICT,         /* unique violation (SQLSTATE 23505) */
    AF_DB_ERROR,            /* anything else: a bug or bad data, 500 */
};

struct af_db;

struct af_db *af_db_new(const char *dsn, long connect_timeout);
void af_db_free(struct af_db *db);
/* Statements not answered within timeout_ms fail as AF_DB_UNAVAILABLE
 * (0: wait as long as the server takes). */
void af_db_set_timeout(struct af_db *db, long timeout_ms);
/* "primary" (the default) or "replica": for logs and metrics; name must
 * outlive db. */
void af_db_set_name(struct af_db *db, const char *name);

/* Runs sql with n text parameters (NULL = SQL NULL). On AF_DB_OK *res holds
 * the result (caller PQclear()s it); otherwise *res is NULL. */
enum af_db_status af_db_exec(struct af_db *db, PGresult **res, const char *sql, int n,
                             const char *const *params);
/* Same for statements whose result is not needed. */
enum af_db_status af_db_run(struct af_db *db, const char *sql, int n, const char *const *params);

enum af_db_status af_db_begin(struct af_db *db);
enum af_db_status af_db_commit(struct af_db *db);
void af_db_rollback(struct af_db *db);

/* The last error, for logs (never shown to clients). */
const char *af_db_error(const struct af_db *db);
/* Round trip check for /health; latency in microseconds. */
enum af_db_status af_db_ping(struct af_db *db, long *latency_us);

#endif
