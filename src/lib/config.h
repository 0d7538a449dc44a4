/* config.h — authflow configuration.
 *
 * Read once at start-up from an INI file, then from AUTHFLOW_<SECTION>_<KEY>
 * environment variables, which win. Every key is declared in one table in
 * config.c with its type and bounds: an unknown key, a bad value or a value
 * out of range is an error naming the key, and the program refuses to start. */
#ifndef AF_CONFIG_H
#define AF_CONFIG_H
#include <stdbool.h>
#include <stddef.h>

/* A social-login provider: [oauth.NAME]. OpenID Connect when issuer is
 * set (endpoints and keys from its discovery document), plain OAuth 2.0
 * otherwise (the three endpoints given, the user from userinfo_endpoint,
 * its fields named by the userinfo_* keys). */
#define AF_MAX_PROVIDERS 16
struct af_provider {
    char *name, *display_name, *issuer, *client_id, *client_secret, *token_auth, *scopes;
    char *extra_audiences;  /* more accepted id_token audiences (native apps' client ids) */
    char *authorization_endpoint, *token_endpoint, *userinfo_endpoint;
    char *userinfo_subject, *userinfo_email, *userinfo_email_verified, *userinfo_name;
    bool oidc;
};

struct af_config {
    /* server */
    char *public_url, *api_prefix, *allowed_origins, *trusted_proxies;
    long max_body_bytes;
    /* database */
    char *db_dsn, *db_read_dsn, *db_listen_dsn;
    long db_connect_timeout, db_read_max_lag_ms, db_query_timeout_ms, db_read_timeout_ms;
    /* redis */
    char *redis_host, *redis_socket, *redis_password;
    long redis_port, redis_db, redis_connect_timeout_ms, redis_command_timeout_ms;
    /* tokens */
    char *keys_dir, *algorithm, *issuer, *audience, *fingerprint;
    long access_ttl, refresh_ttl, refresh_idle_ttl, refresh_reuse_grace, clock_skew;
    /* cookies */
    bool cookies_enabled, cookies_secure;
    /* passwords */
    long password_min_length, argon2_iterations, argon2_memory_kib;
    char *password_common_list;
    bool password_dictionary_check;
    /* auth */
    bool require_verified_email;
    long email_code_ttl, email_code_attempts, email_code_cooldown, reset_token_ttl;
    long invite_ttl;
    char *reset_url;
    /* mail */
    char *mail_transport, *smtp_host, *smtp_tls, *smtp_username, *smtp_password, *smtp_ca_file;
    char *sendmail_path, *mail_from, *mail_reply_to, *product_name, *templates_dir;
    long smtp_port, smtp_timeout, mail_max_attempts, mail_retry_base, mail_retry_max;
    long mail_poll, mail_lease, mail_retention_days;
    bool smtp_verify_peer;
    /* gate */
    char *gate_login_url;
    long gate_session_memory_ms;
    /* ratelimit */
    bool rl_enabled;
    long rl_auth_per_ip, rl_users_per_ip, rl_admin_per_ip, rl_per_account;
    long rl_login_failures, rl_login_window, rl_login_lockout, rl_login_lockout_max;
    long rl_login_failures_per_ip;
    /* cleanup */
    long cleanup_keep_days, audit_keep_days;
    /* oauth */
    long oauth_state_ttl, oauth_discovery_refresh, oauth_http_timeout_ms;
    struct af_provider providers[AF_MAX_PROVIDERS];
    int nproviders;
    /* log */
    char *log_level;
    /* metrics */
    bool metrics_enabled;
    char *metrics_file, *metrics_allow_from;
};

/* Defaults, then the file (if path is non-NULL), then the environment.
 * On failure writes a message naming the key into err and returns -1. */
int af_config_load(struct af_config *c, const char *path, char *err, size_t errlen);
/* Same, from a string (for tests and fuzzing); env is applied when use_env. */
int af_config_load_string(struct af_config *c, const char *text, bool use_env,
                          char *err, size_t errlen);
void af_config_free(struct af_config *c);
/* The path responders use: $AUTHFLOW_CONFIG or the installed default. */
const char *af_config_default_path(void);

#endif
