#!/usr/bin/env bats
# `authflowctl cleanup`: what it deletes and what it must keep, in every
# table it covers; idempotence; two runs at once.
#
# Rows are written with psql with their times set in the past (relative to
# the stack's [cleanup] keep_days, [mail] retention_days and [tokens]
# refresh_idle_ttl), and one real session comes from the API. Each test
# runs a cleanup first so that the counts it checks are its own rows'.

load helpers
load mail-helpers

setup_file() { af_stack_up AUTHFLOW_MAILER=0; }
teardown_file() { af_stack_down; }

TABLES=(email_verifications password_resets mfa_challenges user_totp oauth_states sessions refresh_tokens
    mail_outbox session_cache_repairs)

setup() {
    KEEP=$(conf_get cleanup keep_days)
    RET=$(conf_get mail retention_days)
    IDLE=$(conf_get tokens refresh_idle_ttl)
    : "${KEEP:=7}" "${RET:=30}" "${IDLE:=604800}"
    # "Recent" rows sit half-way inside each period.
    ((KEEP >= 1 && RET >= 1 && IDLE >= 120)) || fail "periods too short for this test: keep_days=$KEEP retention_days=$RET refresh_idle_ttl=$IDLE"
    TAG=$(unique_tag)
}

# cleanup: authflowctl cleanup through bats' run (sets status, output).
cleanup() {
    run timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" cleanup
}

# deleted TABLE [TEXT]: the count of the line "TABLE N" of TEXT (default:
# the last run's output); fails when there is none.
deleted() {
    local n
    n=$(awk -v t="$1" '$1 == t && NF == 2 && $2 ~ /^[0-9]+$/ { print $2; exit }' <<<"${2-$output}")
    [[ -n $n ]] || fail "no line '$1 <count>' in the output of authflowctl cleanup: ${2-$output}"
    printf '%s' "$n"
}

# assert_cleanup_output: exit 0 and one count line per table.
assert_cleanup_output() {
    assert_success
    local t
    for t in "${TABLES[@]}"; do deleted "$t" >/dev/null; done
}

uuid() { cat /proc/sys/kernel/random/uuid; }

# exists TABLE CONDITION: 1 if a row of TABLE matches CONDITION, else 0.
exists() { sql "SELECT (count(*) > 0)::int FROM $1 WHERE $2"; }

# fixture: for each table, rows past their time and rows still current,
# all under TAG. Sets the ids the tests look up.
fixture() {
    U1=$(uuid) U2=$(uuid)
    S_LIVE=$(uuid) S_EXP_OLD=$(uuid) S_IDLE_OLD=$(uuid) S_REV_OLD=$(uuid)
    S_EXP_NEW=$(uuid) S_IDLE_NEW=$(uuid) S_REV_NEW=$(uuid)
    sql "
    INSERT INTO users (id, email, full_name) VALUES
        (:'u1', :'tag' || '-1@example.test', 'Cleanup One'),
        (:'u2', :'tag' || '-2@example.test', 'Cleanup Two');

    -- Verification codes: one expired a minute ago, one live.
    INSERT INTO email_verifications (user_id, code_hash, expires_at, attempts_left, sent_at) VALUES
        (:'u1', sha256(convert_to(:'tag' || ':code-old', 'UTF8')), now() - interval '1 minute', 5, now() - interval '11 minutes'),
        (:'u2', sha256(convert_to(:'tag' || ':code-new', 'UTF8')), now() + interval '9 minutes', 5, now());

    -- Reset tokens: expired unused, expired used, live unused, live used.
    INSERT INTO password_resets (token_hash, user_id, created_at, expires_at, used_at) VALUES
        (sha256(convert_to(:'tag' || ':reset-old', 'UTF8')), :'u1', now() - interval '2 hours', now() - interval '90 minutes', NULL),
        (sha256(convert_to(:'tag' || ':reset-old-used', 'UTF8')), :'u1', now() - interval '2 hours', now() - interval '90 minutes', now() - interval '100 minutes'),
        (sha256(convert_to(:'tag' || ':reset-new', 'UTF8')), :'u2', now(), now() + interval '30 minutes', NULL),
        (sha256(convert_to(:'tag' || ':reset-new-used', 'UTF8')), :'u2', now() - interval '5 minutes', now() + interval '25 minutes', now() - interval '1 minute');

    -- Second-factor challenges: one expired, one live. TOTP set-ups: one
    -- begun two days ago and never enabled (goes), one enabled long ago
    -- (stays).
    INSERT INTO mfa_challenges (token_hash, user_id, expires_at, attempts_left, amr) VALUES
        (sha256(convert_to(:'tag' || ':mfa-old', 'UTF8')), :'u1', now() - interval '1 minute', 5, 'pwd'),
        (sha256(convert_to(:'tag' || ':mfa-new', 'UTF8')), :'u2', now() + interval '4 minutes', 5, 'pwd');
    INSERT INTO user_totp (user_id, secret_sealed, enabled_at, created_at) VALUES
        (:'u1', '\x00', NULL, now() - interval '2 days');
    INSERT INTO user_totp (user_id, secret_sealed, enabled_at, created_at)
        SELECT id, '\x00', now() - interval '30 days', now() - interval '30 days' FROM users WHERE id = :'u2';

    -- Social sign-ins: one started and abandoned (expired), one under way.
    INSERT INTO oauth_states (state_hash, provider, browser_hash, redirect, mode, expires_at) VALUES
        (sha256(convert_to(:'tag' || ':oauth-old', 'UTF8')), 'test', '\x00', '/', 'redirect', now() - interval '1 minute'),
        (sha256(convert_to(:'tag' || ':oauth-new', 'UTF8')), 'test', '\x00', '/', 'popup', now() + interval '9 minutes');

    -- Sessions. Ended more than keep_days ago (by expires_at, by
    -- idle_expires_at, by revoked_at): deleted. Ended less long ago, or live: kept.
    INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, idle_expires_at, revoked_at, dfp, amr) VALUES
        (:'s_live',     :'u1', now() - make_interval(secs => :idle + 7200), now(), now() + interval '20 days', now() + make_interval(secs => :idle), NULL, 'e2e', '{pwd}'),
        (:'s_exp_old',  :'u1', now() - make_interval(days => :keep + 40), now() - make_interval(days => :keep + 2), now() - make_interval(days => :keep + 1), now() - make_interval(days => :keep + 2), NULL, 'e2e', '{pwd}'),
        (:'s_idle_old', :'u1', now() - make_interval(days => :keep + 3), now() - make_interval(days => :keep + 2), now() + interval '20 days', now() - make_interval(days => :keep + 1), NULL, 'e2e', '{pwd}'),
        (:'s_rev_old',  :'u1', now() - make_interval(days => :keep + 3), now() - make_interval(days => :keep + 1), now() + interval '20 days', now() + interval '5 days', now() - make_interval(days => :keep + 1), 'e2e', '{pwd}'),
        (:'s_exp_new',  :'u1', now() - interval '40 days', now() - make_interval(hours => :keep * 12), now() - make_interval(hours => :keep * 12), now() - make_interval(hours => :keep * 12), NULL, 'e2e', '{pwd}'),
        (:'s_idle_new', :'u1', now() - make_interval(days => :keep), now() - make_interval(days => :keep), now() + interval '20 days', now() - make_interval(hours => :keep * 12), NULL, 'e2e', '{pwd}'),
        (:'s_rev_new',  :'u1', now() - make_interval(days => :keep), now() - make_interval(hours => :keep * 12), now() + interval '20 days', now() + interval '5 days', now() - make_interval(hours => :keep * 12), 'e2e', '{pwd}');

    -- Refresh tokens. The live session: its current token, one rotated half
    -- a refresh_idle_ttl ago (kept), one rotated longer ago (deleted). Every
    -- other session: one unrotated token, which goes or stays with it.
    INSERT INTO refresh_tokens (token_hash, session_id, created_at, rotated_at) VALUES
        (sha256(convert_to(:'tag' || ':rt-live-current', 'UTF8')), :'s_live', now() - interval '1 minute', NULL),
        (sha256(convert_to(:'tag' || ':rt-live-recent', 'UTF8')), :'s_live', now() - make_interval(secs => :idle), now() - make_interval(secs => :idle / 2)),
        (sha256(convert_to(:'tag' || ':rt-live-old', 'UTF8')), :'s_live', now() - make_interval(secs => :idle + 7200), now() - make_interval(secs => :idle + 3600));
    INSERT INTO refresh_tokens (token_hash, session_id, created_at)
        SELECT sha256(convert_to(:'tag' || ':rt-' || s, 'UTF8')), s::uuid, now() - make_interval(days => :keep + 2)
          FROM unnest(ARRAY[:'s_exp_old', :'s_idle_old', :'s_rev_old', :'s_exp_new', :'s_idle_new', :'s_rev_new']) s;

    -- Mail: sent and dead past retention_days go; pending and sending stay
    -- whatever their age; sent and dead younger than that stay.
    INSERT INTO mail_outbox (kind, recipient, params, status, attempts, created_at, sent_at, lease_until, claimed_by) VALUES
        ('test', :'tag' || '-sent-old@example.test', NULL, 'sent', 1, now() - make_interval(days => :ret + 1), now() - make_interval(days => :ret + 1), NULL, 'e2e:1'),
        ('test', :'tag' || '-dead-old@example.test', NULL, 'dead', 10, now() - make_interval(days => :ret + 1), NULL, NULL, 'e2e:1'),
        ('test', :'tag' || '-pending-old@example.test', '{}', 'pending', 0, now() - make_interval(days => :ret + 400), NULL, NULL, NULL),
        ('test', :'tag' || '-sending-old@example.test', '{}', 'sending', 1, now() - make_interval(days => :ret + 1), NULL, now() + interval '1 hour', 'e2e:1'),
        ('test', :'tag' || '-sent-new@example.test', NULL, 'sent', 1, now() - make_interval(hours => :ret * 12), now() - make_interval(hours => :ret * 12), NULL, 'e2e:1'),
        ('test', :'tag' || '-dead-new@example.test', NULL, 'dead', 10, now() - make_interval(hours => :ret * 12), NULL, NULL, 'e2e:1');
    " tag="$TAG" u1="$U1" u2="$U2" s_live="$S_LIVE" s_exp_old="$S_EXP_OLD" s_idle_old="$S_IDLE_OLD" \
        s_rev_old="$S_REV_OLD" s_exp_new="$S_EXP_NEW" s_idle_new="$S_IDLE_NEW" s_rev_new="$S_REV_NEW" \
        keep="$KEEP" ret="$RET" idle="$IDLE"
}

# rt NAME: the SQL condition for the fixture's refresh token NAME.
rt() { printf "token_hash = sha256(convert_to('%s:%s', 'UTF8'))" "$TAG" "$1"; }
reset_row() { printf "token_hash = sha256(convert_to('%s:%s', 'UTF8'))" "$TAG" "$1"; }
mail_row() { printf "recipient = '%s-%s@example.test'" "$TAG" "$1"; }

# A real session from the API: registered, verified (by SQL: no mailer
# here), logged in, refreshed once (so it holds a rotated token too).
# Sets ACCESS, REFRESH, SESSION_ID.
api_session() {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    sql "UPDATE users SET email_verified = true WHERE email = :'e'" e="$email"
    login "$email" "$pw"
    assert_status 200
    refresh "$REFRESH"
    assert_status 200
    take_pair
}

@test "cleanup: deletes what is past its time in every table, keeps what is current, one line per table" {
    cleanup
    assert_cleanup_output
    api_session
    fixture

    cleanup
    assert_cleanup_output
    assert_equal "$(deleted email_verifications)" 1
    assert_equal "$(deleted password_resets)" 2
    assert_equal "$(deleted mfa_challenges)" 1
    assert_equal "$(deleted user_totp)" 1
    assert_equal "$(deleted oauth_states)" 1
    assert_equal "$(deleted sessions)" 3
    # The rotated token of the live session; the ended sessions' tokens go
    # with them, and may or may not be counted here.
    local rtn
    rtn=$(deleted refresh_tokens)
    ((rtn >= 1 && rtn <= 4)) || fail "refresh_tokens should count 1 (up to 4 with the ended sessions' tokens), is $rtn"
    assert_equal "$(deleted mail_outbox)" 2

    # Verification codes.
    assert_equal "$(exists email_verifications "user_id = '$U1'")" 0
    assert_equal "$(exists email_verifications "user_id = '$U2'")" 1
    # Reset tokens: past expires_at go, used or not; live ones stay, used or not.
    assert_equal "$(exists password_resets "$(reset_row reset-old)")" 0
    assert_equal "$(exists password_resets "$(reset_row reset-old-used)")" 0
    assert_equal "$(exists password_resets "$(reset_row reset-new)")" 1
    assert_equal "$(exists password_resets "$(reset_row reset-new-used)")" 1
    # Challenges and set-ups.
    assert_equal "$(exists mfa_challenges "user_id = '$U1'")" 0
    assert_equal "$(exists mfa_challenges "user_id = '$U2'")" 1
    assert_equal "$(exists user_totp "user_id = '$U1'")" 0
    assert_equal "$(exists user_totp "user_id = '$U2'")" 1
    assert_equal "$(exists oauth_states "state_hash = sha256(convert_to('$TAG:oauth-old', 'UTF8'))")" 0
    assert_equal "$(exists oauth_states "state_hash = sha256(convert_to('$TAG:oauth-new', 'UTF8'))")" 1
    # Sessions and their tokens.
    local s
    for s in "$S_EXP_OLD" "$S_IDLE_OLD" "$S_REV_OLD"; do
        assert_equal "$(exists sessions "id = '$s'")" 0
        assert_equal "$(exists refresh_tokens "session_id = '$s'")" 0
    done
    for s in "$S_LIVE" "$S_EXP_NEW" "$S_IDLE_NEW" "$S_REV_NEW"; do
        assert_equal "$(exists sessions "id = '$s'")" 1
    done
    for s in "$S_EXP_NEW" "$S_IDLE_NEW" "$S_REV_NEW"; do
        assert_equal "$(exists refresh_tokens "session_id = '$s'")" 1
    done
    assert_equal "$(exists refresh_tokens "$(rt rt-live-current)")" 1
    assert_equal "$(exists refresh_tokens "$(rt rt-live-recent)")" 1
    assert_equal "$(exists refresh_tokens "$(rt rt-live-old)")" 0
    # Mail.
    assert_equal "$(exists mail_outbox "$(mail_row sent-old)")" 0
    assert_equal "$(exists mail_outbox "$(mail_row dead-old)")" 0
    assert_equal "$(exists mail_outbox "$(mail_row pending-old)")" 1
    assert_equal "$(exists mail_outbox "$(mail_row sending-old)")" 1
    assert_equal "$(exists mail_outbox "$(mail_row sent-new)")" 1
    assert_equal "$(exists mail_outbox "$(mail_row dead-new)")" 1
    # Users are not cleanup's business.
    assert_equal "$(exists users "id IN ('$U1', '$U2')")" 1
    assert_equal "$(sql "SELECT count(*) FROM users WHERE id IN ('$U1', '$U2')")" 2

    # The session from the API still works, access and refresh token alike.
    me "$ACCESS"
    assert_status 200
    refresh "$REFRESH"
    assert_status 200
}

@test "cleanup: a second run deletes nothing and exits 0" {
    cleanup
    assert_cleanup_output
    fixture
    cleanup
    assert_cleanup_output
    assert_equal "$(deleted sessions)" 3
    cleanup
    assert_cleanup_output
    local t
    for t in "${TABLES[@]}"; do
        assert_equal "$t $(deleted "$t")" "$t 0"
    done
}

@test "cleanup: revocations queued for Redis go once no access token they concern can be valid" {
    cleanup
    assert_cleanup_output
    local ttl old=$(uuid) new=$(uuid)
    ttl=$(conf_get tokens access_ttl)
    : "${ttl:=900}"
    # Access tokens live access_ttl, plus the clock skew (60 s) either side.
    sql "INSERT INTO session_cache_repairs (session_id, created_at) VALUES
           (:'old', now() - make_interval(secs => :ttl + 121)),
           (:'new', now() - make_interval(secs => :ttl + 60))" old="$old" new="$new" ttl="$ttl"
    cleanup
    assert_cleanup_output
    assert_equal "$(exists session_cache_repairs "session_id = '$old'")" 0
    assert_equal "$(exists session_cache_repairs "session_id = '$new'")" 1
    sql "DELETE FROM session_cache_repairs WHERE session_id = :'new'" new="$new"
}

@test "cleanup: two runs at once both exit 0 and delete each row once" {
    cleanup
    assert_cleanup_output
    local n=2000 users=500
    sql "
    INSERT INTO users (email, full_name)
        SELECT :'tag' || '-u' || g || '@example.test', 'Bulk' FROM generate_series(1, :users) g;
    INSERT INTO email_verifications (user_id, code_hash, expires_at, attempts_left)
        SELECT id, sha256(convert_to(id::text, 'UTF8')), now() - interval '1 minute', 5
          FROM users WHERE email LIKE :'tag' || '-u%';
    INSERT INTO password_resets (token_hash, user_id, created_at, expires_at)
        SELECT sha256(convert_to(:'tag' || ':r' || id::text, 'UTF8')), id, now() - interval '2 hours', now() - interval '1 hour'
          FROM users WHERE email LIKE :'tag' || '-u%';
    INSERT INTO sessions (user_id, created_at, expires_at, idle_expires_at, revoked_at, dfp, amr, user_agent)
        SELECT u.id, now() - make_interval(days => :keep + 3), now() + interval '20 days', now() + interval '5 days',
               now() - make_interval(days => :keep + 1), 'e2e', '{pwd}', :'tag' || '-old'
          FROM generate_series(1, :n) g
          JOIN LATERAL (SELECT id FROM users WHERE email = :'tag' || '-u' || (1 + g % :users) || '@example.test') u ON true;
    INSERT INTO sessions (user_id, expires_at, idle_expires_at, dfp, amr, user_agent)
        SELECT id, now() + interval '20 days', now() + interval '5 days', 'e2e', '{pwd}', :'tag' || '-live'
          FROM users WHERE email LIKE :'tag' || '-u%' LIMIT 10;
    INSERT INTO refresh_tokens (token_hash, session_id)
        SELECT sha256(convert_to(id::text || k, 'UTF8')), id
          FROM sessions, generate_series(1, 2) k WHERE user_agent LIKE :'tag' || '-%';
    INSERT INTO mail_outbox (kind, recipient, status, attempts, created_at, sent_at)
        SELECT 'test', :'tag' || '-m' || g || '@example.test', 'sent', 1,
               now() - make_interval(days => :ret + 1), now() - make_interval(days => :ret + 1)
          FROM generate_series(1, :n) g;
    INSERT INTO mail_outbox (kind, recipient, params, created_at)
        SELECT 'test', :'tag' || '-p' || g || '@example.test', '{}', now() - make_interval(days => :ret + 1)
          FROM generate_series(1, 10) g;
    " tag="$TAG" n="$n" users="$users" keep="$KEEP" ret="$RET"

    local ctl=$AUTHFLOW_BUILDDIR/authflowctl d=$BATS_TEST_TMPDIR rc1=0 rc2=0
    timeout 60 "$ctl" -c "$AUTHFLOW_CONFIG" cleanup >"$d/one.out" 2>"$d/one.err" 3>&- &
    local p1=$!
    timeout 60 "$ctl" -c "$AUTHFLOW_CONFIG" cleanup >"$d/two.out" 2>"$d/two.err" 3>&- &
    local p2=$!
    wait "$p1" || rc1=$?
    wait "$p2" || rc2=$?
    [[ $rc1 == 0 && $rc2 == 0 ]] ||
        fail "$(printf 'exit statuses %s and %s\n--- first:\n%s\n%s\n--- second:\n%s\n%s' "$rc1" "$rc2" \
            "$(cat "$d/one.out")" "$(cat "$d/one.err")" "$(cat "$d/two.out")" "$(cat "$d/two.err")")"
    local one two
    one=$(<"$d/one.out")
    two=$(<"$d/two.out")

    # Between them, each row once.
    assert_equal "$(($(deleted email_verifications "$one") + $(deleted email_verifications "$two")))" "$users"
    assert_equal "$(($(deleted password_resets "$one") + $(deleted password_resets "$two")))" "$users"
    assert_equal "$(($(deleted sessions "$one") + $(deleted sessions "$two")))" "$n"
    assert_equal "$(($(deleted mail_outbox "$one") + $(deleted mail_outbox "$two")))" "$n"
    deleted refresh_tokens "$one" >/dev/null
    deleted refresh_tokens "$two" >/dev/null

    # Gone, and what is current is still there.
    assert_equal "$(sql "SELECT count(*) FROM sessions WHERE user_agent = :'ua'" ua="$TAG-old")" 0
    assert_equal "$(sql "SELECT count(*) FROM sessions WHERE user_agent = :'ua'" ua="$TAG-live")" 10
    assert_equal "$(sql "SELECT count(*) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE s.user_agent = :'ua'" ua="$TAG-live")" 20
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE recipient LIKE :'p'" p="$TAG-m%")" 0
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE recipient LIKE :'p'" p="$TAG-p%")" 10
    assert_equal "$(sql "SELECT count(*) FROM email_verifications v JOIN users u ON u.id = v.user_id WHERE u.email LIKE :'p'" p="$TAG-u%")" 0
    assert_equal "$(sql "SELECT count(*) FROM users WHERE email LIKE :'p'" p="$TAG-u%")" "$users"

    # And a run after them has nothing left to do.
    cleanup
    assert_cleanup_output
    local t
    for t in "${TABLES[@]}"; do
        assert_equal "$t $(deleted "$t")" "$t 0"
    done
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
