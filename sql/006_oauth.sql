-- 006_oauth.sql — social login: the identities a provider vouches for, and
-- the logins in progress.

-- A user's account at a provider: (provider, subject) is the provider's
-- own stable id for the person ("sub"), never the email, which may change
-- hands at the provider. email is what the provider last said, for the
-- user object and the audit trail.
CREATE TABLE identities (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider        text NOT NULL,
    subject         text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    email           text,
    email_verified  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz,
    UNIQUE (provider, subject)
);
CREATE INDEX identities_user_idx ON identities (user_id);

-- A started login (GET /oauth/{provider}/start), until its callback: the
-- SHA-256 of the state sent to the provider, and of the browser-binding
-- cookie set with it. The PKCE verifier and the nonce are derived from the
-- cookie and the state, so no secret of the flow is stored. Used once.
CREATE TABLE oauth_states (
    state_hash      bytea PRIMARY KEY,
    provider        text NOT NULL,
    browser_hash    bytea NOT NULL,
    redirect        text NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('redirect', 'popup')),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_expiry_idx ON oauth_states (expires_at);
