/* usercmd.c — `authflowctl user ...` and `authflowctl role ...`.
 *
 * Every change to a user goes through the admin library (admin.h), the code
 * behind authflow-admin: the last-admin rule, the audit rows (marked
 * "via": "authflowctl"), the revocation of sessions in Redis and the removal
 * of the cached user object happen exactly as for a change made over HTTP,
 * so nothing a responder holds goes stale. A password comes on stdin only
 * (never in argv, where ps shows it) and is wiped once hashed. */
#include <getopt.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "arena.h"
#include "cli.h"
#include "http.h"
#include "mfa.h"
#include "password.h"
#include "util.h"
#include "validate.h"

#define MAX_ROLES 64
#define PAGE 200

/* The options of every subcommand; each accepts those its mask names. */
enum {
    O_ROLE = 1 << 0, O_NAME = 1 << 1, O_PASSWORD_STDIN = 1 << 2, O_VERIFIED = 1 << 3,
    O_JSON = 1 << 4, O_QUERY = 1 << 5, O_STATUS = 1 << 6, O_DESCRIPTION = 1 << 7,
};

static const struct option long_options[] = {
    {"role", required_argument, NULL, O_ROLE},
    {"name", required_argument, NULL, O_NAME},
    {"password-stdin", no_argument, NULL, O_PASSWORD_STDIN},
    {"verified", no_argument, NULL, O_VERIFIED},
    {"json", no_argument, NULL, O_JSON},
    {"query", required_argument, NULL, O_QUERY},
    {"status", required_argument, NULL, O_STATUS},
    {"description", required_argument, NULL, O_DESCRIPTION},
    {NULL, 0, NULL, 0},
};

struct opts {
    const char *roles[MAX_ROLES];
    int nroles;
    const char *name, *query, *status, *description;
    bool password_stdin, verified, json;
    char **args;                /* the operands */
    int nargs;
};

struct run {
    struct af_ctx *ctx;
    struct af_req req;
    const struct opts *o;
};

typedef int (*handler)(struct run *r);

static const struct af_actor cli_actor = {.user_id = NULL, .via = "authflowctl"};

static void print_json(json_object *o)
{
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* The exit status and message for a failed library call; who names the
 * user (or role) the command was about. */
static int failed(struct af_ctx *ctx, enum af_admin_status st, const char *who, const char *detail)
{
    switch (st) {
    case AF_ADMIN_OK:
        return 0;
    case AF_ADMIN_NOT_FOUND:
        fprintf(stderr, "authflowctl: no user %s\n", who);
        return 1;
    case AF_ADMIN_LAST_ADMIN:
        fprintf(stderr, "authflowctl: %s is the last active admin; make another user admin first\n", who);
        return 1;
    case AF_ADMIN_UNKNOWN_ROLE:
        fprintf(stderr, "authflowctl: no role '%s' (see authflowctl role list)\n", detail ? detail : "?");
        return 1;
    case AF_ADMIN_EMAIL_TAKEN:
        fprintf(stderr, "authflowctl: %s already has an account\n", who);
        return 1;
    case AF_ADMIN_INVALID:      /* a filter the library refuses (--status) */
        fprintf(stderr, "authflowctl: invalid %s\n", detail ? detail : "request");
        return 2;
    case AF_ADMIN_UNAVAILABLE:
        fprintf(stderr, "authflowctl: the database is unreachable: %s\n", af_db_error(ctx->db));
        return 1;
    case AF_ADMIN_ERROR:
        break;
    }
    fprintf(stderr, "authflowctl: the database refused the statement: %s\n", af_db_error(ctx->db));
    return 1;
}

/* A user named on the command line, by id or email address, checked at the
 * edge; the email lower-cased as it is stored. NULL after the message. */
static const char *user_arg(struct run *r, const char *arg)
{
    if (af_is_uuid(arg))
        return arg;
    char *email = af_arena_alloc(r->req.arena, AF_EMAIL_MAX + 1);
    if (strchr(arg, '@') && !af_email_normalize(arg, email))
        return email;
    fprintf(stderr, "authflowctl: '%s' is neither a user id nor an email address\n", arg);
    return NULL;
}

/* The id of the user an operand names; NULL after the message, with *rc
 * the exit status. */
static const char *user_id(struct run *r, const char *arg, int *rc)
{
    const char *who = user_arg(r, arg);
    *rc = 2;
    if (!who)
        return NULL;
    if (af_is_uuid(who))
        return who;
    json_object *u = NULL;
    enum af_admin_status st = af_admin_get_user(r->ctx, &r->req, who, &u);
    *rc = failed(r->ctx, st, who, NULL);
    if (st != AF_ADMIN_OK)
        return NULL;
    const char *id = af_arena_strdup(r->req.arena, json_object_get_string(json_object_object_get(u, "id")));
    json_object_put(u);
    return id;
}

/* The --status values that select the user: "active" or "disabled", and
 * "unverified" besides while the address is not verified. */
static const char *status_of(json_object *u)
{
    bool disabled = json_object_get_boolean(json_object_object_get(u, "disabled"));
    bool verified = json_object_get_boolean(json_object_object_get(u, "email_verified"));
    return disabled ? (verified ? "disabled" : "disabled,unverified")
                    : (verified ? "active" : "active,unverified");
}

/* "a,b,c" of a JSON array of strings, "-" when empty. */
static const char *joined(struct run *r, json_object *list)
{
    size_t n = json_object_array_length(list);
    if (n == 0)
        return "-";
    const char *s = "";
    for (size_t i = 0; i < n; i++)
        s = af_arena_printf(r->req.arena, "%s%s%s", s, i ? "," : "",
                            json_object_get_string(json_object_array_get_idx(list, i)));
    return s;
}

/* A name or description from argv: valid UTF-8 (a responder's JSON parser
 * sees to that; nothing does for argv), then the display-name rule. */
static const char *text_check(const char *s)
{
    return af_utf8_valid(s, strlen(s)) ? af_name_check(s) : "is not valid UTF-8";
}

/* Reads one line of stdin into pw (the newline dropped, nothing else).
 * -1 when the line does not fit: longer than any acceptable password. */
static int read_password(char *pw, size_t size)
{
    /* Unbuffered: no copy of the line stays behind in stdio's buffer. */
    setvbuf(stdin, NULL, _IONBF, 0);
    if (!fgets(pw, (int)size, stdin)) {
        pw[0] = '\0';
        return 0;
    }
    size_t n = strlen(pw);
    if (n > 0 && pw[n - 1] == '\n')
        pw[n - 1] = '\0';
    else if (n == size - 1 && !feof(stdin))
        return -1;
    return 0;
}

static int user_create(struct run *r)
{
    const struct opts *o = r->o;
    char email[AF_EMAIL_MAX + 1];
    const char *why = af_email_normalize(o->args[0], email);
    if (why) {
        fprintf(stderr, "authflowctl: email %s\n", why);
        return 2;
    }
    if (o->name && (why = text_check(o->name))) {
        fprintf(stderr, "authflowctl: name %s\n", why);
        return 2;
    }
    /* Room for AF_PASSWORD_MAX code points of 4 bytes, and a newline. */
    char pw[4 * AF_PASSWORD_MAX + 2], hash[AF_HASH_LEN] = "", err[512];
    if (o->password_stdin) {
        int rc = 0;
        /* The screening lists, loaded before the password is read. */
        if (!r->ctx->pwpolicy &&
            af_pwpolicy_load(&r->ctx->pwpolicy, &r->ctx->cfg, err, sizeof err) < 0) {
            fprintf(stderr, "authflowctl: configuration: %s\n", err);
            return 1;
        }
        if (read_password(pw, sizeof pw) < 0) {
            fprintf(stderr, "authflowctl: password must be at most %d characters long\n", AF_PASSWORD_MAX);
            rc = 1;
        } else if (!af_utf8_valid(pw, strlen(pw))) {
            fprintf(stderr, "authflowctl: password is not valid UTF-8\n");
            rc = 1;
        } else if ((why = af_pwpolicy_check(r->ctx->pwpolicy, pw, email, o->name))) {
            fprintf(stderr, "authflowctl: password %s\n", why);
            rc = 1;
        } else if (af_password_hash(&r->ctx->cost, pw, hash) != 0) {
            fprintf(stderr, "authflowctl: password hashing failed (out of memory?)\n");
            rc = 1;
        }
        sodium_memzero(pw, sizeof pw);
        if (rc)
            return rc;
    }
    struct af_new_user nu = {
        .email = email,
        .password_hash = o->password_stdin ? hash : NULL,
        .full_name = o->name,
        .roles = o->nroles ? o->roles : NULL,
        .nroles = o->nroles,
        .email_verified = o->verified,
    };
    json_object *u = NULL;
    const char *detail = NULL;
    enum af_admin_status st = af_admin_create_user(r->ctx, &r->req, &cli_actor, &nu, &u, &detail);
    sodium_memzero(hash, sizeof hash);
    if (st != AF_ADMIN_OK)
        return failed(r->ctx, st, email, detail);
    if (o->json)
        print_json(u);
    else
        printf("%s\n", json_object_get_string(json_object_object_get(u, "id")));
    json_object_put(u);
    return 0;
}

static int user_list(struct run *r)
{
    const struct opts *o = r->o;
    if (o->nroles > 1) {
        fprintf(stderr, "authflowctl: user list takes one --role\n");
        return 2;
    }
    struct af_user_filter f = {
        .q = o->query, .role = o->nroles ? o->roles[0] : NULL, .status = o->status, .limit = PAGE,
    };
    /* Text goes out page by page; JSON is one array, so it waits. */
    json_object *all = o->json ? json_object_new_array() : NULL;
    int rc = 0;
    do {
        json_object *page = NULL;
        const char *detail = NULL;
        enum af_admin_status st = af_admin_list_users(r->ctx, &r->req, &f, &page, &detail);
        if (st != AF_ADMIN_OK) {
            rc = failed(r->ctx, st, "", detail);
            break;
        }
        json_object *items = json_object_object_get(page, "items");
        for (size_t i = 0; i < json_object_array_length(items); i++) {
            json_object *u = json_object_array_get_idx(items, i);
            if (all)
                json_object_array_add(all, json_object_get(u));
            else
                printf("%s %s %s %s\n", json_object_get_string(json_object_object_get(u, "id")),
                       json_object_get_string(json_object_object_get(u, "email")),
                       joined(r, json_object_object_get(u, "roles")), status_of(u));
        }
        json_object *next = json_object_object_get(page, "next_cursor");
        f.cursor = next && json_object_is_type(next, json_type_string)
                       ? af_arena_strdup(r->req.arena, json_object_get_string(next))
                       : NULL;
        json_object_put(page);
    } while (f.cursor);
    if (all && rc == 0)
        print_json(all);
    json_object_put(all);
    return rc;
}

static int user_show(struct run *r)
{
    const char *who = user_arg(r, r->o->args[0]);
    if (!who)
        return 2;
    json_object *u = NULL;
    enum af_admin_status st = af_admin_get_user(r->ctx, &r->req, who, &u);
    if (st != AF_ADMIN_OK)
        return failed(r->ctx, st, who, NULL);
    if (r->o->json) {
        print_json(u);
    } else {
        json_object_object_foreach(u, key, v) {
            const char *s = json_object_is_type(v, json_type_array) ? joined(r, v)
                            : v ? json_object_get_string(v) : "-";
            printf("%-15s %s\n", key, s);
        }
        printf("%-15s %s\n", "status", status_of(u));
    }
    json_object_put(u);
    return 0;
}

/* set-roles, set-name, disable, enable: one change to one user. */
static int user_change(struct run *r, const struct af_user_change *c)
{
    int rc;
    const char *id = user_id(r, r->o->args[0], &rc);
    if (!id)
        return rc;
    const char *detail = NULL;
    enum af_admin_status st = af_admin_update_user(r->ctx, &r->req, &cli_actor, id, c, &detail);
    return failed(r->ctx, st, r->o->args[0], detail);
}

static int user_set_roles(struct run *r)
{
    struct af_user_change c = {
        .roles = (const char *const *)r->o->args + 1, .nroles = r->o->nargs - 1, .set_roles = true,
        .disabled = -1, .email_verified = -1,
    };
    return user_change(r, &c);
}

static int user_set_name(struct run *r)
{
    const char *why = text_check(r->o->args[1]);
    if (why) {
        fprintf(stderr, "authflowctl: name %s\n", why);
        return 2;
    }
    struct af_user_change c = {.full_name = r->o->args[1], .disabled = -1, .email_verified = -1};
    return user_change(r, &c);
}

static int user_disable(struct run *r)
{
    struct af_user_change c = {.disabled = 1, .email_verified = -1};
    return user_change(r, &c);
}

static int user_enable(struct run *r)
{
    struct af_user_change c = {.disabled = 0, .email_verified = -1};
    return user_change(r, &c);
}

/* mfa-off: for a user who lost both the authenticator app and the
 * recovery codes, once the operator has made sure who is asking. */
static int user_mfa_off(struct run *r)
{
    int rc;
    const char *id = user_id(r, r->o->args[0], &rc);
    if (!id)
        return rc;
    bool found;
    enum af_db_status st = af_mfa_turn_off(r->ctx, &r->req, NULL, id, NULL,
                                           "{\"method\":\"totp\",\"via\":\"authflowctl\"}", &found);
    if (st != AF_DB_OK) {
        fprintf(stderr, "authflowctl: %s\n", af_db_error(r->ctx->db));
        return 1;
    }
    if (!found) {
        fprintf(stderr, "authflowctl: no user %s\n", r->o->args[0]);
        return 1;
    }
    return 0;
}

static int user_delete(struct run *r)
{
    int rc;
    const char *id = user_id(r, r->o->args[0], &rc);
    if (!id)
        return rc;
    return failed(r->ctx, af_admin_delete_user(r->ctx, &r->req, &cli_actor, id), r->o->args[0], NULL);
}

/* The roles table's own rule (001_init.sql), checked before PostgreSQL does. */
static bool role_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || s[0] < 'a' || s[0] > 'z')
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int role_add(struct run *r)
{
    const char *name = r->o->args[0], *desc = r->o->description ? r->o->description : "";
    if (!role_name_ok(name)) {
        fprintf(stderr, "authflowctl: a role name is a lower-case letter, then up to 62 of a-z 0-9 _ -\n");
        return 2;
    }
    const char *why = text_check(desc);
    if (why) {
        fprintf(stderr, "authflowctl: description %s\n", why);
        return 2;
    }
    /* The role and its audit row in one statement. */
    const char *p[] = {name, desc, cli_actor.via};
    enum af_db_status st = af_db_run(
        r->ctx->db,
        "WITH r AS (INSERT INTO roles (name, description) VALUES ($1, $2) RETURNING name, description) "
        "INSERT INTO audit_log (type, detail) SELECT 'role_added', "
        "jsonb_build_object('via', $3::text, 'role', r.name, 'description', r.description) FROM r",
        3, p);
    if (st == AF_DB_CONFLICT) {
        fprintf(stderr, "authflowctl: role '%s' already exists\n", name);
        return 1;
    }
    if (st != AF_DB_OK) {
        fprintf(stderr, "authflowctl: %s\n", af_db_error(r->ctx->db));
        return 1;
    }
    return 0;
}

static int role_list(struct run *r)
{
    PGresult *res;
    if (af_db_exec(r->ctx->db, &res,
                   "SELECT name, description, " AF_TS_SQL("created_at") ", "
                   "(SELECT count(*) FROM user_roles u WHERE u.role = roles.name) FROM roles ORDER BY name",
                   0, NULL) != AF_DB_OK) {
        fprintf(stderr, "authflowctl: %s\n", af_db_error(r->ctx->db));
        return 1;
    }
    json_object *all = r->o->json ? json_object_new_array() : NULL;
    for (int i = 0; i < PQntuples(res); i++) {
        if (!all) {
            printf("%s %s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 3), PQgetvalue(res, i, 1));
            continue;
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(PQgetvalue(res, i, 0)));
        json_object_object_add(o, "description", json_object_new_string(PQgetvalue(res, i, 1)));
        json_object_object_add(o, "created_at", json_object_new_string(PQgetvalue(res, i, 2)));
        json_object_object_add(o, "users", json_object_new_int64(atoll(PQgetvalue(res, i, 3))));
        json_object_array_add(all, o);
    }
    PQclear(res);
    if (all)
        print_json(all);
    json_object_put(all);
    return 0;
}

static const struct command {
    const char *group, *name;
    handler run;
    unsigned options;
    int min_args, max_args;     /* operands; max -1: no limit */
    const char *usage;
} commands[] = {
    {"user", "create", user_create, O_ROLE | O_NAME | O_PASSWORD_STDIN | O_VERIFIED | O_JSON, 1, 1,
     "EMAIL [--role ROLE]... [--name NAME] [--password-stdin] [--verified] [--json]"},
    {"user", "list", user_list, O_QUERY | O_ROLE | O_STATUS | O_JSON, 0, 0,
     "[--query Q] [--role ROLE] [--status active|disabled|unverified] [--json]"},
    {"user", "show", user_show, O_JSON, 1, 1, "ID|EMAIL [--json]"},
    {"user", "set-roles", user_set_roles, 0, 2, MAX_ROLES + 1, "ID|EMAIL ROLE..."},
    {"user", "set-name", user_set_name, 0, 2, 2, "ID|EMAIL NAME"},
    {"user", "disable", user_disable, 0, 1, 1, "ID|EMAIL"},
    {"user", "enable", user_enable, 0, 1, 1, "ID|EMAIL"},
    {"user", "delete", user_delete, 0, 1, 1, "ID|EMAIL"},
    {"user", "mfa-off", user_mfa_off, 0, 1, 1, "ID|EMAIL"},
    {"role", "add", role_add, O_DESCRIPTION, 1, 1, "NAME [--description TEXT]"},
    {"role", "list", role_list, O_JSON, 0, 0, "[--json]"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static int usage(const char *group)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].group, group))
            fprintf(stderr, "%s authflowctl %s %s %s\n", i && !strcmp(commands[i - 1].group, group)
                    ? "      " : "usage:", group, commands[i].name, commands[i].usage);
    return 2;
}

/* Options anywhere among the operands; 0, or 2 after the usage. */
static int parse(const struct command *c, int argc, char **argv, struct opts *o)
{
    optind = 0;   /* glibc: a full restart of getopt */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (opt == '?' || !(c->options & (unsigned)opt))
            return 2;
        switch (opt) {
        case O_ROLE:
            if (o->nroles == MAX_ROLES)
                return 2;
            o->roles[o->nroles++] = optarg;
            break;
        case O_NAME: o->name = optarg; break;
        case O_QUERY: o->query = optarg; break;
        case O_STATUS: o->status = optarg; break;
        case O_DESCRIPTION: o->description = optarg; break;
        case O_PASSWORD_STDIN: o->password_stdin = true; break;
        case O_VERIFIED: o->verified = true; break;
        case O_JSON: o->json = true; break;
        }
    }
    o->args = argv + optind;
    o->nargs = argc - optind;
    if (o->nargs < c->min_args || (c->max_args >= 0 && o->nargs > c->max_args))
        return 2;
    return 0;
}

static int dispatch(struct af_ctx *ctx, const char *group, int argc, char **argv)
{
    const struct command *c = NULL;
    for (size_t i = 0; argc >= 1 && i < NCOMMANDS; i++)
        if (!strcmp(commands[i].group, group) && !strcmp(commands[i].name, argv[0]))
            c = &commands[i];
    struct opts o = {0};
    if (!c || parse(c, argc, argv, &o) != 0)
        return usage(group);
    struct run r = {.ctx = ctx, .o = &o};
    af_arena *arena = af_arena_new(16384);
    af_req_local(&r.req, arena);
    int rc = c->run(&r);
    af_arena_free(arena);
    return rc;
}

int af_cli_user(struct af_ctx *ctx, int argc, char **argv) { return dispatch(ctx, "user", argc, argv); }
int af_cli_role(struct af_ctx *ctx, int argc, char **argv) { return dispatch(ctx, "role", argc, argv); }
