-- 001_init.sql — users, roles, sessions, refresh tokens and the audit log.
--
-- Applied by `authflowctl migrate` in one transaction. Secrets are never
-- stored: passwords as Argon2id hashes, refresh tokens as SHA-256 digests.

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email           text NOT NULL CHECK (email = lower(btrim(email)) AND length(email) <= 254),
    password_hash   text,
    full_name       text NOT NULL DEFAULT '',
    email_verified  boolean NOT NULL DEFAULT false,
    disabled        boolean NOT NULL DEFAULT false,
    mfa_enabled     boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz
);
-- Emails are stored normalised; the index on lower() keeps them unique
-- case-insensitively even if a row is written by hand.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE roles (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO roles (name, description) VALUES
    ('admin', 'Full administrative access'),
    ('user', 'A registered user');

CREATE TABLE user_roles (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,           -- absolute lifetime
    idle_expires_at timestamptz NOT NULL,           -- pushed forward by each refresh
    revoked_at      timestamptz,
    revoke_reason   text,
    ip              text,
    user_agent      text,
    dfp             text NOT NULL,                  -- device fingerprint (SHA-256 hex)
    amr             text[] NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expiry_idx ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,                  -- SHA-256 of the token
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,                        -- set when it was used
    replaced_by bytea
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Security events. No foreign keys: a deleted user's rows keep only the id.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    type        text NOT NULL,
    actor_id    uuid,
    subject_id  uuid,
    session_id  uuid,
    ip          text,
    user_agent  text,
    request_id  text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject_id, id);
CREATE INDEX audit_log_type_idx ON audit_log (type, id);

-- Rotates a refresh token atomically: one call, one round trip.
--
-- Outcomes: 'ok' (a new token p_new now belongs to the session), 'invalid'
-- (unknown token), 'expired', 'revoked', 'reused'. A token that was already
-- rotated is a theft signal and revokes the whole session — unless it comes
-- back within p_grace seconds from the same device (two tabs refreshing at
-- once), which gets a fresh token for the same session instead. The row lock
-- on the token serialises concurrent refreshes with the same token. With
-- 'ok' come the session's remaining lifetime and the user's claims, so the
-- caller can sign the access token without another query.
CREATE FUNCTION af_refresh_rotate(p_old bytea, p_new bytea, p_dfp text, p_grace int,
                                  p_idle int, p_ip text, p_ua text, p_request_id text)
RETURNS TABLE (status text, session_id uuid, user_id uuid, amr text[], refresh_expires_in bigint,
               email text, email_verified boolean, disabled boolean, roles text)
LANGUAGE plpgsql AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
    s sessions%ROWTYPE;
    u users%ROWTYPE;
    now_ts timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO t FROM refresh_tokens r WHERE r.token_hash = p_old FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'invalid'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::bigint,
                            NULL::text, NULL::boolean, NULL::boolean, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO s FROM sessions x WHERE x.id = t.session_id FOR UPDATE;
    IF s.revoked_at IS NOT NULL OR s.expires_at <= now_ts OR s.idle_expires_at <= now_ts THEN
        RETURN QUERY SELECT CASE WHEN s.revoked_at IS NOT NULL THEN 'revoked' ELSE 'expired' END,
                            s.id, s.user_id, s.amr, NULL::bigint,
                            NULL::text, NULL::boolean, NULL::boolean, NULL::text;
        RETURN;
    END IF;
    IF t.rotated_at IS NOT NULL THEN
        IF t.rotated_at + make_interval(secs => p_grace) < now_ts OR s.dfp <> p_dfp THEN
            UPDATE sessions SET revoked_at = now_ts, revoke_reason = 'refresh_token_reuse'
             WHERE id = s.id;
            INSERT INTO audit_log (type, actor_id, subject_id, session_id, ip, user_agent, request_id, detail)
            VALUES ('refresh_token_reuse', s.user_id, s.user_id, s.id, p_ip, p_ua, p_request_id,
                    jsonb_build_object('rotated_at', t.rotated_at));
            RETURN QUERY SELECT 'reused'::text, s.id, s.user_id, s.amr, NULL::bigint,
                                NULL::text, NULL::boolean, NULL::boolean, NULL::text;
            RETURN;
        END IF;
    ELSE
        UPDATE refresh_tokens SET rotated_at = now_ts, replaced_by = p_new WHERE token_hash = p_old;
    END IF;
    INSERT INTO refresh_tokens (token_hash, session_id) VALUES (p_new, s.id);
    s.idle_expires_at := least(s.expires_at, now_ts + make_interval(secs => p_idle));
    UPDATE sessions SET last_seen_at = now_ts, idle_expires_at = s.idle_expires_at WHERE id = s.id;
    INSERT INTO audit_log (type, actor_id, subject_id, session_id, ip, user_agent, request_id)
    VALUES ('refresh', s.user_id, s.user_id, s.id, p_ip, p_ua, p_request_id);
    SELECT * INTO u FROM users WHERE id = s.user_id;
    RETURN QUERY SELECT 'ok'::text, s.id, s.user_id, s.amr,
        greatest(0, extract(epoch FROM s.idle_expires_at - now_ts))::bigint,
        u.email, u.email_verified, u.disabled,
        COALESCE((SELECT json_agg(role ORDER BY role) FROM user_roles WHERE user_roles.user_id = u.id),
                 '[]')::text;
END
$$;
