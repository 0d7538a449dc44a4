/* validate.h — checks on user-supplied fields, done at the boundary.
 * Each returns NULL when the value is acceptable, else the message to show
 * for that field. */
#ifndef AF_VALIDATE_H
#define AF_VALIDATE_H
#include <stddef.h>

#define AF_EMAIL_MAX 254
#define AF_PASSWORD_MAX 128
#define AF_NAME_MAX 200

/* Trims and lower-cases into out (AF_EMAIL_MAX + 1 bytes) and checks the
 * address. Non-ASCII addresses are refused. */
const char *af_email_normalize(const char *in, char out[AF_EMAIL_MAX + 1]);
/* Length in code points within [min_len, AF_PASSWORD_MAX]; any Unicode and
 * spaces allowed; never truncated. */
const char *af_password_check(const char *pw, long min_len);
/* A display name: at most AF_NAME_MAX code points, no control characters. */
const char *af_name_check(const char *name);

#endif
