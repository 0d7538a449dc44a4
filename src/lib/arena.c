/* arena.c — per-request memory arena (see arena.h). */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

struct af_arena {
    struct block *head;     /* current block; older ones follow */
    struct block *first;    /* kept across resets */
    size_t block_size;
};

static struct block *block_new(size_t size)
{
    struct block *b = malloc(sizeof *b + size);
    if (!b)
        abort();
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

af_arena *af_arena_new(size_t block_size)
{
    af_arena *a = malloc(sizeof *a);
    if (!a)
        abort();
    a->block_size = block_size ? block_size : 16384;
    a->head = a->first = block_new(a->block_size);
    return a;
}

void af_arena_free(af_arena *a)
{
    if (!a)
        return;
    struct block *b = a->head;
    while (b) {
        struct block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}

void af_arena_reset(af_arena *a)
{
    struct block *b = a->head;
    while (b) {
        struct block *n = b->next;
        if (b != a->first)
            free(b);
        b = n;
    }
    a->head = a->first;
    a->first->used = 0;
    a->first->next = NULL;
}

void *af_arena_alloc(af_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    struct block *b = a->head;
    if (b->size - b->used < n) {
        size_t sz = n > a->block_size / 4 ? n : a->block_size;
        struct block *nb = block_new(sz);
        if (sz == n) {
            /* A large allocation gets its own block behind the current one,
             * so the current block's free space is not wasted. */
            nb->next = b->next;
            b->next = nb;
            nb->used = n;
            return nb->data;
        }
        nb->next = b;
        a->head = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void *af_arena_calloc(af_arena *a, size_t n)
{
    void *p = af_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *af_arena_strndup(af_arena *a, const char *s, size_t n)
{
    char *p = af_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *af_arena_strdup(af_arena *a, const char *s)
{
    return s ? af_arena_strndup(a, s, strlen(s)) : NULL;
}

char *af_arena_printf(af_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return af_arena_strdup(a, "");
    char *p = af_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
