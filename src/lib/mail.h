/* mail.h — rendering and delivering the outbox's messages.
 *
 * Responders never send mail: they insert an outbox row (a template name
 * and its parameters) in the same transaction as the change that causes
 * it. authflow-mailer (and `authflowctl mail test`) render the row with the
 * templates of [mail] templates_dir and hand it to the configured transport:
 * SMTP through libcurl (plain, STARTTLS or implicit TLS, AUTH, timeouts) or
 * a `sendmail -t -i` pipe.
 *
 * A template is <dir>/<kind>.txt: a "Subject: ..." line, an empty line and
 * the plain-text body; <dir>/<kind>.html, when present, is the body of an
 * HTML alternative. Placeholders: {{name}} {{email}} {{code}} {{link}}
 * {{minutes}} {{product}}; any other {{...}} is an error when the templates
 * are loaded. Values are inserted as data: header values are RFC 2047
 * encoded, HTML values escaped, so a user-chosen name cannot add a header,
 * a recipient or markup. */
#ifndef AF_MAIL_H
#define AF_MAIL_H
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "config.h"

/* The kinds of message authflow sends. */
#define AF_MAIL_VERIFY_EMAIL "verify_email"
#define AF_MAIL_PASSWORD_RESET "password_reset"
#define AF_MAIL_PASSWORD_CHANGED "password_changed"
#define AF_MAIL_INVITE "invite"
#define AF_MAIL_TEST "test"

struct af_templates;

/* Loads and checks every kind's template from dir. NULL and a message in
 * err on failure. */
struct af_templates *af_templates_load(const char *dir, char *err, size_t errlen);
void af_templates_free(struct af_templates *t);

/* The whole RFC 5322 message (CRLF line ends), malloc'd; NULL and a
 * message in err when the kind is unknown or the parameters are not an
 * object of strings. params may be NULL. message_id is the left-hand part
 * of the Message-ID; the right-hand part is the domain of [mail] from. */
char *af_mail_render(const struct af_templates *t, const struct af_config *cfg, const char *kind,
                     const char *message_id, const char *recipient, json_object *params,
                     time_t now, char *err, size_t errlen);

enum af_mail_result {
    AF_MAIL_SENT,       /* accepted by the server / sendmail */
    AF_MAIL_RETRY,      /* a temporary failure: try again later */
    AF_MAIL_DOWN,       /* the server could not be reached: retry, and stop the batch */
    AF_MAIL_FAILED,     /* refused for good (5xx): do not retry */
};

struct af_transport;

/* The transport of [mail] transport. NULL and a message in err on failure. */
struct af_transport *af_transport_new(const struct af_config *cfg, char *err, size_t errlen);
void af_transport_free(struct af_transport *tr);
/* Delivers one rendered message to recipient. err gets a one-line reason
 * (never the message or a password). */
enum af_mail_result af_transport_send(struct af_transport *tr, const char *recipient,
                                      const char *message, char *err, size_t errlen);

/* Pure helpers, exposed for the unit tests. */

/* Quoted-printable (RFC 2045) of text whose lines end in LF or CRLF;
 * output lines end in CRLF and are at most 76 characters. malloc'd. */
char *af_mail_qp(const char *text);
/* A header value: printable ASCII without CR/LF is kept as is; anything
 * else becomes RFC 2047 encoded-words (UTF-8, base64). malloc'd. */
char *af_mail_header_value(const char *text);
/* The addr-spec of "Name <a@b>" or "a@b" into out; false when there is
 * none or it holds characters that cannot be in an envelope address. */
bool af_mail_addr_spec(const char *from, char *out, size_t outlen);
#endif
