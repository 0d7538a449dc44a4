/* cache.h — Redis access: a cache and counter store, never the source of
 * truth. Every caller has a PostgreSQL path for when Redis is unreachable.
 *
 * Connect and command timeouts are bounded (config), errors are sticky in
 * hiredis so a broken context is dropped and reconnected, and after a
 * failure further attempts wait a moment, so a Redis outage costs a request
 * at most one timeout. */
#ifndef AF_CACHE_H
#define AF_CACHE_H
#include <hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct af_cache;

struct af_cache *af_cache_new(const struct af_config *cfg);
void af_cache_free(struct af_cache *c);

/* A command (redisCommand format). NULL when Redis is unreachable or
 * answered an error; caller frees the reply with freeReplyObject(). */
redisReply *af_cache_command(struct af_cache *c, const char *fmt, ...);
/* Runs several commands in one round trip; replies[i] as above. Returns
 * false when Redis is unreachable (all replies NULL). */
bool af_cache_pipeline(struct af_cache *c, int n, const char *const *cmds[], const size_t *argc,
                       redisReply **replies);
bool af_cache_ping(struct af_cache *c, long *latency_us);

/* A Lua script run with EVALSHA (loaded on first use and again when Redis
 * has forgotten it). Define one per script as a static object. */
struct af_cache_script {
    const char *source;
    char sha[41];
};
/* EVALSHA script with nkeys keys and nargs arguments; NULL as for
 * af_cache_command. */
redisReply *af_cache_eval(struct af_cache *c, struct af_cache_script *s, int nkeys,
                          const char *const *keys, int nargs, const char *const *args);

/* Counts the connections this process made to Redis: a caller that keeps
 * state about Redis notices a new connection (Redis restarted, or was
 * unreachable for a while) when the number changes. */
unsigned long af_cache_connections(const struct af_cache *c);
/* The next command tries Redis at once even if a recent failure would make
 * it wait: for writes that must not be skipped. */
void af_cache_retry_now(struct af_cache *c);

/* Subscription to one channel on a connection of its own, read without
 * ever waiting: af_cache_listen() connects and subscribes when needed, then
 * hands every message that has arrived to fn. With the calls that carry it,
 * it PINGs Redis on the subscription every half of max_lag_ms.
 *
 * It returns true when Redis answered a PING sent at most max_lag_ms ago;
 * *covered_since is then the time (af_now_us) since which Redis never went
 * longer than max_lag_ms without an answered PING and the subscription
 * never broke. A caller may trust that it has seen every message published
 * since *covered_since, except while Redis hung for less than max_lag_ms,
 * which is shorter than any hang that fails a command: keep max_lag_ms
 * below the timeouts. */
typedef void af_cache_message_fn(void *arg, const char *payload, size_t len);
bool af_cache_listen(struct af_cache *c, const char *channel, long max_lag_ms, af_cache_message_fn *fn,
                     void *arg, int64_t *covered_since);

#endif
