/* metrics.c — host-wide counters in a shared file (see metrics.h).
 *
 * The file: a header with an open-addressing index (hash of the series ->
 * slot number + 1), then the slots, handed out in order by an atomic
 * counter. A writer fills a slot's name before it publishes the slot in the
 * index, so readers never see a half-written name. Two processes adding the
 * same new series at once: one wins the index entry, the other's slot is
 * marked dead and skipped (one slot lost, never a count). */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define MAGIC 0x3163727465666d61ULL /* "afmetrc1" */
#define LAYOUT_VERSION 1
#define INDEX_SIZE (2 * AF_METRICS_SLOTS)
#define KEY_MAX 176
#define NVAL 16

enum { FREE = 0, READY = 1, DEAD = 2 };
enum { COUNTER = 1, HISTOGRAM = 2 };

/* Histogram slots: v[0..NB-1] count observations up to BOUNDS[i] (and over
 * the one before), v[NB] those over the last bound and v[NB+2] the sum of
 * all in microseconds. The count is the buckets' sum, so that +Inf and
 * _count always agree with the buckets. */
static const double BOUNDS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NB (int)(sizeof BOUNDS / sizeof BOUNDS[0])

struct slot {
    uint32_t state, kind;
    char key[KEY_MAX];
    uint64_t v[NVAL];
};

struct header {
    uint64_t magic;
    uint32_t version, nslots, next, key_max;
    uint64_t dropped;
    uint32_t index[INDEX_SIZE];
};

#define FILE_SIZE (sizeof(struct header) + (size_t)AF_METRICS_SLOTS * sizeof(struct slot))

static struct header *hdr;
static struct slot *slots;

bool af_metrics_enabled(void) { return hdr != NULL; }

static void warn(const char *path, const char *what)
{
    af_log(AF_LOG_WARN, "metrics_unavailable", "file", path, "error", what, NULL);
}

static bool layout_ok(const struct header *h)
{
    return h->magic == MAGIC && h->version == LAYOUT_VERSION && h->nslots == AF_METRICS_SLOTS &&
           h->key_max == KEY_MAX;
}

int af_metrics_open(const struct af_config *cfg)
{
    if (hdr || !cfg->metrics_enabled || !cfg->metrics_file[0])
        return 0;
    const char *path = cfg->metrics_file;
    /* Two tries: a file of another layout (left by an older version) is
     * unlinked and made again. The lock keeps two processes from both
     * doing that. */
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
        if (fd < 0) {
            warn(path, strerror(errno));
            return -1;
        }
        struct stat st;
        if (flock(fd, LOCK_EX) != 0 || fstat(fd, &st) != 0) {
            warn(path, strerror(errno));
            close(fd);
            return -1;
        }
        if (st.st_nlink == 0) { /* replaced while we waited for the lock */
            close(fd);
            continue;
        }
        bool fresh = st.st_size == 0;
        /* Allocated now: pages of a sparse file on a full tmpfs would
         * fail later, as SIGBUS on first write. */
        int fe = fresh ? posix_fallocate(fd, 0, (off_t)FILE_SIZE) : 0;
        if (fe != 0) {
            warn(path, strerror(fe));
            close(fd);
            return -1;
        }
        if (!fresh && st.st_size != (off_t)FILE_SIZE) {
            unlink(path);
            close(fd);
            continue;
        }
        void *m = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            warn(path, strerror(errno));
            close(fd);
            return -1;
        }
        struct header *h = m;
        if (fresh || h->magic == 0) {
            h->version = LAYOUT_VERSION;
            h->nslots = AF_METRICS_SLOTS;
            h->key_max = KEY_MAX;
            __atomic_store_n(&h->magic, MAGIC, __ATOMIC_RELEASE);
        } else if (!layout_ok(h)) {
            munmap(m, FILE_SIZE);
            unlink(path);
            close(fd);
            continue;
        }
        /* The lock belongs to the open file, which the mapping keeps
         * open: release it explicitly. */
        flock(fd, LOCK_UN);
        close(fd);
        hdr = h;
        slots = (struct slot *)(h + 1);
        return 0;
    }
    warn(path, "the file keeps changing under this process");
    return -1;
}

void af_metrics_close(void)
{
    if (hdr)
        munmap(hdr, FILE_SIZE);
    hdr = NULL;
    slots = NULL;
}

static uint32_t hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (uint32_t)(h ^ (h >> 32));
}

static void drop(void) { __atomic_fetch_add(&hdr->dropped, 1, __ATOMIC_RELAXED); }

/* The slot of a series, made on first use; NULL when the table is full. */
static struct slot *find(const char *key, uint32_t kind)
{
    size_t len = strlen(key);
    if (len >= KEY_MAX) {
        drop();
        return NULL;
    }
    uint32_t h = hash(key);
    struct slot *mine = NULL;
    uint32_t mine_id = 0;
    for (uint32_t i = 0; i < INDEX_SIZE; i++) {
        uint32_t *e = &hdr->index[(h + i) & (INDEX_SIZE - 1)];
        uint32_t id = __atomic_load_n(e, __ATOMIC_ACQUIRE);
        if (id == 0) {
            if (!mine) {
                uint32_t n = __atomic_fetch_add(&hdr->next, 1, __ATOMIC_RELAXED);
                if (n >= AF_METRICS_SLOTS) {
                    __atomic_store_n(&hdr->next, AF_METRICS_SLOTS, __ATOMIC_RELAXED);
                    drop();
                    return NULL;
                }
                mine = &slots[n];
                mine_id = n + 1;
                mine->kind = kind;
                memcpy(mine->key, key, len + 1);
                __atomic_store_n(&mine->state, READY, __ATOMIC_RELEASE);
            }
            uint32_t expect = 0;
            if (__atomic_compare_exchange_n(e, &expect, mine_id, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                return mine;
            id = expect; /* another process took the entry: is it ours? */
        }
        if (id > AF_METRICS_SLOTS)
            return NULL; /* not a table this code wrote */
        struct slot *s = &slots[id - 1];
        if (s != mine && __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == READY &&
            !strcmp(s->key, key)) {
            if (mine)
                __atomic_store_n(&mine->state, DEAD, __ATOMIC_RELEASE);
            return s->kind == kind ? s : NULL;
        }
    }
    if (mine)
        __atomic_store_n(&mine->state, DEAD, __ATOMIC_RELEASE);
    drop();
    return NULL;
}

void af_metrics_add(const char *series, uint64_t n)
{
    if (!hdr)
        return;
    struct slot *s = find(series, COUNTER);
    if (s)
        __atomic_fetch_add(&s->v[0], n, __ATOMIC_RELAXED);
}

void af_metrics_incf(const char *fmt, ...)
{
    if (!hdr)
        return;
    char key[KEY_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= KEY_MAX) {
        drop();
        return;
    }
    af_metrics_add(key, 1);
}

void af_metrics_observe(const char *series, double seconds)
{
    if (!hdr)
        return;
    struct slot *s = find(series, HISTOGRAM);
    if (!s)
        return;
    int b = 0;
    while (b < NB && seconds > BOUNDS[b])
        b++;
    __atomic_fetch_add(&s->v[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->v[NB + 2], (uint64_t)(seconds > 0 ? seconds * 1e6 : 0), __ATOMIC_RELAXED);
}

/* HELP texts of the families authflow writes. */
static const struct {
    const char *name, *help;
} HELP[] = {
    {"authflow_http_requests_total", "HTTP requests answered, by endpoint group, route pattern, method and status."},
    {"authflow_http_request_duration_seconds", "Time from reading a request to its answer, by group and route."},
    {"authflow_logins_total", "Password logins by result (success or the problem code)."},
    {"authflow_tokens_issued_total", "Tokens issued, by kind."},
    {"authflow_refresh_reuse_detected_total", "Rotated refresh tokens presented again (the session was revoked)."},
    {"authflow_rate_limited_total", "Requests refused with 429, by group and limit."},
    {"authflow_gate_decisions_total", "authflow-gate answers by result (allow, redirect or the problem code)."},
    {"authflow_db_errors_total", "PostgreSQL failures by database (primary, replica) and kind."},
    {"authflow_db_reconnects_total", "PostgreSQL connections opened again after one was lost or refused."},
    {"authflow_db_reads_total", "Read-only queries by the database that answered them."},
    {"authflow_redis_errors_total", "Redis failures by kind."},
    {"authflow_redis_reconnects_total", "Redis connections opened again after one was lost or refused."},
    {"authflow_keys_reloaded_total", "Signing key sets loaded again after the key directory changed."},
};

static const char *help_of(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof HELP / sizeof HELP[0]; i++)
        if (strlen(HELP[i].name) == len && !strncmp(HELP[i].name, name, len))
            return HELP[i].help;
    return "authflow counter.";
}

static int by_key(const void *a, const void *b)
{
    const struct slot *x = *(const struct slot *const *)a, *y = *(const struct slot *const *)b;
    return strcmp(x->key, y->key);
}

/* name_bucket{labels,le="x"} from name{labels} (or name). */
static void bucket_line(FILE *f, const char *key, size_t name_len, const char *le, uint64_t v)
{
    const char *labels = key[name_len] == '{' ? key + name_len + 1 : NULL;
    if (labels) {
        size_t ll = strlen(labels) - 1; /* without the closing brace */
        fprintf(f, "%.*s_bucket{%.*s,le=\"%s\"} %llu\n", (int)name_len, key, (int)ll, labels, le,
                (unsigned long long)v);
    } else {
        fprintf(f, "%.*s_bucket{le=\"%s\"} %llu\n", (int)name_len, key, le, (unsigned long long)v);
    }
}

static void suffix_line(FILE *f, const char *key, size_t name_len, const char *suffix, const char *value)
{
    fprintf(f, "%.*s%s%s %s\n", (int)name_len, key, suffix, key + name_len, value);
}

char *af_metrics_render(const char *extra)
{
    if (!hdr)
        return NULL;
    uint32_t n = __atomic_load_n(&hdr->next, __ATOMIC_ACQUIRE);
    if (n > AF_METRICS_SLOTS)
        n = AF_METRICS_SLOTS;
    struct slot **list = malloc(((size_t)n + 1) * sizeof *list);
    if (!list)
        return NULL;
    /* Through the index, as find() does: a slot that lost the race to
     * publish a series (or whose process died before publishing it) is
     * not shown. */
    size_t count = 0;
    for (uint32_t i = 0; i < INDEX_SIZE && count < n; i++) {
        uint32_t id = __atomic_load_n(&hdr->index[i], __ATOMIC_ACQUIRE);
        if (id == 0 || id > n)
            continue;
        struct slot *s = &slots[id - 1];
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == READY && memchr(s->key, '\0', KEY_MAX))
            list[count++] = s;
    }
    qsort(list, count, sizeof *list, by_key);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        free(list);
        return NULL;
    }
    const char *family = NULL;
    size_t family_len = 0;
    for (size_t i = 0; i < count; i++) {
        const struct slot *s = list[i];
        size_t nl = strcspn(s->key, "{");
        if (!family || nl != family_len || strncmp(family, s->key, nl)) {
            family = s->key;
            family_len = nl;
            fprintf(f, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)nl, s->key, help_of(s->key, nl),
                    (int)nl, s->key, s->kind == HISTOGRAM ? "histogram" : "counter");
        }
        if (s->kind == COUNTER) {
            fprintf(f, "%s %llu\n", s->key,
                    (unsigned long long)__atomic_load_n(&s->v[0], __ATOMIC_RELAXED));
            continue;
        }
        uint64_t v[NVAL], cum = 0;
        for (int k = 0; k < NVAL; k++)
            v[k] = __atomic_load_n(&s->v[k], __ATOMIC_RELAXED);
        char le[32];
        for (int b = 0; b < NB; b++) {
            cum += v[b];
            snprintf(le, sizeof le, "%g", BOUNDS[b]);
            bucket_line(f, s->key, nl, le, cum);
        }
        cum += v[NB];
        bucket_line(f, s->key, nl, "+Inf", cum);
        char num[48];
        snprintf(num, sizeof num, "%.6f", (double)v[NB + 2] / 1e6);
        suffix_line(f, s->key, nl, "_sum", num);
        snprintf(num, sizeof num, "%llu", (unsigned long long)cum);
        suffix_line(f, s->key, nl, "_count", num);
    }
    fprintf(f, "# HELP authflow_metrics_dropped_total Updates lost because the metrics table was full "
               "or a series name too long.\n# TYPE authflow_metrics_dropped_total counter\n"
               "authflow_metrics_dropped_total %llu\n",
            (unsigned long long)__atomic_load_n(&hdr->dropped, __ATOMIC_RELAXED));
    if (extra)
        fputs(extra, f);
    free(list);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
