/* keys.c — `authflowctl keys`: signing keys in [tokens] keys_dir.
 *
 * A key is a PEM file named after its kid (the RFC 7638 thumbprint),
 * written with mode 0640 and never overwritten; the file `current` names
 * the signing key. Older keys stay in the directory, so tokens they signed
 * keep verifying until they expire. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "token.h"

static int write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    bool good = write(fd, text, len) == (ssize_t)len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    close(fd);
    if (!good) {
        unlink(path);
        return -1;
    }
    return 0;
}

static int generate(const struct af_config *cfg, const char *alg)
{
    if (mkdir(cfg->keys_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "authflowctl: %s: %s\n", cfg->keys_dir, strerror(errno));
        return 1;
    }
    char *pem = NULL, kid[64], err[256];
    if (af_key_generate(alg, &pem, kid, err, sizeof err) < 0) {
        fprintf(stderr, "authflowctl: %s\n", err);
        return 1;
    }
    char path[4096], tmp[4096], cur[4096];
    snprintf(path, sizeof path, "%s/%s.pem", cfg->keys_dir, kid);
    int rc = write_file(path, pem, 0640);
    sodium_memzero(pem, strlen(pem));
    free(pem);
    if (rc < 0) {
        fprintf(stderr, "authflowctl: %s: %s\n", path, strerror(errno));
        return 1;
    }
    /* Switch `current` atomically. */
    snprintf(tmp, sizeof tmp, "%s/.current.%d", cfg->keys_dir, (int)getpid());
    snprintf(cur, sizeof cur, "%s/current", cfg->keys_dir);
    char line[80];
    snprintf(line, sizeof line, "%s\n", kid);
    if (write_file(tmp, line, 0644) < 0 || rename(tmp, cur) < 0) {
        fprintf(stderr, "authflowctl: %s: %s\n", cur, strerror(errno));
        unlink(tmp);
        return 1;
    }
    printf("%s\n", kid);
    return 0;
}

static int list(const struct af_config *cfg)
{
    struct af_keyset *ks;
    char err[512];
    if (af_keyset_load(&ks, cfg->keys_dir, err, sizeof err) < 0) {
        fprintf(stderr, "authflowctl: %s\n", err);
        return 1;
    }
    printf("%s\n", af_keyset_jwks(ks));
    af_keyset_free(ks);
    return 0;
}

int af_cli_keys(const struct af_config *cfg, int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "generate")) {
        const char *alg = cfg->algorithm;
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--alg") && i + 1 < argc)
                alg = argv[++i];
            else {
                fprintf(stderr, "usage: authflowctl keys generate [--alg ES256|RS256]\n");
                return 2;
            }
        }
        return generate(cfg, alg);
    }
    if (argc == 1 && !strcmp(argv[0], "list"))
        return list(cfg);
    fprintf(stderr, "usage: authflowctl keys generate [--alg ES256|RS256] | keys list\n");
    return 2;
}
