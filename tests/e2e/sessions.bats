#!/usr/bin/env bats
# A user's sessions: GET/DELETE /users/me/sessions[/{id}] and
# POST /auth/logout-all, through lighttpd. A revoked session's access token
# is refused on the very next request, with no wait.

load helpers
load mail-helpers

setup_file() { af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false; }
teardown_file() { af_stack_down; }

@test "GET /users/me/sessions lists the live sessions, the caller's marked current" {
    new_account
    local a1=$ACCESS s1=$SESSION_ID
    login "$EMAIL" "$PASSWORD" -A "second device"
    local s2=$SESSION_ID
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $a1"
    assert_status 200
    assert_no_store
    assert_json 'type == "array" and length == 2'
    assert_json ".[] | select(.id == \"$s1\") | .current == true"
    assert_json ".[] | select(.id == \"$s2\") | .current == false and .user_agent == \"second device\""
    assert_json 'all(.[]; (.created_at | type == "string") and (.last_seen_at | type == "string")
        and (.expires_at | type == "string") and (.amr == ["pwd"]) and (.ip | type == "string"))'
}

@test "DELETE /users/me/sessions/{id}: the other session ends at once, this one stays" {
    new_account
    local a1=$ACCESS
    login "$EMAIL" "$PASSWORD" -A "second device"
    local a2=$ACCESS s2=$SESSION_ID r2=$REFRESH
    api DELETE "$API/users/me/sessions/$s2" -H "Authorization: Bearer $a1"
    assert_status 204
    me "$a2" -A "second device"
    assert_problem 401 session_revoked
    refresh "$r2" -A "second device"
    assert_problem 401 session_revoked invalid_token
    me "$a1"
    assert_status 200
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $a1"
    assert_json 'length == 1'
}

@test "DELETE /users/me/sessions/{id}: another user's session, an unknown or ended one is 404" {
    new_account
    local victim_session=$SESSION_ID victim_access=$ACCESS
    new_account
    api DELETE "$API/users/me/sessions/$victim_session" -H "Authorization: Bearer $ACCESS"
    assert_problem 404 not_found
    me "$victim_access"
    assert_status 200
    api DELETE "$API/users/me/sessions/00000000-0000-4000-8000-000000000000" -H "Authorization: Bearer $ACCESS"
    assert_problem 404 not_found
    api DELETE "$API/users/me/sessions/not-a-uuid" -H "Authorization: Bearer $ACCESS"
    assert_problem 404 not_found
}

@test "POST /auth/logout-all ends every session of the user, and only that user's" {
    new_account
    local other=$ACCESS
    new_account
    local a1=$ACCESS
    login "$EMAIL" "$PASSWORD" -A "second device"
    local a2=$ACCESS
    api POST "$API/auth/logout-all" -H "Authorization: Bearer $a1" -H 'Content-Length: 0'
    assert_status 204
    me "$a1"
    assert_problem 401 session_revoked
    me "$a2" -A "second device"
    assert_problem 401 session_revoked
    me "$other"
    assert_status 200
}

# seen_age SID: seconds since the session's last_seen_at.
seen_age() { sql "SELECT extract(epoch FROM now() - last_seen_at)::int FROM sessions WHERE id = :'s'" s="$1"; }

@test "last_seen_at moves with use, at most once a minute" {
    new_account
    local sid=$SESSION_ID
    # As if the session had been idle for five minutes.
    sql "UPDATE sessions SET last_seen_at = now() - interval '5 minutes' WHERE id = :'s'" s="$sid"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" DEL "af:seen:$sid" >/dev/null
    me "$ACCESS"
    assert_status 200
    (($(seen_age "$sid") <= 5)) || fail "last_seen_at not moved by a request: $(seen_age "$sid") s old"
    # Within the minute, requests leave it alone (not written per request).
    local t1
    t1=$(sql "SELECT last_seen_at FROM sessions WHERE id = :'s'" s="$sid")
    sleep 1.1
    me "$ACCESS"
    me "$ACCESS"
    assert_status 200
    assert_equal "$(sql "SELECT last_seen_at FROM sessions WHERE id = :'s'" s="$sid")" "$t1"
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $ACCESS"
    assert_json ".[] | select(.id == \"$sid\") | .last_seen_at | type == \"string\""
}

@test "sessions endpoints need a token" {
    api GET "$API/users/me/sessions"
    assert_problem 401 unauthorized
    api POST "$API/auth/logout-all" -H 'Content-Length: 0'
    assert_problem 401 unauthorized
}

@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
