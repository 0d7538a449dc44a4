-- 005_mfa.sql — two-factor login with TOTP (RFC 6238) and recovery codes.
--
-- A user's TOTP secret is stored sealed (libsodium secretbox under the key
-- in [tokens] keys_dir/totp.key), never in the clear. enabled_at is NULL
-- between setup and the first correct code. last_step is the last 30 s
-- step accepted: a code is accepted once.
CREATE TABLE user_totp (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed bytea NOT NULL,
    enabled_at    timestamptz,
    last_step     bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Single-use recovery codes, as a keyed hash only (BLAKE2b under the same
-- key, so a copy of the database alone cannot be searched for them); ten are made when TOTP is
-- enabled, and all are dropped when it is disabled.
CREATE TABLE recovery_codes (
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A login that passed the password and waits for the second factor: the
-- mfa_token handed to the client is stored as SHA-256, lives a few
-- minutes, allows a few wrong codes and is used once. amr is the first
-- factor's method ("pwd", "oauth"), to which "otp" is added.
CREATE TABLE mfa_challenges (
    token_hash    bytea PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at    timestamptz NOT NULL,
    attempts_left int NOT NULL CHECK (attempts_left >= 0),
    amr           text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mfa_challenges_expiry_idx ON mfa_challenges (expires_at);
