/* db.c — PostgreSQL access (see db.h). */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

/* After a failed connect, further attempts wait this long. */
#define RETRY_AFTER_US 250000
/* After a statement timed out, further attempts wait this long. */
#define TIMEOUT_BACKOFF_US 1000000

struct af_db {
    char *dsn;
    long timeout_ms;                /* per statement; 0: none */
    const char *name;               /* "primary" or "replica", for metrics */
    unsigned long connects;
    PGconn *conn;
    bool in_tx;
    int64_t down_until;
    char error[256];
};

struct af_db *af_db_new(const char *dsn, long connect_timeout)
{
    struct af_db *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    /* connect_timeout in the DSN wins if the admin set one there. */
    size_t n = strlen(dsn) + 64;
    db->dsn = malloc(n);
    snprintf(db->dsn, n, "connect_timeout=%ld %s", connect_timeout, dsn);
    db->name = "primary";
    return db;
}

void af_db_free(struct af_db *db)
{
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
    free(db->dsn);
    free(db);
}

const char *af_db_error(const struct af_db *db) { return db->error; }

void af_db_set_name(struct af_db *db, const char *name) { db->name = name; }

void af_db_set_timeout(struct af_db *db, long timeout_ms) { db->timeout_ms = timeout_ms; }

static void set_error(struct af_db *db, const char *what, const char *msg)
{
    snprintf(db->error, sizeof db->error, "%s: %s", what, msg ? msg : "");
    db->error[strcspn(db->error, "\n")] = '\0';
}

static bool connect_db(struct af_db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return true;
    int64_t now = af_now_us();
    if (now < db->down_until)
        return false;
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    db->conn = PQconnectdb(db->dsn);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        set_error(db, "connect", PQerrorMessage(db->conn));
        PQfinish(db->conn);
        db->conn = NULL;
        db->down_until = now + RETRY_AFTER_US;
        af_log(AF_LOG_WARN, "db_unavailable", "database", db->name, "error", db->error, NULL);
        af_metrics_incf("authflow_db_errors_total{db=\"%s\",kind=\"connect\"}", db->name);
        return false;
    }
    if (db->connects++ > 0)
        af_metrics_incf("authflow_db_reconnects_total{db=\"%s\"}", db->name);
    db->in_tx = false;
    return true;
}

static enum af_db_status classify(struct af_db *db, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return AF_DB_OK;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    set_error(db, state ? state : "exec", PQerrorMessage(db->conn));
    if (PQstatus(db->conn) != CONNECTION_OK)
        return AF_DB_UNAVAILABLE;
    if (state && strcmp(state, "23505") == 0)
        return AF_DB_CONFLICT;
    /* Class 08 (connection), 57P0x (shutdown, cannot connect now), 53
     * (insufficient resources): the server, not the statement. */
    if (state && (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3) || !strncmp(state, "53", 2)))
        return AF_DB_UNAVAILABLE;
    return AF_DB_ERROR;
}

/* PQexecParams, given up after db->timeout_ms: a pooler (pgbouncer) whose
 * server is gone keeps a query waiting instead of failing it. A statement
 * given up on closes the connection (the server rolls back what was not
 * committed) and sets *timed_out. */
static PGresult *exec_timed(struct af_db *db, const char *sql, int n, const char *const *params,
                            bool *timed_out)
{
    *timed_out = false;
    if (db->timeout_ms <= 0)
        return PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
    if (!PQsendQueryParams(db->conn, sql, n, NULL, params, NULL, NULL, 0))
        return NULL;
    int64_t deadline = af_now_us() + (int64_t)db->timeout_ms * 1000;
    PGresult *last = NULL;
    for (;;) {
        while (PQisBusy(db->conn)) {
            int64_t left = deadline - af_now_us();
            struct pollfd p = {PQsocket(db->conn), POLLIN, 0};
            int rc = left > 0 ? poll(&p, 1, (int)((left + 999) / 1000)) : 0;
            if (rc == 0 && af_now_us() >= deadline) {
                PQclear(last);
                set_error(db, "timeout", "no answer within [database] query_timeout_ms");
                PQfinish(db->conn);
                db->conn = NULL;
                *timed_out = true;
                return NULL;
            }
            if ((rc < 0 && errno != EINTR) || !PQconsumeInput(db->conn)) {
                /* The query may still be in flight: the connection is
                 * no use any more. */
                PQclear(last);
                set_error(db, "exec", PQerrorMessage(db->conn));
                PQfinish(db->conn);
                db->conn = NULL;
                return NULL;
            }
        }
        PGresult *r = PQgetResult(db->conn);
        if (!r)
            return last;
        PQclear(last);
        last = r;
    }
}

enum af_db_status af_db_exec(struct af_db *db, PGresult **res, const char *sql, int n,
                             const char *const *params)
{
    *res = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!connect_db(db)) {
            db->in_tx = false;
            return AF_DB_UNAVAILABLE;
        }
        bool timed_out;
        PGresult *r = exec_timed(db, sql, n, params, &timed_out);
        if (timed_out) {
            /* Not repeated: it may be running still. Others wait a while
             * before they try this server again. */
            db->in_tx = false;
            db->down_until = af_now_us() + TIMEOUT_BACKOFF_US;
            af_log(AF_LOG_WARN, "db_timeout", "database", db->name, NULL);
            af_metrics_incf("authflow_db_errors_total{db=\"%s\",kind=\"timeout\"}", db->name);
            return AF_DB_UNAVAILABLE;
        }
        enum af_db_status st = r ? classify(db, r) : AF_DB_UNAVAILABLE;
        if (!r && db->conn)
            set_error(db, "exec", PQerrorMessage(db->conn));
        if (st == AF_DB_OK) {
            *res = r;
            return st;
        }
        if (st != AF_DB_CONFLICT)
            af_metrics_incf("authflow_db_errors_total{db=\"%s\",kind=\"%s\"}", db->name,
                            st == AF_DB_UNAVAILABLE ? "connection" : "query");
        PQclear(r);
        if (st != AF_DB_UNAVAILABLE || PQstatus(db->conn) == CONNECTION_OK || db->in_tx) {
            if (st == AF_DB_UNAVAILABLE)
                db->in_tx = false;
            return st;
        }
        /* The connection broke outside a transaction: reconnect and retry
         * once. A statement that did reach a dying server either committed
         * or did not; every statement here is safe to repeat or fails on a
         * unique key. */
        af_log(AF_LOG_WARN, "db_reconnect", "database", db->name, "error", db->error, NULL);
        PQfinish(db->conn);
        db->conn = NULL;
    }
    return AF_DB_UNAVAILABLE;
}

enum af_db_status af_db_run(struct af_db *db, const char *sql, int n, const char *const *params)
{
    PGresult *r;
    enum af_db_status st = af_db_exec(db, &r, sql, n, params);
    PQclear(r);
    return st;
}

enum af_db_status af_db_begin(struct af_db *db)
{
    enum af_db_status st = af_db_run(db, "BEGIN", 0, NULL);
    db->in_tx = st == AF_DB_OK;
    return st;
}

enum af_db_status af_db_commit(struct af_db *db)
{
    enum af_db_status st = af_db_run(db, "COMMIT", 0, NULL);
    db->in_tx = false;
    return st;
}

void af_db_rollback(struct af_db *db)
{
    bool timed_out;
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        PQclear(exec_timed(db, "ROLLBACK", 0, NULL, &timed_out));
    db->in_tx = false;
}

enum af_db_status af_db_ping(struct af_db *db, long *latency_us)
{
    int64_t t0 = af_now_us();
    enum af_db_status st = af_db_run(db, "SELECT 1", 0, NULL);
    *latency_us = (long)(af_now_us() - t0);
    return st;
}
