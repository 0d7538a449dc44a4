/* authflow-mailer — delivers the mail outbox.
 *
 *   authflow-mailer [-c CONFIG] [--once]
 *
 * Wakes on PostgreSQL NOTIFY af_mail (sent when a row is queued) and polls
 * every [mail] poll_seconds besides; when idle, seals new audit rows into
 * the audit chain. Each message is claimed alone, with
 * FOR UPDATE SKIP LOCKED, and leased for lease_seconds: several mailers
 * share a queue without sending a message twice, and a message claimed by
 * a mailer that died is taken over when its lease ends — sent again with the
 * same Message-ID, because whether the first try reached the server is then
 * unknown (logged as mail_unknown_outcome). A temporary failure is retried
 * after retry_base_seconds * 2^(attempt-1) (at most retry_max_seconds); a
 * permanent one, or max_attempts failures, marks the row dead. SIGTERM or
 * SIGINT: the message in hand is finished, then the program exits 0.
 * --once delivers what is due now and exits. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "mail.h"

static volatile sig_atomic_t stopping;
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    stopping = 1;
    if (wake_pipe[1] >= 0 && write(wake_pipe[1], "x", 1) < 0) {
        /* The pipe is full: a wake-up is pending anyway. */
    }
    errno = saved;
}

struct mailer {
    struct af_config cfg;
    struct af_db *db;
    PGconn *listen;             /* LISTEN af_mail; NULL when down */
    time_t listen_retry_at;
    struct af_templates *templates;
    struct af_transport *transport;
    char me[300];               /* host:pid, for claimed_by */
    long sent, retried, dead;
};

/* ------------------------------------------------------------ LISTEN */

static void listen_close(struct mailer *m)
{
    if (m->listen)
        PQfinish(m->listen);
    m->listen = NULL;
}

static void listen_open(struct mailer *m)
{
    if (m->listen || time(NULL) < m->listen_retry_at)
        return;
    /* LISTEN needs a session of its own: through a transaction-pooling
     * pgbouncer it would not hear a thing. */
    m->listen = PQconnectdb(m->cfg.db_listen_dsn[0] ? m->cfg.db_listen_dsn : m->cfg.db_dsn);
    PGresult *r = NULL;
    if (PQstatus(m->listen) == CONNECTION_OK)
        r = PQexec(m->listen, "LISTEN af_mail");
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        af_log(AF_LOG_WARN, "mail_listen_failed", "error", PQerrorMessage(m->listen), NULL);
        PQclear(r);
        listen_close(m);
        m->listen_retry_at = time(NULL) + 5;
        return;
    }
    PQclear(r);
    PQsetnonblocking(m->listen, 1);
}

/* Drains notifications; false when the connection broke. */
static bool listen_drain(struct mailer *m)
{
    if (!m->listen)
        return false;
    if (!PQconsumeInput(m->listen)) {
        af_log(AF_LOG_WARN, "mail_listen_lost", "error", PQerrorMessage(m->listen), NULL);
        listen_close(m);
        return false;
    }
    PGnotify *n;
    while ((n = PQnotifies(m->listen)))
        PQfreemem(n);
    return true;
}

/* Seconds until the next row falls due (pending) or a lease ends, capped
 * by poll_seconds. */
static long next_due(struct mailer *m)
{
    PGresult *r;
    long wait = m->cfg.mail_poll;
    if (af_db_exec(m->db, &r,
                   "SELECT ceil(extract(epoch FROM least("
                   "  (SELECT min(next_attempt_at) FROM mail_outbox WHERE status = 'pending'), "
                   "  (SELECT min(lease_until) FROM mail_outbox WHERE status = 'sending')) - now()))::bigint",
                   0, NULL) != AF_DB_OK)
        return wait;
    if (!PQgetisnull(r, 0, 0)) {
        long s = atol(PQgetvalue(r, 0, 0));
        if (s < wait)
            wait = s < 0 ? 0 : s;
    }
    PQclear(r);
    return wait;
}

/* Seals the audit rows written since the last call into the audit chain
 * (sql/004_admin_audit.sql): the mailer is the one long-running worker, so
 * rows are sealed within poll_seconds of being written. */
static void seal_audit(struct mailer *m)
{
    PGresult *r;
    enum af_db_status st = af_db_exec(m->db, &r, "SELECT af_audit_seal(10000)", 0, NULL);
    if (st == AF_DB_OK)
        PQclear(r);
    else if (st != AF_DB_UNAVAILABLE)
        af_log(AF_LOG_WARN, "audit_seal_failed", "error", af_db_error(m->db), NULL);
}

/* Sleeps up to seconds (at least a tenth of one), waking early on NOTIFY
 * or a signal. */
static void wait_for_work(struct mailer *m, long seconds)
{
    listen_open(m);
    struct pollfd pf[2] = {{.fd = wake_pipe[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (m->listen)
        pf[1].fd = PQsocket(m->listen);
    if (stopping)
        return;
    int n = poll(pf, 2, seconds > 0 ? (int)(seconds * 1000) : 100);
    if (n > 0 && (pf[1].revents & (POLLIN | POLLERR | POLLHUP)))
        listen_drain(m);
    if (n > 0 && (pf[0].revents & POLLIN)) {
        char buf[16];
        if (read(wake_pipe[0], buf, sizeof buf) < 0) {
            /* Nothing to do: the flag is what matters. */
        }
    }
}

/* ------------------------------------------------------------ delivery */

static long backoff(const struct mailer *m, long attempts)
{
    long d = m->cfg.mail_retry_base;
    for (long i = 1; i < attempts && d < m->cfg.mail_retry_max; i++)
        d *= 2;
    return d < m->cfg.mail_retry_max ? d : m->cfg.mail_retry_max;
}

/* Records the outcome of an attempt; keeps trying while PostgreSQL is away
 * (for at most half the lease: after that another mailer may own the row). */
static void record(struct mailer *m, const char *id, const char *sql, int n, const char *const *p,
                   char *status_out, size_t status_len)
{
    time_t give_up = time(NULL) + m->cfg.mail_lease / 2;
    for (;;) {
        PGresult *r;
        enum af_db_status st = af_db_exec(m->db, &r, sql, n, p);
        if (st == AF_DB_OK) {
            if (status_out)
                snprintf(status_out, status_len, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
            PQclear(r);
            return;
        }
        if (st != AF_DB_UNAVAILABLE || time(NULL) >= give_up) {
            af_log(AF_LOG_ERROR, "mail_record_failed", "id", id, "error", af_db_error(m->db), NULL);
            return;
        }
        sleep(1);
    }
}

enum step { STEP_IDLE, STEP_DONE, STEP_DOWN, STEP_DB_DOWN };

static enum step deliver_one(struct mailer *m, long *pause)
{
    char lease[24];
    snprintf(lease, sizeof lease, "%ld", m->cfg.mail_lease);
    const char *p[] = {m->me, lease};
    PGresult *r;
    enum af_db_status st = af_db_exec(m->db, &r,
        "WITH c AS (SELECT id, status AS was FROM mail_outbox "
        "           WHERE (status = 'pending' AND next_attempt_at <= now()) "
        "              OR (status = 'sending' AND lease_until < now()) "
        "           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "UPDATE mail_outbox o SET status = 'sending', attempts = o.attempts + 1, claimed_by = $1, "
        "       lease_until = now() + make_interval(secs => $2::int) "
        "FROM c WHERE o.id = c.id "
        "RETURNING o.id, o.message_id, o.kind, o.recipient, o.params::text, o.attempts, c.was",
        2, p);
    if (st != AF_DB_OK) {
        af_log(AF_LOG_WARN, "mail_queue_unavailable", "error", af_db_error(m->db), NULL);
        return STEP_DB_DOWN;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STEP_IDLE;
    }
    char id[24], mid[80], kind[40], attempts_s[16];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    snprintf(mid, sizeof mid, "%s", PQgetvalue(r, 0, 1));
    snprintf(kind, sizeof kind, "%s", PQgetvalue(r, 0, 2));
    char *rcpt = strdup(PQgetvalue(r, 0, 3));
    json_object *params = PQgetisnull(r, 0, 4) ? NULL : json_tokener_parse(PQgetvalue(r, 0, 4));
    long attempts = atol(PQgetvalue(r, 0, 5));
    bool reclaimed = !strcmp(PQgetvalue(r, 0, 6), "sending");
    PQclear(r);
    snprintf(attempts_s, sizeof attempts_s, "%ld", attempts);
    if (reclaimed)
        af_log(AF_LOG_WARN, "mail_unknown_outcome", "id", id, "message_id", mid, "kind", kind,
               "attempts", attempts_s, NULL);

    char err[512] = "";
    enum af_mail_result res;
    char *msg = rcpt ? af_mail_render(m->templates, &m->cfg, kind, mid, rcpt, params, time(NULL),
                                      err, sizeof err)
                     : NULL;
    if (!msg) {
        if (!*err)
            snprintf(err, sizeof err, "out of memory");
        res = AF_MAIL_FAILED;
    } else {
        res = af_transport_send(m->transport, rcpt, msg, err, sizeof err);
        sodium_memzero(msg, strlen(msg));
        free(msg);
    }
    json_object_put(params);
    free(rcpt);

    enum step out = STEP_DONE;
    if (res == AF_MAIL_SENT) {
        const char *q[] = {id, m->me};
        record(m, id,
               "UPDATE mail_outbox SET status = 'sent', sent_at = now(), params = NULL, "
               "  lease_until = NULL, last_error = NULL WHERE id = $1 AND claimed_by = $2 RETURNING status",
               2, q, NULL, 0);
        m->sent++;
        af_log(AF_LOG_INFO, "mail_sent", "id", id, "message_id", mid, "kind", kind,
               "attempts", attempts_s, NULL);
        return STEP_DONE;
    }
    long delay = backoff(m, attempts);
    char delay_s[24], max_s[24], status[16] = "";
    snprintf(delay_s, sizeof delay_s, "%ld", delay);
    snprintf(max_s, sizeof max_s, "%ld", res == AF_MAIL_FAILED ? 0 : m->cfg.mail_max_attempts);
    const char *q[] = {id, m->me, max_s, delay_s, err};
    record(m, id,
           "UPDATE mail_outbox SET status = CASE WHEN attempts >= $3::int THEN 'dead' ELSE 'pending' END, "
           "  next_attempt_at = now() + make_interval(secs => $4::int), lease_until = NULL, "
           "  last_error = left($5, 500) WHERE id = $1 AND claimed_by = $2 RETURNING status",
           5, q, status, sizeof status);
    if (!strcmp(status, "dead")) {
        m->dead++;
        af_log(AF_LOG_ERROR, "mail_dead", "id", id, "message_id", mid, "kind", kind,
               "attempts", attempts_s, "error", err, NULL);
    } else {
        m->retried++;
        af_log(AF_LOG_WARN, "mail_retry", "id", id, "message_id", mid, "kind", kind,
               "attempts", attempts_s, "retry_in_s", delay_s, "error", err, NULL);
    }
    if (res == AF_MAIL_DOWN) {
        /* The server is away: do not spend every queued message's attempts
         * on it; wait as long as this message will. */
        *pause = delay;
        out = STEP_DOWN;
    }
    return out;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f, "usage: authflow-mailer [-c CONFIG] [--once]\n"
               "CONFIG defaults to $AUTHFLOW_CONFIG, else %s.\n",
            af_config_default_path());
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool once = false;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"once", no_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'o': once = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    af_log_set_program("authflow-mailer");
    struct mailer m;
    memset(&m, 0, sizeof m);
    char err[512];
    if (sodium_init() < 0) {
        fprintf(stderr, "authflow-mailer: libsodium failed to initialise\n");
        return 1;
    }
    if (af_config_load(&m.cfg, config ? config : af_config_default_path(), err, sizeof err) < 0) {
        fprintf(stderr, "authflow-mailer: configuration: %s\n", err);
        return 1;
    }
    enum af_log_level level;
    if (af_log_level_parse(m.cfg.log_level, &level) == 0)
        af_log_set_level(level);
    if (!(m.templates = af_templates_load(m.cfg.templates_dir, err, sizeof err))) {
        fprintf(stderr, "authflow-mailer: templates: %s\n", err);
        return 1;
    }
    if (!(m.transport = af_transport_new(&m.cfg, err, sizeof err))) {
        fprintf(stderr, "authflow-mailer: transport: %s\n", err);
        return 1;
    }
    m.db = af_db_new(m.cfg.db_dsn, m.cfg.db_connect_timeout);
    af_db_set_timeout(m.db, m.cfg.db_query_timeout_ms);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(m.me, sizeof m.me, "%s:%ld", host, (long)getpid());

    if (pipe(wake_pipe) != 0) {
        fprintf(stderr, "authflow-mailer: pipe: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    af_log(AF_LOG_INFO, "mailer_started", "claimed_by", m.me, "transport", m.cfg.mail_transport,
           "mode", once ? "once" : "daemon", NULL);
    int rc = 0;
    while (!stopping) {
        long pause = 0;
        enum step s = deliver_one(&m, &pause);
        if (s == STEP_DONE)
            continue;
        if (once && (s == STEP_IDLE || s == STEP_DB_DOWN)) {
            rc = s == STEP_DB_DOWN;
            break;
        }
        if (s == STEP_DOWN) {
            if (once)
                continue;
            wait_for_work(&m, pause);
            continue;
        }
        if (s == STEP_IDLE)
            seal_audit(&m);
        wait_for_work(&m, s == STEP_DB_DOWN ? 2 : next_due(&m));
    }
    char sent[24], retried[24], dead[24];
    snprintf(sent, sizeof sent, "%ld", m.sent);
    snprintf(retried, sizeof retried, "%ld", m.retried);
    snprintf(dead, sizeof dead, "%ld", m.dead);
    af_log(AF_LOG_INFO, "mailer_stopped", "sent", sent, "retried", retried, "dead", dead, NULL);
    listen_close(&m);
    af_db_free(m.db);
    af_transport_free(m.transport);
    af_templates_free(m.templates);
    af_config_free(&m.cfg);
    return rc;
}
