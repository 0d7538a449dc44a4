#!/usr/bin/env bats
# The users group through lighttpd: GET/PATCH/DELETE /users/me and how
# requests without a valid access token are refused.

load helpers

setup_file() { af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false; }
teardown_file() { af_stack_down; }

@test "GET /users/me: 200 with the caller's user object" {
    new_account "Katherine Johnson"
    me "$ACCESS"
    assert_status 200
    assert_user_object
    assert_equal "$(json .id)" "$USER_ID"
    assert_equal "$(json .email)" "$EMAIL"
    assert_equal "$(json .full_name)" "Katherine Johnson"
    # Personal data.
    assert_no_store
    # The login just happened.
    assert_json '.last_login_at | type == "string"' "last_login_at should be set after a login"
}

@test "GET /users/me: each token sees its own user" {
    new_account
    local a1=$ACCESS id1=$USER_ID
    new_account
    me "$a1"
    assert_status 200
    assert_equal "$(json .id)" "$id1"
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .id)" "$USER_ID"
}

@test "PATCH /users/me: full_name is updated and read back" {
    new_account "Old Name"
    api_json PATCH "$API/users/me" '{"full_name": "Zoë Ŝmith 山田"}' -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_user_object
    assert_equal "$(json .full_name)" "Zoë Ŝmith 山田"
    assert_equal "$(json .id)" "$USER_ID"
    assert_no_store
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .full_name)" "Zoë Ŝmith 山田"
}

@test "PATCH /users/me: fields a user may not change are ignored" {
    new_account
    me "$ACCESS"
    local before=$body
    api_json PATCH "$API/users/me" \
        '{"full_name": "Mallory", "roles": ["admin"], "email": "mallory@example.test", "email_verified": true, "disabled": true, "mfa_enabled": true, "id": "00000000-0000-4000-8000-000000000000"}' \
        -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_equal "$(json .full_name)" Mallory
    assert_equal "$(json -c .roles)" "$(jq -c .roles <<<"$before")"
    assert_equal "$(json .email)" "$EMAIL"
    assert_equal "$(json .email_verified)" false
    assert_equal "$(json .disabled)" false
    assert_equal "$(json .mfa_enabled)" false
    assert_equal "$(json .id)" "$USER_ID"
}

@test "PATCH /users/me: without a token is 401 unauthorized" {
    api_json PATCH "$API/users/me" '{"full_name": "Nobody"}'
    assert_problem 401 unauthorized
}

@test "DELETE /users/me: a wrong password is 401 invalid_credentials and nothing changes" {
    new_account
    api_json DELETE "$API/users/me" "$(jq -cn --arg p "$(unique_password)" '{password: $p}')" \
        -H "Authorization: Bearer $ACCESS"
    assert_problem 401 invalid_credentials
    me "$ACCESS"
    assert_status 200
    login "$EMAIL" "$PASSWORD"
    assert_status 200
}

@test "DELETE /users/me: a missing password is 400 validation_failed" {
    new_account
    api_json DELETE "$API/users/me" '{}' -H "Authorization: Bearer $ACCESS"
    assert_problem 400 validation_failed
    assert_field_error password
    me "$ACCESS"
    assert_status 200
}

@test "DELETE /users/me: 204 with the password; then login and the old tokens fail" {
    new_account
    local other_access=$ACCESS
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    api_json DELETE "$API/users/me" "$(jq -cn --arg p "$PASSWORD" '{password: $p}')" \
        -H "Authorization: Bearer $ACCESS"
    assert_status 204
    [[ -z $body ]] || _af_fail "a 204 has no body"
    login "$EMAIL" "$PASSWORD"
    assert_problem 401 invalid_credentials
    me "$ACCESS"
    assert_problem 401
    # Every session of the user is gone, not only the caller's.
    me "$other_access"
    assert_problem 401
    refresh "$REFRESH"
    assert_problem 401
}

@test "no token is 401 unauthorized" {
    api GET "$API/users/me"
    assert_problem 401 unauthorized
}

@test "a garbage token is 401 invalid_token" {
    local t
    for t in garbage abc.def.ghi 'eyJhbGciOiJFUzI1NiJ9.e30.' "$(printf 'x%.0s' {1..600})"; do
        me "$t"
        assert_problem 401 invalid_token
    done
}

@test "another authentication scheme is refused with 401" {
    api GET "$API/users/me" -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='
    # API.md does not name the code for a foreign scheme.
    assert_problem 401 unauthorized invalid_token
}

@test "a token with a changed payload is 401 invalid_token" {
    new_account
    local h p s claims forged
    IFS=. read -r h p s <<<"$ACCESS"
    claims=$(jwt_claims "$ACCESS")
    [[ $claims == \{* ]] || fail "cannot decode the token payload: $claims"
    forged=$(jq -c '.roles = ["admin"] | .exp = (.exp + 86400)' <<<"$claims" | b64url_encode)
    me "$h.$forged.$s"
    assert_problem 401 invalid_token
    # The signature of another token does not fit either.
    local access2=$ACCESS
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    me "$h.$p.${ACCESS##*.}"
    assert_problem 401 invalid_token
    me "$access2"
    assert_status 200
}

@test "an unsigned token (alg none) is 401 invalid_token" {
    new_account
    local h p s
    IFS=. read -r h p s <<<"$ACCESS"
    local none
    none=$(jq -c '.alg = "none"' <<<"$(jwt_header "$ACCESS")" | b64url_encode)
    me "$none.$p."
    assert_problem 401 invalid_token
    me "$none.$p.$s"
    assert_problem 401 invalid_token
}

@test "a token in the URL is not accepted" {
    new_account
    # A web server may log URLs: this token is the test's own leak.
    forget_secret "$ACCESS"
    api GET "$API/users/me?access_token=$ACCESS"
    assert_problem 401 unauthorized
    api GET "$API/users/me?token=$ACCESS"
    assert_problem 401 unauthorized
}

@test "unknown paths are 404 not_found, unknown methods 405 method_not_allowed" {
    new_account
    api GET "$API/users/no-such-thing" -H "Authorization: Bearer $ACCESS"
    assert_problem 404 not_found
    api PUT "$API/users/me" -H "Authorization: Bearer $ACCESS" -H 'Content-Type: application/json' --data-binary '{}'
    assert_problem 405 method_not_allowed
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
