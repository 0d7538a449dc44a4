/* config.c — INI + environment configuration (see config.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#ifndef AF_SYSCONFDIR
#define AF_SYSCONFDIR "/etc/authflow"
#endif

enum kind { K_STR, K_INT, K_BOOL, K_ENUM };

struct key {
    const char *section, *name;
    enum kind kind;
    size_t off;
    const char *def;
    long min, max;          /* K_INT bounds */
    const char *choices;    /* K_ENUM: space separated */
};

#define OFF(f) offsetof(struct af_config, f)
static const struct key keys[] = {
    {"server", "public_url", K_STR, OFF(public_url), "http://127.0.0.1:8080", 0, 0, NULL},
    {"server", "api_prefix", K_STR, OFF(api_prefix), "/api/v1", 0, 0, NULL},
    {"server", "max_body_bytes", K_INT, OFF(max_body_bytes), "65536", 1024, 16777216, NULL},
    {"server", "allowed_origins", K_STR, OFF(allowed_origins), "", 0, 0, NULL},
    {"server", "trusted_proxies", K_STR, OFF(trusted_proxies), "", 0, 0, NULL},
    {"database", "dsn", K_STR, OFF(db_dsn), "dbname=authflow", 0, 0, NULL},
    {"database", "connect_timeout", K_INT, OFF(db_connect_timeout), "3", 1, 60, NULL},
    {"database", "read_dsn", K_STR, OFF(db_read_dsn), "", 0, 0, NULL},
    {"database", "listen_dsn", K_STR, OFF(db_listen_dsn), "", 0, 0, NULL},
    {"database", "query_timeout_ms", K_INT, OFF(db_query_timeout_ms), "5000", 0, 600000, NULL},
    {"database", "read_timeout_ms", K_INT, OFF(db_read_timeout_ms), "1000", 0, 600000, NULL},
    {"database", "read_max_lag_ms", K_INT, OFF(db_read_max_lag_ms), "1000", 0, 3600000, NULL},
    {"redis", "host", K_STR, OFF(redis_host), "127.0.0.1", 0, 0, NULL},
    {"redis", "port", K_INT, OFF(redis_port), "6379", 1, 65535, NULL},
    {"redis", "socket", K_STR, OFF(redis_socket), "", 0, 0, NULL},
    {"redis", "password", K_STR, OFF(redis_password), "", 0, 0, NULL},
    {"redis", "db", K_INT, OFF(redis_db), "0", 0, 15, NULL},
    {"redis", "connect_timeout_ms", K_INT, OFF(redis_connect_timeout_ms), "200", 1, 60000, NULL},
    {"redis", "command_timeout_ms", K_INT, OFF(redis_command_timeout_ms), "200", 1, 60000, NULL},
    {"tokens", "keys_dir", K_STR, OFF(keys_dir), "/var/lib/authflow/keys", 0, 0, NULL},
    {"tokens", "algorithm", K_ENUM, OFF(algorithm), "ES256", 0, 0, "ES256 RS256"},
    {"tokens", "issuer", K_STR, OFF(issuer), "http://127.0.0.1:8080", 0, 0, NULL},
    {"tokens", "audience", K_STR, OFF(audience), "authflow", 0, 0, NULL},
    {"tokens", "access_ttl", K_INT, OFF(access_ttl), "900", 10, 86400, NULL},
    {"tokens", "refresh_ttl", K_INT, OFF(refresh_ttl), "2592000", 60, 31536000, NULL},
    {"tokens", "refresh_idle_ttl", K_INT, OFF(refresh_idle_ttl), "604800", 60, 31536000, NULL},
    {"tokens", "clock_skew", K_INT, OFF(clock_skew), "60", 0, 300, NULL},
    {"tokens", "refresh_reuse_grace", K_INT, OFF(refresh_reuse_grace), "10", 0, 300, NULL},
    {"tokens", "fingerprint", K_STR, OFF(fingerprint), "user_agent accept_language", 0, 0, NULL},
    {"cookies", "enabled", K_BOOL, OFF(cookies_enabled), "true", 0, 0, NULL},
    {"cookies", "secure", K_BOOL, OFF(cookies_secure), "true", 0, 0, NULL},
    {"passwords", "min_length", K_INT, OFF(password_min_length), "12", 8, 128, NULL},
    {"passwords", "argon2_iterations", K_INT, OFF(argon2_iterations), "2", 2, 16, NULL},
    {"passwords", "argon2_memory_kib", K_INT, OFF(argon2_memory_kib), "19456", 19456, 4194304, NULL},
    {"passwords", "common_list", K_STR, OFF(password_common_list), AF_SYSCONFDIR "/common-passwords.txt", 0, 0, NULL},
    {"passwords", "dictionary_check", K_BOOL, OFF(password_dictionary_check), "true", 0, 0, NULL},
    {"auth", "require_verified_email", K_BOOL, OFF(require_verified_email), "false", 0, 0, NULL},
    {"auth", "email_code_ttl", K_INT, OFF(email_code_ttl), "600", 60, 86400, NULL},
    {"auth", "email_code_attempts", K_INT, OFF(email_code_attempts), "5", 1, 20, NULL},
    {"auth", "email_code_cooldown", K_INT, OFF(email_code_cooldown), "60", 0, 3600, NULL},
    {"auth", "reset_token_ttl", K_INT, OFF(reset_token_ttl), "1800", 60, 86400, NULL},
    {"auth", "reset_url", K_STR, OFF(reset_url), "", 0, 0, NULL},
    {"auth", "invite_ttl", K_INT, OFF(invite_ttl), "259200", 3600, 2592000, NULL},
    {"mail", "transport", K_ENUM, OFF(mail_transport), "smtp", 0, 0, "smtp sendmail"},
    {"mail", "smtp_host", K_STR, OFF(smtp_host), "127.0.0.1", 0, 0, NULL},
    {"mail", "smtp_port", K_INT, OFF(smtp_port), "25", 1, 65535, NULL},
    {"mail", "smtp_tls", K_ENUM, OFF(smtp_tls), "none", 0, 0, "none starttls tls"},
    {"mail", "smtp_username", K_STR, OFF(smtp_username), "", 0, 0, NULL},
    {"mail", "smtp_password", K_STR, OFF(smtp_password), "", 0, 0, NULL},
    {"mail", "smtp_timeout", K_INT, OFF(smtp_timeout), "30", 1, 600, NULL},
    {"mail", "smtp_ca_file", K_STR, OFF(smtp_ca_file), "", 0, 0, NULL},
    {"mail", "smtp_verify_peer", K_BOOL, OFF(smtp_verify_peer), "true", 0, 0, NULL},
    {"mail", "sendmail_path", K_STR, OFF(sendmail_path), "/usr/sbin/sendmail", 0, 0, NULL},
    {"mail", "from", K_STR, OFF(mail_from), "authflow <no-reply@localhost>", 0, 0, NULL},
    {"mail", "reply_to", K_STR, OFF(mail_reply_to), "", 0, 0, NULL},
    {"mail", "product_name", K_STR, OFF(product_name), "authflow", 0, 0, NULL},
    {"mail", "templates_dir", K_STR, OFF(templates_dir), AF_SYSCONFDIR "/templates", 0, 0, NULL},
    {"mail", "max_attempts", K_INT, OFF(mail_max_attempts), "10", 1, 100, NULL},
    {"mail", "retry_base_seconds", K_INT, OFF(mail_retry_base), "30", 1, 86400, NULL},
    {"mail", "retry_max_seconds", K_INT, OFF(mail_retry_max), "3600", 1, 604800, NULL},
    {"mail", "poll_seconds", K_INT, OFF(mail_poll), "10", 1, 3600, NULL},
    {"mail", "lease_seconds", K_INT, OFF(mail_lease), "120", 2, 86400, NULL},
    {"mail", "retention_days", K_INT, OFF(mail_retention_days), "30", 1, 3650, NULL},
    {"gate", "login_url", K_STR, OFF(gate_login_url), "", 0, 0, NULL},
    {"gate", "session_memory_ms", K_INT, OFF(gate_session_memory_ms), "2000", 0, 60000, NULL},
    {"ratelimit", "enabled", K_BOOL, OFF(rl_enabled), "true", 0, 0, NULL},
    {"ratelimit", "auth_per_ip", K_INT, OFF(rl_auth_per_ip), "300", 1, 1000000, NULL},
    {"ratelimit", "users_per_ip", K_INT, OFF(rl_users_per_ip), "600", 1, 1000000, NULL},
    {"ratelimit", "admin_per_ip", K_INT, OFF(rl_admin_per_ip), "600", 1, 1000000, NULL},
    {"ratelimit", "per_account", K_INT, OFF(rl_per_account), "300", 1, 1000000, NULL},
    {"ratelimit", "login_failures", K_INT, OFF(rl_login_failures), "5", 1, 1000, NULL},
    {"ratelimit", "login_window", K_INT, OFF(rl_login_window), "900", 60, 86400, NULL},
    {"ratelimit", "login_lockout", K_INT, OFF(rl_login_lockout), "30", 1, 3600, NULL},
    {"ratelimit", "login_lockout_max", K_INT, OFF(rl_login_lockout_max), "900", 1, 86400, NULL},
    {"ratelimit", "login_failures_per_ip", K_INT, OFF(rl_login_failures_per_ip), "100", 1, 1000000, NULL},
    {"cleanup", "keep_days", K_INT, OFF(cleanup_keep_days), "7", 0, 3650, NULL},
    {"cleanup", "audit_keep_days", K_INT, OFF(audit_keep_days), "365", 1, 36500, NULL},
    {"oauth", "state_ttl", K_INT, OFF(oauth_state_ttl), "600", 60, 3600, NULL},
    {"oauth", "discovery_refresh", K_INT, OFF(oauth_discovery_refresh), "3600", 60, 86400, NULL},
    {"oauth", "http_timeout_ms", K_INT, OFF(oauth_http_timeout_ms), "5000", 100, 60000, NULL},
    {"log", "level", K_ENUM, OFF(log_level), "info", 0, 0, "debug info warn error"},
    {"metrics", "enabled", K_BOOL, OFF(metrics_enabled), "true", 0, 0, NULL},
    {"metrics", "file", K_STR, OFF(metrics_file), "/run/authflow/metrics/counters", 0, 0, NULL},
    {"metrics", "allow_from", K_STR, OFF(metrics_allow_from), "127.0.0.1 ::1", 0, 0, NULL},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* The keys of each [oauth.NAME] section: one social-login provider. */
#define POFF(f) offsetof(struct af_provider, f)
static const struct key pkeys[] = {
    {"oauth.NAME", "display_name", K_STR, POFF(display_name), "", 0, 0, NULL},
    {"oauth.NAME", "issuer", K_STR, POFF(issuer), "", 0, 0, NULL},
    {"oauth.NAME", "client_id", K_STR, POFF(client_id), "", 0, 0, NULL},
    {"oauth.NAME", "client_secret", K_STR, POFF(client_secret), "", 0, 0, NULL},
    {"oauth.NAME", "token_auth", K_ENUM, POFF(token_auth), "client_secret_basic", 0, 0,
     "client_secret_basic client_secret_post"},
    {"oauth.NAME", "scopes", K_STR, POFF(scopes), "", 0, 0, NULL},
    {"oauth.NAME", "extra_audiences", K_STR, POFF(extra_audiences), "", 0, 0, NULL},
    {"oauth.NAME", "authorization_endpoint", K_STR, POFF(authorization_endpoint), "", 0, 0, NULL},
    {"oauth.NAME", "token_endpoint", K_STR, POFF(token_endpoint), "", 0, 0, NULL},
    {"oauth.NAME", "userinfo_endpoint", K_STR, POFF(userinfo_endpoint), "", 0, 0, NULL},
    {"oauth.NAME", "userinfo_subject", K_STR, POFF(userinfo_subject), "id", 0, 0, NULL},
    {"oauth.NAME", "userinfo_email", K_STR, POFF(userinfo_email), "email", 0, 0, NULL},
    {"oauth.NAME", "userinfo_email_verified", K_STR, POFF(userinfo_email_verified), "", 0, 0, NULL},
    {"oauth.NAME", "userinfo_name", K_STR, POFF(userinfo_name), "name", 0, 0, NULL},
};
#define NPKEYS (sizeof pkeys / sizeof pkeys[0])

/* Sets field k of obj (a struct af_config, or a struct af_provider for the
 * provider keys). */
static int set_value(void *obj, const struct key *k, const char *val, const char *where,
                     char *err, size_t errlen)
{
    char *base = obj;
    switch (k->kind) {
    case K_STR:
    case K_ENUM: {
        if (k->kind == K_ENUM) {
            size_t vl = strlen(val);
            const char *p = k->choices;
            int ok = 0;
            while (*p) {
                size_t n = strcspn(p, " ");
                if (n == vl && strncmp(p, val, n) == 0)
                    ok = 1;
                p += n;
                while (*p == ' ')
                    p++;
            }
            if (!ok || vl == 0) {
                snprintf(err, errlen, "%s: [%s] %s: '%s' is not one of: %s", where,
                         k->section, k->name, val, k->choices);
                return -1;
            }
        }
        char **slot = (char **)(base + k->off);
        char *dup = strdup(val);
        if (!dup) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(*slot);
        *slot = dup;
        return 0;
    }
    case K_INT: {
        char *end;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end || v < k->min || v > k->max) {
            snprintf(err, errlen, "%s: [%s] %s: '%s' is not a whole number from %ld to %ld",
                     where, k->section, k->name, val, k->min, k->max);
            return -1;
        }
        *(long *)(base + k->off) = v;
        return 0;
    }
    case K_BOOL: {
        bool v;
        if (!strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on") || !strcmp(val, "1"))
            v = true;
        else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off") || !strcmp(val, "0"))
            v = false;
        else {
            snprintf(err, errlen, "%s: [%s] %s: '%s' is not true or false", where,
                     k->section, k->name, val);
            return -1;
        }
        *(bool *)(base + k->off) = v;
        return 0;
    }
    }
    return -1;
}

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* The provider named name, created with its defaults on first mention. */
static struct af_provider *provider(struct af_config *c, const char *name, const char *where,
                                    char *err, size_t errlen)
{
    for (int i = 0; i < c->nproviders; i++)
        if (!strcmp(c->providers[i].name, name))
            return &c->providers[i];
    size_t n = strlen(name);
    if (n == 0 || n > 32 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != n) {
        snprintf(err, errlen, "%s: [oauth.%s]: a provider name is 1 to 32 of a-z 0-9 _ -", where, name);
        return NULL;
    }
    if (c->nproviders == AF_MAX_PROVIDERS) {
        snprintf(err, errlen, "%s: [oauth.%s]: at most %d providers", where, name, AF_MAX_PROVIDERS);
        return NULL;
    }
    struct af_provider *p = &c->providers[c->nproviders++];
    memset(p, 0, sizeof *p);
    if (!(p->name = strdup(name))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < NPKEYS; i++)
        if (set_value(p, &pkeys[i], pkeys[i].def, "default", err, errlen) < 0)
            return NULL;
    return p;
}

static int set_provider_value(struct af_config *c, const char *pname, const char *key,
                              const char *val, const char *where, char *err, size_t errlen)
{
    struct af_provider *p = provider(c, pname, where, err, errlen);
    if (!p)
        return -1;
    for (size_t i = 0; i < NPKEYS; i++)
        if (!strcmp(pkeys[i].name, key)) {
            if (set_value(p, &pkeys[i], val, where, err, errlen) < 0) {
                /* Name the provider rather than the table's placeholder. */
                char *at = strstr(err, "oauth.NAME");
                if (at) {
                    char fixed[512];
                    snprintf(fixed, sizeof fixed, "%.*soauth.%s%s", (int)(at - err), err, pname, at + 10);
                    snprintf(err, errlen, "%s", fixed);
                }
                return -1;
            }
            return 0;
        }
    snprintf(err, errlen, "%s: unknown key [oauth.%s] %s", where, pname, key);
    return -1;
}

static int parse_ini(struct af_config *c, const char *text, const char *where,
                     char *err, size_t errlen)
{
    char section[64] = "";
    int lineno = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, "\n");
        char line[4096];
        lineno++;
        if (n >= sizeof line) {
            snprintf(err, errlen, "%s:%d: line too long", where, lineno);
            return -1;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p += n;
        if (*p == '\n')
            p++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] != '\0' || (size_t)(e - s - 1) >= sizeof section) {
                snprintf(err, errlen, "%s:%d: bad section header", where, lineno);
                return -1;
            }
            *e = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected key = value", where, lineno);
            return -1;
        }
        *eq = '\0';
        char *name = trim(s), *val = trim(eq + 1);
        if (!strncmp(section, "oauth.", 6)) {
            char w[512];
            snprintf(w, sizeof w, "%s:%d", where, lineno);
            if (set_provider_value(c, section + 6, name, val, w, err, errlen) < 0)
                return -1;
            continue;
        }
        const struct key *k = find_key(section, name);
        if (!k) {
            snprintf(err, errlen, "%s:%d: unknown key [%s] %s", where, lineno, section, name);
            return -1;
        }
        char w[512];
        snprintf(w, sizeof w, "%s:%d", where, lineno);
        if (set_value(c, k, val, w, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int apply_env(struct af_config *c, char *err, size_t errlen)
{
    extern char **environ;
    /* Known keys first, then any other AUTHFLOW_ variable is a typo. */
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "AUTHFLOW_", 9) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - *e);
        if (nlen == 15 && !strncmp(*e, "AUTHFLOW_CONFIG", 15))
            continue;
        int matched = 0;
        for (size_t i = 0; i < NKEYS; i++) {
            char name[128];
            int n = snprintf(name, sizeof name, "AUTHFLOW_%s_%s", keys[i].section, keys[i].name);
            for (int j = 0; j < n; j++)
                name[j] = (char)toupper((unsigned char)name[j]);
            if ((size_t)n == nlen && !strncmp(*e, name, nlen)) {
                if (set_value(c, &keys[i], eq + 1, name, err, errlen) < 0)
                    return -1;
                matched = 1;
                break;
            }
        }
        (void)matched; /* other AUTHFLOW_* variables belong to scripts */
    }
    /* AUTHFLOW_OAUTH_<NAME>_<KEY> for the providers the file declares (a
     * secret can stay out of the file). */
    for (int i = 0; i < c->nproviders; i++)
        for (size_t j = 0; j < NPKEYS; j++) {
            char name[128];
            int n = snprintf(name, sizeof name, "AUTHFLOW_OAUTH_%s_%s", c->providers[i].name, pkeys[j].name);
            for (int x = 0; x < n; x++)
                name[x] = name[x] == '-' ? '_' : (char)toupper((unsigned char)name[x]);
            const char *v = getenv(name);
            if (v && set_provider_value(c, c->providers[i].name, pkeys[j].name, v, name, err, errlen) < 0)
                return -1;
        }
    return 0;
}

static int defaults(struct af_config *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++)
        if (set_value(c, &keys[i], keys[i].def, "default", err, errlen) < 0)
            return -1;
    return 0;
}

/* https, or http to this host only (tests, a provider on the same host):
 * localhost, [::1] or 127.x.y.z. fetch.c checks again with curl's own URL
 * parser before any call; this makes the mistake an error at start-up. */
static bool provider_url_ok(const char *u)
{
    if (!strncmp(u, "https://", 8))
        return u[8] != '\0';
    if (strncmp(u, "http://", 7))
        return false;
    const char *h = u + 7;
    size_t n = strcspn(h, ":/?#");
    if (!strncmp(h, "[::1]", 5))
        return n == 5 || h[5] == '\0' || strchr(":/?#", h[5]);
    if (n == 9 && !strncmp(h, "localhost", 9))
        return true;
    int octets = 0;
    for (size_t i = 0; i < n; octets++) {
        size_t d = strspn(h + i, "0123456789");
        if (d < 1 || d > 3 || (octets == 0 && (d != 3 || strncmp(h, "127", 3))))
            return false;
        i += d;
        if (i < n && h[i++] != '.')
            return false;
        if (i == n && h[i - 1] == '.')
            return false;
    }
    return octets == 4;
}

static int check_provider(struct af_provider *p, char *err, size_t errlen)
{
    const char *why = NULL;
    bool oidc = *p->issuer != '\0';
    const char *urls[] = {p->issuer, p->authorization_endpoint, p->token_endpoint, p->userinfo_endpoint};
    const char *names[] = {"issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint"};
    if (!*p->client_id)
        why = "client_id is required";
    else if (!oidc && (!*p->authorization_endpoint || !*p->token_endpoint || !*p->userinfo_endpoint))
        why = "give issuer (OpenID Connect), or authorization_endpoint, token_endpoint and "
              "userinfo_endpoint (OAuth 2.0)";
    for (size_t i = 0; !why && i < 4; i++)
        if (*urls[i] && !provider_url_ok(urls[i])) {
            snprintf(err, errlen, "[oauth.%s] %s: '%s' must be an https URL (http only to this host)",
                     p->name, names[i], urls[i]);
            return -1;
        }
    if (why) {
        snprintf(err, errlen, "[oauth.%s]: %s", p->name, why);
        return -1;
    }
    p->oidc = oidc;
    if (!*p->display_name) {
        free(p->display_name);
        p->display_name = strdup(p->name);
    }
    if (!*p->scopes) {
        free(p->scopes);
        p->scopes = strdup(oidc ? "openid email profile" : "");
    }
    if (!p->display_name || !p->scopes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int check(struct af_config *c, char *err, size_t errlen)
{
    if (c->api_prefix[0] != '/' || c->api_prefix[strlen(c->api_prefix) - 1] == '/') {
        snprintf(err, errlen, "[server] api_prefix: '%s' must start with / and not end with /",
                 c->api_prefix);
        return -1;
    }
    if (strncmp(c->public_url, "http://", 7) && strncmp(c->public_url, "https://", 8)) {
        snprintf(err, errlen, "[server] public_url: '%s' is not an http(s) URL", c->public_url);
        return -1;
    }
    char *fp = strdup(c->fingerprint), *save = NULL;
    for (char *t = strtok_r(fp, " ", &save); t; t = strtok_r(NULL, " ", &save))
        if (strcmp(t, "user_agent") && strcmp(t, "accept_language") && strcmp(t, "ip_prefix")) {
            snprintf(err, errlen, "[tokens] fingerprint: unknown part '%s'", t);
            free(fp);
            return -1;
        }
    free(fp);
    if (c->refresh_idle_ttl > c->refresh_ttl) {
        snprintf(err, errlen, "[tokens] refresh_idle_ttl: must not exceed refresh_ttl");
        return -1;
    }
    for (int i = 0; i < c->nproviders; i++)
        if (check_provider(&c->providers[i], err, errlen) < 0)
            return -1;
    return 0;
}

int af_config_load_string(struct af_config *c, const char *text, bool use_env,
                          char *err, size_t errlen)
{
    if (defaults(c, err, errlen) < 0)
        return -1;
    if (text && parse_ini(c, text, "config", err, errlen) < 0)
        return -1;
    if (use_env && apply_env(c, err, errlen) < 0)
        return -1;
    return check(c, err, errlen);
}

int af_config_load(struct af_config *c, const char *path, char *err, size_t errlen)
{
    if (defaults(c, err, errlen) < 0)
        return -1;
    if (path) {
        char *text = af_read_file(path);
        if (!text) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        int rc = parse_ini(c, text, path, err, errlen);
        free(text);
        if (rc < 0)
            return -1;
    }
    if (apply_env(c, err, errlen) < 0)
        return -1;
    return check(c, err, errlen);
}

void af_config_free(struct af_config *c)
{
    for (int i = 0; i < c->nproviders; i++) {
        for (size_t j = 0; j < NPKEYS; j++) {
            char **slot = (char **)((char *)&c->providers[i] + pkeys[j].off);
            free(*slot);
        }
        free(c->providers[i].name);
    }
    c->nproviders = 0;
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].kind == K_STR || keys[i].kind == K_ENUM) {
            char **slot = (char **)((char *)c + keys[i].off);
            free(*slot);
            *slot = NULL;
        }
}

const char *af_config_default_path(void)
{
    const char *p = getenv("AUTHFLOW_CONFIG");
    return p && *p ? p : AF_SYSCONFDIR "/authflow.conf";
}
