/* password.h — Argon2id password hashing (libsodium).
 *
 * Hashes carry their own parameters, so raising the cost in the config
 * upgrades each hash at its owner's next login (af_password_needs_rehash).
 * Each hash holds argon2_memory_kib while it runs; a responder process runs
 * one at a time. */
#ifndef AF_PASSWORD_H
#define AF_PASSWORD_H
#include <sodium.h>
#include <stdbool.h>

#define AF_HASH_LEN crypto_pwhash_STRBYTES

struct af_password_cost {
    unsigned long long iterations;
    size_t memory_bytes;
};

int af_password_hash(const struct af_password_cost *cost, const char *password,
                     char out[AF_HASH_LEN]);
/* true only for a match; a malformed hash never matches. */
bool af_password_verify(const char *hash, const char *password);
bool af_password_needs_rehash(const struct af_password_cost *cost, const char *hash);
/* Burns the time of one verification, for callers that have no account to
 * check against (so an unknown email answers as slowly as a wrong password). */
void af_password_verify_dummy(const struct af_password_cost *cost, const char *password);

#endif
