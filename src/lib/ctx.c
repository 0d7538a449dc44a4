/* ctx.c — per-process context (see ctx.h). */
#include "ctx.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "util.h"
#include "ratelimit.h"
#include "validate.h"

void af_ctx_slim(char **argv)
{
    if (getenv("GNUTLS_NO_IMPLICIT_INIT"))
        return;
    /* Exec the real path, so the process keeps its name in ps. */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return; /* no /proc: carry on unslimmed */
    self[n] = '\0';
    setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 1);
    execv(self, argv);
}

int af_ctx_init(struct af_ctx *ctx, const char *program, const char *config_path, unsigned needs)
{
    char err[512];
    memset(ctx, 0, sizeof *ctx);
    ctx->program = program;
    af_log_set_program(program);
    if (sodium_init() < 0) {
        fprintf(stderr, "%s: libsodium failed to initialise\n", program);
        return -1;
    }
    const char *path = config_path ? config_path : af_config_default_path();
    if (af_config_load(&ctx->cfg, path, err, sizeof err) < 0) {
        fprintf(stderr, "%s: configuration: %s\n", program, err);
        af_log(AF_LOG_ERROR, "config_error", "error", err, NULL);
        return -1;
    }
    enum af_log_level lvl;
    if (af_log_level_parse(ctx->cfg.log_level, &lvl) == 0)
        af_log_set_level(lvl);
    if ((needs & AF_NEED_PWPOLICY) && af_pwpolicy_load(&ctx->pwpolicy, &ctx->cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s: configuration: %s\n", program, err);
        af_log(AF_LOG_ERROR, "config_error", "error", err, NULL);
        return -1;
    }
    struct stat st;
    if ((needs & AF_NEED_KEYS) && stat(ctx->cfg.keys_dir, &st) == 0) {
        ctx->keys_mtime = st.st_mtim;
        ctx->keys_ino = st.st_ino;
    }
    if ((needs & AF_NEED_KEYS) && af_keyset_load(&ctx->keys, ctx->cfg.keys_dir, err, sizeof err) < 0) {
        fprintf(stderr, "%s: keys: %s\n", program, err);
        af_log(AF_LOG_ERROR, "keys_error", "error", err, NULL);
        return -1;
    }
    ctx->keys_checked_us = af_now_us();
    ctx->db = af_db_new(ctx->cfg.db_dsn, ctx->cfg.db_connect_timeout);
    if ((needs & AF_NEED_REPLICA) && ctx->cfg.db_read_dsn[0]) {
        /* libpq's shortest connect timeout is 2 s. */
        ctx->replica = af_db_new(ctx->cfg.db_read_dsn, 2);
        af_db_set_name(ctx->replica, "replica");
        af_db_set_timeout(ctx->replica, ctx->cfg.db_read_timeout_ms);
    }
    ctx->cache = af_cache_new(&ctx->cfg);
    ctx->token_params.issuer = ctx->cfg.issuer;
    ctx->token_params.audience = ctx->cfg.audience;
    ctx->token_params.ttl = ctx->cfg.access_ttl;
    ctx->token_params.skew = ctx->cfg.clock_skew;
    ctx->cost.iterations = (unsigned long long)ctx->cfg.argon2_iterations;
    ctx->cost.memory_bytes = (size_t)ctx->cfg.argon2_memory_kib * 1024;
    return 0;
}

bool af_ctx_reload_keys(struct af_ctx *ctx, bool soon)
{
    if (!ctx->keys)
        return false;
    int64_t now = af_now_us();
    if (!soon && now - ctx->keys_checked_us < 1000000)
        return false;
    ctx->keys_checked_us = now;
    struct stat st;
    if (stat(ctx->cfg.keys_dir, &st) != 0 ||
        (st.st_mtim.tv_sec == ctx->keys_mtime.tv_sec && st.st_mtim.tv_nsec == ctx->keys_mtime.tv_nsec &&
         st.st_ino == ctx->keys_ino))
        return false;
    struct af_keyset *ks;
    char err[512];
    if (af_keyset_load(&ks, ctx->cfg.keys_dir, err, sizeof err) < 0) {
        /* Tried again at the next look; logged once until it works. */
        if (!ctx->keys_reload_failing)
            af_log(AF_LOG_ERROR, "keys_reload_failed", "error", err, NULL);
        ctx->keys_reload_failing = true;
        return false;
    }
    ctx->keys_reload_failing = false;
    ctx->keys_mtime = st.st_mtim;
    ctx->keys_ino = st.st_ino;
    af_keyset_free(ctx->keys);
    ctx->keys = ks;
    struct af_key_info ki = {0};
    for (size_t i = 0; i < af_keyset_count(ks); i++) {
        af_keyset_info(ks, i, &ki);
        if (ki.current)
            break;
    }
    char n[16];
    snprintf(n, sizeof n, "%zu", af_keyset_count(ks));
    af_log(AF_LOG_INFO, "keys_reloaded", "current_kid", ki.kid, "keys", n, NULL);
    af_metrics_add("authflow_keys_reloaded_total", 1);
    return true;
}

void af_ctx_free(struct af_ctx *ctx)
{
    af_db_free(ctx->db);
    af_db_free(ctx->replica);
    af_cache_free(ctx->cache);
    af_keyset_free(ctx->keys);
    af_pwpolicy_free(ctx->pwpolicy);
    af_ratelimit_free(ctx);
    af_config_free(&ctx->cfg);
}
