/* test_password.c — Argon2id hashing at the smallest allowed cost: round
 * trip, no truncation, any Unicode, malformed hashes never match, and
 * rehash when the configured cost rises. */
#include <string.h>

#include "password.h"
#include "tap.h"

static const struct af_password_cost COST = {2, 19456UL * 1024};

int main(void)
{
    if (sodium_init() < 0) {
        ok(false, "sodium_init");
        return done_testing();
    }
    char h[AF_HASH_LEN], h2[AF_HASH_LEN];
    const char *pw = "correct horse battery staple";

    is_int(af_password_hash(&COST, pw, h), 0, "hash succeeds");
    ok(strncmp(h, "$argon2id$", 10) == 0, "hash is Argon2id");
    ok(strstr(h, "m=19456,t=2,p=1") != NULL, "hash records the cost");
    ok(af_password_verify(h, pw), "right password verifies");
    ok(!af_password_verify(h, "correct horse battery stapl"), "one character short fails");
    ok(!af_password_verify(h, "Correct horse battery staple"), "different case fails");
    ok(!af_password_verify(h, ""), "empty password fails");
    is_int(af_password_hash(&COST, pw, h2), 0, "second hash succeeds");
    ok(strcmp(h, h2) != 0, "two hashes of one password differ (salted)");
    ok(af_password_verify(h2, pw), "second hash verifies");

    char long_pw[101], prefix[73];
    for (int i = 0; i < 100; i++)
        long_pw[i] = (char)('a' + i % 26);
    long_pw[100] = '\0';
    memcpy(prefix, long_pw, 72);
    prefix[72] = '\0';
    is_int(af_password_hash(&COST, long_pw, h), 0, "100-character password hashes");
    ok(af_password_verify(h, long_pw), "100-character password verifies");
    ok(!af_password_verify(h, prefix), "its first 72 characters do not verify");
    long_pw[99] = 'X';
    ok(!af_password_verify(h, long_pw), "a change in the 100th character fails");

    const char *uni = "p\xc3\xa4ssw\xc3\xb6rd \xf0\x9f\x94\x91\xf0\x9f\x98\x80 "
                      "\xe5\xaf\x86\xe7\xa0\x81";
    is_int(af_password_hash(&COST, uni, h), 0, "non-ASCII password with emoji hashes");
    ok(af_password_verify(h, uni), "non-ASCII password verifies");
    ok(!af_password_verify(h, "p\xc3\xa4ssw\xc3\xb6rd \xf0\x9f\x94\x91"),
       "non-ASCII password prefix fails");
    ok(!af_password_verify(h, "passw\xc3\xb6rd \xf0\x9f\x94\x91\xf0\x9f\x98\x80 "
                              "\xe5\xaf\x86\xe7\xa0\x81"),
       "non-ASCII password with a letter changed fails");

    is_int(af_password_hash(&COST, pw, h), 0, "hash for malformed-hash checks");
    ok(!af_password_verify("", pw), "empty hash never matches");
    ok(!af_password_verify("garbage", pw), "garbage hash never matches");
    ok(!af_password_verify("$argon2id$v=19$m=19456,t=2,p=1$bad", pw),
       "truncated hash never matches");
    char cut[AF_HASH_LEN];
    snprintf(cut, sizeof cut, "%.*s", (int)strlen(h) - 4, h);
    ok(!af_password_verify(cut, pw), "hash missing its last characters never matches");
    char alt[AF_HASH_LEN];
    snprintf(alt, sizeof alt, "%s", h);
    alt[strlen(alt) - 5] = alt[strlen(alt) - 5] == 'A' ? 'B' : 'A';
    ok(!af_password_verify(alt, pw), "hash with a changed digest never matches");
    char argon2i[AF_HASH_LEN + 8];
    snprintf(argon2i, sizeof argon2i, "$argon2i$%s", h + 10);
    ok(!af_password_verify(argon2i, pw), "hash relabelled argon2i never matches");
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, h, strlen(h));
    ok(!af_password_verify(big, pw), "over-long hash never matches");

    ok(!af_password_needs_rehash(&COST, h), "same cost: no rehash");
    struct af_password_cost more_time = {3, COST.memory_bytes};
    ok(af_password_needs_rehash(&more_time, h), "iterations raised to 3: rehash");
    struct af_password_cost more_mem = {2, COST.memory_bytes * 2};
    ok(af_password_needs_rehash(&more_mem, h), "memory doubled: rehash");
    ok(af_password_needs_rehash(&COST, "garbage"), "malformed hash: rehash");
    is_int(af_password_hash(&more_time, pw, h2), 0, "hash at the raised cost");
    ok(strstr(h2, "t=3") != NULL, "raised hash records t=3");
    ok(!af_password_needs_rehash(&more_time, h2), "raised hash at the raised cost: no rehash");
    ok(af_password_verify(h2, pw), "raised hash verifies");

    af_password_verify_dummy(&COST, pw);
    ok(true, "dummy verification returns");
    return done_testing();
}
