/* metrics.h — counters and histograms shared by every authflow process on
 * the host, rendered as Prometheus text by GET /metrics.
 *
 * The numbers live in one memory-mapped file ([metrics] file, on a tmpfs),
 * so a scrape sees the sums over all responder processes, whichever one
 * answers it, and a counter never goes back when one process restarts. A
 * series is a name with its labels, e.g.
 *     authflow_logins_total{result="success"}
 * Series are added on first use (at most AF_METRICS_SLOTS in all; more are
 * counted in authflow_metrics_dropped_total) and updated with atomic adds:
 * no lock, no system call. Before af_metrics_open, or when it failed, every
 * call is a no-op. */
#ifndef AF_METRICS_H
#define AF_METRICS_H
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define AF_METRICS_SLOTS 2048

/* Maps the file (creating it, or replacing one of another layout). Logs
 * and returns -1 when it cannot; metrics are then off in this process. */
int af_metrics_open(const struct af_config *cfg);
void af_metrics_close(void);
bool af_metrics_enabled(void);

/* Adds n to a counter series. */
void af_metrics_add(const char *series, uint64_t n);
/* af_metrics_addf("authflow_x_total{a=\"%s\"}", ...): the same, formatted.
 * Label values must not hold '"', '\\' or newlines (callers pass fixed
 * words, route patterns and status numbers, never client text). */
void af_metrics_incf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records one observation (seconds) in a histogram series. */
void af_metrics_observe(const char *series, double seconds);

/* The whole table as Prometheus text exposition (version 0.0.4), with
 * extra appended (gauges computed by the caller; may be NULL). The caller
 * frees the result. NULL when metrics are off. */
char *af_metrics_render(const char *extra);

#endif
