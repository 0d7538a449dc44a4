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

#endif
