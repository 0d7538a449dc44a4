/* arena.h — per-request memory arena.
 *
 * Every allocation a request makes comes from one arena that is reset after
 * the response is sent, so a handler cannot leak: there is nothing to free.
 * Blocks are kept between requests (up to a cap) so a warm responder does
 * not call malloc on its hot path. Allocation failure aborts: a responder
 * that cannot get a few KiB cannot answer anyway. */
#ifndef AF_ARENA_H
#define AF_ARENA_H
#include <stddef.h>

typedef struct af_arena af_arena;

af_arena *af_arena_new(size_t block_size);
void af_arena_free(af_arena *a);
/* Releases every allocation; keeps the first block for reuse. */
void af_arena_reset(af_arena *a);
void *af_arena_alloc(af_arena *a, size_t n);
void *af_arena_calloc(af_arena *a, size_t n);
char *af_arena_strdup(af_arena *a, const char *s);
char *af_arena_strndup(af_arena *a, const char *s, size_t n);
char *af_arena_printf(af_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
