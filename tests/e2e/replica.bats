#!/usr/bin/env bats
# Reads from a PostgreSQL streaming standby, end to end. The stack runs with
# AUTHFLOW_PG=replica (tests/stack.sh): pgbouncer in transaction pooling in
# front of a primary and a hot standby, [database] dsn its database authflow
# (the primary) and read_dsn its database authflow_ro (the standby). The
# replication is asynchronous here, so that pausing the standby's replay or
# stopping it stalls no commit on the primary; read_max_lag_ms is 500.
#
# What is checked:
#   - the read-only lists (a user's sessions and activity, the admin's users,
#     a user, the audit trail) go to the standby: pgbouncer's SHOW STATS
#     counts the queries of each database, so a burst of N reads must move
#     at least N queries through authflow_ro;
#   - read-your-writes: with the standby's replay paused, a user's own change
#     shows at once in their own reads;
#   - the lag bound: with replay paused and data on the primary only, once
#     read_max_lag_ms has passed a reader who wrote nothing gets that data;
#   - with the standby stopped every endpoint answers as before, /health says
#     so (200: the standby is optional), and once it is started again the
#     reads go back to it without a restart of the responders;
#   - /health reports the standby.
#
# The tests prove where a read went by what it returns: data that the paused
# standby does not have (checked with psql on the standby itself).

# shellcheck disable=SC2016 # jq programs in single quotes

load helpers
load mail-helpers

READ_MAX_LAG_MS=500
PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

setup_file() {
    af_stack_up AUTHFLOW_PG=replica AUTHFLOW_PG_REPLICATION=async \
        AUTHFLOW_DATABASE_READ_MAX_LAG_MS="$READ_MAX_LAG_MS" AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false
    [[ ${AUTHFLOW_PG:-} == replica && -n ${REPLICA_PGPORT:-} && -n ${PGBOUNCER_PORT:-} ]] || {
        echo "# tests/stack.sh up started no replica (env: AUTHFLOW_PG='${AUTHFLOW_PG:-}')" >&2
        return 1
    }
}

teardown_file() { af_stack_down; }

# What a failed test leaves behind: the standby stopped or its replay paused.
teardown() {
    if [[ -f $BATS_FILE_TMPDIR/replica-stopped ]]; then
        replica_start || true
    fi
    if [[ -f $BATS_FILE_TMPDIR/replay-paused ]]; then
        replay_resume || true
    fi
}

# ---------------------------------------------------------------------------
# The standby and pgbouncer

# replica_sql QUERY: QUERY on the standby itself, directly (not through
# pgbouncer); unaligned, no header.
replica_sql() {
    psql -h 127.0.0.1 -p "$REPLICA_PGPORT" -U authflow -d authflow -qAtX -v ON_ERROR_STOP=1 -c "$1"
}

# bouncer_stat DATABASE COLUMN: a column of pgbouncer's SHOW STATS (running
# totals since it started) for DATABASE, found by its name in the header.
bouncer_stat() {
    psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U authflow -d pgbouncer -AX -F $'\t' -P footer=off \
        -c 'SHOW STATS' | awk -F '\t' -v db="$1" -v col="$2" '
            NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
            $1 == db && c { print $c; found = 1 }
            END { exit !found }'
}

# ro_queries: the queries pgbouncer has run on the standby so far.
ro_queries() { bouncer_stat authflow_ro total_query_count; }

# assert_reads_on_replica PATH TOKEN [SECONDS]: a burst of 20 GET PATH (each
# answered 200) moves at least 20 queries through authflow_ro. Tried again
# for up to SECONDS (default 15): right after a user's own write their reads
# go to the primary for a few seconds, and a lag check may be under way.
# A read that does not go to the standby cannot reach the count: the
# responders' lag checks add about one query a second per process.
assert_reads_on_replica() {
    local path=$1 token=$2 secs=${3:-15} n=20 before after i deadline
    deadline=$((SECONDS + secs))
    while :; do
        before=$(ro_queries) || fail "SHOW STATS of pgbouncer has no authflow_ro row"
        for ((i = 0; i < n; i++)); do
            api GET "$path" -H "Authorization: Bearer $token" || return 1
            assert_status 200 || return 1
        done
        after=$(ro_queries)
        ((after - before >= n)) && return 0
        ((SECONDS < deadline)) || break
        sleep 1
    done
    fail "$n x GET $path moved $((after - before)) queries through pgbouncer's authflow_ro (the standby); expected $n or more"
}

# The primary's current WAL position; whether the standby has received or
# replayed up to a position.
primary_lsn() { sql "SELECT pg_current_wal_lsn()"; }
replica_received() { [[ $(replica_sql "SELECT pg_last_wal_receive_lsn() >= '$1'::pg_lsn") == t ]]; }
replica_replayed() { [[ $(replica_sql "SELECT pg_last_wal_replay_lsn() >= '$1'::pg_lsn") == t ]]; }

# replica_caught_up: the standby has replayed everything the primary wrote.
replica_caught_up() { replica_replayed "$(primary_lsn)"; }

# fresh_commit: a commit on the primary that the standby has replayed (a
# transactional WAL message: no table is touched). Right after it the
# standby's measured lag is small whatever it was before.
fresh_commit() {
    sql "SELECT pg_logical_emit_message(true, 'authflow-e2e', 'tick')" >/dev/null
    wait_until 10 "the standby to replay a fresh commit" replica_caught_up
}

replay_paused() { [[ $(replica_sql "SELECT pg_get_wal_replay_pause_state()") == paused ]]; }

replay_pause() {
    touch "$BATS_FILE_TMPDIR/replay-paused"
    replica_sql "SELECT pg_wal_replay_pause()" >/dev/null
    wait_until 10 "the standby's replay to pause" replay_paused
}

# replay_resume: resumes replay and waits until the standby has caught up.
replay_resume() {
    replica_sql "SELECT pg_wal_replay_resume()" >/dev/null
    wait_until 20 "the standby to catch up after its replay resumed" replica_caught_up
    rm -f "$BATS_FILE_TMPDIR/replay-paused"
}

# replica_ctl ARGS...: pg_ctl on the standby's data directory as the service
# user. A postmaster it starts must hold no descriptor of bats.
replica_ctl() {
    local dir
    dir=$(dirname "$AUTHFLOW_PIDFILE_REPLICA")
    (
        cd /
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if ((fd > 2 && fd < 255)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        as_svc "$PG_BIN/pg_ctl" -D "$dir" -w -t 30 -s "$@"
    ) </dev/null
}

replica_stop() {
    touch "$BATS_FILE_TMPDIR/replica-stopped"
    replica_ctl stop -m fast || fail "pg_ctl stop of the standby failed"
    port_closed "$REPLICA_PGPORT" || fail "the standby still listens after pg_ctl stop"
}

replica_streams() {
    [[ $(sql "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1 ]]
}

# replica_start: starts the stopped standby and waits until it streams and
# has caught up.
replica_start() {
    replica_ctl start -l "$AUTHFLOW_RUN_DIR/log/postgres-replica.log" >/dev/null ||
        fail "pg_ctl start of the standby failed"
    wait_until 20 "the standby to stream from the primary again" replica_streams
    wait_until 20 "the standby to catch up" replica_caught_up
    rm -f "$BATS_FILE_TMPDIR/replica-stopped"
}

port_closed() { ! (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------
# Accounts and requests

# new_admin: a fresh account given the admin role with psql before the login
# that puts it in the token (as admin.bats does). Sets ADMIN and leaves
# EMAIL, PASSWORD, USER_ID, ACCESS... to that account.
new_admin() {
    new_account || return 1
    sql "INSERT INTO user_roles (user_id, role) VALUES (:'id', 'admin')" id="$USER_ID" >/dev/null
    login "$EMAIL" "$PASSWORD" || return 1
    assert_status 200 || return 1
    ADMIN=$ACCESS
    [[ ,$(jwt_claims "$ADMIN" | jq -r '.roles | join(",")'), == *,admin,* ]] ||
        fail "the admin's token carries no admin role"
}

# adm METHOD PATH [curl args...]: PATH under /admin as $ADMIN.
adm() {
    local method=$1 path=$2
    shift 2
    api "$method" "$API/admin$path" -H "Authorization: Bearer $ADMIN" "$@"
}

# uri VALUE: VALUE percent-encoded for a query string.
uri() { jq -rn --arg v "$1" '$v | @uri'; }

# health_replica_is STATUS: GET /health is 200 with checks.replica.status STATUS.
health_replica_is() {
    api GET /health || return 1
    [[ $status_code == 200 ]] && jq -e --arg s "$1" '.checks.replica.status == $s' >/dev/null 2>&1 <<<"$body"
}

# responder_pids: the pids the responders' pid files name, on one line.
responder_pids() {
    # awk, not cat: spawn-fcgi ends a pid file without a newline.
    awk '{ printf "%s ", $1 }' "$AUTHFLOW_PIDFILE_AUTH" "$AUTHFLOW_PIDFILE_USERS" \
        "$AUTHFLOW_PIDFILE_ADMIN" "$AUTHFLOW_PIDFILE_GATE"
}

# ---------------------------------------------------------------------------

@test "the stack: dsn is pgbouncer's authflow (the primary), read_dsn its authflow_ro (a standby), listen_dsn the primary" {
    local dsn read_dsn
    dsn=$(conf_get database dsn)
    read_dsn=$(conf_get database read_dsn)
    [[ " $dsn " == *" port=$PGBOUNCER_PORT "* && " $dsn " == *" dbname=authflow "* ]] ||
        fail "database.dsn should be pgbouncer's database authflow: '$dsn'"
    [[ " $read_dsn " == *" port=$PGBOUNCER_PORT "* && " $read_dsn " == *" dbname=authflow_ro "* ]] ||
        fail "database.read_dsn should be pgbouncer's database authflow_ro: '$read_dsn'"
    # authflow-mailer's LISTEN cannot go through transaction pooling.
    [[ " $(conf_get database listen_dsn) " == *" port=$PGPORT "* ]] ||
        fail "database.listen_dsn should be the primary itself: '$(conf_get database listen_dsn)'"
    assert_equal "$(psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U authflow -d authflow -qAtX -c 'SELECT pg_is_in_recovery()')" f
    assert_equal "$(psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U authflow -d authflow_ro -qAtX -c 'SELECT pg_is_in_recovery()')" t
    assert_equal "$(replica_sql "SELECT current_setting('port')")" "$REPLICA_PGPORT"
    # The migrations went through pgbouncer; the standby has their result.
    wait_until 10 "the standby to catch up" replica_caught_up
    assert_equal "$(replica_sql "SELECT count(*) > 0 FROM schema_migrations")" t
}

@test "health: 200, checks.replica ok with latency_ms and lag_ms while the standby is up" {
    wait_until 10 "GET /health to say checks.replica.status ok" health_replica_is ok
    assert_status 200
    assert_json_response
    assert_json '.checks.postgres.status == "ok"'
    assert_json '.checks.replica | (.latency_ms | type == "number" and . >= 0) and (.lag_ms | type == "number" and . >= 0)' \
        "checks.replica should carry numbers latency_ms and lag_ms"
    assert_json ".checks.replica.lag_ms <= $READ_MAX_LAG_MS" "an idle standby should not be reported lagging"
}

@test "reads go to the standby: session and activity lists, the admin's user list, a user, the audit trail" {
    new_account "Reader One"
    local user=$ACCESS uid=$USER_ID sid=$SESSION_ID email=$EMAIL
    new_admin
    assert_reads_on_replica "$API/users/me/sessions" "$user"
    assert_json "any(.[]; .id == \"$sid\" and .current == true)" "the session list should hold the caller's session"
    assert_reads_on_replica "$API/users/me/activity" "$user"
    assert_json 'any(.items[]; .type == "login")' "the activity should hold the login"
    assert_reads_on_replica "$API/admin/users?q=$(uri "$email")" "$ADMIN"
    assert_json "[.items[].id] == [\"$uid\"]" "the admin's user list should find the user"
    assert_reads_on_replica "$API/admin/users/$uid" "$ADMIN"
    assert_json ".id == \"$uid\" and .full_name == \"Reader One\""
    assert_reads_on_replica "$API/admin/audit?user_id=$uid" "$ADMIN"
    assert_json 'any(.items[]; .type == "register")' "the audit trail should hold the registration"
    # And pgbouncer's console answers as the README says.
    run psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U authflow pgbouncer -c 'SHOW STATS'
    assert_success
    assert_output --partial authflow_ro
}

@test "read-your-writes: with the standby's replay paused, a user's own changes show at once in their own reads" {
    new_account "Before Name"
    local a1=$ACCESS s1=$SESSION_ID uid=$USER_ID
    login "$EMAIL" "$PASSWORD" -A "second device"
    assert_status 200
    local s2=$SESSION_ID
    # Nothing of theirs is recent: their reads go to the standby.
    assert_reads_on_replica "$API/users/me/sessions" "$a1"
    # The standby is fresh (a commit replayed just now), then stale on
    # purpose: whatever the user writes now only the primary has.
    fresh_commit
    replay_pause

    api_json PATCH "$API/users/me" '{"full_name":"After Name"}' -H "Authorization: Bearer $a1"
    assert_status 200
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $a1"
    assert_status 200
    assert_json 'any(.items[]; .type == "profile_updated")' \
        "the activity read right after PATCH /users/me should hold profile_updated"
    me "$a1"
    assert_status 200
    assert_json '.full_name == "After Name"'

    api DELETE "$API/users/me/sessions/$s2" -H "Authorization: Bearer $a1"
    assert_status 204
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $a1"
    assert_status 200
    assert_json "[.[].id] == [\"$s1\"]" "the session list read right after the DELETE should hold this session only"

    # The standby has none of it: those reads were the primary's.
    assert_equal "$(replica_sql "SELECT full_name FROM users WHERE id = '$uid'")" "Before Name"
    assert_equal "$(replica_sql "SELECT revoked_at IS NULL FROM sessions WHERE id = '$s2'")" t
    replay_resume
    assert_equal "$(replica_sql "SELECT full_name FROM users WHERE id = '$uid'")" "After Name"
}

@test "lag bound: replay paused, data on the primary only; past read_max_lag_ms a reader who wrote nothing gets it" {
    new_admin
    # The admin's reads go to the standby (nothing of theirs is recent).
    assert_reads_on_replica "$API/admin/users?limit=1" "$ADMIN"
    replay_pause

    # A registration and a login: on the primary only.
    local email pw uid lsn
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw" "Late Comer"
    assert_status 201
    uid=$(json .id)
    login "$email" "$pw"
    assert_status 200
    local access=$ACCESS sid=$SESSION_ID
    # The standby has received it (so it knows it lags) but not applied it.
    lsn=$(primary_lsn)
    wait_until 10 "the standby to receive the primary's WAL up to $lsn" replica_received "$lsn"
    assert_equal "$(replica_sql "SELECT count(*) FROM users WHERE id = '$uid'")" 0

    # Past the bound, and past the once-a-second lag check of every process.
    sleep "$(awk -v ms="$READ_MAX_LAG_MS" 'BEGIN { print ms / 1000 + 1.5 }')"

    adm GET "/users?q=$(uri "$email")"
    assert_status 200
    assert_json "[.items[].id] == [\"$uid\"]" "the admin's user list should find a user the lagging standby lacks"
    adm GET "/users/$uid"
    assert_status 200
    assert_json ".id == \"$uid\" and .full_name == \"Late Comer\""
    adm GET "/audit?user_id=$uid"
    assert_status 200
    assert_json 'any(.items[]; .type == "register") and any(.items[]; .type == "login")' \
        "the audit trail should hold the registration and the login"
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $access"
    assert_status 200
    assert_json "[.[].id] == [\"$sid\"]" "the new user's session list should hold their session"

    # The standby still has none of it: the reads above were the primary's.
    assert_equal "$(replica_sql "SELECT count(*) FROM users WHERE id = '$uid'")" 0
    assert_equal "$(replica_sql "SELECT count(*) FROM audit_log WHERE subject_id = '$uid' OR actor_id = '$uid'")" 0

    api GET /health
    assert_status 200
    assert_json '.checks.replica.status == "lagging"' "health should call a paused standby with newer WAL lagging"
    assert_json ".checks.replica.lag_ms > $READ_MAX_LAG_MS"

    replay_resume
    wait_until 15 "GET /health to say checks.replica.status ok again" health_replica_is ok
    assert_reads_on_replica "$API/admin/users?limit=1" "$ADMIN"
}

@test "standby stopped: every endpoint answers as before, /health 200 with replica down; started again, reads go back to it" {
    # A reader whose reads go to the standby when it stops (no write of
    # theirs is recent), and an admin alike.
    new_account "Quiet Reader"
    local reader=$ACCESS reader_sid=$SESSION_ID reader_id=$USER_ID reader_email=$EMAIL
    new_admin
    assert_reads_on_replica "$API/users/me/sessions" "$reader"
    assert_reads_on_replica "$API/admin/users?limit=1" "$ADMIN"
    local pids_before
    pids_before=$(responder_pids)
    replica_stop

    # Each request bounded: waiting on the stopped standby is a failure too.
    local t=(--max-time 15) round
    for round in 1 2; do
        api GET "$API/users/me/sessions" -H "Authorization: Bearer $reader" "${t[@]}"
        assert_status 200
        assert_json "[.[].id] == [\"$reader_sid\"]"
        api GET "$API/users/me/activity" -H "Authorization: Bearer $reader" "${t[@]}"
        assert_status 200
        assert_json 'any(.items[]; .type == "login")'
        adm GET "/users?q=$(uri "$reader_email")" "${t[@]}"
        assert_status 200
        assert_json "[.items[].id] == [\"$reader_id\"]"
        adm GET "/users/$reader_id" "${t[@]}"
        assert_status 200
        assert_json '.full_name == "Quiet Reader"'
        adm GET "/audit?user_id=$reader_id" "${t[@]}"
        assert_status 200
        assert_json 'any(.items[]; .type == "register")'
        # By the second round the once-a-second checks have noticed.
        ((round == 2)) || sleep 1.5
    done

    # A new user's whole path while the standby is away.
    local email pw uid access refresh_token p
    email=$(unique_email)
    pw=$(unique_password)
    remember_secret "$pw"
    api_json POST "$API/auth/register" \
        "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p, full_name: "While Down"}')" "${t[@]}"
    assert_status 201
    uid=$(json .id)
    login "$email" "$pw" "${t[@]}"
    assert_status 200
    access=$ACCESS refresh_token=$REFRESH
    me "$access" "${t[@]}"
    assert_status 200
    assert_json ".id == \"$uid\""
    api_json PATCH "$API/users/me" '{"full_name":"Still Down"}' -H "Authorization: Bearer $access" "${t[@]}"
    assert_status 200
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $access" "${t[@]}"
    assert_status 200
    assert_json "[.[].id] == [\"$SESSION_ID\"]"
    api GET "$API/users/me/activity" -H "Authorization: Bearer $access" "${t[@]}"
    assert_status 200
    assert_json 'any(.items[]; .type == "login") and any(.items[]; .type == "profile_updated")'
    adm GET "/users?q=$(uri "$email")" "${t[@]}"
    assert_status 200
    assert_json "[.items[].id] == [\"$uid\"] and .items[0].full_name == \"Still Down\""
    adm GET "/audit?user_id=$uid" "${t[@]}"
    assert_status 200
    assert_json 'any(.items[]; .type == "register")'

    p=/app/replica-$BATS_TEST_NUMBER-$RANDOM
    api GET "$p" -H "Authorization: Bearer $access" "${t[@]}"
    assert_status 200
    assert_json ".X_AUTH_USER_ID == \"$uid\"" "the gate should pass the identity to the backend"

    refresh "$refresh_token" "${t[@]}"
    assert_status 200
    access=$(json .access_token)
    api POST "$API/auth/logout" -H "Authorization: Bearer $access" -H 'Content-Length: 0' "${t[@]}"
    assert_status 204
    me "$access" "${t[@]}"
    assert_problem 401

    wait_until 10 "GET /health to say checks.replica.status down" health_replica_is down
    assert_json '.checks.postgres.status == "ok"' "the primary is up"

    replica_start
    # The same responder processes find the standby again.
    assert_reads_on_replica "$API/users/me/sessions" "$reader" 30
    assert_reads_on_replica "$API/admin/users?limit=1" "$ADMIN" 30
    wait_until 15 "GET /health to say checks.replica.status ok again" health_replica_is ok
    assert_equal "$(responder_pids)" "$pids_before"
    local pid
    for pid in $pids_before; do
        proc_alive "$pid" || fail "responder pid $pid is gone"
    done
}

@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
