#!/usr/bin/env bats
# Operations: /metrics summed over every responder process of the host,
# /health, signing-key rotation picked up without a restart, the request id
# passed from the gate to the application, and a clean stop on SIGTERM.
# Three processes per responder; 10 s access tokens and no clock skew, so
# that a token's end can be waited for.

load helpers

setup_file() {
    af_stack_up AUTHFLOW_CHILDREN=3 AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false \
        AUTHFLOW_TOKENS_ACCESS_TTL=10 AUTHFLOW_TOKENS_CLOCK_SKEW=0 \
        AUTHFLOW_TOKENS_REFRESH_REUSE_GRACE=0 AUTHFLOW_RATELIMIT_ADMIN_PER_IP=20
    KEYS_DIR=$(conf_get tokens keys_dir)
    export KEYS_DIR
}
teardown_file() { af_stack_down; }

ctl() { "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" "$@"; }

scrape() {
    curl -sS --max-time 10 "$AUTHFLOW_BASE_URL/metrics"
}

# metric FILE SERIES: the value of one series in a scrape (0 when absent).
metric() {
    awk -v s="$2" '$1 == s { v = $2 } END { print v + 0 }' "$1"
}

# delta SERIES: its value in after.txt minus before.txt (both in $BATS_TEST_TMPDIR).
delta() {
    echo $(($(metric "$BATS_TEST_TMPDIR/after.txt" "$1") - $(metric "$BATS_TEST_TMPDIR/before.txt" "$1")))
}

assert_delta() {
    local got
    got=$(delta "$1")
    [[ $got == "$2" ]] || fail "$1 grew by $got, expected $2"
}

# parallel N CMD...: runs CMD N times, 8 at a time, so that the requests
# spread over the responder processes; prints each run's output.
parallel() {
    local n=$1
    shift
    seq "$n" | xargs -P 8 -I{} "$@"
}

# pids_of NAME: the responder's process ids from its pid file, sorted.
pids_of() { sort -n "$AUTHFLOW_RUN_DIR/$1.pid" | tr '\n' ' '; }

@test "/metrics is Prometheus text and only for [metrics] allow_from" {
    api GET /metrics
    assert_status 200
    [[ $(header Content-Type) == "text/plain; version=0.0.4; charset=utf-8" ]] ||
        fail "Content-Type: $(header Content-Type)"
    grep -q '^# TYPE authflow_http_requests_total counter$' <<<"$body" || fail "no request counter: $body"
    grep -q '^# TYPE authflow_mail_queue_messages gauge$' <<<"$body" || fail "no mail gauge"
    grep -q '^authflow_mail_dead_messages [0-9]' <<<"$body" || fail "no dead-letter gauge"
    # Every line is a comment or "name{labels} number".
    local bad
    bad=$(grep -vE '^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+)$' <<<"$body" || true)
    [[ -z $bad ]] || fail "lines that are not Prometheus text: $bad"
    # From another address: as if there were no such path.
    api GET /metrics --interface 127.0.0.3
    assert_problem 404 not_found
}

@test "one scrape gives the exact sums of traffic spread over several processes" {
    new_account
    local email=$EMAIL password=$PASSWORD access=$ACCESS refresh=$REFRESH
    scrape >"$BATS_TEST_TMPDIR/before.txt"
    local since
    since=$(date -u +%Y-%m-%dT%H:%M:%S)

    # 12 failed logins, 6 good ones, 30 /users/me, 9 gate allows, 7 gate
    # refusals, 4 refreshes and one reuse of a rotated refresh token.
    local j bad
    j=$(jq -cn --arg e "$email" --arg p "$password" '{email: $e, password: $p}')
    bad=$(jq -cn --arg e "$email" '{email: $e, password: "not the password at all"}')
    parallel 12 curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
        -d "$bad" "$AUTHFLOW_BASE_URL$API/auth/login" >"$BATS_TEST_TMPDIR/bad.codes"
    parallel 6 curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
        -d "$j" "$AUTHFLOW_BASE_URL$API/auth/login" >"$BATS_TEST_TMPDIR/good.codes"
    parallel 30 curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $access" \
        "$AUTHFLOW_BASE_URL$API/users/me" >"$BATS_TEST_TMPDIR/me.codes"
    parallel 9 curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $access" \
        "$AUTHFLOW_BASE_URL/app/metrics-test" >"$BATS_TEST_TMPDIR/allow.codes"
    parallel 7 curl -s -o /dev/null -w '%{http_code}\n' "$AUTHFLOW_BASE_URL/app/metrics-test" \
        >"$BATS_TEST_TMPDIR/deny.codes"
    local i r=$refresh old
    for ((i = 0; i < 4; i++)); do
        old=$r
        refresh "$r"
        assert_status 200
        r=$(json .refresh_token)
    done
    refresh "$old"
    assert_problem 401 token_reused
    scrape >"$BATS_TEST_TMPDIR/after.txt"

    [[ $(sort -u "$BATS_TEST_TMPDIR/bad.codes") == 401 ]] || fail "bad logins: $(sort "$BATS_TEST_TMPDIR/bad.codes" | uniq -c)"
    [[ $(sort -u "$BATS_TEST_TMPDIR/good.codes") == 200 ]] || fail "good logins: $(sort "$BATS_TEST_TMPDIR/good.codes" | uniq -c)"
    [[ $(sort -u "$BATS_TEST_TMPDIR/me.codes") == 200 ]] || fail "/users/me: $(sort "$BATS_TEST_TMPDIR/me.codes" | uniq -c)"
    [[ $(sort -u "$BATS_TEST_TMPDIR/allow.codes") == 200 ]] || fail "gate allows: $(sort "$BATS_TEST_TMPDIR/allow.codes" | uniq -c)"
    [[ $(sort -u "$BATS_TEST_TMPDIR/deny.codes") == 401 ]] || fail "gate refusals: $(sort "$BATS_TEST_TMPDIR/deny.codes" | uniq -c)"

    assert_delta 'authflow_logins_total{result="invalid_credentials"}' 12
    assert_delta 'authflow_logins_total{result="success"}' 6
    assert_delta 'authflow_http_requests_total{group="auth",route="/auth/login",method="POST",status="401"}' 12
    assert_delta 'authflow_http_requests_total{group="auth",route="/auth/login",method="POST",status="200"}' 6
    assert_delta 'authflow_http_requests_total{group="users",route="/users/me",method="GET",status="200"}' 30
    assert_delta 'authflow_http_request_duration_seconds_count{group="users",route="/users/me"}' 30
    assert_delta 'authflow_http_request_duration_seconds_bucket{group="users",route="/users/me",le="+Inf"}' 30
    assert_delta 'authflow_gate_decisions_total{result="allow"}' 9
    assert_delta 'authflow_gate_decisions_total{result="unauthorized"}' 7
    assert_delta 'authflow_http_requests_total{group="auth",route="/auth/refresh",method="POST",status="200"}' 4
    assert_delta 'authflow_http_requests_total{group="auth",route="/auth/refresh",method="POST",status="401"}' 1
    # 6 logins and 4 refreshes each issued an access and a refresh token.
    assert_delta 'authflow_tokens_issued_total{kind="access"}' 10
    assert_delta 'authflow_tokens_issued_total{kind="refresh"}' 10
    assert_delta 'authflow_refresh_reuse_detected_total' 1

    # The requests really were spread: more than one process of each of
    # auth, users and gate logged some of them.
    local prog n
    for prog in auth users gate; do
        n=$(jq -r --arg s "$since" 'select(.event == "request" and .ts >= $s) | .pid' \
            "$AUTHFLOW_RUN_DIR/log/$prog.log" | sort -u | wc -l)
        ((n >= 2)) || fail "only $n authflow-$prog process(es) served the requests"
    done
}

@test "429s are counted by group" {
    scrape >"$BATS_TEST_TMPDIR/before.txt"
    # [ratelimit] admin_per_ip is 20 here.
    local codes
    codes=$(parallel 40 curl -s -o /dev/null -w '%{http_code}\n' "$AUTHFLOW_BASE_URL$API/admin/users")
    scrape >"$BATS_TEST_TMPDIR/after.txt"
    local limited
    limited=$(grep -c '^429$' <<<"$codes" || true)
    ((limited >= 15)) || fail "only $limited of 40 were 429: $(sort <<<"$codes" | uniq -c)"
    assert_delta 'authflow_rate_limited_total{group="admin",limit="requests"}' "$limited"
    assert_delta 'authflow_http_requests_total{group="admin",route="/admin/users",method="GET",status="429"}' "$limited"
}

@test "/health reports each dependency; /health/live needs none" {
    api GET /health
    assert_status 200
    assert_json '.status' ok
    assert_json '.checks.postgres.status' ok
    assert_json '.checks.redis.status' ok
    # The standby of AUTHFLOW_PG=replica stacks (tests/stack.sh).
    if [[ ${AUTHFLOW_PG:-single} == replica ]]; then
        assert_json '.checks.replica.status' ok
    else
        assert_json '.checks.replica.status' not_configured
    fi
    api GET /health/live
    assert_status 200
    assert_json '.status' ok
}

@test "the gate passes its request id to the application" {
    new_account
    api GET /app/rid-test -H "Authorization: Bearer $ACCESS"
    assert_status 200
    [[ -n $(json '.X_REQUEST_ID // empty') ]] || fail "the application got no X_REQUEST_ID: $body"
    # The gate logged the request under the id the application got.
    local logged
    logged=$(jq -r 'select(.event == "request" and .path == "/app/rid-test") | .request_id' \
        "$AUTHFLOW_RUN_DIR/log/gate.log" | tail -n 1)
    assert_json '.X_REQUEST_ID' "$logged"
    # A client's sane id is kept all the way.
    api GET /app/rid-test2 -H "Authorization: Bearer $ACCESS" -H 'X-Request-Id: trace-4711-abc'
    assert_status 200
    assert_json '.X_REQUEST_ID' trace-4711-abc
}

@test "keys rotate: both keys verify, JWKS lists both, the old key's tokens end with their lifetime" {
    new_account
    local a=$ACCESS
    local kid_a
    kid_a=$(jwt_header "$a" | jq -r .kid)
    run ctl keys rotate
    assert_success
    local kid_b=$output
    [[ $kid_b != "$kid_a" ]] || fail "rotate kept the kid"
    # No restart: the responders see the new key at once (a kid they do
    # not know makes them look) or within a second.
    local pids_before
    pids_before="$(pids_of auth) $(pids_of gate) $(pids_of users)"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    local b=$ACCESS
    [[ $(jwt_header "$b" | jq -r .kid) == "$kid_b" ]] || fail "B is not signed with the new key"

    local t
    for t in "$a" "$b"; do
        api GET /app/rotation -H "Authorization: Bearer $t"
        assert_status 200
        me "$t"
        assert_status 200
    done
    api GET /.well-known/jwks.json
    assert_status 200
    assert_json '.keys | length' 2
    assert_json "[.keys[].kid] | sort | join(\" \")" "$(printf '%s\n' "$kid_a" "$kid_b" | sort | tr '\n' ' ' | sed 's/ $//')"

    run ctl keys list --json
    assert_success
    [[ $(jq -r '.[] | select(.current) | .kid' <<<"$output") == "$kid_b" ]] || fail "keys list: $output"

    # Retiring the old key now would cut A's lifetime short: refused.
    run ctl keys retire "$kid_a"
    assert_failure 1
    assert_output --partial "may be valid until"
    run ctl keys retire "$kid_b"
    assert_failure 1
    assert_output --partial "current signing key"

    # A lives 10 s. After that only B passes (B was signed later, and is
    # refreshed here to keep it alive).
    local exp_a now
    exp_a=$(jwt_claims "$a" | jq -r .exp)
    now=$(date +%s)
    ((exp_a >= now)) && sleep $((exp_a - now + 1))
    refresh "$REFRESH"
    assert_status 200
    b=$(json .access_token)
    api GET /app/rotation -H "Authorization: Bearer $a"
    assert_problem 401 token_expired
    api GET /app/rotation -H "Authorization: Bearer $b"
    assert_status 200
    [[ "$(pids_of auth) $(pids_of gate) $(pids_of users)" == "$pids_before" ]] || fail "responders restarted"
}

@test "keys retire removes an old key: its tokens fail at once, JWKS drops it" {
    new_account
    local old=$ACCESS kid_old
    kid_old=$(jwt_header "$old" | jq -r .kid)
    run ctl keys rotate
    assert_success
    run ctl keys retire "$kid_old" --force
    assert_success
    [[ ! -e $KEYS_DIR/$kid_old.pem ]] || fail "the key file is still there"
    sleep 1.2
    api GET /.well-known/jwks.json
    [[ $(json '[.keys[].kid | select(. == "'"$kid_old"'")] | length') == 0 ]] || fail "JWKS still has $kid_old"
    # A token that was remembered as verified is not trusted any more.
    api GET /app/retired -H "Authorization: Bearer $old"
    assert_problem 401 invalid_token
    me "$old"
    assert_problem 401 invalid_token
    run ctl keys retire no-such-kid
    assert_failure 1
}

@test "a responder stops cleanly on SIGTERM" {
    local pid
    pid=$(head -n 1 "$AUTHFLOW_RUN_DIR/users.pid")
    kill -TERM "$pid"
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null || fail "authflow-users $pid still runs 5 s after SIGTERM"
    jq -e --argjson p "$pid" 'select(.pid == $p and .event == "stop")' "$AUTHFLOW_RUN_DIR/log/users.log" >/dev/null ||
        fail "no stop line from $pid"
    # The other processes still answer.
    new_account
    me "$ACCESS"
    assert_status 200
}
