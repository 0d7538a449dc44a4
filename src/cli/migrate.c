/* migrate.c — `authflowctl migrate`: applies sql/NNN_name.sql files in
 * order, each in its own transaction under an advisory lock, recording each
 * in schema_migrations. Several hosts may run it at once: the lock
 * serialises them and each re-checks what is applied after taking it. */
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util.h"

#ifndef AF_DATADIR
#define AF_DATADIR "/usr/share/authflow"
#endif

#define LOCK_KEY "7206155830041853"   /* any constant; authflow's migration lock */
#define MAX_FILES 512

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_files(const char *dir, char **names, int *n)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "authflowctl: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    *n = 0;
    while ((e = readdir(d)) && *n < MAX_FILES) {
        size_t l = strlen(e->d_name);
        if (l > 8 && e->d_name[0] >= '0' && e->d_name[0] <= '9' && !strcmp(e->d_name + l - 4, ".sql"))
            names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)*n, sizeof *names, by_name);
    return 0;
}

static bool ok(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return true;
    fprintf(stderr, "authflowctl: %s: %s", what, PQerrorMessage(c));
    return false;
}

static bool exec_ok(PGconn *c, const char *sql, const char *what)
{
    PGresult *r = PQexec(c, sql);
    bool good = ok(c, r, what);
    PQclear(r);
    return good;
}

static int applied(PGconn *c, const char *version)
{
    const char *p[] = {version};
    PGresult *r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, p,
                               NULL, NULL, 0);
    int rc = ok(c, r, "reading schema_migrations") ? PQntuples(r) > 0 : -1;
    PQclear(r);
    return rc;
}

#define CREATE_TABLE                                                              \
    "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, " \
    "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"

int af_cli_migrate(const struct af_config *cfg, int argc, char **argv)
{
    const char *dir = AF_DATADIR "/sql";
    bool status = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--status"))
            status = true;
        else if (!strcmp(argv[i], "--sql-dir") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: authflowctl migrate [--status] [--sql-dir DIR]\n");
            return 2;
        }
    }
    char *names[MAX_FILES];
    int n;
    if (list_files(dir, names, &n) < 0)
        return 1;
    char dsn[2048];
    snprintf(dsn, sizeof dsn, "connect_timeout=%ld %s", cfg->db_connect_timeout, cfg->db_dsn);
    PGconn *c = PQconnectdb(dsn);
    int rc = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "authflowctl: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        rc = 1;
        goto out;
    }
    /* SET LOCAL, in each transaction: through pgbouncer's transaction
     * pooling a session setting would stay on a server connection that
     * other clients get next. */
    if (!exec_ok(c, "BEGIN", "begin") || !exec_ok(c, "SET LOCAL client_min_messages = warning", "setup") ||
        !exec_ok(c, "SELECT pg_advisory_xact_lock(" LOCK_KEY ")", "lock") ||
        !exec_ok(c, CREATE_TABLE, "creating schema_migrations") || !exec_ok(c, "COMMIT", "commit")) {
        rc = 1;
        goto out;
    }
    int applied_now = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char version[16];
        snprintf(version, sizeof version, "%.*s", (int)strspn(names[i], "0123456789"), names[i]);
        if (status) {
            int a = applied(c, version);
            if (a < 0) {
                rc = 1;
                break;
            }
            printf("%-8s %s\n", a ? "applied" : "pending", names[i]);
            continue;
        }
        if (!exec_ok(c, "BEGIN", "begin") || !exec_ok(c, "SET LOCAL client_min_messages = warning", "setup") ||
            !exec_ok(c, "SELECT pg_advisory_xact_lock(" LOCK_KEY ")", "lock")) {
            rc = 1;
            break;
        }
        int a = applied(c, version);
        if (a != 0) {
            exec_ok(c, "ROLLBACK", "rollback");
            rc = a < 0;
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *sql = af_read_file(path);
        if (!sql) {
            fprintf(stderr, "authflowctl: %s: %s\n", path, strerror(errno));
            exec_ok(c, "ROLLBACK", "rollback");
            rc = 1;
            break;
        }
        char what[300];
        snprintf(what, sizeof what, "migration %s", names[i]);
        bool good = exec_ok(c, sql, what);
        free(sql);
        if (good) {
            const char *p[] = {version, names[i]};
            PGresult *r = PQexecParams(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                       2, NULL, p, NULL, NULL, 0);
            good = ok(c, r, "recording migration");
            PQclear(r);
        }
        if (!good || !exec_ok(c, "COMMIT", "commit")) {
            exec_ok(c, "ROLLBACK", "rollback");
            rc = 1;
            break;
        }
        printf("applied  %s\n", names[i]);
        applied_now++;
    }
    if (!status && rc == 0 && applied_now == 0)
        printf("up to date\n");
out:
    PQfinish(c);
    for (int i = 0; i < n; i++)
        free(names[i]);
    return rc;
}
