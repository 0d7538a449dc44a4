/* keys.c — `authflowctl keys`: signing keys in [tokens] keys_dir.
 *
 * A key is a PEM file named after its kid (the RFC 7638 thumbprint),
 * written with mode 0640 and never overwritten; the file `current` names
 * the signing key. Older keys stay in the directory, so tokens they signed
 * keep verifying until they expire. totp.key, beside them, seals the TOTP
 * secrets (mfa.h). */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "token.h"

/* The file gets the key directory's group, so that the responders (in
 * that group) can read a key that root made. */
static int write_file(const char *path, const char *text, mode_t mode, gid_t gid)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    bool good = write(fd, text, len) == (ssize_t)len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    if (good && gid != getegid() && fchown(fd, (uid_t)-1, gid) != 0)
        good = geteuid() != 0; /* only root could have, and must have */
    close(fd);
    if (!good) {
        unlink(path);
        return -1;
    }
    return 0;
}

/* keys_dir/totp.key, the key that seals TOTP secrets and keys the hashes
 * of recovery codes (mfa.h), made once when missing: 32 random bytes in
 * base64. It is never replaced, since the secrets sealed under it would be
 * lost with it. */
static int ensure_totp_key(const struct af_config *cfg, gid_t gid)
{
    char path[4096], part[4096];
    snprintf(path, sizeof path, "%s/totp.key", cfg->keys_dir);
    if (access(path, F_OK) == 0)
        return 0;
    unsigned char key[32];
    char text[sodium_base64_ENCODED_LEN(sizeof key, sodium_base64_VARIANT_ORIGINAL) + 1];
    randombytes_buf(key, sizeof key);
    sodium_bin2base64(text, sizeof text - 1, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
    strcat(text, "\n");
    sodium_memzero(key, sizeof key);
    snprintf(part, sizeof part, "%s/.totp.key.%d", cfg->keys_dir, (int)getpid());
    int rc = write_file(part, text, 0640, gid);
    sodium_memzero(text, sizeof text);
    if (rc == 0 && link(part, path) != 0 && errno != EEXIST)
        rc = -1; /* EEXIST: a concurrent run made it */
    int saved = errno;
    unlink(part);
    if (rc < 0) {
        fprintf(stderr, "authflowctl: %s: %s\n", path, strerror(saved));
        return 1;
    }
    return 0;
}

static gid_t keys_gid(const struct af_config *cfg)
{
    struct stat dir;
    return stat(cfg->keys_dir, &dir) == 0 ? dir.st_gid : getegid();
}

static int make_dir(const struct af_config *cfg)
{
    if (mkdir(cfg->keys_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "authflowctl: %s: %s\n", cfg->keys_dir, strerror(errno));
        return 1;
    }
    return 0;
}

static int generate(const struct af_config *cfg, const char *alg)
{
    if (make_dir(cfg) || ensure_totp_key(cfg, keys_gid(cfg)))
        return 1;
    char *pem = NULL, kid[64], err[256];
    if (af_key_generate(alg, &pem, kid, err, sizeof err) < 0) {
        fprintf(stderr, "authflowctl: %s\n", err);
        return 1;
    }
    char path[4096], tmp[4096], cur[4096];
    gid_t gid = keys_gid(cfg);
    snprintf(path, sizeof path, "%s/%s.pem", cfg->keys_dir, kid);
    /* Written under a name the responders skip (no .pem ending), then
     * renamed: they never read a half-written key. */
    char part[4096];
    snprintf(part, sizeof part, "%s/.%s.pem.part", cfg->keys_dir, kid);
    int rc = write_file(part, pem, 0640, gid);
    sodium_memzero(pem, strlen(pem));
    free(pem);
    if (rc == 0 && link(part, path) != 0)
        rc = -1; /* link, not rename: never replaces a key of the same name */
    int saved = errno;
    unlink(part);
    errno = saved;
    if (rc < 0) {
        fprintf(stderr, "authflowctl: %s: %s\n", path, strerror(errno));
        return 1;
    }
    /* Switch `current` atomically. */
    snprintf(tmp, sizeof tmp, "%s/.current.%d", cfg->keys_dir, (int)getpid());
    snprintf(cur, sizeof cur, "%s/current", cfg->keys_dir);
    char line[80];
    snprintf(line, sizeof line, "%s\n", kid);
    if (write_file(tmp, line, 0644, gid) < 0 || rename(tmp, cur) < 0) {
        fprintf(stderr, "authflowctl: %s: %s\n", cur, strerror(errno));
        unlink(tmp);
        return 1;
    }
    printf("%s\n", kid);
    return 0;
}

/* Seconds the responders may go on signing with a key after the next one
 * was made (they look at the key directory once a second). */
#define RELOAD_MARGIN 5

static void iso_time(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int list(const struct af_config *cfg, bool json, bool jwks)
{
    struct af_keyset *ks;
    char err[512];
    if (af_keyset_load(&ks, cfg->keys_dir, err, sizeof err) < 0) {
        fprintf(stderr, "authflowctl: %s\n", err);
        return 1;
    }
    if (jwks) {
        printf("%s\n", af_keyset_jwks(ks));
        af_keyset_free(ks);
        return 0;
    }
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < af_keyset_count(ks); i++) {
        struct af_key_info ki;
        af_keyset_info(ks, i, &ki);
        char at[32];
        iso_time(ki.created, at);
        if (!json) {
            printf("%s  %s  %s%s\n", ki.kid, ki.alg, at, ki.current ? "  current" : "");
            continue;
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "kid", json_object_new_string(ki.kid));
        json_object_object_add(o, "alg", json_object_new_string(ki.alg));
        json_object_object_add(o, "created_at", json_object_new_string(at));
        json_object_object_add(o, "current", json_object_new_boolean(ki.current));
        json_object_array_add(a, o);
    }
    if (json)
        printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    af_keyset_free(ks);
    return 0;
}

/* Removes a key that no longer signs. Tokens it signed stop verifying at
 * once, so without --force it must have stopped signing at least one
 * access-token lifetime (plus the clock skew allowed) ago: when the next
 * newer key was made. */
static int retire(const struct af_config *cfg, const char *kid, bool force)
{
    struct af_keyset *ks;
    char err[512];
    if (af_keyset_load(&ks, cfg->keys_dir, err, sizeof err) < 0) {
        fprintf(stderr, "authflowctl: %s\n", err);
        return 1;
    }
    struct af_key_info it = {0};
    bool found = false;
    time_t replaced = 0;
    for (size_t i = 0; i < af_keyset_count(ks); i++) {
        struct af_key_info ki;
        af_keyset_info(ks, i, &ki);
        if (!strcmp(ki.kid, kid)) {
            it = ki;
            found = true;
        }
    }
    for (size_t i = 0; found && i < af_keyset_count(ks); i++) {
        struct af_key_info ki;
        af_keyset_info(ks, i, &ki);
        if (ki.created >= it.created && strcmp(ki.kid, kid) && (!replaced || ki.created < replaced))
            replaced = ki.created;
    }
    int rc = 1;
    if (!found) {
        fprintf(stderr, "authflowctl: no key %s in %s\n", kid, cfg->keys_dir);
    } else if (it.current) {
        fprintf(stderr, "authflowctl: %s is the current signing key; run `authflowctl keys rotate` first\n", kid);
    } else if (!force && !replaced) {
        fprintf(stderr, "authflowctl: %s is newer than the current key and may have signed until a moment "
                        "ago; retire it with --force if that is what you want\n", kid);
    } else if (!force && time(NULL) < replaced + RELOAD_MARGIN + cfg->access_ttl + cfg->clock_skew) {
        char until[32];
        iso_time(replaced + RELOAD_MARGIN + cfg->access_ttl + cfg->clock_skew, until);
        fprintf(stderr, "authflowctl: tokens signed with %s may be valid until %s; retire it then, "
                        "or now with --force (those tokens stop working at once)\n", kid, until);
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.pem", cfg->keys_dir, kid);
        if (unlink(path) != 0) {
            fprintf(stderr, "authflowctl: %s: %s\n", path, strerror(errno));
        } else {
            printf("%s\n", kid);
            rc = 0;
        }
    }
    af_keyset_free(ks);
    return rc;
}

/* `keys init`: what a new installation needs and does not have yet (a
 * signing key, the TOTP key); safe to run again, on every upgrade. */
static int init(const struct af_config *cfg)
{
    if (make_dir(cfg) || ensure_totp_key(cfg, keys_gid(cfg)))
        return 1;
    struct af_keyset *ks;
    char err[256];
    if (af_keyset_load(&ks, cfg->keys_dir, err, sizeof err) == 0) {
        af_keyset_free(ks);
        return 0;
    }
    return generate(cfg, cfg->algorithm);
}

static int usage(void)
{
    fprintf(stderr, "usage: authflowctl keys init\n"
                    "       authflowctl keys rotate [--alg ES256|RS256]\n"
                    "       authflowctl keys list [--json | --jwks]\n"
                    "       authflowctl keys retire KID [--force]\n");
    return 2;
}

int af_cli_keys(const struct af_config *cfg, int argc, char **argv)
{
    if (argc >= 1 && (!strcmp(argv[0], "rotate") || !strcmp(argv[0], "generate"))) {
        const char *alg = cfg->algorithm;
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--alg") && i + 1 < argc)
                alg = argv[++i];
            else
                return usage();
        }
        return generate(cfg, alg);
    }
    if (argc == 1 && !strcmp(argv[0], "init"))
        return init(cfg);
    if (argc >= 1 && !strcmp(argv[0], "list")) {
        bool json = false, jwks = false;
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--json"))
                json = true;
            else if (!strcmp(argv[i], "--jwks"))
                jwks = true;
            else
                return usage();
        }
        return json && jwks ? usage() : list(cfg, json, jwks);
    }
    if (argc >= 2 && !strcmp(argv[0], "retire")) {
        bool force = false;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--force"))
                force = true;
            else
                return usage();
        }
        return retire(cfg, argv[1], force);
    }
    return usage();
}
