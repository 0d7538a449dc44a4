/* reads.c — reads on the replica (see reads.h). */
#include "reads.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define CHECK_EVERY_US 1000000
/* How long a writer's reads stay on the primary beyond the lag bound: the
 * lag is looked at once a second, and grows by at most a second between
 * two looks. */
#define WRITER_EXTRA_MS 2000

/* -1 when the standby receives nothing (no WAL receiver runs: it lost the
 * primary, and may fall behind without knowing); zero when it has replayed
 * all it received (nothing is missing, whatever the time of the last
 * replayed transaction); otherwise how long ago the last replayed
 * transaction committed on the primary (-1 when none was replayed yet). */
static const char LAG_SQL[] =
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN -1 "
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce((extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint, -1) END";
/* While the replica is down it is looked at after 1, 2, 4 ... 30 s: each
 * look can cost a request a connect timeout. */
#define DOWN_BACKOFF_MAX_US 30000000

enum state { UNKNOWN = 0, OK, LAGGING, DOWN };
static const char *const state_names[] = {"unknown", "ok", "lagging", "down"};

/* Looks at the replica (a round trip) and logs when its state changes. */
static enum state look(struct af_ctx *ctx, long *latency_us)
{
    int64_t t0 = af_now_us();
    PGresult *r;
    enum state s = DOWN;
    if (af_db_exec(ctx->replica, &r, LAG_SQL, 0, NULL) == AF_DB_OK) {
        ctx->replica_lag_ms = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
        s = ctx->replica_lag_ms < 0 || ctx->replica_lag_ms > ctx->cfg.db_read_max_lag_ms ? LAGGING : OK;
    }
    if (latency_us)
        *latency_us = (long)(af_now_us() - t0);
    ctx->replica_checked_us = af_now_us();
    ctx->replica_backoff_us = s != DOWN ? CHECK_EVERY_US
                              : ctx->replica_backoff_us * 2 > DOWN_BACKOFF_MAX_US ? DOWN_BACKOFF_MAX_US
                              : ctx->replica_backoff_us < CHECK_EVERY_US ? CHECK_EVERY_US
                              : ctx->replica_backoff_us * 2;
    if (s != (enum state)ctx->replica_state) {
        char lag[24];
        snprintf(lag, sizeof lag, "%ld", s == DOWN ? -1 : ctx->replica_lag_ms);
        af_log(s == OK ? AF_LOG_INFO : AF_LOG_WARN, "replica_state", "state", state_names[s], "lag_ms", lag,
               "error", s == DOWN ? af_db_error(ctx->replica) : NULL, NULL);
        ctx->replica_state = s;
    }
    return s;
}

static bool replica_usable(struct af_ctx *ctx)
{
    if (af_now_us() - ctx->replica_checked_us >= (ctx->replica_backoff_us ? ctx->replica_backoff_us : CHECK_EVERY_US))
        look(ctx, NULL);
    return ctx->replica_state == OK;
}

/* Whether the user wrote lately; also true when Redis cannot say. */
static bool recent_writer(struct af_ctx *ctx, struct af_req *req)
{
    if (!req->authenticated)
        return false;
    redisReply *r = af_cache_command(ctx->cache, "EXISTS af:ryw:%s", req->claims.sub);
    bool recent = !r || r->type != REDIS_REPLY_INTEGER || r->integer != 0;
    freeReplyObject(r);
    return recent;
}

enum af_db_status af_read(struct af_ctx *ctx, struct af_req *req, PGresult **res, const char *sql, int n,
                          const char *const *params)
{
    if (ctx->replica && replica_usable(ctx) && !recent_writer(ctx, req)) {
        enum af_db_status st = af_db_exec(ctx->replica, res, sql, n, params);
        if (st == AF_DB_OK || st == AF_DB_CONFLICT) {
            af_metrics_add("authflow_db_reads_total{db=\"replica\"}", 1);
            return st;
        }
        /* Down, or the query was cancelled by replay: the primary answers,
         * and the replica is looked at again before it gets another. */
        af_log(AF_LOG_WARN, "replica_query_failed", "error", af_db_error(ctx->replica), NULL);
        ctx->replica_state = DOWN;
        ctx->replica_checked_us = af_now_us();
        ctx->replica_backoff_us = CHECK_EVERY_US;
    }
    if (ctx->replica)
        af_metrics_add("authflow_db_reads_total{db=\"primary\"}", 1);
    return af_db_exec(ctx->db, res, sql, n, params);
}

void af_read_mark_writer(struct af_ctx *ctx, const char *user_id)
{
    if (!ctx->replica || !user_id || !*user_id)
        return;
    redisReply *r = af_cache_command(ctx->cache, "SET af:ryw:%s 1 PX %ld", user_id,
                                     ctx->cfg.db_read_max_lag_ms + WRITER_EXTRA_MS);
    freeReplyObject(r);
}

const char *af_read_replica_health(struct af_ctx *ctx, long *latency_us, long *lag_ms)
{
    *latency_us = 0;
    *lag_ms = 0;
    if (!ctx->replica)
        return "not_configured";
    enum state s = look(ctx, latency_us);
    *lag_ms = s == DOWN ? 0 : ctx->replica_lag_ms;
    return state_names[s];
}
