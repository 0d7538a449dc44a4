#!/usr/bin/env bats
# Refresh-token rotation: reuse detection revokes the whole session, and the
# grace rule for two tabs refreshing at once from the same device.
#
# The stack runs with a 5 s grace window (instead of 10 s) so the tests need
# not sleep long; GRACE_WAIT is safely past it. The window is not shorter
# because a loaded machine (parallel test files hashing passwords) was seen
# taking 3 s between two requests meant to fall inside it.

load helpers

GRACE=5
GRACE_WAIT=6

setup_file() { af_stack_up AUTHFLOW_TOKENS_REFRESH_REUSE_GRACE=$GRACE AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false; }

# within_grace START: fails when more than the grace window has passed since
# START ($EPOCHREALTIME), which would make a "within the window" check moot.
within_grace() {
    local elapsed
    elapsed=$(awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    awk -v e="$elapsed" -v g="$GRACE" 'BEGIN { exit !(e < g) }' ||
        fail "the machine is too slow: ${elapsed}s passed, the grace window is ${GRACE}s"
}
teardown_file() { af_stack_down; }

# refresh_bg PREFIX TOKEN: a refresh in the background, with curl's own
# User-Agent like the login (one device).
refresh_bg() {
    api_raw "$1" POST "$API/auth/refresh" -H 'Content-Type: application/json' \
        --data-binary "$(jq -cn --arg r "$2" '{refresh_token: $r}')" &
}

# session_is_revoked ACCESS REFRESH...: the access token and every refresh
# token given are refused.
session_is_revoked() {
    local access=$1 r
    shift
    me "$access"
    assert_problem 401
    for r in "$@"; do
        refresh "$r"
        assert_problem 401
    done
}

@test "reuse after the grace window: 401 token_reused, and the session is revoked" {
    new_account
    local a0=$ACCESS r0=$REFRESH
    refresh "$r0"
    assert_status 200
    take_pair
    local a1=$ACCESS r1=$REFRESH
    me "$a1"
    assert_status 200

    sleep "$GRACE_WAIT"
    refresh "$r0"
    if [[ $status_code == 200 ]]; then
        _af_fail "reuse after the grace window was accepted (did AUTHFLOW_TOKENS_REFRESH_REUSE_GRACE reach the responder?)"
    fi
    assert_problem 401 token_reused

    # The token the rotation handed out and the session's access tokens die too.
    refresh "$r1"
    assert_problem 401
    me "$a1"
    assert_problem 401
    me "$a0"
    assert_problem 401
}

@test "the revoked session stays revoked: a fresh login is unaffected" {
    new_account
    local r0=$REFRESH
    refresh "$r0"
    assert_status 200
    sleep "$GRACE_WAIT"
    refresh "$r0"
    assert_problem 401 token_reused
    # Another session of the same user still works.
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    me "$ACCESS"
    assert_status 200
    refresh "$REFRESH"
    assert_status 200
}

@test "multi-tab race: two refreshes with one token at once both succeed; reuse after the grace window revokes" {
    new_account
    local r0=$REFRESH sid=$SESSION_ID t0=$EPOCHREALTIME
    refresh_bg "$BATS_TEST_TMPDIR/tab1" "$r0"
    refresh_bg "$BATS_TEST_TMPDIR/tab2" "$r0"
    wait
    within_grace "$t0"

    local i a r access=() refreshes=()
    for i in 1 2; do
        local f="$BATS_TEST_TMPDIR/tab$i"
        status_code=$(<"$f.code") body=$(<"$f.body") headers=$(tr -d '\r' <"$f.headers")
        last_request="POST $API/auth/refresh (tab $i)"
        assert_status 200
        assert_token_pair
        remember_pair
        assert_equal "$(json .session_id)" "$sid"
        access+=("$(json .access_token)")
        refreshes+=("$(json .refresh_token)")
    done
    [[ ${refreshes[0]} != "${refreshes[1]}" ]] || fail "both tabs got the same refresh token"
    [[ ${refreshes[0]} != "$r0" && ${refreshes[1]} != "$r0" ]] || fail "a tab got the old refresh token back"

    # The session survived: both access tokens and both refresh tokens work.
    for a in "${access[@]}"; do
        me "$a"
        assert_status 200
    done
    local next=()
    for r in "${refreshes[@]}"; do
        refresh "$r"
        assert_status 200
        next+=("$(json .refresh_token)")
        access+=("$(json .access_token)")
    done

    # The same reuse after the grace window is theft.
    sleep "$GRACE_WAIT"
    refresh "$r0"
    assert_problem 401 token_reused
    for a in "${access[@]}"; do
        me "$a"
        assert_problem 401
    done
    for r in "${next[@]}"; do
        refresh "$r"
        assert_problem 401
    done
}

@test "reuse within the grace window from another device: 401 token_reused, session revoked" {
    new_account
    local r0=$REFRESH
    # Rotated from the login's device (curl's own User-Agent)...
    refresh "$r0"
    assert_status 200
    take_pair
    local a1=$ACCESS r1=$REFRESH
    # ...and presented again at once from another one. (Should a slow machine
    # push this past the window, the answer must be the same.)
    refresh "$r0" -A 'e2e-attacker/6.6 (another device)'
    assert_problem 401 token_reused
    session_is_revoked "$a1" "$r1"
}

@test "reuse within the grace window from the same device gets a fresh pair for the same session" {
    new_account
    local r0=$REFRESH sid=$SESSION_ID t0=$EPOCHREALTIME
    refresh "$r0"
    assert_status 200
    local r1
    r1=$(json .refresh_token)
    refresh "$r0"
    within_grace "$t0"
    assert_status 200
    assert_token_pair
    assert_equal "$(json .session_id)" "$sid"
    [[ $(json .refresh_token) != "$r1" ]] || fail "the grace answer repeated the first rotation's token"
    me "$(json .access_token)"
    assert_status 200
}

@test "a refresh token is refused once its session is logged out" {
    new_account
    api POST "$API/auth/logout" -H "Authorization: Bearer $ACCESS" -H 'Content-Length: 0'
    assert_status 204
    refresh "$REFRESH"
    assert_problem 401 session_revoked invalid_token
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
