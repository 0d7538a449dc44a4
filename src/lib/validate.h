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

/* The policy for a new password (NIST SP 800-63B 5.1.1, OWASP ASVS 2.1):
 * the length rule of af_password_check with [passwords] min_length, and no
 * composition rules; the password must not be, or be built on, an entry of
 * the common-password list ([passwords] common_list); must not contain the
 * account's email local part or name, nor the service's name; and, with
 * [passwords] dictionary_check, must pass libpwquality (cracklib's
 * dictionary words, sequences and repeats). Loaded once per process, in
 * the programs that set passwords. */
struct af_config;
struct af_pwpolicy;

/* -1 with the reason, naming the config key, in err: an unreadable list or
 * a dictionary check that cannot work on this host refuse the start. */
int af_pwpolicy_load(struct af_pwpolicy **out, const struct af_config *cfg, char *err,
                     size_t errlen);
void af_pwpolicy_free(struct af_pwpolicy *p);
/* NULL when pw may become the password of the account with this email
 * (normalised) and name, either NULL when not known; else the one message
 * to show for the field. */
const char *af_pwpolicy_check(const struct af_pwpolicy *p, const char *pw, const char *email,
                              const char *name);

#endif
