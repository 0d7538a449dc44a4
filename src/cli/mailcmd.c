/* mailcmd.c — `authflowctl mail test ADDRESS` sends one message through the
 * configured transport, outside the outbox, to check the set-up;
 * `authflowctl mail status` counts the outbox's messages by state. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "db.h"
#include "mail.h"
#include "util.h"

static int mail_test(const struct af_config *cfg, const char *address)
{
    char err[512], addr[320];
    if (!af_mail_addr_spec(address, addr, sizeof addr) || strcmp(addr, address) != 0) {
        fprintf(stderr, "authflowctl: '%s' is not an email address\n", address);
        return 2;
    }
    struct af_templates *t = af_templates_load(cfg->templates_dir, err, sizeof err);
    if (!t) {
        fprintf(stderr, "authflowctl: templates: %s\n", err);
        return 1;
    }
    struct af_transport *tr = af_transport_new(cfg, err, sizeof err);
    if (!tr) {
        fprintf(stderr, "authflowctl: transport: %s\n", err);
        af_templates_free(t);
        return 1;
    }
    char id[37];
    af_uuid4(id);
    int rc = 1;
    char *msg = af_mail_render(t, cfg, AF_MAIL_TEST, id, addr, NULL, time(NULL), err, sizeof err);
    if (!msg) {
        fprintf(stderr, "authflowctl: rendering: %s\n", err);
    } else {
        enum af_mail_result res = af_transport_send(tr, addr, msg, err, sizeof err);
        if (res == AF_MAIL_SENT) {
            printf("sent %s\n", id);
            rc = 0;
        } else {
            fprintf(stderr, "authflowctl: not sent (%s): %s\n",
                    res == AF_MAIL_FAILED ? "refused" : "temporary failure", err);
        }
        free(msg);
    }
    af_transport_free(tr);
    af_templates_free(t);
    return rc;
}

static int mail_status(const struct af_config *cfg)
{
    struct af_db *db = af_db_new(cfg->db_dsn, cfg->db_connect_timeout);
    PGresult *r;
    int rc = 1;
    if (af_db_exec(db, &r,
                   "SELECT s, (SELECT count(*) FROM mail_outbox WHERE status = s) "
                   "FROM unnest(ARRAY['pending', 'sending', 'sent', 'dead']) s", 0, NULL) == AF_DB_OK) {
        for (int i = 0; i < PQntuples(r); i++)
            printf("%s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
        PQclear(r);
        rc = 0;
    } else {
        fprintf(stderr, "authflowctl: %s\n", af_db_error(db));
    }
    af_db_free(db);
    return rc;
}

int af_cli_mail(const struct af_config *cfg, int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[0], "test"))
        return mail_test(cfg, argv[1]);
    if (argc == 1 && !strcmp(argv[0], "status"))
        return mail_status(cfg);
    fprintf(stderr, "usage: authflowctl mail test ADDRESS | mail status\n");
    return 2;
}
