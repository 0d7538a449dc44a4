-- 004_admin_audit.sql — a tamper-evident audit trail, and the user
-- administration shared by authflow-admin and authflowctl.
--
-- The audit trail is a hash chain. Writers insert rows as before, taking no
-- lock; sealing (af_audit_seal, run by authflow-mailer whenever it is idle,
-- and by `authflowctl audit verify` and `cleanup`) gives each new row its
-- place in the chain (seq) and the SHA-256 of its content after the
-- previous row's hash. One sealer at a time (an advisory lock), so the
-- chain has no forks, and no login or refresh ever waits for it. Personal
-- data (ip, user agent) enters a row's hash through pii_hash only, so it
-- can be erased when its user is deleted without breaking the chain; any
-- other change to a sealed row shows. af_audit_verify walks the chain from
-- the anchor left by the last pruning (audit_anchor) and names the first
-- row that does not fit. A row is protected from its sealing on, at most
-- [mail] poll_seconds after it was written while the mailer runs.

ALTER TABLE audit_log ADD COLUMN seq bigint UNIQUE, ADD COLUMN pii_hash bytea,
    ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;
CREATE INDEX audit_log_unsealed_idx ON audit_log (id) WHERE seq IS NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);

-- The last pruned row's place and hash: the chain goes on from there.
CREATE TABLE audit_anchor (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_seq    bigint NOT NULL,
    last_hash   bytea NOT NULL,
    pruned_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION af_audit_pii_hash(p_ip text, p_ua text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(jsonb_build_array(p_ip, p_ua)::text, 'UTF8'))
$$;

-- The hash of a sealed row: its fields as a JSON array (jsonb's text form
-- is canonical; the time as microseconds since the epoch, so the session's
-- time zone cannot change it), after the previous row's hash.
CREATE FUNCTION af_audit_row_hash(a audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(COALESCE(a.prev_hash, ''::bytea) || convert_to(jsonb_build_array(
        a.seq, a.id, (extract(epoch FROM a.at) * 1000000)::bigint, a.type, a.actor_id, a.subject_id,
        a.session_id, a.request_id, a.detail, encode(a.pii_hash, 'hex'))::text, 'UTF8'))
$$;

-- Seals up to p_max unsealed rows (NULL: all), oldest id first; the number
-- sealed. Rows of transactions still open are sealed by a later call.
CREATE FUNCTION af_audit_seal(p_max int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    a audit_log%ROWTYPE;
    prev bytea;
    last_seq bigint;
    n bigint := 0;
BEGIN
    -- One sealer at a time, so places follow each other without gaps (a
    -- sequence would leave one at every rolled-back seal).
    PERFORM pg_advisory_xact_lock(7246119, 1);
    SELECT l.seq, l.hash INTO last_seq, prev FROM audit_log l WHERE l.seq IS NOT NULL
     ORDER BY l.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        SELECT x.last_seq, x.last_hash INTO last_seq, prev FROM audit_anchor x;
    END IF;
    last_seq := COALESCE(last_seq, 0);
    FOR a IN SELECT * FROM audit_log l WHERE l.seq IS NULL ORDER BY l.id LIMIT p_max FOR UPDATE LOOP
        last_seq := last_seq + 1;
        a.seq := last_seq;
        a.pii_hash := af_audit_pii_hash(a.ip, a.user_agent);
        a.prev_hash := prev;
        a.hash := af_audit_row_hash(a);
        UPDATE audit_log SET seq = a.seq, pii_hash = a.pii_hash, prev_hash = a.prev_hash, hash = a.hash
         WHERE id = a.id;
        prev := a.hash;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Seals what is waiting, then checks the chain: the first row (its id)
-- where it breaks, with the reason (NULL: intact), the number of rows
-- checked and the head (the last row's id and hash). A row may have lost
-- its ip and user agent only when its user was deleted (a user_deleted row
-- exists for the actor, or for the subject of a row without actor).
CREATE FUNCTION af_audit_verify()
RETURNS TABLE (bad_id bigint, reason text, checked bigint, head_id bigint, head_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    a audit_log%ROWTYPE;
    prev bytea;
    last_id bigint;
    expect bigint;
    n bigint := 0;
BEGIN
    PERFORM af_audit_seal(NULL);
    SELECT x.last_hash, x.last_seq + 1 INTO prev, expect FROM audit_anchor x;
    FOR a IN SELECT * FROM audit_log WHERE seq IS NOT NULL ORDER BY seq LOOP
        n := n + 1;
        IF a.prev_hash IS DISTINCT FROM prev OR (expect IS NOT NULL AND a.seq <> expect) THEN
            RETURN QUERY SELECT a.id, 'does not follow the row before it (a row was removed or changed)'::text,
                                n, NULL::bigint, NULL::bytea;
            RETURN;
        END IF;
        IF a.hash IS DISTINCT FROM af_audit_row_hash(a) THEN
            RETURN QUERY SELECT a.id, 'its content does not match its hash'::text, n, NULL::bigint, NULL::bytea;
            RETURN;
        END IF;
        IF a.pii_hash IS DISTINCT FROM af_audit_pii_hash(a.ip, a.user_agent) AND NOT (
               a.ip IS NULL AND a.user_agent IS NULL AND EXISTS (
                   SELECT 1 FROM audit_log d WHERE d.type = 'user_deleted'
                      AND d.subject_id = COALESCE(a.actor_id, a.subject_id))) THEN
            RETURN QUERY SELECT a.id, 'its ip or user agent was changed'::text, n, NULL::bigint, NULL::bytea;
            RETURN;
        END IF;
        prev := a.hash;
        last_id := a.id;
        expect := a.seq + 1;
    END LOOP;
    RETURN QUERY SELECT NULL::bigint, NULL::text, n, last_id, prev;
END
$$;

-- Seals what is waiting, then deletes rows older than p_days, at most
-- p_batch of them, oldest first, and moves the anchor to the last one
-- deleted; the number deleted.
CREATE FUNCTION af_audit_prune(p_days int, p_batch int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last audit_log%ROWTYPE;
    n bigint;
BEGIN
    PERFORM af_audit_seal(NULL);
    -- Only a prefix of the chain goes: up to the last old row among the
    -- first p_batch.
    SELECT * INTO last FROM (SELECT * FROM audit_log WHERE seq IS NOT NULL ORDER BY seq LIMIT p_batch) b
     WHERE b.at < now() - make_interval(days => p_days) ORDER BY b.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    DELETE FROM audit_log WHERE seq <= last.seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO audit_anchor (last_seq, last_hash) VALUES (last.seq, last.hash)
        ON CONFLICT (one) DO UPDATE SET last_seq = EXCLUDED.last_seq, last_hash = EXCLUDED.last_hash,
                                        pruned_at = now();
    RETURN n;
END
$$;

-- Users whose cached object (af:user:<id> in Redis) could not be dropped
-- after a change because Redis was unreachable: dropped by the next
-- responder that reaches Redis (with the waiting revocations of
-- session_cache_repairs). Rows older than the cache's lifetime are of no
-- use and go then.
CREATE TABLE user_cache_repairs (
    user_id     uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ------------------------------------------------------ user administration

-- Serialises every change that can touch the set of active admins.
CREATE FUNCTION af_admin_lock() RETURNS void
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(7246119, 2) $$;

-- Would user p_id, with roles p_roles and the disabled flag p_disabled
-- (NULL: unchanged), leave no active admin? Call under af_admin_lock().
CREATE FUNCTION af_admin_would_be_last(p_id uuid, p_roles text[], p_disabled boolean, p_deleting boolean)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role = 'admin'
                    WHERE u.id = p_id AND NOT u.disabled)
       AND (p_deleting OR COALESCE(p_disabled, false)
            OR (p_roles IS NOT NULL AND NOT 'admin' = ANY (p_roles)))
       AND NOT EXISTS (SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role = 'admin'
                        WHERE u.id <> p_id AND NOT u.disabled)
$$;

-- Changes a user: NULL arguments leave a field as it is. Status 'ok',
-- 'not_found', 'last_admin' (the change would leave no active admin) or
-- 'unknown_role' (then detail names it). Disabling revokes every session
-- (their ids come back for the Redis fast path). Writes one audit row per
-- kind of change: roles_changed, user_disabled, user_enabled, user_updated.
CREATE FUNCTION af_admin_update_user(p_id uuid, p_actor uuid, p_name text, p_roles text[],
                                     p_disabled boolean, p_verified boolean,
                                     p_ip text, p_ua text, p_request_id text, p_via text)
RETURNS TABLE (status text, detail text, revoked uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    u users%ROWTYPE;
    old_roles text[];
    new_roles text[];
    missing text;
    ids uuid[] := '{}';
    changed text[] := '{}';
    via jsonb := CASE WHEN p_via IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('via', p_via) END;
BEGIN
    PERFORM af_admin_lock();
    SELECT * INTO u FROM users x WHERE x.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::text, NULL::uuid[];
        RETURN;
    END IF;
    IF p_roles IS NOT NULL THEN
        SELECT min(x) INTO missing FROM unnest(p_roles) x WHERE x NOT IN (SELECT name FROM roles);
        IF missing IS NOT NULL THEN
            RETURN QUERY SELECT 'unknown_role'::text, missing, NULL::uuid[];
            RETURN;
        END IF;
    END IF;
    IF af_admin_would_be_last(p_id, p_roles, p_disabled, false) THEN
        RETURN QUERY SELECT 'last_admin'::text, NULL::text, NULL::uuid[];
        RETURN;
    END IF;
    SELECT COALESCE(array_agg(r.role ORDER BY r.role), '{}') INTO old_roles FROM user_roles r WHERE r.user_id = p_id;
    IF p_roles IS NOT NULL THEN
        SELECT COALESCE(array_agg(DISTINCT x ORDER BY x), '{}') INTO new_roles FROM unnest(p_roles) x;
        IF new_roles IS DISTINCT FROM old_roles THEN
            DELETE FROM user_roles r WHERE r.user_id = p_id AND NOT r.role = ANY (new_roles);
            INSERT INTO user_roles (user_id, role) SELECT p_id, x FROM unnest(new_roles) x
                ON CONFLICT DO NOTHING;
            UPDATE users x SET updated_at = now() WHERE x.id = p_id;
            INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail)
            VALUES ('roles_changed', p_actor, p_id, p_ip, p_ua, p_request_id,
                    via || jsonb_build_object('from', to_jsonb(old_roles), 'to', to_jsonb(new_roles)));
        END IF;
    END IF;
    IF p_disabled IS NOT NULL AND p_disabled <> u.disabled THEN
        UPDATE users x SET disabled = p_disabled, updated_at = now() WHERE x.id = p_id;
        IF p_disabled THEN
            WITH r AS (UPDATE sessions s SET revoked_at = now(), revoke_reason = 'user_disabled'
                        WHERE s.user_id = p_id AND s.revoked_at IS NULL RETURNING s.id)
            SELECT COALESCE(array_agg(r.id), '{}') INTO ids FROM r;
        END IF;
        INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail)
        VALUES (CASE WHEN p_disabled THEN 'user_disabled' ELSE 'user_enabled' END, p_actor, p_id,
                p_ip, p_ua, p_request_id,
                via || CASE WHEN p_disabled THEN jsonb_build_object('sessions_revoked', cardinality(ids))
                            ELSE '{}'::jsonb END);
    END IF;
    IF p_name IS NOT NULL AND p_name <> u.full_name THEN
        changed := changed || 'full_name'::text;
    END IF;
    IF p_verified IS NOT NULL AND p_verified <> u.email_verified THEN
        changed := changed || 'email_verified'::text;
    END IF;
    IF cardinality(changed) > 0 THEN
        UPDATE users x SET full_name = COALESCE(p_name, x.full_name),
                           email_verified = COALESCE(p_verified, x.email_verified), updated_at = now()
         WHERE x.id = p_id;
        INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail)
        VALUES ('user_updated', p_actor, p_id, p_ip, p_ua, p_request_id,
                via || jsonb_build_object('fields', to_jsonb(changed)));
    END IF;
    RETURN QUERY SELECT 'ok'::text, NULL::text, ids;
END
$$;

-- Deletes a user: 'ok' with the ids of the sessions that were live (for
-- the Redis fast path), 'not_found' or 'last_admin'. The user's audit rows
-- keep only the ids: the user's ip and user agent are erased (the chain
-- allows that once a user_deleted row exists, which is written here first).
CREATE FUNCTION af_delete_user(p_id uuid, p_actor uuid, p_ip text, p_ua text, p_request_id text,
                               p_via text)
RETURNS TABLE (status text, revoked uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    PERFORM af_admin_lock();
    PERFORM 1 FROM users x WHERE x.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::uuid[];
        RETURN;
    END IF;
    IF af_admin_would_be_last(p_id, NULL, NULL, true) THEN
        RETURN QUERY SELECT 'last_admin'::text, NULL::uuid[];
        RETURN;
    END IF;
    SELECT COALESCE(array_agg(s.id), '{}') INTO ids FROM sessions s
     WHERE s.user_id = p_id AND s.revoked_at IS NULL;
    DELETE FROM users x WHERE x.id = p_id;
    -- The deleting admin's own address stays on this row; a user deleting
    -- themselves leaves none.
    INSERT INTO audit_log (type, actor_id, subject_id, ip, user_agent, request_id, detail)
    VALUES ('user_deleted', p_actor, p_id,
            CASE WHEN p_actor IS DISTINCT FROM p_id THEN p_ip END,
            CASE WHEN p_actor IS DISTINCT FROM p_id THEN p_ua END, p_request_id,
            CASE WHEN p_via IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('via', p_via) END
              || jsonb_build_object('sessions_revoked', cardinality(ids)));
    -- The rows whose address is the user's: those they acted in, and those
    -- about them with no actor (a reset link asked for their address).
    UPDATE audit_log a SET ip = NULL, user_agent = NULL
     WHERE (a.actor_id = p_id OR (a.actor_id IS NULL AND a.subject_id = p_id))
       AND (a.ip IS NOT NULL OR a.user_agent IS NOT NULL);
    RETURN QUERY SELECT 'ok'::text, ids;
END
$$;
