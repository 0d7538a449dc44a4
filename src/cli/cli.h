/* cli.h — authflowctl subcommands. Each returns the process exit status:
 * 0 success, 1 the operation failed, 2 wrong usage. */
#ifndef AF_CLI_H
#define AF_CLI_H
#include "config.h"

int af_cli_migrate(const struct af_config *cfg, int argc, char **argv);
int af_cli_keys(const struct af_config *cfg, int argc, char **argv);
int af_cli_cleanup(const struct af_config *cfg, int argc, char **argv);
int af_cli_mail(const struct af_config *cfg, int argc, char **argv);

#endif
