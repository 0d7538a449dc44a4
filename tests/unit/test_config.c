/* test_config.c — af_config_load_string: defaults, the INI file, the
 * environment, and every kind of bad value refused with the key named. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

static struct af_config cfg;
static char err[512];

static int load(const char *text, bool use_env)
{
    af_config_free(&cfg);
    err[0] = '\0';
    return af_config_load_string(&cfg, text, use_env, err, sizeof err);
}

/* The load fails and the message contains each of the given words. */
static void refused(const char *text, bool use_env, const char *what, const char *w1,
                    const char *w2)
{
    int rc = load(text, use_env);
    ok(rc == -1, "%s is refused", what);
    ok(strstr(err, w1) && (!w2 || strstr(err, w2)), "%s: message names %s%s%s", what, w1,
       w2 ? " and " : "", w2 ? w2 : "");
    if (rc != -1 || !strstr(err, w1) || (w2 && !strstr(err, w2)))
        diag("message: %s", err);
}

static void test_defaults(void)
{
    is_int(load(NULL, false), 0, "no file: defaults load");
    is_int(cfg.access_ttl, 900, "default access_ttl 900");
    is_int(cfg.refresh_ttl, 2592000, "default refresh_ttl 30 days");
    is_int(cfg.refresh_idle_ttl, 604800, "default refresh_idle_ttl 7 days");
    is_int(cfg.max_body_bytes, 65536, "default max_body_bytes 65536");
    ok(cfg.cookies_enabled, "default cookies enabled");
    ok(cfg.cookies_secure, "default cookies secure");
    ok(!cfg.require_verified_email, "default require_verified_email false");
    is_str(cfg.algorithm, "ES256", "default algorithm ES256");
    is_str(cfg.api_prefix, "/api/v1", "default api_prefix");
    is_str(cfg.audience, "authflow", "default audience");
    is_str(cfg.log_level, "info", "default log level");
    is_int(cfg.password_min_length, 12, "default password min_length 12");
    is_int(cfg.argon2_iterations, 2, "default argon2 iterations 2");
    is_int(cfg.argon2_memory_kib, 19456, "default argon2 memory 19456 KiB");
    is_int(cfg.redis_port, 6379, "default redis port");
    is_str(cfg.redis_password, "", "default redis password empty");

    is_int(load("", false), 0, "empty file: defaults load");
    is_int(cfg.access_ttl, 900, "empty file keeps access_ttl");
}

static void test_overrides(void)
{
    const char *ini =
        "# authflow test configuration\n"
        "; a comment in the other style\n"
        "\n"
        "[server]\n"
        "public_url = https://auth.example.test\n"
        "api_prefix=/auth\n"
        "   max_body_bytes   =   131072   \n"
        "\n"
        "[ database ]\n"
        "dsn = host=db dbname=authflow user=af\n"
        "\n"
        "[tokens]\n"
        "algorithm = RS256\n"
        "access_ttl = 300\n"
        "issuer = https://auth.example.test\n"
        "   # indented comment\n"
        "[cookies]\n"
        "secure = false\n"
        "enabled = no\n"
        "[auth]\n"
        "require_verified_email = yes\n"
        "[log]\n"
        "level = debug";   /* last line without a newline */
    int rc = load(ini, false);
    is_int(rc, 0, "valid INI loads");
    if (rc)
        diag("message: %s", err);
    is_str(cfg.public_url, "https://auth.example.test", "public_url overridden");
    is_str(cfg.api_prefix, "/auth", "api_prefix without spaces around '='");
    is_int(cfg.max_body_bytes, 131072, "surrounding spaces trimmed");
    is_str(cfg.db_dsn, "host=db dbname=authflow user=af", "value may contain '='");
    is_str(cfg.algorithm, "RS256", "algorithm RS256");
    is_int(cfg.access_ttl, 300, "access_ttl overridden");
    ok(!cfg.cookies_secure, "secure = false");
    ok(!cfg.cookies_enabled, "enabled = no");
    ok(cfg.require_verified_email, "require_verified_email = yes");
    is_str(cfg.log_level, "debug", "last line without newline read");
    is_int(cfg.refresh_ttl, 2592000, "keys not in the file keep their defaults");

    is_int(load("[tokens]\r\naccess_ttl = 600\r\n", false), 0, "CRLF line endings load");
    is_int(cfg.access_ttl, 600, "CRLF value read");

    is_int(load("[tokens]\naccess_ttl = 10\n[server]\nmax_body_bytes = 16777216\n", false), 0,
           "bounds are inclusive");
    is_int(cfg.access_ttl, 10, "access_ttl at its minimum");

    is_int(load("[tokens]\naccess_ttl = 100\naccess_ttl = 200\n", false), 0,
           "a repeated key loads");
    is_int(cfg.access_ttl, 200, "the last value of a repeated key wins");

    static const char *truthy[] = {"true", "yes", "on", "1"};
    static const char *falsy[] = {"false", "no", "off", "0"};
    char buf[64];
    for (size_t i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, "[auth]\nrequire_verified_email = %s\n", truthy[i]);
        ok(load(buf, false) == 0 && cfg.require_verified_email, "bool '%s' is true", truthy[i]);
        snprintf(buf, sizeof buf, "[cookies]\nsecure = %s\n", falsy[i]);
        ok(load(buf, false) == 0 && !cfg.cookies_secure, "bool '%s' is false", falsy[i]);
    }
}

static void test_errors(void)
{
    refused("[tokens]\nacces_ttl = 600\n", false, "unknown key", "acces_ttl", "[tokens]");
    refused("[server]\naccess_ttl = 600\n", false, "key in the wrong section", "access_ttl",
            "[server]");
    refused("access_ttl = 600\n", false, "key before any section", "access_ttl", NULL);
    refused("[nosuch]\nkey = 1\n", false, "unknown section", "nosuch", NULL);
    refused("[tokens]\naccess_ttl = ten\n", false, "non-numeric int", "access_ttl", "'ten'");
    refused("[tokens]\naccess_ttl = 60s\n", false, "int with a suffix", "access_ttl", NULL);
    refused("[tokens]\naccess_ttl =\n", false, "empty int", "access_ttl", NULL);
    refused("[tokens]\naccess_ttl = 9\n", false, "int below its minimum", "access_ttl", "10");
    refused("[tokens]\naccess_ttl = 86401\n", false, "int above its maximum", "access_ttl",
            "86400");
    refused("[tokens]\naccess_ttl = 99999999999999999999999\n", false, "int overflowing long",
            "access_ttl", NULL);
    refused("[server]\nmax_body_bytes = -1\n", false, "negative max_body_bytes",
            "max_body_bytes", NULL);
    refused("[cookies]\nsecure = maybe\n", false, "bad bool", "secure", "maybe");
    refused("[cookies]\nsecure = TRUE\n", false, "bool in upper case", "secure", NULL);
    refused("[tokens]\nalgorithm = HS256\n", false, "algorithm HS256", "algorithm", "HS256");
    refused("[tokens]\nalgorithm = none\n", false, "algorithm none", "algorithm", NULL);
    refused("[tokens]\nalgorithm = es256\n", false, "algorithm in lower case", "algorithm", NULL);
    refused("[tokens]\nalgorithm = ES256 RS256\n", false, "algorithm naming both choices",
            "algorithm", NULL);
    refused("[tokens]\nalgorithm =\n", false, "empty algorithm", "algorithm", NULL);
    refused("[log]\nlevel = verbose\n", false, "bad log level", "level", NULL);
    refused("[server]\napi_prefix = api/v1\n", false, "api_prefix without leading '/'",
            "api_prefix", NULL);
    refused("[server]\napi_prefix = /api/\n", false, "api_prefix with trailing '/'",
            "api_prefix", NULL);
    refused("[server]\napi_prefix =\n", false, "empty api_prefix", "api_prefix", NULL);
    refused("[server]\npublic_url = ftp://x.test\n", false, "non-http public_url", "public_url",
            NULL);
    refused("[tokens]\nfingerprint = user_agent cookie_jar\n", false, "unknown fingerprint part",
            "fingerprint", "cookie_jar");
    refused("[tokens]\nrefresh_ttl = 3600\nrefresh_idle_ttl = 7200\n", false,
            "refresh_idle_ttl above refresh_ttl", "refresh_idle_ttl", NULL);
    refused("[tokens]\naccess_ttl 600\n", false, "line without '='", "expected key = value",
            "config:2");
    refused("[tokens\naccess_ttl = 600\n", false, "unclosed section header", "section", NULL);
    refused("[tokens] x\naccess_ttl = 600\n", false, "text after a section header", "section",
            NULL);

    char *longline = malloc(5000);
    memset(longline, 'x', 4999);
    longline[4999] = '\0';
    refused(longline, false, "a line longer than 4 KiB", "too long", NULL);
    free(longline);
}

static void test_env(void)
{
    const char *ini = "[tokens]\naccess_ttl = 1200\n";
    setenv("AUTHFLOW_TOKENS_ACCESS_TTL", "600", 1);
    is_int(load(ini, true), 0, "env override loads");
    is_int(cfg.access_ttl, 600, "AUTHFLOW_TOKENS_ACCESS_TTL wins over the file");
    is_int(load(ini, false), 0, "without use_env loads");
    is_int(cfg.access_ttl, 1200, "without use_env the file value stays");
    is_int(load(NULL, true), 0, "env over defaults loads");
    is_int(cfg.access_ttl, 600, "env overrides the default too");

    setenv("AUTHFLOW_TOKENS_ACCESS_TTL", "soon", 1);
    refused(ini, true, "bad env int", "access_ttl", "AUTHFLOW_TOKENS_ACCESS_TTL");
    setenv("AUTHFLOW_TOKENS_ACCESS_TTL", "5", 1);
    refused(ini, true, "out-of-range env int", "access_ttl", NULL);
    unsetenv("AUTHFLOW_TOKENS_ACCESS_TTL");

    setenv("AUTHFLOW_COOKIES_SECURE", "false", 1);
    is_int(load(NULL, true), 0, "env bool loads");
    ok(!cfg.cookies_secure, "AUTHFLOW_COOKIES_SECURE=false turns Secure off");
    setenv("AUTHFLOW_COOKIES_SECURE", "nope", 1);
    refused(NULL, true, "bad env bool", "secure", NULL);
    unsetenv("AUTHFLOW_COOKIES_SECURE");

    setenv("AUTHFLOW_TOKENS_ALGORITHM", "HS256", 1);
    refused(NULL, true, "env algorithm HS256", "algorithm", NULL);
    unsetenv("AUTHFLOW_TOKENS_ALGORITHM");

    setenv("AUTHFLOW_SERVER_API_PREFIX", "api", 1);
    refused("[server]\napi_prefix = /api\n", true, "env api_prefix without '/'", "api_prefix",
            NULL);
    unsetenv("AUTHFLOW_SERVER_API_PREFIX");

    setenv("AUTHFLOW_TOKENS_ISSUER", "https://issuer.test", 1);
    setenv("AUTHFLOW_SOMETHING_ELSE", "x", 1);
    is_int(load(NULL, true), 0, "other AUTHFLOW_ variables are ignored");
    is_str(cfg.issuer, "https://issuer.test", "env string value applied");
    unsetenv("AUTHFLOW_TOKENS_ISSUER");
    unsetenv("AUTHFLOW_SOMETHING_ELSE");
}

static void test_file(void)
{
    char path[] = "/tmp/authflow-conf-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[tokens]\naccess_ttl = 450\n";
    ok(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text),
       "temporary config file written");
    if (fd >= 0)
        close(fd);
    af_config_free(&cfg);
    is_int(af_config_load(&cfg, path, err, sizeof err), 0, "af_config_load reads a file");
    is_int(cfg.access_ttl, 450, "file value applied");
    unlink(path);
    af_config_free(&cfg);
    is_int(af_config_load(&cfg, path, err, sizeof err), -1, "missing file refused");
    ok(strstr(err, path) != NULL, "message names the missing file");

    setenv("AUTHFLOW_CONFIG", "/srv/af/test.conf", 1);
    is_str(af_config_default_path(), "/srv/af/test.conf", "AUTHFLOW_CONFIG names the file");
    unsetenv("AUTHFLOW_CONFIG");
    const char *def = af_config_default_path();
    ok(def && strlen(def) > 14 && !strcmp(def + strlen(def) - 14, "/authflow.conf"),
       "default path ends in /authflow.conf");
}

/* [oauth.NAME] sections: one provider each, keys of their own. */
static void test_providers(void)
{
    ok(load("[oauth.google]\nissuer = https://accounts.google.com\nclient_id = abc\n"
            "client_secret = s3cret\n\n[oauth.gh]\ndisplay_name = GitHub\n"
            "authorization_endpoint = https://github.com/login/oauth/authorize\n"
            "token_endpoint = https://github.com/login/oauth/access_token\n"
            "userinfo_endpoint = https://api.github.com/user\nclient_id = x\nscopes = read:user\n"
            "[oauth]\nstate_ttl = 300\n", false) == 0, "two providers load");
    diag("%s", err);
    ok(cfg.nproviders == 2, "two providers");
    is_str(cfg.providers[0].name, "google", "the first is google");
    ok(cfg.providers[0].oidc && !cfg.providers[1].oidc, "issuer makes OpenID Connect");
    is_str(cfg.providers[0].display_name, "google", "display_name defaults to the name");
    is_str(cfg.providers[0].scopes, "openid email profile", "OIDC scopes default");
    is_str(cfg.providers[0].token_auth, "client_secret_basic", "token_auth default");
    is_str(cfg.providers[1].display_name, "GitHub", "display_name");
    is_str(cfg.providers[1].userinfo_subject, "id", "userinfo_subject default");
    is_str(cfg.providers[1].userinfo_email_verified, "", "userinfo_email_verified default: none");
    ok(cfg.oauth_state_ttl == 300 && cfg.oauth_discovery_refresh == 3600, "[oauth] keys");
    ok(load("[oauth.local]\nissuer = http://127.0.0.1:5556\nclient_id = a\n", false) == 0 &&
           load("[oauth.local]\nissuer = http://localhost:5556/x\nclient_id = a\n", false) == 0 &&
           load("[oauth.local]\nissuer = http://[::1]:5556\nclient_id = a\n", false) == 0,
       "http to this host is allowed");

    refused("[oauth.x]\nissuer = https://a.example\n", false, "a provider without client_id",
            "[oauth.x]", "client_id");
    refused("[oauth.x]\nclient_id = a\ntoken_endpoint = https://a.example/t\n", false,
            "plain OAuth without all three endpoints", "[oauth.x]", "userinfo_endpoint");
    refused("[oauth.x]\nissuer = http://a.example\nclient_id = a\n", false, "an http issuer elsewhere",
            "[oauth.x] issuer", "https");
    refused("[oauth.x]\nissuer = http://127.0.0.1.evil.example\nclient_id = a\n", false,
            "a host that only starts like loopback", "[oauth.x] issuer", NULL);
    refused("[oauth.x]\nclient_id = a\nauthorization_endpoint = https://a/b\n"
            "token_endpoint = javascript:x\nuserinfo_endpoint = https://a/c\n", false,
            "a javascript: endpoint", "token_endpoint", NULL);
    refused("[oauth.Bad]\nclient_id = a\n", false, "an upper-case provider name", "[oauth.Bad]", "a-z");
    refused("[oauth.]\nclient_id = a\n", false, "an empty provider name", "provider name", NULL);
    refused("[oauth.x]\nclient_id = a\nissuer = https://a\nbogus = 1\n", false, "an unknown provider key",
            "unknown key [oauth.x] bogus", NULL);
    refused("[oauth.x]\nclient_id = a\nissuer = https://a\ntoken_auth = none\n", false,
            "token_auth none", "[oauth.x] token_auth", "client_secret_post");
    char many[4096] = "";
    for (int i = 0; i <= AF_MAX_PROVIDERS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "[oauth.p%d]\nissuer = https://a\nclient_id = a\n", i);
    refused(many, false, "one provider too many", "at most", NULL);

    /* The environment sets keys of the providers the file declares. */
    setenv("AUTHFLOW_OAUTH_MY_IDP_CLIENT_SECRET", "from-env", 1);
    setenv("AUTHFLOW_OAUTH_OTHER_CLIENT_ID", "ignored", 1);
    ok(load("[oauth.my-idp]\nissuer = https://a.example\nclient_id = a\n", true) == 0, "env over a provider");
    is_str(cfg.providers[0].client_secret, "from-env", "AUTHFLOW_OAUTH_MY_IDP_CLIENT_SECRET");
    ok(cfg.nproviders == 1, "a provider only in the environment is not made up");
    setenv("AUTHFLOW_OAUTH_MY_IDP_ISSUER", "http://a.example", 1);
    refused("[oauth.my-idp]\nissuer = https://a.example\nclient_id = a\n", true, "a bad URL from the environment",
            "[oauth.my-idp] issuer", NULL);
    unsetenv("AUTHFLOW_OAUTH_MY_IDP_CLIENT_SECRET");
    unsetenv("AUTHFLOW_OAUTH_OTHER_CLIENT_ID");
    unsetenv("AUTHFLOW_OAUTH_MY_IDP_ISSUER");
}

int main(void)
{
    /* The run's environment may set AUTHFLOW_* variables; start from none. */
    extern char **environ;
    char *names[256];
    size_t n = 0;
    for (char **e = environ; *e && n < 256; e++)
        if (!strncmp(*e, "AUTHFLOW_", 9))
            names[n++] = strndup(*e, strcspn(*e, "="));
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
    test_defaults();
    test_overrides();
    test_errors();
    test_env();
    test_file();
    test_providers();
    af_config_free(&cfg);
    return done_testing();
}
