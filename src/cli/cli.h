/* cli.h — authflowctl subcommands. Each returns the process exit status:
 * 0 success, 1 the operation failed, 2 wrong usage. Messages for people go
 * to stderr and start with "authflowctl: "; with --json, stdout holds one
 * JSON document and nothing else. */
#ifndef AF_CLI_H
#define AF_CLI_H
#include "config.h"
#include "ctx.h"

int af_cli_migrate(const struct af_config *cfg, int argc, char **argv);
int af_cli_keys(const struct af_config *cfg, int argc, char **argv);
int af_cli_cleanup(const struct af_config *cfg, int argc, char **argv);
int af_cli_mail(const struct af_config *cfg, int argc, char **argv);
/* These go through the shared library (admin.h), like authflow-admin. */
int af_cli_user(struct af_ctx *ctx, int argc, char **argv);
int af_cli_role(struct af_ctx *ctx, int argc, char **argv);
int af_cli_audit(struct af_ctx *ctx, int argc, char **argv);

#endif
