-- 003_session_repairs.sql — revocations that Redis has not heard of yet.
--
-- A revocation is written to PostgreSQL first, then marked in Redis so the
-- gate refuses the session on the very next request. When Redis cannot be
-- reached at that moment, the session id waits here; every responder that
-- checks sessions writes waiting ids to Redis when it connects to Redis and
-- at least once a second, and removes them once written. Rows older than
-- the longest access-token lifetime are of no use and are dropped then.
CREATE TABLE session_cache_repairs (
    session_id  uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
