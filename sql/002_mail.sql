-- 002_mail.sql — email verification codes, password reset tokens and the
-- mail outbox.
--
-- Codes and reset tokens are stored as SHA-256 digests only. A mail row is
-- written in the same transaction as the change that causes it, so a change
-- that rolls back sends nothing and a committed one cannot lose its mail.

-- One pending verification code per user. code_hash is
-- sha256(user id || ':' || code): a guess must name the account.
CREATE TABLE email_verifications (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    code_hash     bytea NOT NULL,
    expires_at    timestamptz NOT NULL,
    attempts_left int NOT NULL CHECK (attempts_left >= 0),
    sent_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_verifications_expiry_idx ON email_verifications (expires_at);

CREATE TABLE password_resets (
    token_hash  bytea PRIMARY KEY,                  -- SHA-256 of the link token
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX password_resets_user_idx ON password_resets (user_id);
CREATE INDEX password_resets_expiry_idx ON password_resets (expires_at);

-- The outbox. A row names a template (kind) and its parameters; the mailer
-- renders and sends it. status: pending -> sending (claimed by a mailer
-- until lease_until) -> sent | dead; a failed attempt goes back to pending
-- with next_attempt_at pushed back. params may hold a code or a link: they
-- are erased once the message is sent, and the row stays, for the record,
-- until `authflowctl cleanup` removes it after the retention period.
-- message_id is the left part of the Message-ID header, the same for every
-- attempt, so that a retry after an unknown outcome can be recognised.
CREATE TABLE mail_outbox (
    id              bigserial PRIMARY KEY,
    message_id      text NOT NULL UNIQUE DEFAULT gen_random_uuid()::text,
    kind            text NOT NULL,
    user_id         uuid,                           -- no foreign key: rows outlive users
    recipient       text NOT NULL,
    params          jsonb,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    attempts        int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    claimed_by      text,
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX mail_outbox_lease_idx ON mail_outbox (lease_until) WHERE status = 'sending';
CREATE INDEX mail_outbox_done_idx ON mail_outbox (created_at) WHERE status IN ('sent', 'dead');

-- Wakes the mailers when the inserting transaction commits.
CREATE FUNCTION af_mail_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('af_mail', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER mail_outbox_notify AFTER INSERT ON mail_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION af_mail_notify();

-- Checks a verification code. Outcomes: 'ok' (the account is now verified;
-- the user's id comes back), 'invalid' (wrong, expired, burnt, or no such
-- account: the caller answers the same for all). Each call on a live code
-- spends one try, under the row's lock, so parallel guesses cannot exceed
-- the budget; the last wrong try deletes the code.
CREATE FUNCTION af_email_verify(p_email text, p_code text, p_ip text, p_ua text, p_request_id text)
RETURNS TABLE (status text, user_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    uid uuid;
    v email_verifications%ROWTYPE;
BEGIN
    SELECT id INTO uid FROM users WHERE lower(email) = lower(p_email);
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'invalid'::text, NULL::uuid;
        RETURN;
    END IF;
    SELECT * INTO v FROM email_verifications e WHERE e.user_id = uid FOR UPDATE;
    IF NOT FOUND OR v.expires_at <= clock_timestamp() OR v.attempts_left <= 0 THEN
        RETURN QUERY SELECT 'invalid'::text, uid;
        RETURN;
    END IF;
    IF v.code_hash <> sha256(convert_to(uid::text || ':' || p_code, 'UTF8')) THEN
        IF v.attempts_left <= 1 THEN
            DELETE FROM email_verifications e WHERE e.user_id = uid;
            INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail)
            VALUES ('email_code_burnt', NULL, uid, p_ip, p_ua, p_request_id, '{}');
        ELSE
            UPDATE email_verifications e SET attempts_left = attempts_left - 1 WHERE e.user_id = uid;
        END IF;
        RETURN QUERY SELECT 'invalid'::text, uid;
        RETURN;
    END IF;
    DELETE FROM email_verifications e WHERE e.user_id = uid;
    UPDATE users SET email_verified = true, updated_at = now() WHERE id = uid;
    INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id)
    VALUES ('email_verified', uid, uid, p_ip, p_ua, p_request_id);
    RETURN QUERY SELECT 'ok'::text, uid;
END
$$;

-- Uses a reset token: sets the new password hash, spends every reset token
-- of the user, verifies the email (the link proved the mailbox) and revokes
-- every session, and queues the "password changed" notice. Returns the
-- user's id and the revoked session ids, or no row when the token is
-- unknown, used or expired, or the account is disabled.
CREATE FUNCTION af_password_reset(p_token bytea, p_hash text, p_ip text, p_ua text, p_request_id text)
RETURNS TABLE (user_id uuid, revoked uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    t password_resets%ROWTYPE;
    ids uuid[];
BEGIN
    SELECT * INTO t FROM password_resets r WHERE r.token_hash = p_token FOR UPDATE;
    IF NOT FOUND OR t.used_at IS NOT NULL OR t.expires_at <= clock_timestamp() THEN
        RETURN;
    END IF;
    UPDATE password_resets r SET used_at = now() WHERE r.user_id = t.user_id AND r.used_at IS NULL;
    UPDATE users u SET password_hash = p_hash, email_verified = true, updated_at = now()
     WHERE u.id = t.user_id AND NOT u.disabled;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM email_verifications e WHERE e.user_id = t.user_id;
    WITH r AS (UPDATE sessions s SET revoked_at = now(), revoke_reason = 'password_reset'
                WHERE s.user_id = t.user_id AND s.revoked_at IS NULL RETURNING s.id)
    SELECT COALESCE(array_agg(r.id), '{}') INTO ids FROM r;
    INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail)
    VALUES ('password_reset', t.user_id, t.user_id, p_ip, p_ua, p_request_id,
            jsonb_build_object('sessions_revoked', cardinality(ids)));
    INSERT INTO mail_outbox (kind, user_id, recipient, params)
    SELECT 'password_changed', u.id, u.email, jsonb_build_object('name', u.full_name)
      FROM users u WHERE u.id = t.user_id;
    RETURN QUERY SELECT t.user_id, ids;
END
$$;
