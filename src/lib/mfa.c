/* mfa.c — two-factor login with TOTP and recovery codes (see mfa.h). */
#include "mfa.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "body.h"
#include "ctx.h"
#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "session.h"
#include "totp.h"
#include "user.h"
#include "util.h"

/* ---- the key ----------------------------------------------------------- */

/* keys_dir/totp.key: 32 random bytes in base64, read once per process. */
static unsigned char mfa_key_bytes[32];
static bool mfa_key_loaded;

static bool mfa_key(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    if (mfa_key_loaded)
        return true;
    char path[4096];
    snprintf(path, sizeof path, "%s/totp.key", ctx->cfg.keys_dir);
    char *text = af_read_file(path);
    size_t len = 0;
    bool ok = text && sodium_base642bin(mfa_key_bytes, sizeof mfa_key_bytes, text, strlen(text),
                                        " \t\r\n", &len, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
              len == sizeof mfa_key_bytes;
    int saved = errno;
    if (text) {
        sodium_memzero(text, strlen(text));
        free(text);
    }
    if (!ok) {
        af_log(AF_LOG_ERROR, "mfa_key_missing", "path", path, "error",
               text ? "not 32 bytes of base64" : strerror(saved),
               "hint", "run: authflowctl keys init", NULL);
        af_resp_unavailable(resp, req, "no TOTP key (keys_dir/totp.key)");
        return false;
    }
    mfa_key_loaded = true;
    return true;
}

/* ---- recovery codes ---------------------------------------------------- */

#define RC_CHARS 10 /* base32 letters: 50 bits */
static const char rc_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

/* A code as typed to its canonical form (lower case, without spaces and
 * dashes); false when it cannot be one. */
static bool rc_normalize(const char *in, char out[RC_CHARS + 1])
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        if (*p == '-' || *p == ' ')
            continue;
        char c = (char)tolower((unsigned char)*p);
        if (n == RC_CHARS || !strchr(rc_alphabet, c) || !c)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return n == RC_CHARS;
}

/* The stored hash of a canonical code, as hex: keyed, and bound to the user. */
static void rc_hash(const char *user_id, const char *code, char hex[65])
{
    crypto_generichash_state st;
    unsigned char h[32];
    crypto_generichash_init(&st, mfa_key_bytes, sizeof mfa_key_bytes, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)user_id, strlen(user_id));
    crypto_generichash_update(&st, (const unsigned char *)":", 1);
    crypto_generichash_update(&st, (const unsigned char *)code, strlen(code));
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

/* ---- helpers ----------------------------------------------------------- */

static bool six_digits(const char *code)
{
    size_t n = strlen(code);
    if (n != AF_TOTP_DIGITS)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)code[i]))
            return false;
    return true;
}

/* The user's TOTP row: the opened secret, whether enabled, the last step. */
struct totp_row {
    unsigned char secret[AF_TOTP_SECRET_BYTES];
    char sealed_hex[2 * AF_TOTP_SEALED_BYTES + 1]; /* as stored, to enable only this one */
    bool enabled;
    int64_t last_step;
};

/* AF_DB_OK with *found; an undecryptable row is AF_DB_ERROR. */
static enum af_db_status totp_load(struct af_ctx *ctx, const char *user_id, struct totp_row *t,
                                   bool *found)
{
    PGresult *r;
    const char *p[] = {user_id};
    enum af_db_status st = af_db_exec(ctx->db, &r,
                                      "SELECT encode(secret_sealed, 'hex'), enabled_at IS NOT NULL, last_step "
                                      "FROM user_totp WHERE user_id = $1", 1, p);
    if (st != AF_DB_OK)
        return st;
    *found = PQntuples(r) == 1;
    if (*found) {
        unsigned char sealed[AF_TOTP_SEALED_BYTES];
        size_t len = 0;
        const char *hex = PQgetvalue(r, 0, 0);
        snprintf(t->sealed_hex, sizeof t->sealed_hex, "%s", hex);
        if (sodium_hex2bin(sealed, sizeof sealed, hex, strlen(hex), NULL, &len, NULL) != 0 ||
            af_totp_open(mfa_key_bytes, sealed, len, t->secret) != 0) {
            PQclear(r);
            af_log(AF_LOG_ERROR, "mfa_secret_unreadable", "user_id", user_id, "hint",
                   "totp.key is not the key this secret was sealed with", NULL);
            return AF_DB_ERROR;
        }
        t->enabled = PQgetvalue(r, 0, 1)[0] == 't';
        t->last_step = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    }
    PQclear(r);
    return AF_DB_OK;
}

enum factor { FACTOR_OK, FACTOR_WRONG, FACTOR_FAILED };

/* Checks and uses up a second factor of user_id: a TOTP code (its step is
 * recorded, so it works once, also against a concurrent request) or a
 * recovery code (marked used). *how names the kind for the audit trail. */
static enum factor second_factor(struct af_ctx *ctx, struct af_req *req, const char *user_id,
                                 const char *code, const char *recovery, const char **how,
                                 enum af_db_status *st)
{
    *st = AF_DB_OK;
    PGresult *r;
    if (recovery) {
        *how = "recovery_code";
        char canon[RC_CHARS + 1], hex[65];
        if (!rc_normalize(recovery, canon))
            return FACTOR_WRONG;
        rc_hash(user_id, canon, hex);
        sodium_memzero(canon, sizeof canon);
        const char *p[] = {user_id, hex};
        *st = af_db_exec(ctx->db, &r,
                         "WITH u AS (UPDATE recovery_codes SET used_at = now() "
                         "  WHERE user_id = $1 AND code_hash = decode($2, 'hex') AND used_at IS NULL "
                         "  RETURNING 1) "
                         "SELECT (SELECT count(*) FROM u), "
                         "  (SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL) - "
                         "  (SELECT count(*) FROM u)", 2, p);
        if (*st != AF_DB_OK)
            return FACTOR_FAILED;
        bool used = strcmp(PQgetvalue(r, 0, 0), "1") == 0;
        if (used)
            af_audit(ctx, req, "mfa_recovery_code_used", user_id, user_id, NULL,
                     af_arena_printf(req->arena, "{\"remaining\":%s}", PQgetvalue(r, 0, 1)));
        PQclear(r);
        return used ? FACTOR_OK : FACTOR_WRONG;
    }
    *how = "totp";
    struct totp_row t;
    bool found;
    if ((*st = totp_load(ctx, user_id, &t, &found)) != AF_DB_OK)
        return FACTOR_FAILED;
    if (!found || !t.enabled || !code || !six_digits(code)) {
        sodium_memzero(&t, sizeof t);
        return FACTOR_WRONG;
    }
    int64_t step;
    enum af_totp_result tr = af_totp_check(t.secret, sizeof t.secret, code, time(NULL), t.last_step, &step);
    sodium_memzero(&t, sizeof t);
    if (tr != AF_TOTP_OK)
        return FACTOR_WRONG;
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)step);
    const char *p[] = {user_id, s};
    *st = af_db_exec(ctx->db, &r,
                     "UPDATE user_totp SET last_step = $2 WHERE user_id = $1 AND last_step < $2 "
                     "AND enabled_at IS NOT NULL RETURNING 1", 2, p);
    if (*st != AF_DB_OK)
        return FACTOR_FAILED;
    bool won = PQntuples(r) == 1; /* else a concurrent request used this step */
    PQclear(r);
    return won ? FACTOR_OK : FACTOR_WRONG;
}

/* ---- set-up, enable, disable ------------------------------------------- */

void af_mfa_setup(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    if (!mfa_key(ctx, req, resp))
        return;
    struct af_user u;
    bool found;
    enum af_db_status st = af_user_by_id_full(ctx, req, req->claims.sub, &u, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (!found) {
        af_resp_problem(resp, req, 401, "unauthorized", "The account no longer exists.");
        return;
    }
    if (u.mfa_enabled) {
        af_resp_problem(resp, req, 409, "mfa_already_enabled",
                        "Two-factor authentication is already on; disable it first.");
        return;
    }
    unsigned char secret[AF_TOTP_SECRET_BYTES], sealed[AF_TOTP_SEALED_BYTES];
    char sealed_hex[2 * AF_TOTP_SEALED_BYTES + 1], b32[AF_TOTP_B32_CHARS], uri[1024];
    af_totp_new_secret(secret);
    af_totp_seal(mfa_key_bytes, secret, sealed);
    sodium_bin2hex(sealed_hex, sizeof sealed_hex, sealed, sizeof sealed);
    int rc = af_totp_base32(secret, sizeof secret, b32, sizeof b32);
    sodium_memzero(secret, sizeof secret);
    if (rc != 0 || af_totp_uri(ctx->cfg.product_name, u.email, b32, uri, sizeof uri) != 0) {
        af_resp_internal(resp, req, "otpauth URI too long");
        return;
    }
    /* A new set-up replaces one not yet enabled, never an enabled one. */
    PGresult *r;
    const char *p[] = {u.id, sealed_hex};
    st = af_db_exec(ctx->db, &r,
                    "INSERT INTO user_totp (user_id, secret_sealed) VALUES ($1, decode($2, 'hex')) "
                    "ON CONFLICT (user_id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, "
                    "  last_step = 0, created_at = now() WHERE user_totp.enabled_at IS NULL "
                    "RETURNING 1", 2, p);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool stored = PQntuples(r) == 1;
    PQclear(r);
    if (!stored) {
        af_resp_problem(resp, req, 409, "mfa_already_enabled",
                        "Two-factor authentication is already on; disable it first.");
        return;
    }
    char *svg = af_qr_svg(uri);
    if (!svg) {
        af_resp_internal(resp, req, "QR code rendering failed");
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "secret", json_object_new_string(b32));
    json_object_object_add(o, "otpauth_uri", json_object_new_string(uri));
    json_object_object_add(o, "qr_svg", json_object_new_string(svg));
    free(svg);
    sodium_memzero(b32, sizeof b32);
    sodium_memzero(uri, sizeof uri);
    af_audit(ctx, req, "mfa_setup_started", u.id, u.id, req->claims.sid, NULL);
    af_resp_json(resp, req, 200, o);
}

void af_mfa_enable(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, const char *code)
{
    if (!mfa_key(ctx, req, resp))
        return;
    const char *uid = req->claims.sub;
    struct totp_row t;
    bool found;
    enum af_db_status st = totp_load(ctx, uid, &t, &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (!found) {
        struct af_field_errors fe = {0};
        af_field_error(&fe, "code", "start the set-up first (POST /auth/mfa/totp/setup)");
        af_resp_field_errors(resp, req, &fe);
        return;
    }
    if (t.enabled) {
        sodium_memzero(&t, sizeof t);
        af_resp_problem(resp, req, 409, "mfa_already_enabled", "Two-factor authentication is already on.");
        return;
    }
    int64_t step = 0;
    enum af_totp_result tr = six_digits(code) ? af_totp_check(t.secret, sizeof t.secret, code, time(NULL),
                                                              t.last_step, &step)
                                              : AF_TOTP_WRONG;
    char *sealed_hex = af_arena_strdup(req->arena, t.sealed_hex);
    sodium_memzero(&t, sizeof t);
    if (tr != AF_TOTP_OK) {
        af_resp_problem(resp, req, 400, "invalid_code",
                        "The code is wrong; check the authenticator app's clock and try the current code.");
        return;
    }

    /* Ten recovery codes, shown once, stored as keyed hashes. */
    json_object *codes = json_object_new_array();
    char *hashes = af_arena_alloc(req->arena, AF_MFA_RECOVERY_CODES * 67 + 3);
    char *h = hashes;
    *h++ = '{';
    for (int i = 0; i < AF_MFA_RECOVERY_CODES; i++) {
        char c[RC_CHARS + 1], shown[RC_CHARS + 2], hex[65];
        for (int j = 0; j < RC_CHARS; j++)
            c[j] = rc_alphabet[randombytes_uniform(32)];
        c[RC_CHARS] = '\0';
        snprintf(shown, sizeof shown, "%.5s-%s", c, c + 5);
        json_object_array_add(codes, json_object_new_string(shown));
        rc_hash(uid, c, hex);
        h += sprintf(h, "%s\"%s\"", i ? "," : "", hex);
        sodium_memzero(c, sizeof c);
        sodium_memzero(shown, sizeof shown);
    }
    *h++ = '}';
    *h = '\0';
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)step);
    PGresult *r;
    /* Only the secret the code was checked against: a set-up in another
     * tab meanwhile has replaced it, and the user has not scanned that one. */
    const char *p[] = {uid, s, hashes, sealed_hex};
    st = af_db_exec(ctx->db, &r,
                    "WITH t AS (UPDATE user_totp SET enabled_at = now(), last_step = $2 "
                    "  WHERE user_id = $1 AND enabled_at IS NULL AND secret_sealed = decode($4, 'hex') "
                    "  RETURNING user_id), "
                    "u AS (UPDATE users SET mfa_enabled = true, updated_at = now() "
                    "  WHERE id IN (SELECT user_id FROM t)), "
                    "d AS (DELETE FROM recovery_codes WHERE user_id IN (SELECT user_id FROM t)), "
                    "i AS (INSERT INTO recovery_codes (user_id, code_hash) "
                    "  SELECT t.user_id, decode(x, 'hex') FROM t, unnest($3::text[]) x) "
                    "SELECT count(*) FROM t", 4, p);
    if (st != AF_DB_OK) {
        json_object_put(codes);
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool enabled = strcmp(PQgetvalue(r, 0, 0), "1") == 0;
    PQclear(r);
    if (!enabled) { /* a concurrent enable or set-up came first */
        json_object_put(codes);
        af_resp_problem(resp, req, 400, "invalid_code",
                        "The set-up changed meanwhile (enabled, or started again elsewhere): check it and try again.");
        return;
    }
    af_user_cache_drop(ctx, uid);
    af_audit(ctx, req, "mfa_enabled", uid, uid, req->claims.sid, "{\"method\":\"totp\"}");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "recovery_codes", codes);
    af_resp_json(resp, req, 200, o);
}

void af_mfa_disable(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                    const char *password, const char *code, const char *recovery_code)
{
    if (!mfa_key(ctx, req, resp))
        return;
    struct af_user u;
    if (!af_user_reauth(ctx, req, resp, password, &u))
        return;
    if (!u.mfa_enabled) {
        struct af_field_errors fe = {0};
        af_field_error(&fe, recovery_code ? "recovery_code" : "code",
                       "two-factor authentication is not on");
        af_resp_field_errors(resp, req, &fe);
        return;
    }
    /* Guessing codes here is guessing them at login: the same count. */
    if (!af_login_throttle_check(ctx, req, resp, u.email))
        return;
    const char *how;
    enum af_db_status st;
    enum factor f = second_factor(ctx, req, u.id, code, recovery_code, &how, &st);
    if (f == FACTOR_FAILED) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (f == FACTOR_WRONG) {
        af_login_throttle_failed(ctx, req, u.email);
        af_audit(ctx, req, "mfa_failure", u.id, u.id, req->claims.sid,
                 af_arena_printf(req->arena, "{\"reason\":\"wrong_code\",\"during\":\"disable\",\"method\":\"%s\"}", how));
        af_resp_problem(resp, req, 401, "invalid_code", "The code is wrong.");
        return;
    }
    bool found;
    st = af_mfa_turn_off(ctx, req, u.id, u.id, req->claims.sid,
                         af_arena_printf(req->arena, "{\"method\":\"totp\",\"confirmed_with\":\"%s\"}", how),
                         &found);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    af_resp_empty(resp, 204);
}

enum af_db_status af_mfa_turn_off(struct af_ctx *ctx, struct af_req *req, const char *actor,
                                  const char *user_id, const char *sid, const char *detail, bool *found)
{
    PGresult *r;
    const char *p[] = {user_id};
    enum af_db_status st = af_db_exec(ctx->db, &r,
                                      "WITH t AS (DELETE FROM user_totp WHERE user_id = $1), "
                                      "r AS (DELETE FROM recovery_codes WHERE user_id = $1), "
                                      "c AS (DELETE FROM mfa_challenges WHERE user_id = $1) "
                                      "UPDATE users SET mfa_enabled = false, updated_at = now() WHERE id = $1 "
                                      "RETURNING 1", 1, p);
    if (st != AF_DB_OK)
        return st;
    *found = PQntuples(r) == 1;
    PQclear(r);
    if (*found) {
        af_user_cache_drop(ctx, user_id);
        af_audit(ctx, req, "mfa_disabled", actor, user_id, sid, detail);
    }
    return AF_DB_OK;
}

/* ---- the second step of a login ---------------------------------------- */

void af_mfa_challenge(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                      const struct af_user *u, const char *method, char *token_out)
{
    if (!mfa_key(ctx, req, resp)) /* no code could be checked: 503 now, not after the password */
        return;
    char token[AF_TOKEN_CHARS + 1], hash[AF_SHA256_HEX], ttl[16], tries[16];
    af_random_token(token);
    af_sha256_hex(token, strlen(token), hash);
    snprintf(ttl, sizeof ttl, "%d", AF_MFA_CHALLENGE_TTL);
    snprintf(tries, sizeof tries, "%d", AF_MFA_CHALLENGE_TRIES);
    const char *p[] = {hash, u->id, ttl, tries, method};
    enum af_db_status st = af_db_run(ctx->db,
                                     "INSERT INTO mfa_challenges (token_hash, user_id, expires_at, attempts_left, amr) "
                                     "VALUES (decode($1, 'hex'), $2, now() + make_interval(secs => $3::int), $4::int, $5)",
                                     5, p);
    if (st != AF_DB_OK) {
        sodium_memzero(token, sizeof token);
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    af_audit(ctx, req, "login_mfa_required", u->id, u->id, NULL,
             af_arena_printf(req->arena, "{\"first_factor\":\"%s\"}", method));
    json_object *m = json_object_new_object();
    json_object_object_add(m, "mfa_token", json_object_new_string(token));
    json_object_object_add(m, "mfa_expires_in", json_object_new_int(AF_MFA_CHALLENGE_TTL));
    if (token_out)
        memcpy(token_out, token, sizeof token);
    sodium_memzero(token, sizeof token);
    af_resp_problem_with(resp, req, 401, "mfa_required",
                         "Enter the code of your authenticator app (POST /auth/mfa/verify).", m);
}

void af_mfa_verify(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                   const char *mfa_token, const char *code, const char *recovery_code)
{
    if (!mfa_key(ctx, req, resp))
        return;
    /* Each request takes one of the challenge's tries before any code is
     * looked at, so no number of parallel requests gets more. */
    char hash[AF_SHA256_HEX];
    af_sha256_hex(mfa_token, strlen(mfa_token), hash);
    PGresult *r;
    const char *p[] = {hash};
    enum af_db_status st = af_db_exec(ctx->db, &r,
                                      "UPDATE mfa_challenges SET attempts_left = attempts_left - 1 "
                                      "WHERE token_hash = decode($1, 'hex') AND expires_at > now() "
                                      "AND attempts_left > 0 RETURNING user_id, amr", 1, p);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        af_resp_problem(resp, req, 401, "invalid_token",
                        "The login has expired or had too many wrong codes; log in again.");
        return;
    }
    char uid[37];
    snprintf(uid, sizeof uid, "%s", PQgetvalue(r, 0, 0));
    const char *method = af_arena_strdup(req->arena, PQgetvalue(r, 0, 1));
    PQclear(r);

    struct af_user u;
    bool found;
    if ((st = af_user_by_id_full(ctx, req, uid, &u, &found)) != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (!found) {
        af_resp_problem(resp, req, 401, "invalid_token", "The account no longer exists.");
        return;
    }
    if (!af_login_throttle_check(ctx, req, resp, u.email))
        return;
    if (u.disabled) {
        af_resp_problem(resp, req, 403, "account_disabled", "This account is disabled.");
        return;
    }
    const char *how;
    enum factor f = second_factor(ctx, req, uid, code, recovery_code, &how, &st);
    if (f == FACTOR_FAILED) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    if (f == FACTOR_WRONG) {
        af_login_throttle_failed(ctx, req, u.email);
        af_audit(ctx, req, "login_failure", uid, uid, NULL,
                 af_arena_printf(req->arena, "{\"reason\":\"wrong_code\",\"method\":\"%s\"}", how));
        af_resp_problem(resp, req, 401, "invalid_code", "The code is wrong.");
        return;
    }
    /* Used once: a second right answer for the same challenge loses here. */
    if ((st = af_db_exec(ctx->db, &r, "DELETE FROM mfa_challenges WHERE token_hash = decode($1, 'hex') RETURNING 1",
                         1, p)) != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool mine = PQntuples(r) == 1;
    PQclear(r);
    if (!mine) {
        af_resp_problem(resp, req, 401, "invalid_token", "This login was already completed.");
        return;
    }
    af_login_throttle_clear(ctx, u.email);
    af_session_login(ctx, req, resp, &u, af_arena_printf(req->arena, "[\"%s\",\"otp\"]", method));
}
