/* password.c — Argon2id hashing (see password.h). */
#include "password.h"

#include <string.h>

int af_password_hash(const struct af_password_cost *cost, const char *password,
                     char out[AF_HASH_LEN])
{
    return crypto_pwhash_str(out, password, strlen(password), cost->iterations,
                             cost->memory_bytes);
}

bool af_password_verify(const char *hash, const char *password)
{
    /* Copy into a full-size buffer: libsodium reads STRBYTES from it. */
    char buf[AF_HASH_LEN];
    size_t n = strlen(hash);
    if (n >= sizeof buf || strncmp(hash, "$argon2id$", 10) != 0)
        return false;
    memset(buf, 0, sizeof buf);
    memcpy(buf, hash, n);
    return crypto_pwhash_str_verify(buf, password, strlen(password)) == 0;
}

bool af_password_needs_rehash(const struct af_password_cost *cost, const char *hash)
{
    char buf[AF_HASH_LEN];
    size_t n = strlen(hash);
    if (n >= sizeof buf)
        return true;
    memset(buf, 0, sizeof buf);
    memcpy(buf, hash, n);
    return crypto_pwhash_str_needs_rehash(buf, cost->iterations, cost->memory_bytes) != 0;
}

void af_password_verify_dummy(const struct af_password_cost *cost, const char *password)
{
    static char dummy[AF_HASH_LEN];
    static struct af_password_cost made_with;
    if (!dummy[0] || made_with.iterations != cost->iterations ||
        made_with.memory_bytes != cost->memory_bytes) {
        if (af_password_hash(cost, "authflow dummy password", dummy) != 0)
            return;
        made_with = *cost;
    }
    (void)af_password_verify(dummy, password);
}
