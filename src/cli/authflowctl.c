/* authflowctl — authflow's administration command: database migrations,
 * signing keys, clean-up, mail checks, users and roles, and the audit
 * trail's check. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "ctx.h"
#include "log.h"

/* The whole surface: a command takes the configuration, or the context
 * when it goes through the shared library. */
static const struct command {
    const char *name;
    int (*with_cfg)(const struct af_config *cfg, int argc, char **argv);
    int (*with_ctx)(struct af_ctx *ctx, int argc, char **argv);
} commands[] = {
    {"migrate", af_cli_migrate, NULL},
    {"keys", af_cli_keys, NULL},
    {"cleanup", af_cli_cleanup, NULL},
    {"mail", af_cli_mail, NULL},
    {"user", NULL, af_cli_user},
    {"role", NULL, af_cli_role},
    {"audit", NULL, af_cli_audit},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: authflowctl [-c CONFIG] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  migrate [--sql-dir DIR]           apply pending database migrations\n"
            "  migrate --status [--sql-dir DIR]  list applied and pending migrations\n"
            "  keys rotate [--alg ES256|RS256]   add a signing key and make it current\n"
            "                                    (keys generate: the same)\n"
            "  keys list [--json | --jwks]       list the signing keys\n"
            "  keys retire KID [--force]         remove a key that no longer signs\n"
            "  cleanup                           delete expired codes, tokens, sessions, old mail\n"
            "                                    and audit rows\n"
            "  mail test ADDRESS                 send a test message through the transport\n"
            "  mail status                       count outbox messages by state\n"
            "  user create EMAIL [--role ROLE]... [--name NAME] [--password-stdin]\n"
            "                    [--verified] [--json]\n"
            "                                    add a user (without a password: invite them)\n"
            "  user list [--query Q] [--role ROLE] [--status active|disabled|unverified]\n"
            "            [--json]                list users\n"
            "  user show ID|EMAIL [--json]       show a user\n"
            "  user set-roles ID|EMAIL ROLE...   give a user exactly these roles\n"
            "  user set-name ID|EMAIL NAME       change a user's full name\n"
            "  user disable|enable ID|EMAIL      disable (ending every session) or enable a user\n"
            "  user delete ID|EMAIL              delete a user\n"
            "  role add NAME [--description TEXT] add a role\n"
            "  role list [--json]                list the roles\n"
            "  audit verify [--json]             check the audit trail's hash chain\n"
            "\n"
            "Exit status: 0 success, 1 the operation failed, 2 wrong usage.\n"
            "CONFIG defaults to $AUTHFLOW_CONFIG, else %s.\n",
            af_config_default_path());
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            config = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const struct command *cmd = NULL;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (!strcmp(argv[i], commands[k].name))
            cmd = &commands[k];
    if (!cmd) {
        fprintf(stderr, "authflowctl: unknown command '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    struct af_ctx ctx;
    if (af_ctx_init(&ctx, "authflowctl", config, 0) < 0) {
        af_ctx_free(&ctx);
        return 1;
    }
    /* A command's own messages are for people; the library's log lines
     * only when something is wrong. */
    af_log_set_level(AF_LOG_WARN);
    int rc = cmd->with_cfg ? cmd->with_cfg(&ctx.cfg, argc - i - 1, argv + i + 1)
                           : cmd->with_ctx(&ctx, argc - i - 1, argv + i + 1);
    af_ctx_free(&ctx);
    return rc;
}
