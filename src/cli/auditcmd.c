/* auditcmd.c — `authflowctl audit verify`: checks the audit trail's hash
 * chain (sql/004_admin_audit.sql).
 *
 * Sealing gives each audit row its place in the chain and the SHA-256 of
 * its content after the previous row's hash. af_audit_verify() seals what
 * is waiting, then walks the chain from the anchor the last pruning left
 * and names the first row that does not fit: one changed or removed after
 * it was sealed. The walk is one statement, so rows written meanwhile wait
 * for the next run. Exit 0 only for an intact chain. */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "db.h"

/* A column as JSON: a number, a string, or null. */
static json_object *column(PGresult *r, int col, bool number)
{
    if (PQgetisnull(r, 0, col))
        return NULL;
    const char *v = PQgetvalue(r, 0, col);
    return number ? json_object_new_int64(atoll(v)) : json_object_new_string(v);
}

static int verify(struct af_ctx *ctx, bool json)
{
    PGresult *r;
    if (af_db_exec(ctx->db, &r,
                   "SELECT bad_id, reason, checked, head_id, encode(head_hash, 'hex') FROM af_audit_verify()",
                   0, NULL) != AF_DB_OK) {
        fprintf(stderr, "authflowctl: %s\n", af_db_error(ctx->db));
        return 1;
    }
    bool intact = PQgetisnull(r, 0, 0);
    if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "intact", json_object_new_boolean(intact));
        json_object_object_add(o, "rows", column(r, 2, true));
        json_object_object_add(o, "bad_id", column(r, 0, true));
        json_object_object_add(o, "reason", column(r, 1, false));
        json_object_object_add(o, "head_id", column(r, 3, true));
        json_object_object_add(o, "head_hash", column(r, 4, false));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
    } else if (intact) {
        /* An empty trail (nothing written yet, or all pruned) has no head row. */
        if (PQgetisnull(r, 0, 3))
            printf("audit chain intact: 0 rows\n");
        else
            printf("audit chain intact: %s rows, head %s %s\n", PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
                   PQgetvalue(r, 0, 4));
    } else {
        printf("audit chain broken at row %s: %s\n", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return intact ? 0 : 1;
}

int af_cli_audit(struct af_ctx *ctx, int argc, char **argv)
{
    if (argc >= 1 && argc <= 2 && !strcmp(argv[0], "verify") && (argc == 1 || !strcmp(argv[1], "--json")))
        return verify(ctx, argc == 2);
    fprintf(stderr, "usage: authflowctl audit verify [--json]\n");
    return 2;
}
