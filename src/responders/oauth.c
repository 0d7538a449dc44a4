/* authflow-oauth — the oauth endpoint group: social login through OpenID
 * Connect providers and plain OAuth 2.0 ones ([oauth.NAME] sections).
 *
 * The browser flow is the authorization code flow with PKCE (S256), state
 * and, for OpenID Connect, nonce. GET /oauth/{p}/start stores the SHA-256
 * of a random state and of a browser-binding cookie it sets (HttpOnly,
 * SameSite=Lax), and sends the browser to the provider; the PKCE verifier
 * and the nonce are derived from the cookie and the state, so nothing
 * secret of the flow is stored and a callback only works in the browser
 * that started it. GET /oauth/{p}/callback uses the state once, exchanges
 * the code, verifies the id_token (jwks.h) or reads the provider's userinfo,
 * finds or creates the user (identities table), and opens a session with
 * amr ["oauth"]: cookies and a 302 to the relative `redirect`, or, in popup
 * mode, a page that tells its opener and closes. POST /oauth/{p}/id-token
 * does the same for a native app that holds an id_token.
 *
 * Each process fetches a provider's discovery document and keys on first
 * use and again every [oauth] discovery_refresh seconds, keeping the old
 * ones while the provider is unreachable (and asking again only after
 * 30 s); a token signed with a key it does not know makes it fetch the
 * keys again, at most every 10 s. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authn.h"
#include "body.h"
#include "cookie.h"
#include "ctx.h"
#include "fetch.h"
#include "http.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "mfa.h"
#include "session.h"
#include "user.h"
#include "util.h"
#include "validate.h"

#define MAX_ANSWER (256 * 1024)    /* bytes of a provider's answer */
#define JWKS_RETRY_US 10000000     /* an unknown kid refetches the keys at most this often */
#define REDIRECT_MAX 1024
#define IDTOKEN_MAX_AGE 600        /* a browser flow's id_token was just issued */

/* ---- providers --------------------------------------------------------- */

struct provider {
    const struct af_provider *cfg;
    char *authorization_endpoint, *token_endpoint, *userinfo_endpoint, *jwks_uri;
    struct af_jwks *jwks;
    int64_t fetched_us, jwks_fetched_us;
    int64_t retry_us;           /* no provider_ready fetch before this (after a failure) */
    const char **audiences;     /* extra_audiences, split, NULL-terminated */
    char *audiences_text;       /* the strings audiences points into */
};
static struct provider providers[AF_MAX_PROVIDERS];

static struct provider *find_provider(struct af_ctx *ctx, const char *name)
{
    for (int i = 0; i < ctx->cfg.nproviders; i++)
        if (!strcmp(ctx->cfg.providers[i].name, name)) {
            providers[i].cfg = &ctx->cfg.providers[i];
            return &providers[i];
        }
    return NULL;
}

static void set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = v ? strdup(v) : NULL;
}

/* An endpoint of a discovery document, when it is a URL we may call. */
static const char *endpoint(json_object *doc, const char *field, bool required, char *err, size_t errlen)
{
    json_object *v;
    const char *s = json_object_object_get_ex(doc, field, &v) && json_object_is_type(v, json_type_string)
                        ? json_object_get_string(v) : NULL;
    if (s && !af_fetch_url_allowed(s)) {
        snprintf(err, errlen, "discovery: %s is not an https URL", field);
        return NULL;
    }
    if (!s && required)
        snprintf(err, errlen, "discovery: no %s", field);
    return s;
}

static int fetch_jwks(struct af_ctx *ctx, struct provider *p, char *err, size_t errlen)
{
    struct af_fetch_req rq = {.method = AF_FETCH_GET, .url = p->jwks_uri,
                              .timeout_ms = ctx->cfg.oauth_http_timeout_ms, .max_bytes = MAX_ANSWER};
    struct af_fetch_resp r;
    p->jwks_fetched_us = af_now_us();
    if (af_fetch(&rq, &r, err, errlen) < 0)
        return -1;
    struct af_jwks *ks = r.status == 200 ? af_jwks_parse(r.body, err, errlen) : NULL;
    if (r.status != 200)
        snprintf(err, errlen, "jwks: HTTP %ld", r.status);
    af_fetch_resp_free(&r);
    if (!ks)
        return -1;
    af_jwks_free(p->jwks);
    p->jwks = ks;
    return 0;
}

/* Discovery (OpenID Connect) and keys, fetched when missing or older than
 * [oauth] discovery_refresh. An old copy stays in use while a refresh
 * fails; without any, -1 (503). */
static int provider_ready(struct af_ctx *ctx, struct provider *p)
{
    const struct af_provider *c = p->cfg;
    if (!p->audiences) {
        /* extra_audiences: "a b,c" → {"a","b","c",NULL}, once. */
        size_t n = 1;
        for (const char *s = c->extra_audiences; *s; s++)
            n += *s == ' ' || *s == ',';
        p->audiences = calloc(n + 1, sizeof *p->audiences);
        char *save = NULL;
        p->audiences_text = strdup(c->extra_audiences);
        size_t i = 0;
        for (char *t = p->audiences_text ? strtok_r(p->audiences_text, " ,", &save) : NULL;
             t && p->audiences; t = strtok_r(NULL, " ,", &save))
            p->audiences[i++] = t;
    }
    if (!c->oidc) {
        p->authorization_endpoint = c->authorization_endpoint;
        p->token_endpoint = c->token_endpoint;
        p->userinfo_endpoint = c->userinfo_endpoint;
        return 0;
    }
    int64_t now = af_now_us();
    if (p->jwks && now - p->fetched_us < ctx->cfg.oauth_discovery_refresh * 1000000)
        return 0;
    /* After a failure, 30 s without trying: a provider that does not
     * answer must not hold every request for the whole timeout. */
    if (now < p->retry_us)
        return p->jwks ? 0 : -1;
    char url[2048], err[256] = "";
    size_t il = strlen(c->issuer);
    snprintf(url, sizeof url, "%.*s/.well-known/openid-configuration",
             (int)(il && c->issuer[il - 1] == '/' ? il - 1 : il), c->issuer);
    json_object *doc = af_fetch_json(url, ctx->cfg.oauth_http_timeout_ms, MAX_ANSWER, err, sizeof err);
    json_object *iss;
    const char *a = NULL, *t = NULL, *u = NULL, *j = NULL;
    if (doc && !(json_object_object_get_ex(doc, "issuer", &iss) && json_object_is_type(iss, json_type_string) &&
                 !strcmp(json_object_get_string(iss), c->issuer)))
        snprintf(err, sizeof err, "discovery: its issuer is not [oauth.%s] issuer", c->name);
    else if (doc && (a = endpoint(doc, "authorization_endpoint", true, err, sizeof err)) &&
             (t = endpoint(doc, "token_endpoint", true, err, sizeof err)) &&
             (j = endpoint(doc, "jwks_uri", true, err, sizeof err))) {
        u = endpoint(doc, "userinfo_endpoint", false, err, sizeof err);
        set_str(&p->authorization_endpoint, a);
        set_str(&p->token_endpoint, t);
        set_str(&p->userinfo_endpoint, u);
        set_str(&p->jwks_uri, j);
    }
    if (doc)
        json_object_put(doc);
    bool ok = a && t && j && fetch_jwks(ctx, p, err, sizeof err) == 0;
    if (ok) {
        p->fetched_us = now;
        return 0;
    }
    af_log(AF_LOG_ERROR, "oauth_discovery_failed", "provider", c->name, "error", err,
           p->jwks ? "note" : NULL, "keeping the last keys", NULL);
    p->retry_us = af_now_us() + 30000000;
    return p->jwks ? 0 : -1;
}

static void providers_free(struct af_ctx *ctx)
{
    for (int i = 0; i < ctx->cfg.nproviders; i++) {
        struct provider *p = &providers[i];
        if (ctx->cfg.providers[i].oidc) {
            free(p->authorization_endpoint);
            free(p->token_endpoint);
            free(p->userinfo_endpoint);
        }
        free(p->jwks_uri);
        af_jwks_free(p->jwks);
        free(p->audiences);
        free(p->audiences_text);
        memset(p, 0, sizeof *p);
    }
}

/* ---- small pieces ------------------------------------------------------ */

static const char *binding_cookie_name(struct af_ctx *ctx)
{
    return ctx->cfg.cookies_secure ? "__Host-af_oauth" : "af_oauth";
}

static bool is_token(const char *s)
{
    return s && strlen(s) == AF_TOKEN_CHARS &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == AF_TOKEN_CHARS;
}

/* A value derived from the browser's cookie and the state: the PKCE
 * verifier ("pkce") or the nonce ("nonce"); 43 characters of base64url. */
static void derive(const char *what, const char *cookie, const char *state, char out[AF_TOKEN_CHARS + 1])
{
    crypto_generichash_state st;
    unsigned char h[32];
    crypto_generichash_init(&st, (const unsigned char *)cookie, strlen(cookie), sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)what, strlen(what) + 1);
    crypto_generichash_update(&st, (const unsigned char *)state, strlen(state));
    crypto_generichash_final(&st, h, sizeof h);
    af_b64url(h, sizeof h, out);
}

/* A relative path on this site: "/x...", never "//host" or "/\host", and
 * only characters a URL path and query may carry as they are. */
static bool relative_path(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > REDIRECT_MAX || s[0] != '/' || s[1] == '/' || s[1] == '\\')
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     "-._~!$&'()*+,;=:@/?%") == n;
}

/* The origin of [server] public_url, for postMessage. */
static const char *public_origin(struct af_ctx *ctx, struct af_req *req)
{
    const char *u = ctx->cfg.public_url, *host = strstr(u, "://");
    host = host ? host + 3 : u;
    return af_arena_strndup(req->arena, u, (size_t)(host - u) + strcspn(host, "/?#"));
}

static const char *callback_url(struct af_ctx *ctx, struct af_req *req, const char *provider)
{
    size_t n = strlen(ctx->cfg.public_url);
    while (n && ctx->cfg.public_url[n - 1] == '/')
        n--;
    return af_arena_printf(req->arena, "%.*s%s/oauth/%s/callback", (int)n, ctx->cfg.public_url,
                           ctx->cfg.api_prefix, provider);
}

static char *enc(struct af_req *req, const char *s)
{
    size_t cap = strlen(s) * 3 + 1;
    char *out = af_arena_alloc(req->arena, cap);
    af_percent_encode(s, out, cap);
    return out;
}

static bool unknown_provider(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp,
                             struct provider **p)
{
    *p = find_provider(ctx, af_req_param(req, "provider"));
    if (!*p)
        af_resp_problem(resp, req, 404, "not_found", "No such provider.");
    return !*p;
}

/* ---- the popup page ---------------------------------------------------- */

/* The page of popup mode: posts msg (a JSON object, dropped here) to the
 * opener at our own origin and closes; without an opener it goes to the
 * redirect. The one script is allowed by its hash, nothing else. */
static void popup_page(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, int status,
                       json_object *msg, const char *redirect)
{
    json_object *args = json_object_new_array();
    json_object_array_add(args, msg);
    json_object_array_add(args, json_object_new_string(public_origin(ctx, req)));
    json_object_array_add(args, json_object_new_string(redirect && *redirect ? redirect : "/"));
    const char *json = json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN);
    /* Inside <script>: "<" never appears raw. */
    size_t n = 0;
    char *safe = af_arena_alloc(req->arena, strlen(json) * 6 + 1);
    for (const char *c = json; *c; c++)
        n += (size_t)(*c == '<' ? sprintf(safe + n, "\\u003c") : (safe[n] = *c, 1));
    safe[n] = '\0';
    json_object_put(args);
    const char *script = af_arena_printf(req->arena,
        "(function(a){var m=a[0],o=a[1],r=a[2];"
        "if(window.opener){window.opener.postMessage(m,o);window.close();}"
        "else if(m.ok){location.replace(r);}"
        "else{document.getElementById('s').textContent='Sign-in failed: '+m.error;}})(%s);", safe);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)script, strlen(script));
    char b64[sodium_base64_ENCODED_LEN(sizeof h, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, h, sizeof h, sodium_base64_VARIANT_ORIGINAL);
    resp->status = status;
    resp->content_type = "text/html; charset=utf-8";
    resp->body = af_arena_printf(req->arena,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign-in</title></head>\n"
        "<body><p id=\"s\">Signing in&hellip;</p>\n<script>%s</script></body></html>\n", script);
    resp->body_len = strlen(resp->body);
    af_resp_header(resp, req, "Content-Security-Policy",
                   af_arena_printf(req->arena, "default-src 'none'; script-src 'sha256-%s'", b64));
}

/* A failure of the callback: problem+json, or in popup mode the page, with
 * the same status, that tells the opener. */
static void fail(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, bool popup, int status,
                 const char *code, const char *detail)
{
    af_resp_problem(resp, req, status, code, detail);
    if (status == 503)
        af_resp_header(resp, req, "Retry-After", "5");
    if (!popup)
        return;
    json_object *m = json_object_new_object();
    json_object_object_add(m, "type", json_object_new_string("authflow:oauth"));
    json_object_object_add(m, "ok", json_object_new_boolean(false));
    json_object_object_add(m, "error", json_object_new_string(code));
    popup_page(ctx, req, resp, status, m, NULL);
    resp->code = code;
}

/* ---- the person the provider vouches for ------------------------------- */

struct person {
    char sub[256], email[321], name[256];
    bool email_verified;
};

/* A userinfo field: a string, or a number (GitHub's ids), as text. */
static void field_text(json_object *o, const char *field, char *out, size_t outlen)
{
    json_object *v;
    out[0] = '\0';
    if (!*field || !json_object_object_get_ex(o, field, &v))
        return;
    if (json_object_is_type(v, json_type_string) || json_object_is_type(v, json_type_int)) {
        const char *s = json_object_get_string(v);
        if (strlen(s) < outlen)
            snprintf(out, outlen, "%s", s);
    }
}

/* The userinfo endpoint with the provider's access token. 0, -1 (the
 * provider refused or answered nonsense: 401), -2 (unreachable: 503). */
static int userinfo(struct af_ctx *ctx, struct provider *p, const char *access_token, struct person *who,
                    const char **why)
{
    struct af_fetch_req rq = {.method = AF_FETCH_GET, .url = p->userinfo_endpoint, .bearer = access_token,
                              .timeout_ms = ctx->cfg.oauth_http_timeout_ms, .max_bytes = MAX_ANSWER};
    struct af_fetch_resp r;
    char err[256];
    if (af_fetch(&rq, &r, err, sizeof err) < 0) {
        af_log(AF_LOG_ERROR, "oauth_userinfo_failed", "provider", p->cfg->name, "error", err, NULL);
        *why = "the provider is unreachable";
        return -2;
    }
    long status = r.status;
    json_object *o = status == 200 ? af_fetch_resp_json(&r) : NULL;
    af_fetch_resp_free(&r);
    if (status >= 500 || status == 429) {
        *why = "the provider is unavailable";
        return -2;
    }
    if (!o) {
        *why = "the provider's userinfo answer is not usable";
        return -1;
    }
    const struct af_provider *c = p->cfg;
    bool oidc = c->oidc;
    char sub[256], verified[8];
    field_text(o, oidc ? "sub" : c->userinfo_subject, sub, sizeof sub);
    field_text(o, oidc ? "email" : c->userinfo_email, who->email, sizeof who->email);
    field_text(o, oidc ? "name" : c->userinfo_name, who->name, sizeof who->name);
    json_object *v;
    const char *vf = oidc ? "email_verified" : c->userinfo_email_verified;
    who->email_verified = *who->email && *vf && json_object_object_get_ex(o, vf, &v) &&
                          (json_object_is_type(v, json_type_boolean) ? json_object_get_boolean(v)
                           : json_object_is_type(v, json_type_string) &&
                                 (field_text(o, vf, verified, sizeof verified), !strcmp(verified, "true")));
    json_object_put(o);
    if (!*sub) {
        *why = "the provider's userinfo has no subject";
        return -1;
    }
    if (*who->sub && strcmp(who->sub, sub)) { /* OpenID Connect Core §5.3.2 */
        *why = "userinfo is about someone else";
        return -1;
    }
    snprintf(who->sub, sizeof who->sub, "%s", sub);
    return 0;
}

/* Verifies an id_token, fetching the keys again once for an unknown kid. */
/* *down: the token names a key the provider's key set lacks, and fetching
 * the set again failed (an outage, not the token's fault: 503). */
static enum af_idtoken_status check_id_token(struct af_ctx *ctx, struct provider *p, const char *token,
                                             const char *nonce, long max_age, struct person *who,
                                             const char **why, bool *down)
{
    *down = false;
    struct af_idtoken_expect want = {.issuer = p->cfg->issuer, .client_id = p->cfg->client_id,
                                     .extra_audiences = p->audiences, .nonce = nonce,
                                     .skew_s = ctx->cfg.clock_skew, .max_age_s = max_age};
    struct af_idtoken t;
    enum af_idtoken_status st = af_idtoken_verify(p->jwks, token, &want, &t, why);
    char err[256];
    if (st == AF_IDTOKEN_UNKNOWN_KID && af_now_us() - p->jwks_fetched_us > JWKS_RETRY_US) {
        if (fetch_jwks(ctx, p, err, sizeof err) == 0)
            st = af_idtoken_verify(p->jwks, token, &want, &t, why);
        else {
            af_log(AF_LOG_ERROR, "oauth_jwks_failed", "provider", p->cfg->name, "error", err, NULL);
            *down = true;
        }
    }
    if (st == AF_IDTOKEN_OK) {
        snprintf(who->sub, sizeof who->sub, "%s", t.sub);
        snprintf(who->email, sizeof who->email, "%s", t.email);
        snprintf(who->name, sizeof who->name, "%s", t.name);
        who->email_verified = t.email_verified;
    }
    sodium_memzero(&t, sizeof t);
    return st;
}

/* ---- finding or making the user ---------------------------------------- */

enum found { FOUND_OK, FOUND_ANSWERED };

/* Links (provider, sub) to user_id; false when that identity is already
 * someone's (a concurrent first login). */
static enum af_db_status link_identity(struct af_ctx *ctx, const char *user_id, const char *provider,
                                       const struct person *who, bool *linked)
{
    PGresult *r;
    const char *p[] = {user_id, provider, who->sub, *who->email ? who->email : NULL,
                       who->email_verified ? "true" : "false"};
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "INSERT INTO identities (user_id, provider, subject, email, email_verified, last_login_at) "
        "VALUES ($1, $2, $3, $4, $5::boolean, now()) ON CONFLICT (provider, subject) DO NOTHING RETURNING 1",
        5, p);
    if (st != AF_DB_OK)
        return st;
    *linked = PQntuples(r) == 1;
    PQclear(r);
    return AF_DB_OK;
}

/* The provider vouches that the address is this person's, and the local
 * account with it never proved it was: whoever made that account (anyone
 * can register any address) loses its way in. Its sessions are revoked,
 * its password and two-factor login dropped, and the address counts as
 * verified; the owner goes on through the provider (or a password reset). */
static enum af_db_status claim_account(struct af_ctx *ctx, struct af_req *req, struct af_user *u,
                                       const char *provider)
{
    long n = af_session_revoke_all(ctx, u->id, NULL, "email_claimed");
    if (n < 0)
        return AF_DB_UNAVAILABLE;
    const char *p[] = {u->id};
    enum af_db_status st = af_db_run(ctx->db,
        "WITH t AS (DELETE FROM user_totp WHERE user_id = $1), "
        "r AS (DELETE FROM recovery_codes WHERE user_id = $1), "
        "c AS (DELETE FROM mfa_challenges WHERE user_id = $1) "
        "UPDATE users SET password_hash = NULL, mfa_enabled = false, email_verified = true, "
        "updated_at = now() WHERE id = $1", 1, p);
    if (st != AF_DB_OK)
        return st;
    u->password_hash = NULL;
    u->mfa_enabled = false;
    u->email_verified = true;
    af_user_cache_drop(ctx, u->id);
    af_audit(ctx, req, "account_claimed", u->id, u->id, NULL,
             af_arena_printf(req->arena, "{\"provider\":\"%s\",\"sessions_revoked\":%ld}", provider, n));
    return AF_DB_OK;
}

/* A new account for a verified address, its identity and its audit rows
 * in one statement: all of it exists afterwards or none. No password (the
 * owner may set one through a reset). AF_DB_CONFLICT when the address or
 * the identity was taken meanwhile. */
static enum af_db_status create_linked(struct af_ctx *ctx, struct af_req *req, const char *email,
                                       const char *provider, const struct person *who, struct af_user *u)
{
    const char *ua = af_req_header(req, "User-Agent");
    const char *p[] = {email, af_name_check(who->name) ? "" : who->name, provider, who->sub,
                       req->remote_addr, ua, req->request_id};
    PGresult *r;
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "WITH u AS (INSERT INTO users (email, full_name, email_verified) VALUES ($1, $2, true) RETURNING *), "
        "r AS (INSERT INTO user_roles (user_id, role) SELECT id, 'user' FROM u), "
        "i AS (INSERT INTO identities (user_id, provider, subject, email, email_verified, last_login_at) "
        "      SELECT id, $3, $4, $1, true, now() FROM u), "
        "a AS (INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail) "
        "      SELECT t, id, id, $5, left($6, 512), $7, d FROM u, (VALUES "
        "        ('register', jsonb_build_object('via', 'oauth', 'provider', $3::text)), "
        "        ('identity_linked', jsonb_build_object('provider', $3::text, 'via', 'new_account'))) v (t, d)) "
        "SELECT " AF_USER_COLS_WITH("'[\"user\"]'") " FROM u", 7, p);
    if (st != AF_DB_OK)
        return st;
    af_user_from_row(req, r, 0, u);
    PQclear(r);
    return AF_DB_OK;
}

/* The user of the person the provider vouches for: by the identity, else
 * by an email the provider says is verified (linked then; made, when no
 * account has it). Answers itself (FOUND_ANSWERED) when there is no user
 * to log in. An address the provider has not verified neither opens an
 * existing account nor makes one: else anyone who can make an account at
 * the provider with someone's address would hold the account of that
 * address, before or after its owner. */
static enum found find_user(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, bool popup,
                            const char *provider, struct person *who, struct af_user *u)
{
    enum af_db_status st = AF_DB_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        PGresult *r;
        const char *p[] = {provider, who->sub, *who->email ? who->email : NULL,
                           who->email_verified ? "true" : "false"};
        st = af_db_exec(ctx->db, &r,
            "UPDATE identities SET email = COALESCE($3, email), email_verified = $4::boolean, "
            "last_login_at = now() WHERE provider = $1 AND subject = $2 RETURNING user_id", 4, p);
        if (st != AF_DB_OK)
            break;
        bool known = PQntuples(r) == 1;
        char uid[37] = "";
        if (known)
            snprintf(uid, sizeof uid, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        bool found;
        if (known) {
            if ((st = af_user_by_id_full(ctx, req, uid, u, &found)) != AF_DB_OK)
                break;
            if (!found)
                continue; /* deleted meanwhile: the cascade took the identity too */
            return FOUND_OK;
        }

        char email[AF_EMAIL_MAX + 1];
        if (!*who->email || af_email_normalize(who->email, email)) {
            fail(ctx, req, resp, popup, 400, "validation_failed",
                 "The provider gave no usable email address; allow authflow to see it and try again.");
            return FOUND_ANSWERED;
        }
        if ((st = af_user_by_email(ctx, req, email, u, &found)) != AF_DB_OK)
            break;
        if (!who->email_verified) {
            if (found)
                af_audit(ctx, req, "oauth_link_refused", u->id, u->id, NULL,
                         af_arena_printf(req->arena, "{\"provider\":\"%s\",\"reason\":\"email_not_verified\"}", provider));
            fail(ctx, req, resp, popup, found ? 409 : 403, found ? "email_taken" : "email_not_verified",
                 found ? "An account with this email exists, and the provider has not verified the address: "
                         "log in with your password."
                       : "The provider has not verified this email address: verify it there, or register "
                         "with a password.");
            return FOUND_ANSWERED;
        }
        if (!found) {
            st = create_linked(ctx, req, email, provider, who, u);
            if (st == AF_DB_CONFLICT)
                continue; /* made meanwhile: link to it, as below */
            if (st != AF_DB_OK)
                break;
            af_user_cache_drop(ctx, u->id);
            return FOUND_OK;
        }
        if (!u->email_verified && (st = claim_account(ctx, req, u, provider)) != AF_DB_OK)
            break;
        bool linked;
        if ((st = link_identity(ctx, u->id, provider, who, &linked)) != AF_DB_OK)
            break;
        if (!linked)
            continue;
        af_user_cache_drop(ctx, u->id);
        af_audit(ctx, req, "identity_linked", u->id, u->id, NULL,
                 af_arena_printf(req->arena, "{\"provider\":\"%s\",\"via\":\"verified_email\"}", provider));
        return FOUND_OK;
    }
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        if (popup)
            fail(ctx, req, resp, popup, resp->status, resp->code, NULL);
        return FOUND_ANSWERED;
    }
    fail(ctx, req, resp, popup, 409, "email_taken", "The account changed during the sign-in; try again.");
    return FOUND_ANSWERED;
}

/* Everything after the provider vouched for the person: the account's
 * state, the second factor, the session. The answer is the session's
 * token pair, or the challenge of a user with TOTP on. */
static void log_in(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, bool popup,
                   struct provider *p, struct person *who, char mfa_token[AF_TOKEN_CHARS + 1])
{
    struct af_user u;
    if (find_user(ctx, req, resp, popup, p->cfg->name, who, &u) != FOUND_OK)
        return;
    resp->user_id = af_arena_strdup(req->arena, u.id);
    if (u.disabled) {
        af_audit(ctx, req, "login_failure", u.id, u.id, NULL, "{\"reason\":\"account_disabled\"}");
        fail(ctx, req, resp, popup, 403, "account_disabled", "This account is disabled.");
        return;
    }
    if (ctx->cfg.require_verified_email && !u.email_verified) {
        af_audit(ctx, req, "login_failure", u.id, u.id, NULL, "{\"reason\":\"email_not_verified\"}");
        fail(ctx, req, resp, popup, 403, "email_not_verified",
             "Verify your email address first: a code was mailed to it.");
        return;
    }
    if (u.mfa_enabled) {
        af_mfa_challenge(ctx, req, resp, &u, "oauth", mfa_token);
        return;
    }
    af_session_login(ctx, req, resp, &u, "[\"oauth\"]");
}

/* ---- the handlers ------------------------------------------------------ */

static void do_providers(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    json_object *list = json_object_new_array();
    for (int i = 0; i < ctx->cfg.nproviders; i++) {
        const struct af_provider *c = &ctx->cfg.providers[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(c->name));
        json_object_object_add(o, "display_name", json_object_new_string(c->display_name));
        json_object_object_add(o, "type", json_object_new_string(c->oidc ? "oidc" : "oauth2"));
        json_object_object_add(o, "start_url", json_object_new_string(af_arena_printf(
            req->arena, "%s/oauth/%s/start", ctx->cfg.api_prefix, c->name)));
        json_object_array_add(list, o);
    }
    af_resp_json(resp, req, 200, list);
    resp->no_store = false;
    af_resp_header(resp, req, "Cache-Control", "public, max-age=60");
}

static void do_start(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    struct provider *p;
    if (unknown_provider(ctx, req, resp, &p))
        return;
    json_object *q = af_req_query(req, resp);
    if (!q)
        return;
    struct af_field_errors fe = {0};
    const char *redirect = af_query_string(q, "redirect", &fe);
    const char *mode = af_query_string(q, "mode", &fe);
    if (!redirect)
        redirect = "/";
    else if (!relative_path(redirect))
        af_field_error(&fe, "redirect", "must be a relative path on this site, such as /app");
    if (!mode)
        mode = "redirect";
    else if (strcmp(mode, "redirect") && strcmp(mode, "popup"))
        af_field_error(&fe, "mode", "must be redirect or popup");
    bool bad = af_resp_field_errors(resp, req, &fe);
    redirect = af_arena_strdup(req->arena, redirect);
    mode = af_arena_strdup(req->arena, mode);
    json_object_put(q);
    if (bad)
        return;
    if (provider_ready(ctx, p) < 0) {
        af_resp_unavailable(resp, req, "the provider's discovery document or keys cannot be fetched");
        return;
    }

    /* The browser's binding cookie: kept when it has one, so two tabs can
     * start logins at once. */
    const char *cookie = af_req_cookie(req, binding_cookie_name(ctx));
    char fresh[AF_TOKEN_CHARS + 1], state[AF_TOKEN_CHARS + 1];
    if (!is_token(cookie)) {
        af_random_token(fresh);
        cookie = af_arena_strdup(req->arena, fresh);
    }
    af_random_token(state);
    char state_hash[AF_SHA256_HEX], browser_hash[AF_SHA256_HEX], ttl[16];
    af_sha256_hex(state, strlen(state), state_hash);
    af_sha256_hex(cookie, strlen(cookie), browser_hash);
    snprintf(ttl, sizeof ttl, "%ld", ctx->cfg.oauth_state_ttl);
    const char *params[] = {state_hash, p->cfg->name, browser_hash, redirect, mode, ttl};
    enum af_db_status st = af_db_run(ctx->db,
        "INSERT INTO oauth_states (state_hash, provider, browser_hash, redirect, mode, expires_at) "
        "VALUES (decode($1, 'hex'), $2, decode($3, 'hex'), $4, $5, now() + make_interval(secs => $6::int))",
        6, params);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }

    char verifier[AF_TOKEN_CHARS + 1], challenge[AF_TOKEN_CHARS + 1], nonce[AF_TOKEN_CHARS + 1];
    unsigned char h[32];
    derive("pkce", cookie, state, verifier);
    af_sha256(verifier, strlen(verifier), h);
    af_b64url(h, sizeof h, challenge);
    sodium_memzero(verifier, sizeof verifier);
    derive("nonce", cookie, state, nonce);
    const char *a = p->authorization_endpoint;
    const char *loc = af_arena_printf(req->arena,
        "%s%sresponse_type=code&client_id=%s&redirect_uri=%s&scope=%s&state=%s"
        "&code_challenge=%s&code_challenge_method=S256%s%s%s",
        a, strchr(a, '?') ? "&" : "?", enc(req, p->cfg->client_id),
        enc(req, callback_url(ctx, req, p->cfg->name)), enc(req, p->cfg->scopes), state, challenge,
        p->cfg->oidc ? "&nonce=" : "", p->cfg->oidc ? nonce : "",
        p->cfg->oidc && !strcmp(mode, "popup") ? "&display=popup" : "");
    sodium_memzero(state, sizeof state);
    struct af_cookie c = {.name = binding_cookie_name(ctx), .value = cookie, .path = "/",
                          .max_age = ctx->cfg.oauth_state_ttl, .http_only = true,
                          .secure = ctx->cfg.cookies_secure, .same_site = AF_SAMESITE_LAX};
    af_resp_empty(resp, 302);
    af_resp_header(resp, req, "Location", loc);
    af_resp_header(resp, req, "Set-Cookie", af_cookie_format(req->arena, &c));
    af_metrics_incf("authflow_oauth_starts_total{provider=\"%s\"}", p->cfg->name);
}

/* The provider's code for tokens. 0 with *answer (the token response),
 * or the HTTP status to fail with (401: the code was refused; 503). */
static int exchange(struct af_ctx *ctx, struct af_req *req, struct provider *p, const char *code,
                    const char *verifier, json_object **answer)
{
    const struct af_provider *c = p->cfg;
    bool post = !strcmp(c->token_auth, "client_secret_post");
    const char *pairs[] = {"grant_type", "authorization_code", "code", code,
                           "redirect_uri", callback_url(ctx, req, c->name), "code_verifier", verifier,
                           "client_id", post ? c->client_id : NULL,
                           "client_secret", post ? c->client_secret : NULL, NULL};
    char *form = af_form_encode(pairs);
    if (!form)
        return 503;
    struct af_fetch_req rq = {.method = AF_FETCH_POST, .url = p->token_endpoint, .form = form,
                              .basic_user = post ? NULL : c->client_id,
                              .basic_password = post ? NULL : c->client_secret,
                              .timeout_ms = ctx->cfg.oauth_http_timeout_ms, .max_bytes = MAX_ANSWER};
    struct af_fetch_resp r;
    char err[256];
    int rc = af_fetch(&rq, &r, err, sizeof err);
    sodium_memzero(form, strlen(form));
    free(form);
    if (rc < 0) {
        af_log(AF_LOG_ERROR, "oauth_token_failed", "provider", c->name, "error", err, NULL);
        return 503;
    }
    json_object *o = af_fetch_resp_json(&r);
    long status = r.status;
    af_fetch_resp_free(&r);
    if (status == 200 && o) {
        *answer = o;
        return 0;
    }
    json_object *e;
    const char *error = o && json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_string)
                            ? json_object_get_string(e) : "";
    char shown[40];
    snprintf(shown, sizeof shown, "%.32s", error);
    for (char *s = shown; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            *s = '?';
    char st[16];
    snprintf(st, sizeof st, "%ld", status);
    af_log(AF_LOG_WARN, "oauth_code_refused", "provider", c->name, "status", st, "error", shown, NULL);
    if (o)
        json_object_put(o);
    return status >= 500 || status == 429 ? 503 : 401;
}

static const char *json_str(json_object *o, const char *field)
{
    json_object *v;
    return json_object_object_get_ex(o, field, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v) : NULL;
}

static void callback(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp, struct provider *p)
{
    json_object *q = af_req_query(req, resp);
    if (!q)
        return;
    struct af_field_errors fe = {0};
    const char *state = af_query_string(q, "state", &fe);
    const char *code = af_query_string(q, "code", &fe);
    const char *error = af_query_string(q, "error", &fe);
    const char *iss = af_query_string(q, "iss", &fe);
    if (!state)
        af_field_error(&fe, "state", "is required");
    else if (!is_token(state))
        state = "";
    if (!error && !code)
        af_field_error(&fe, "code", "is required");
    if (af_resp_field_errors(resp, req, &fe)) {
        json_object_put(q);
        return;
    }
    state = af_arena_strdup(req->arena, state);
    code = code ? af_arena_strdup(req->arena, code) : NULL;
    char denied[40] = "";
    if (error)
        snprintf(denied, sizeof denied, "%.32s", error);
    for (char *s = denied; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            *s = '?';
    iss = iss ? af_arena_strdup(req->arena, iss) : NULL;
    json_object_put(q);
    /* The state: looked at, then (once the provider can be reached: an
     * outage costs the user a retry, not the sign-in) used up. */
    char state_hash[AF_SHA256_HEX];
    af_sha256_hex(state, strlen(state), state_hash);
    PGresult *r;
    const char *sp[] = {state_hash};
    enum af_db_status st = af_db_exec(ctx->db, &r,
        "SELECT provider, encode(browser_hash, 'hex'), redirect, mode, expires_at > now() "
        "FROM oauth_states WHERE state_hash = decode($1, 'hex')", 1, sp);
    if (st != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool have = PQntuples(r) == 1;
    const char *row_provider = have ? af_arena_strdup(req->arena, PQgetvalue(r, 0, 0)) : "";
    const char *row_browser = have ? af_arena_strdup(req->arena, PQgetvalue(r, 0, 1)) : "";
    const char *redirect = have ? af_arena_strdup(req->arena, PQgetvalue(r, 0, 2)) : "/";
    bool popup = have && !strcmp(PQgetvalue(r, 0, 3), "popup");
    bool live = have && PQgetvalue(r, 0, 4)[0] == 't';
    PQclear(r);
    const char *cookie = af_req_cookie(req, binding_cookie_name(ctx));
    char browser_hash[AF_SHA256_HEX] = "";
    if (is_token(cookie))
        af_sha256_hex(cookie, strlen(cookie), browser_hash);
    if (!have || strcmp(row_provider, p->cfg->name)) {
        fail(ctx, req, resp, false, 401, "invalid_token",
             "This sign-in is unknown or was already used; start again.");
        return;
    }
    if (!live) {
        fail(ctx, req, resp, popup, 401, "invalid_token", "This sign-in took too long; start again.");
        return;
    }
    if (strcmp(browser_hash, row_browser)) {
        fail(ctx, req, resp, popup, 401, "invalid_token",
             "This sign-in was started in another browser; start again here.");
        return;
    }
    if (!*denied && provider_ready(ctx, p) < 0) {
        af_resp_unavailable(resp, req, "the provider's discovery document or keys cannot be fetched");
        if (popup)
            fail(ctx, req, resp, popup, 503, "service_unavailable", NULL);
        return;
    }
    /* Used once: of two requests with the same state, one goes on. */
    if ((st = af_db_exec(ctx->db, &r, "DELETE FROM oauth_states WHERE state_hash = decode($1, 'hex') RETURNING 1",
                         1, sp)) != AF_DB_OK) {
        af_resp_db_failure(resp, req, ctx, st);
        return;
    }
    bool mine = PQntuples(r) == 1;
    PQclear(r);
    if (!mine) {
        fail(ctx, req, resp, popup, 401, "invalid_token", "This sign-in was already used; start again.");
        return;
    }
    if (*denied) {
        af_log(AF_LOG_INFO, "oauth_denied", "provider", p->cfg->name, "error", denied, NULL);
        fail(ctx, req, resp, popup, 401, "unauthorized",
             af_arena_printf(req->arena, "The provider did not sign you in (%s).", denied));
        return;
    }
    /* RFC 9207: a provider that names itself must be the one we asked (a
     * plain OAuth 2.0 provider has no issuer to compare with). */
    if (iss && p->cfg->oidc && strcmp(iss, p->cfg->issuer)) {
        fail(ctx, req, resp, popup, 401, "invalid_token", "The answer came from another provider.");
        return;
    }

    char verifier[AF_TOKEN_CHARS + 1], nonce[AF_TOKEN_CHARS + 1];
    derive("pkce", cookie, state, verifier);
    derive("nonce", cookie, state, nonce);
    json_object *tokens = NULL;
    int status = exchange(ctx, req, p, code, verifier, &tokens);
    sodium_memzero(verifier, sizeof verifier);
    if (status) {
        fail(ctx, req, resp, popup, status, status == 503 ? "service_unavailable" : "invalid_code",
             status == 503 ? "The provider cannot be reached; try again shortly."
                           : "The provider refused the code (used, expired or not ours); start again.");
        return;
    }
    struct person who = {0};
    const char *why = NULL;
    const char *access = json_str(tokens, "access_token");
    int bad = 0;
    if (p->cfg->oidc) {
        const char *idt = json_str(tokens, "id_token");
        bool down = false;
        enum af_idtoken_status ts = idt ? check_id_token(ctx, p, idt, nonce, IDTOKEN_MAX_AGE, &who, &why, &down)
                                        : AF_IDTOKEN_INVALID;
        if (!idt)
            why = "no id_token";
        if (down) {
            json_object_put(tokens);
            fail(ctx, req, resp, popup, 503, "service_unavailable", "The provider's keys cannot be fetched.");
            return;
        }
        bad = ts != AF_IDTOKEN_OK;
        /* An id_token without the email: userinfo has it (same subject). */
        if (!bad && !*who.email && access && p->userinfo_endpoint) {
            int u = userinfo(ctx, p, access, &who, &why);
            bad = u == -1;
            if (u == -2) {
                json_object_put(tokens);
                fail(ctx, req, resp, popup, 503, "service_unavailable", "The provider cannot be reached.");
                return;
            }
        }
    } else {
        int u = access ? userinfo(ctx, p, access, &who, &why) : -1;
        if (!access)
            why = "no access_token";
        if (u == -2) {
            json_object_put(tokens);
            fail(ctx, req, resp, popup, 503, "service_unavailable", "The provider cannot be reached.");
            return;
        }
        bad = u != 0;
    }
    json_object_put(tokens);
    if (bad) {
        af_log(AF_LOG_WARN, "oauth_id_token_refused", "provider", p->cfg->name, "reason", why, NULL);
        fail(ctx, req, resp, popup, 401, "invalid_token",
             af_arena_printf(req->arena, "The provider's answer was refused: %s.", why));
        return;
    }

    char mfa_token[AF_TOKEN_CHARS + 1] = "";
    log_in(ctx, req, resp, popup, p, &who, mfa_token);
    sodium_memzero(&who, sizeof who);
    if (resp->status == 401 && *mfa_token) {
        /* The second factor, in the browser: the page or the redirect
         * carries the mfa_token (in the fragment, which is never sent to
         * a server) for POST /auth/mfa/verify. */
        if (popup) {
            json_object *m = json_object_new_object();
            json_object_object_add(m, "type", json_object_new_string("authflow:oauth"));
            json_object_object_add(m, "ok", json_object_new_boolean(false));
            json_object_object_add(m, "error", json_object_new_string("mfa_required"));
            json_object_object_add(m, "mfa_token", json_object_new_string(mfa_token));
            json_object_object_add(m, "mfa_expires_in", json_object_new_int(AF_MFA_CHALLENGE_TTL));
            popup_page(ctx, req, resp, 200, m, redirect);
        } else {
            af_resp_empty(resp, 302);
            af_resp_header(resp, req, "Location", af_arena_printf(req->arena,
                "%s#mfa_required=1&mfa_token=%s&mfa_expires_in=%d", redirect, mfa_token, AF_MFA_CHALLENGE_TTL));
        }
        resp->code = "mfa_required";
        sodium_memzero(mfa_token, sizeof mfa_token);
        return;
    }
    if (popup && resp->status >= 400 && resp->content_type &&
        !strcmp(resp->content_type, "application/problem+json")) {
        fail(ctx, req, resp, popup, resp->status, resp->code, NULL); /* the session could not open */
        return;
    }
    if (resp->status != 200 || !ctx->cfg.cookies_enabled)
        return; /* a failure already answered; or, without cookies, the token pair as JSON */
    /* The session is in the cookies session.c set; the tokens stay out of
     * the page and the URL. */
    if (popup) {
        json_object *m = json_object_new_object();
        json_object_object_add(m, "type", json_object_new_string("authflow:oauth"));
        json_object_object_add(m, "ok", json_object_new_boolean(true));
        json_object_object_add(m, "redirect", json_object_new_string(redirect));
        popup_page(ctx, req, resp, 200, m, redirect);
    } else {
        af_resp_empty(resp, 302);
        af_resp_header(resp, req, "Location", redirect);
    }
}

static void do_callback(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    struct provider *p;
    if (unknown_provider(ctx, req, resp, &p))
        return;
    callback(ctx, req, resp, p);
    af_metrics_incf("authflow_oauth_logins_total{provider=\"%s\",result=\"%s\"}", p->cfg->name,
                    resp->status == 200 || resp->status == 302 ? (resp->code ? resp->code : "success")
                    : resp->code ? resp->code : "error");
}

/* POST /oauth/{provider}/id-token: a native app's id_token, from the
 * provider's own SDK, for a session here. */
static void do_id_token(struct af_ctx *ctx, struct af_req *req, struct af_resp *resp)
{
    struct provider *p;
    if (unknown_provider(ctx, req, resp, &p))
        return;
    json_object *body = af_req_json(req, resp);
    if (!body)
        return;
    struct af_field_errors fe = {0};
    const char *token = af_body_string(body, "id_token", true, &fe);
    const char *nonce = af_body_string(body, "nonce", false, &fe);
    if (token && strlen(token) > 16384)
        af_field_error(&fe, "id_token", "is too long");
    if (nonce && strlen(nonce) > 255)
        af_field_error(&fe, "nonce", "is too long");
    if (!p->cfg->oidc)
        af_field_error(&fe, "id_token", "this provider does not issue id_tokens (not OpenID Connect)");
    if (af_resp_field_errors(resp, req, &fe))
        return;
    /* The answer sets session cookies: a page of another site must not
     * log its visitor in to an account of its choosing (login CSRF). Native
     * apps send no Origin; browsers do, on every cross-site POST. */
    const char *origin = af_req_header(req, "Origin");
    if (origin && !af_origin_allowed(ctx, origin)) {
        af_resp_problem(resp, req, 403, "csrf_failed", "This origin may not sign in here.");
        return;
    }
    if (provider_ready(ctx, p) < 0) {
        af_resp_unavailable(resp, req, "the provider's discovery document or keys cannot be fetched");
        return;
    }
    struct person who = {0};
    const char *why = NULL;
    bool down;
    enum af_idtoken_status ts = check_id_token(ctx, p, token, nonce, 0, &who, &why, &down);
    if (down) {
        af_resp_unavailable(resp, req, "the provider's keys cannot be fetched");
        return;
    }
    if (ts != AF_IDTOKEN_OK) {
        af_log(AF_LOG_WARN, "oauth_id_token_refused", "provider", p->cfg->name, "reason", why, NULL);
        af_resp_problem(resp, req, 401, ts == AF_IDTOKEN_EXPIRED ? "token_expired" : "invalid_token",
                        af_arena_printf(req->arena, "The id_token was refused: %s.", why));
        return;
    }
    log_in(ctx, req, resp, false, p, &who, NULL);
    sodium_memzero(&who, sizeof who);
    af_metrics_incf("authflow_oauth_logins_total{provider=\"%s\",result=\"%s\"}", p->cfg->name,
                    resp->status == 200 ? "success" : resp->code ? resp->code : "error");
}

static const struct af_route routes[] = {
    {"GET", "/oauth/providers", do_providers, AF_PUBLIC},
    {"GET", "/oauth/{provider}/start", do_start, AF_PUBLIC},
    {"GET", "/oauth/{provider}/callback", do_callback, AF_PUBLIC},
    {"POST", "/oauth/{provider}/id-token", do_id_token, AF_PUBLIC},
};

int main(int argc, char **argv)
{
    (void)argc;
    af_ctx_slim(argv);
    struct af_ctx ctx;
    if (af_ctx_init(&ctx, "authflow-oauth", NULL, AF_NEED_KEYS) < 0)
        return 1;
    int rc = af_serve(&ctx, routes, sizeof routes / sizeof routes[0]);
    providers_free(&ctx);
    af_ctx_free(&ctx);
    return rc;
}
