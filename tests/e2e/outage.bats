#!/usr/bin/env bats
# The outage fault test: about a minute of load on login, /users/me, a
# location behind the gate and registration, while Redis is killed and
# started again and then PostgreSQL is stopped and started again:
#
#   t =  0 s  the load starts (tests/fault/*.lua under wrk) and three probes
#             (tests/fault/probe.sh: /users/me, the gate, /health, each
#             every 100 ms)
#   t =  8 s  Redis is killed (SIGTERM)
#   t = 18 s  Redis is started again (empty: the stack's Redis keeps nothing)
#   t = 28 s  PostgreSQL is stopped (pg_ctl stop -m fast)
#   t = 40 s  PostgreSQL is started again
#   t = 52 s  the load ends
#
# Redis is a cache and a place for counters: while it is away every answer
# must be what it would be with it (the responders fall back to
# PostgreSQL). While PostgreSQL is away, whatever cannot be answered from
# Redis gets a 503 with Retry-After and a problem body; /users/me and the
# gate may go on answering 200 from Redis. The whole scenario runs once, in
# setup_file; each test checks one rule on what it recorded, and the
# summary (answers by phase, the 503s' window, recovery times) goes to the
# test log. tests/fault/report.py holds the rules on answers and times.
#
# AUTHFLOW_OUTAGE_KEEP=DIR copies the run's records and the stack's logs
# to DIR for a post-mortem.

load helpers
load redis-helpers

FAULT=$AUTHFLOW_SRCDIR/tests/fault
NUSERS=50
# Seconds after the start of the load.
AT_REDIS_STOP=8
AT_REDIS_START=18
AT_PG_STOP=28
AT_PG_CHECK=32
AT_PG_START=40
LOAD_SECONDS=52
# A session is bound to its device fingerprint, which covers the
# User-Agent: every client here sends the same one.
UA=authflow-outage-test
# Pauses (ms) before each request of a connection: a moderate load that the
# sanitizer build (two to three times slower) on two cores serves as well.
# Login and registration are bound by Argon2id anyway.
DELAY_BEARER=5
DELAY_ARGON2=100

now_ms() {
    local t=${EPOCHREALTIME//[!0-9]/}
    printf '%s\n' $((t / 1000))
}

# event NAME: records the moment NAME happened.
event() { printf '%s %s\n' "$1" "$(now_ms)" >>"$W/events"; }

# sleep_until SECONDS: until that many seconds after the start of the load.
sleep_until() {
    local left=$((T0 + $1 * 1000 - $(now_ms)))
    ((left <= 0)) || sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
}

# await_ms LIMIT_S COMMAND...: runs COMMAND every 50 ms until it succeeds
# (for at most LIMIT_S seconds); prints the moment it first did.
await_ms() {
    local limit=$(($(now_ms) + $1 * 1000))
    shift
    while (($(now_ms) < limit)); do
        if "$@"; then
            now_ms
            return 0
        fi
        sleep 0.05
    done
    echo "# $* did not succeed within the time limit" >&2
    return 1
}

# background LOG COMMAND...: starts COMMAND in the background with none of
# bats' descriptors (bats would wait for them), and records its pid for
# teardown_file; BG_PID is that pid.
background() {
    local log=$1
    shift
    "$@" </dev/null >"$log" 2>&1 3>&- &
    BG_PID=$!
    echo "$BG_PID" >>"$W/background.pids"
}

# detached COMMAND...: runs COMMAND (a daemon starting itself) with every
# descriptor above 2 closed, so that nothing of bats leaks to the daemon.
detached() {
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if ((fd > 2 && fd < 255)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        cd / && "$@"
    ) </dev/null
}

# ---------------------------------------------------------------------------
# PostgreSQL, run as the owner of its data directory (tests/stack.sh starts
# it as the service user when run as root).

PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

as_pg_owner() {
    local owner
    owner=$(stat -c %U "$AUTHFLOW_RUN_DIR/pgdata")
    if [[ $owner != "$(id -un)" ]]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

pg_accepts() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U authflow -d authflow; }

pg_stop() {
    as_pg_owner "$PGBIN/pg_ctl" -D "$AUTHFLOW_RUN_DIR/pgdata" stop -m fast -w -t 30 \
        >>"$W/pg_ctl.log" 2>&1 || { cat "$W/pg_ctl.log" >&2; return 1; }
    touch "$BATS_FILE_TMPDIR/pg-down"
}

# pg_start: starts PostgreSQL without waiting (the caller times its return).
pg_start() {
    detached as_pg_owner "$PGBIN/pg_ctl" -D "$AUTHFLOW_RUN_DIR/pgdata" \
        -l "$AUTHFLOW_RUN_DIR/log/postgres.log" -W start >>"$W/pg_ctl.log" 2>&1 ||
        { cat "$W/pg_ctl.log" >&2; return 1; }
}

# ---------------------------------------------------------------------------
# The responders' processes

# pids_snapshot: "NAME PID COMMAND" of every process of the responders, the
# web server and the mailer.
pids_snapshot() {
    local name var p
    for name in auth users admin gate lighttpd mailer; do
        var=AUTHFLOW_PIDFILE_${name^^}
        [[ -n ${!var:-} && -r ${!var} ]] || { echo "$name - no-pid-file"; continue; }
        # spawn-fcgi ends its pid file without a newline.
        while read -r p || [[ -n $p ]]; do
            [[ -n $p ]] || continue
            if pid_alive "$p"; then
                echo "$name $p $(ps -o comm= -p "$p")"
            else
                echo "$name $p gone"
            fi
        done <"${!var}"
    done
}

# ---------------------------------------------------------------------------
# Users

# make_users: NUSERS verified users (authflowctl, no mail round trip), each
# logged in once: $W/credentials ("email<TAB>password") and $W/tokens.
make_users() {
    local i email password pair
    for ((i = 1; i <= NUSERS; i++)); do
        printf 'outage-%s-%s@example.test\tamber quartz meadow %s %s\n' "$i" "$TAG" "$i" "$TAG"
    done >"$W/credentials"
    : >"$W/tokens"
    while IFS=$'\t' read -r email password; do
        printf '%s\n' "$password" | timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" \
            user create "$email" --verified --password-stdin >/dev/null ||
            { echo "# authflowctl user create $email failed" >&2; return 1; }
        pair=$(jq -cn --arg e "$email" --arg p "$password" '{email: $e, password: $p}' |
            curl -sf --max-time 30 -A "$UA" -H 'Content-Type: application/json' --data-binary @- \
                "$AUTHFLOW_BASE_URL$API/auth/login") || { echo "# login of $email failed" >&2; return 1; }
        jq -r .access_token <<<"$pair" >>"$W/tokens"
    done <"$W/credentials"
    [[ $(grep -c . "$W/tokens") == "$NUSERS" ]]
}

# ---------------------------------------------------------------------------
# The scenario

wrk_run() {
    local name=$1 script=$2 url=$3 conns=$4
    shift 4
    background "$W/wrk-$name.log" timeout -k 5 $((LOAD_SECONDS + 30)) \
        wrk -t1 -c"$conns" -d"${LOAD_SECONDS}s" --timeout 5s -H "User-Agent: $UA" \
        -s "$FAULT/$script" "$url" -- "$@"
    echo "$name $BG_PID" >>"$W/wrk.pids"
}

probe() {
    local name=$1 url=$2
    shift 2
    background "$W/probe-$name.log" env PROBE_INTERVAL_MS=100 PROBE_MAX_TIME=2 \
        PROBE_SECONDS=$((LOAD_SECONDS + 30)) \
        bash "$FAULT/probe.sh" "$W/probe-$name.out" "$W/probes.stop" "$url" -A "$UA" "$@"
}

run_scenario() {
    local me_token gate_token pid creds back
    me_token=$(sed -n 1p "$W/tokens")
    gate_token=$(sed -n 2p "$W/tokens")
    : >"$W/events"
    T0=$(now_ms)
    event start
    wrk_run login login.lua "$AUTHFLOW_BASE_URL$API/auth/login" 2 "$W/credentials" "$W/login.out" "$DELAY_ARGON2"
    wrk_run register register.lua "$AUTHFLOW_BASE_URL$API/auth/register" 2 "$TAG" "$W/register.out" "$DELAY_ARGON2"
    wrk_run me bearer.lua "$AUTHFLOW_BASE_URL$API/users/me" 2 "$W/tokens" "$W/me.out" "$DELAY_BEARER"
    wrk_run gate bearer.lua "$AUTHFLOW_BASE_URL/app/outage" 2 "$W/tokens" "$W/gate.out" "$DELAY_BEARER"
    probe me "$AUTHFLOW_BASE_URL$API/users/me" -H "Authorization: Bearer $me_token"
    probe gate "$AUTHFLOW_BASE_URL/app/outage-probe" -H "Authorization: Bearer $gate_token"
    probe health "$AUTHFLOW_BASE_URL/health"

    sleep_until "$AT_REDIS_STOP"
    event redis_stop
    redis_kill
    event redis_down

    sleep_until "$AT_REDIS_START"
    event redis_start
    # redis_start waits for Redis in steps of 100 ms: the moment it answers
    # again is taken more closely here.
    redis_start >"$W/redis-start.log" 2>&1 3>&- &
    pid=$!
    back=$(await_ms 15 redis_answers)
    printf 'redis_back %s\n' "$back" >>"$W/events"
    wait "$pid" || { cat "$W/redis-start.log" >&2; return 1; }

    sleep_until "$AT_PG_STOP"
    event pg_stop
    pg_stop
    event pg_down

    # One 503 looked at closely: a login, which needs PostgreSQL.
    sleep_until "$AT_PG_CHECK"
    creds=$(head -n 1 "$W/credentials")
    api_json POST "$API/auth/login" \
        "$(jq -cn --arg e "${creds%%$'\t'*}" --arg p "${creds#*$'\t'}" '{email: $e, password: $p}')" -A "$UA" ||
        true
    declare -p status_code headers body >"$W/pg-down-login"

    sleep_until "$AT_PG_START"
    event pg_start
    pg_start
    back=$(await_ms 30 pg_accepts)
    printf 'pg_back %s\n' "$back" >>"$W/events"
    rm -f "$BATS_FILE_TMPDIR/pg-down"

    # wrk ends by itself after LOAD_SECONDS; its timeout is the bound. One
    # that failed wrote no summary, which report.py reports.
    local name
    while read -r name pid; do
        wait "$pid" || echo "# wrk $name exited with status $?: $(tail -n 3 "$W/wrk-$name.log")" >&3
    done <"$W/wrk.pids"
    event end
    touch "$W/probes.stop"
    wait
}

setup_file() {
    # Pinned: the scenario stops the one PostgreSQL cluster the responders
    # reach directly, and reaches the gate through lighttpd's /app/.
    af_stack_up AUTHFLOW_CHILDREN=2 AUTHFLOW_WEB=lighttpd AUTHFLOW_PG=single
    W=$BATS_FILE_TMPDIR/outage
    TAG=$RANDOM$RANDOM
    mkdir -p "$W"
    : >"$W/background.pids"
    : >"$W/wrk.pids"
    export W TAG
    make_users
    pids_snapshot >"$W/pids.before"
    run_scenario
    pids_snapshot >"$W/pids.after"

    /usr/bin/python3 "$FAULT/report.py" "$W/events" "$W/violations" \
        login="$W/login.out" register="$W/register.out" me="$W/me.out" gate="$W/gate.out" -- \
        me="$W/probe-me.out" gate="$W/probe-gate.out" health="$W/probe-health.out" \
        >"$W/summary" 2>"$W/report.err" || { cat "$W/report.err" >&2; return 1; }

    # Every address that got a 201, and those of them the database has.
    sort -u "$W"/register.out.created.* >"$W/created" 2>/dev/null || : >"$W/created"
    psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U authflow -d authflow \
        -c "SELECT email FROM users WHERE email LIKE 'fault-$TAG-%'" >"$W/stored.raw" </dev/null
    sort -u "$W/stored.raw" >"$W/stored"
    comm -23 "$W/created" "$W/stored" >"$W/lost"
    printf 'registrations: %s answered 201, %s of them in the users table afterwards\n' \
        "$(grep -c . "$W/created")" "$(comm -12 "$W/created" "$W/stored" | grep -c .)" >>"$W/summary"

    cp "$W/summary" "$BATS_FILE_TMPDIR/outage-summary.txt"
    sed 's/^/# /' "$W/summary" >&3
}

teardown_file() {
    local p
    if [[ -n ${W:-} && -r $W/background.pids ]]; then
        touch "$W/probes.stop"
        while read -r p; do
            if [[ -n $p ]]; then kill "$p" 2>/dev/null || true; fi
        done <"$W/background.pids"
    fi
    # A scenario that failed half-way leaves the dependencies as it found
    # them, so that the stack stops cleanly.
    if [[ -f $BATS_FILE_TMPDIR/redis-down ]]; then
        redis_start || true
    fi
    if [[ -f $BATS_FILE_TMPDIR/pg-down ]]; then
        pg_start || true
        await_ms 30 pg_accepts >/dev/null || true
    fi
    if [[ -n ${AUTHFLOW_OUTAGE_KEEP:-} && -n ${W:-} ]]; then
        mkdir -p "$AUTHFLOW_OUTAGE_KEEP"
        cp -r "$W" "$AUTHFLOW_OUTAGE_KEEP/" 2>/dev/null || true
        cp -r "$AUTHFLOW_RUN_DIR/log" "$AUTHFLOW_OUTAGE_KEEP/" 2>/dev/null || true
    fi
    af_stack_down
}

# violations KIND: the rules of that kind report.py found broken.
violations() { grep "^$1: " "$W/violations" || true; }

assert_no_violations() {
    local v
    v=$(violations "$1")
    [[ -z $v ]] || fail "$(printf '%s\n\n--- summary:\n%s' "$v" "$(<"$W/summary")")"
}

# ---------------------------------------------------------------------------

@test "no responder process crashed: the same processes before and after, all running" {
    [[ -s $W/pids.before ]] || fail "no processes were recorded before the load"
    diff -u "$W/pids.before" "$W/pids.after" ||
        fail "the processes changed (-before, +after): see the diff above"
    # Several processes for each responder (AUTHFLOW_CHILDREN=2), none gone.
    local name
    for name in auth users admin gate; do
        (($(grep -c "^$name [0-9]* authflow-$name\$" "$W/pids.after") >= 2)) ||
            fail "fewer than 2 running processes of authflow-$name: $(grep "^$name " "$W/pids.after")"
    done
    if grep -qE ' (gone|no-pid-file)$' "$W/pids.after"; then
        fail "not running after the load: $(grep -E ' (gone|no-pid-file)$' "$W/pids.after")"
    fi
    # A sanitizer build reports what it caught in the responders' logs.
    local hits
    hits=$(grep -lE 'ERROR: AddressSanitizer|runtime error: |SUMMARY: UndefinedBehaviorSanitizer' \
        "$AUTHFLOW_RUN_DIR"/log/*.log 2>/dev/null || true)
    [[ -z $hits ]] || fail "sanitizer reports in: $hits"
}

@test "no 500s: every answer is the expected success or a 503, and none went missing" {
    assert_no_violations status
    assert_no_violations socket
}

@test "login, registration, /users/me and the gate succeed in every phase but the PostgreSQL outage" {
    assert_no_violations served
}

@test "503 only while PostgreSQL is down, never while only Redis is" {
    assert_no_violations window
}

@test "a 503 while PostgreSQL is down carries Retry-After and a service_unavailable problem" {
    # shellcheck disable=SC1091
    source "$W/pg-down-login"
    last_request="POST $API/auth/login (PostgreSQL stopped)"
    assert_problem 503 service_unavailable
    assert_header_present Retry-After
    [[ $(header retry-after) =~ ^[0-9]+$ ]] || _af_fail "Retry-After should be a number of seconds"
}

@test "the service answers again within 2 s after each dependency returns" {
    assert_no_violations recovery
}

@test "every registration that got a 201 is in the database afterwards" {
    [[ -s $W/created ]] || fail "no registration got a 201: the test registered nobody"
    [[ ! -s $W/lost ]] ||
        fail "$(printf 'answered 201 but not in the users table (%s):\n%s' "$(grep -c . "$W/lost")" "$(head -20 "$W/lost")")"
}
