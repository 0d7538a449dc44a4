/* fuzz_config.c — the configuration parser: af_config_load_string on the
 * input as INI text, without the environment (a fuzzer's environment is
 * not an input).
 *
 * Properties: a loaded configuration has every string set, an api_prefix
 * that starts with '/' and does not end with one, an http(s) public_url and
 * refresh_idle_ttl within refresh_ttl; a refused one says why; both are
 * released with af_config_free, so a leak fails the run. */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_str(data, size);
    struct af_config c;
    char err[512] = "";
    if (af_config_load_string(&c, text, false, err, sizeof err) == 0) {
        size_t pl = strlen(c.api_prefix);
        FUZZ_CHECK(pl > 0 && c.api_prefix[0] == '/' && c.api_prefix[pl - 1] != '/');
        FUZZ_CHECK(!strncmp(c.public_url, "http://", 7) || !strncmp(c.public_url, "https://", 8));
        FUZZ_CHECK(c.refresh_idle_ttl <= c.refresh_ttl);
        FUZZ_CHECK(c.db_dsn && c.redis_host && c.keys_dir && c.algorithm && c.issuer &&
                   c.audience && c.fingerprint && c.mail_transport && c.smtp_tls &&
                   c.templates_dir && c.log_level && c.gate_login_url);
    } else {
        FUZZ_CHECK(err[0] != '\0');
    }
    af_config_free(&c);
    free(text);
    return 0;
}
