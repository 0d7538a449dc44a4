/* log.h — structured JSON log lines on stderr.
 *
 * One line per request and per notable event. Callers pass only what is safe
 * to keep: never a password, a token, a code or a key. Values are escaped
 * here, so a client-supplied string cannot forge or break a line. */
#ifndef AF_LOG_H
#define AF_LOG_H

enum af_log_level { AF_LOG_DEBUG, AF_LOG_INFO, AF_LOG_WARN, AF_LOG_ERROR };

void af_log_set_level(enum af_log_level level);
void af_log_set_program(const char *program);
int af_log_level_parse(const char *s, enum af_log_level *out);

/* af_log(level, event, "key", "value", ..., NULL): string fields. */
void af_log(enum af_log_level level, const char *event, ...)
    __attribute__((sentinel));

struct af_log_request {
    const char *request_id, *method, *path, *user_id, *remote_addr, *error;
    int status;
    long duration_us;
};
void af_log_request(const struct af_log_request *r);

#endif
