#!/usr/bin/env bats
# Rate limits and login throttling through lighttpd, with the shipped
# limits (300 requests a minute from one address to the auth group, 5
# failed logins before an account waits), three processes per responder,
# and a 4 s first lockout instead of 30 s so the doubling can be watched.
# 127.0.0.2 is a trusted proxy (curl --interface picks the test's source
# address).
#
# Every request here comes from 127.0.0.1, so the tests share one address's
# budget: the ones that exhaust it come last.

load helpers
load redis-helpers

setup_file() {
    af_stack_up AUTHFLOW_CHILDREN=3 AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false \
        AUTHFLOW_RATELIMIT_AUTH_PER_IP=300 AUTHFLOW_RATELIMIT_USERS_PER_IP=600 \
        AUTHFLOW_RATELIMIT_ADMIN_PER_IP=600 AUTHFLOW_RATELIMIT_PER_ACCOUNT=300 \
        AUTHFLOW_RATELIMIT_LOGIN_FAILURES=5 AUTHFLOW_RATELIMIT_LOGIN_FAILURES_PER_IP=100 \
        AUTHFLOW_RATELIMIT_LOGIN_LOCKOUT=4 AUTHFLOW_SERVER_TRUSTED_PROXIES=127.0.0.2
}
teardown_file() { af_stack_down; }

load mail-helpers

# fail_logins EMAIL N: N logins with a wrong password, each 401.
fail_logins() {
    local i
    for ((i = 1; i <= $2; i++)); do
        login "$1" "wrong password number $i" || return 1
        [[ $status_code == 401 ]] || fail "failed login $i for $1: expected 401, got $status_code: $body" || return 1
    done
}

# flood N [METHOD] PATH [curl args...]: N requests to PATH (POSTs of '{}'
# unless METHOD says otherwise), 16 at a time; prints the count of each
# status code ("300 400\n30 429").
flood() {
    local n=$1 method=POST cfg="$BATS_TEST_TMPDIR/flood.cfg" i
    shift
    [[ $1 == /* ]] || { method=$1; shift; }
    local path=$1
    shift
    local -a data=()
    [[ $method == GET ]] || data=(-H 'Content-Type: application/json' -d '{}')
    : >"$cfg"
    for ((i = 0; i < n; i++)); do
        printf 'url = "%s%s"\noutput = "/dev/null"\n' "$AUTHFLOW_BASE_URL" "$path" >>"$cfg"
    done
    curl -s --no-progress-meter --parallel --parallel-max 16 -X "$method" "${data[@]}" \
        -w "%{http_code}\n" "$@" -K "$cfg" 2>/dev/null | sort | uniq -c | awk '{ print $1, $2 }'
}

# count CODE: from flood's output.
count() { awk -v c="$1" '$2 == c { n += $1 } END { print n + 0 }' <<<"$2"; }

@test "the 6th rapid failed login is 429 with Retry-After, the right password waits too, a reset still works" {
    new_account
    fail_logins "$EMAIL" 5
    login "$EMAIL" "wrong password number 6"
    assert_problem 429 too_many_attempts
    local retry
    retry=$(header Retry-After)
    [[ $retry =~ ^[0-9]+$ ]] && ((retry >= 1 && retry <= 4)) || fail "Retry-After: '$retry'"
    # The owner's own password waits as well: nothing is verified.
    login "$EMAIL" "$PASSWORD"
    assert_problem 429 too_many_attempts
    # The reset flow is not throttled, and a reset lifts the lockout.
    api_json POST "$API/auth/password/forgot" "$(jq -cn --arg e "$EMAIL" '{email: $e}')"
    assert_status 202
    mail_wait_kind "$EMAIL" password_reset
    mail_reset_link "$MAIL_FILE"
    local pw2
    pw2=$(unique_password)
    remember_secret "$pw2"
    api_json POST "$API/auth/password/reset" "$(jq -cn --arg t "$RESET_TOKEN" --arg p "$pw2" '{token: $t, new_password: $p}')"
    assert_status 204
    login "$EMAIL" "$pw2"
    assert_status 200
}

@test "login throttling: the lockout doubles with each failure past the threshold" {
    new_account
    fail_logins "$EMAIL" 5
    login "$EMAIL" "$PASSWORD"
    assert_problem 429 too_many_attempts
    local first
    first=$(header Retry-After)
    sleep "$((first + 1))"
    # The lockout is over; one more failure starts a lockout twice as long.
    fail_logins "$EMAIL" 1
    login "$EMAIL" "$PASSWORD"
    assert_problem 429 too_many_attempts
    local second
    second=$(header Retry-After)
    ((second > first && second <= 8)) || fail "Retry-After went from $first to $second"
}

@test "login throttling: an unknown email is throttled exactly like a known one" {
    new_account
    local unknown
    unknown=$(unique_email)
    fail_logins "$EMAIL" 5
    fail_logins "$unknown" 5
    login "$EMAIL" "wrong again"
    local known_status=$status_code known_body known_retry
    known_body=$(jq -c . <<<"$body")
    known_retry=$(header Retry-After)
    login "$unknown" "wrong again"
    assert_equal "$status_code" "$known_status"
    assert_equal "$(jq -c . <<<"$body")" "$known_body"
    [[ -n $(header Retry-After) && -n $known_retry ]]
}

@test "a successful login clears the account's failures" {
    new_account
    fail_logins "$EMAIL" 4
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    fail_logins "$EMAIL" 4
    login "$EMAIL" "$PASSWORD"
    assert_status 200
}

@test "one signed-in account: more than 300 requests a minute are 429, its address's other users are not" {
    new_account
    local mine=$ACCESS out
    out=$(flood 330 GET "$API/users/me" -H "Authorization: Bearer $mine")
    echo "# one account: $out" >&3
    (($(count 429 "$out") > 0)) || fail "no 429 for one account's 330 requests: $out"
    (($(count 200 "$out") <= 300 + 20)) || fail "too many got through: $out"
    new_account
    me "$ACCESS"
    assert_status 200
}

@test "300+ requests a minute from one address are 429 rate_limited, across all three processes" {
    # An account for the next tests, made while the auth group still answers.
    new_account
    printf '%s\n' "$ACCESS" >"$BATS_FILE_TMPDIR/pre-flood-access"
    local out
    out=$(flood 400 "$API/auth/login")
    local ok limited
    ok=$(count 400 "$out")
    limited=$(count 429 "$out")
    echo "# $ok x 400, $limited x 429" >&3
    ((limited > 0)) || fail "no 429 in 400 requests: $out"
    # The earlier tests spent some of the minute's 300; the budget refills at
    # 5 a second. Three processes with limits of their own would let 400 by.
    ((ok <= 300 + 60)) || fail "$ok requests got through"
    # The budget refills at one request every 200 ms: the next answers are
    # mostly 429, with Retry-After.
    local i
    for ((i = 0; i < 10; i++)); do
        api_json POST "$API/auth/login" '{}'
        [[ $status_code == 429 ]] && break
    done
    assert_problem 429 rate_limited
    local retry
    retry=$(header Retry-After)
    [[ $retry =~ ^[0-9]+$ ]] && ((retry >= 1 && retry <= 60)) || fail "Retry-After: '$retry'"
}

@test "a forged X-Forwarded-For from an untrusted peer is ignored; a trusted proxy's is honoured" {
    local i out
    for i in 1 2 3; do
        out=$(flood 30 "$API/auth/login" -H "X-Forwarded-For: 203.0.113.$i" -H "X-Real-IP: 203.0.113.$i")
        (($(count 429 "$out") >= 25)) || fail "X-Forwarded-For 203.0.113.$i opened the door: $out"
    done
    # Another address has its own budget.
    api_json POST "$API/auth/login" '{}' --interface 127.0.0.3
    assert_status 400
    # From the trusted proxy, X-Forwarded-For names the client: the proxy's
    # own address is not what is counted.
    out=$(flood 40 "$API/auth/login" --interface 127.0.0.2 -H "X-Forwarded-For: 203.0.113.9, 127.0.0.2")
    assert_equal "$(count 400 "$out")" 40
    out=$(flood 20 "$API/auth/login" --interface 127.0.0.2 -H "X-Forwarded-For: 127.0.0.1")
    (($(count 429 "$out") >= 15)) || fail "the proxy's client 127.0.0.1 was not limited: $out"
}

@test "each endpoint group has its own budget: the users group still answers" {
    # The auth group is exhausted by now; the account was made before.
    me "$(<"$BATS_FILE_TMPDIR/pre-flood-access")"
    assert_status 200
}

_shared_again() {
    flood 6 "$API/auth/verify-email" >/dev/null
    grep -q '"ratelimit_shared"' "$AUTHFLOW_RUN_DIR/log/auth.log"
}

@test "Redis stopped: limits and login throttling still apply in each process" {
    redis_kill
    # Each process starts counting on its own: with three processes an
    # account is refused after at most 3 x 5 failures.
    local email i got=0
    email=$(unique_email)
    for ((i = 1; i <= 16; i++)); do
        login "$email" "wrong password $i"
        if [[ $status_code == 429 ]]; then
            got=$i
            break
        fi
        assert_status 401
    done
    ((got > 0)) || fail "16 failed logins and no 429 while Redis is down"
    local out ok limited
    out=$(flood 1200 "$API/auth/verify-email")
    ok=$(count 400 "$out")
    limited=$(count 429 "$out")
    echo "# Redis down: $ok x 400, $limited x 429" >&3
    ((limited > 0)) || fail "no 429 in 1200 requests with Redis down: $out"
    ((ok <= 3 * 300 + 60)) || fail "$ok requests got through"
    grep -q '"ratelimit_local"' "$AUTHFLOW_RUN_DIR/log/auth.log" ||
        fail "no ratelimit_local log line"
    redis_start
    # Back to the shared limits without a restart: the next limited request
    # of each process goes to Redis again and says so.
    wait_until 20 "a ratelimit_shared log line" _shared_again
}

@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
