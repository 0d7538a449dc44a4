/* authflowctl — authflow's administration command: database migrations,
 * signing keys, clean-up and mail checks. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: authflowctl [-c CONFIG] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  migrate [--sql-dir DIR]           apply pending database migrations\n"
            "  migrate --status [--sql-dir DIR]  list applied and pending migrations\n"
            "  keys generate [--alg ES256|RS256] add a signing key and make it current\n"
            "  keys list                         list the signing keys\n"
            "  cleanup                           delete expired codes, tokens, sessions, old mail\n"
            "  mail test ADDRESS                 send a test message through the transport\n"
            "  mail status                       count outbox messages by state\n"
            "\n"
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
    if (sodium_init() < 0) {
        fprintf(stderr, "authflowctl: libsodium failed to initialise\n");
        return 1;
    }
    af_log_set_program("authflowctl");
    af_log_set_level(AF_LOG_WARN);
    struct af_config cfg;
    char err[512];
    if (af_config_load(&cfg, config ? config : af_config_default_path(), err, sizeof err) < 0) {
        fprintf(stderr, "authflowctl: configuration: %s\n", err);
        return 1;
    }
    int rc;
    const char *cmd = argv[i];
    if (!strcmp(cmd, "migrate"))
        rc = af_cli_migrate(&cfg, argc - i - 1, argv + i + 1);
    else if (!strcmp(cmd, "keys"))
        rc = af_cli_keys(&cfg, argc - i - 1, argv + i + 1);
    else if (!strcmp(cmd, "cleanup"))
        rc = af_cli_cleanup(&cfg, argc - i - 1, argv + i + 1);
    else if (!strcmp(cmd, "mail"))
        rc = af_cli_mail(&cfg, argc - i - 1, argv + i + 1);
    else {
        fprintf(stderr, "authflowctl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = 2;
    }
    af_config_free(&cfg);
    return rc;
}
