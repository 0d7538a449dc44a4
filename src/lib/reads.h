/* reads.h — read-only queries on a streaming replica ([database] read_dsn).
 *
 * A read goes to the replica while it answers and lags the primary by no
 * more than read_max_lag_ms (looked at once a second per process), and
 * unless the user it is for wrote something in the last read_max_lag_ms + 2
 * seconds (read-your-writes, marked in Redis; without Redis every read
 * goes to the primary). A replica that fails a query hands it to the
 * primary at once. Only list and detail reads come here; anything that
 * decides access (sessions, revocations, the user cache) reads the primary. */
#ifndef AF_READS_H
#define AF_READS_H
#include "ctx.h"
#include "db.h"
#include "http.h"

/* af_db_exec on the replica or the primary (see above). */
enum af_db_status af_read(struct af_ctx *ctx, struct af_req *req, PGresult **res, const char *sql, int n,
                          const char *const *params);
/* The user's reads go to the primary for a while: they just wrote, or
 * someone wrote about them. No-op without a replica. */
void af_read_mark_writer(struct af_ctx *ctx, const char *user_id);

/* For /health: "ok", "lagging", "down" or "not_configured"; latency of a
 * round trip and the replica's lag, when it answered. */
const char *af_read_replica_health(struct af_ctx *ctx, long *latency_us, long *lag_ms);

#endif
