#!/usr/bin/env bats
# The auth group through lighttpd: register, login, refresh, logout, JWKS,
# health, and the rules every answer follows (request ids, no-store, 404/405).

load helpers

setup_file() { af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false; }
teardown_file() { af_stack_down; }

# --- register ---------------------------------------------------------------

@test "register: 201 with the user object and nothing secret in it" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw" "Ada Lovelace"
    assert_status 201
    assert_user_object
    assert_equal "$(json .email)" "$email"
    assert_equal "$(json .full_name)" "Ada Lovelace"
    assert_equal "$(json .email_verified)" false
    assert_equal "$(json .mfa_enabled)" false
    assert_equal "$(json .disabled)" false
    # Personal data.
    assert_no_store
    [[ $body != *"$pw"* ]] || _af_fail "the answer contains the password"
}

@test "register: full_name is optional" {
    register "$(unique_email)" "$(unique_password)"
    assert_status 201
    assert_user_object
}

@test "register: the same email in another case or with spaces around is 409 email_taken" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    register "$email" "$(unique_password)"
    assert_problem 409 email_taken
    register "${email^^}" "$(unique_password)"
    assert_problem 409 email_taken
    register "  $email  " "$(unique_password)"
    assert_problem 409 email_taken
    register "$(tr '[:lower:]' '[:upper:]' <<<"${email:0:3}")${email:3}" "$(unique_password)"
    assert_problem 409 email_taken
}

@test "register: a trimmed email is stored without the spaces" {
    local email
    email=$(unique_email)
    register "  $email " "$(unique_password)"
    assert_status 201
    assert_equal "$(json .email)" "$email"
}

@test "register: malformed emails are 400 validation_failed naming email" {
    local e
    for e in 'not-an-email' 'a@' '@example.test' 'a b@example.test' 'a@b@example.test' ''; do
        register "$e" "$(unique_password)"
        assert_problem 400 validation_failed
        assert_field_error email
    done
}

@test "register: a password shorter than 12 characters is 400 validation_failed naming password" {
    register "$(unique_email)" 'short pw 1'
    assert_problem 400 validation_failed
    assert_field_error password
    # 11 characters.
    register "$(unique_email)" 'zq8 vw4 kx2'
    assert_problem 400 validation_failed
    assert_field_error password
}

@test "register: password length counts code points, not bytes" {
    # 11 code points, 22 bytes: too short.
    register "$(unique_email)" 'äöüøþæßðđħł'
    assert_problem 400 validation_failed
    assert_field_error password
    # 12 code points: long enough (spaces and any Unicode are allowed).
    register "$(unique_email)" 'äöüø þæßð đħ'
    assert_status 201
}

@test "register: a password longer than 128 characters is refused, not truncated" {
    register "$(unique_email)" "$(printf 'x%.0s' {1..120}) $(unique_password)"
    assert_problem 400 validation_failed
    assert_field_error password
}

@test "register: a common password is 400 validation_failed" {
    register "$(unique_email)" 'password1234'
    assert_problem 400 validation_failed
    assert_field_error password
}

@test "register: missing fields are 400 validation_failed naming each" {
    api_json POST "$API/auth/register" '{}'
    assert_problem 400 validation_failed
    assert_field_error email
    assert_field_error password
    api_json POST "$API/auth/register" "$(jq -cn --arg e "$(unique_email)" '{email: $e}')"
    assert_problem 400 validation_failed
    assert_field_error password
    api_json POST "$API/auth/register" "$(jq -cn --arg p "$(unique_password)" '{password: $p}')"
    assert_problem 400 validation_failed
    assert_field_error email
}

@test "register: a form-urlencoded body works" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    remember_secret "$pw"
    api POST "$API/auth/register" --data-urlencode "email=$email" --data-urlencode "password=$pw" \
        --data-urlencode "full_name=Grace Hopper"
    assert_status 201
    assert_user_object
    assert_equal "$(json .email)" "$email"
    assert_equal "$(json .full_name)" "Grace Hopper"
}

# --- login -------------------------------------------------------------------

@test "login: 200 with a token pair" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    login "$email" "$pw"
    assert_status 200
    assert_token_pair
    # The access token works.
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .email)" "$email"
}

@test "login: wrong password and unknown email get the identical 401 invalid_credentials" {
    local email wrong unknown_body
    email=$(unique_email)
    register "$email" "$(unique_password)"
    assert_status 201
    wrong=$(unique_password)
    # Same request id for both, so an echoed id cannot differ.
    login "$(unique_email)" "$wrong" -H 'X-Request-Id: 0f6c9ad2-3b1e-4d7a-9c1e-2f4b6d8a0c11'
    assert_problem 401 invalid_credentials
    unknown_body=$body
    login "$email" "$wrong" -H 'X-Request-Id: 0f6c9ad2-3b1e-4d7a-9c1e-2f4b6d8a0c11'
    assert_problem 401 invalid_credentials
    assert_equal "$body" "$unknown_body"
    [[ -z $ACCESS ]]
}

@test "login: an unknown email takes as long as a wrong password (medians of 30 within 20%)" {
    local email i t known=() unknown=() j
    email=$(unique_email)
    register "$email" "$(unique_password)"
    assert_status 201
    # Alternate the two, so that load on the machine hits both alike. The
    # file's stack does not throttle logins.
    for ((i = 0; i < 30; i++)); do
        for who in known unknown; do
            if [[ $who == known ]]; then
                j=$(jq -cn --arg e "$email" '{email: $e, password: "not the password at all"}')
            else
                j=$(jq -cn --arg e "$(unique_email)" '{email: $e, password: "not the password at all"}')
            fi
            t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H 'Content-Type: application/json' \
                --data-binary "$j" "$AUTHFLOW_BASE_URL$API/auth/login")
            [[ ${t%% *} == 401 ]] || fail "login answered ${t%% *}"
            if [[ $who == known ]]; then known+=("${t#* }"); else unknown+=("${t#* }"); fi
        done
    done
    local mk mu
    mk=$(printf '%s\n' "${known[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (v[15] + v[16]) / 2 }')
    mu=$(printf '%s\n' "${unknown[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (v[15] + v[16]) / 2 }')
    echo "# median login time: known email $mk s, unknown email $mu s" >&3
    awk -v a="$mk" -v b="$mu" 'BEGIN { d = a - b; if (d < 0) d = -d; m = a > b ? a : b; exit !(d < 0.2 * m) }' ||
        fail "medians differ by 20% or more: known $mk s, unknown $mu s"
}

@test "login: a form-urlencoded body works" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    api POST "$API/auth/login" --data-urlencode "email=$email" --data-urlencode "password=$pw"
    assert_status 200
    assert_token_pair
    remember_pair
}

@test "login: the email is matched trimmed and case-insensitively" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    login " ${email^^} " "$pw"
    assert_status 200
    assert_token_pair
}

@test "login: application/json with a charset parameter is accepted" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    remember_secret "$pw"
    api POST "$API/auth/login" -H 'Content-Type: application/json; charset=utf-8' \
        --data-binary "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p}')"
    assert_status 200
    remember_pair
}

@test "login: a password is compared exactly (no trimming, no case folding)" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    login "$email" "$pw "
    assert_problem 401 invalid_credentials
    login "$email" "${pw^^}"
    assert_problem 401 invalid_credentials
    login "$email" "$pw"
    assert_status 200
}

@test "login: missing fields are 400 validation_failed" {
    api_json POST "$API/auth/login" '{}'
    assert_problem 400 validation_failed
    assert_field_error email
    assert_field_error password
}

# --- refresh -----------------------------------------------------------------

@test "refresh: answers a new pair for the same session; both new tokens work" {
    new_account
    local a0=$ACCESS r0=$REFRESH sid=$SESSION_ID
    refresh "$r0"
    assert_status 200
    assert_token_pair
    take_pair
    assert_equal "$SESSION_ID" "$sid"
    [[ $REFRESH != "$r0" ]] || _af_fail "the refresh token was not rotated"
    [[ $ACCESS != "$a0" ]] || _af_fail "the access token was not renewed"
    me "$ACCESS"
    assert_status 200
    refresh "$REFRESH"
    assert_status 200
    assert_token_pair
}

@test "refresh: a rotated token presented from another device is 401 token_reused and revokes the session" {
    new_account
    local a0=$ACCESS r0=$REFRESH
    refresh "$r0"
    assert_status 200
    take_pair
    local a1=$ACCESS r1=$REFRESH
    # Within the grace window, but not the same device fingerprint.
    refresh "$r0" -A 'e2e-other-device/1.0'
    assert_problem 401 token_reused
    refresh "$r1"
    assert_problem 401
    me "$a1"
    assert_problem 401
    me "$a0"
    assert_problem 401
}

@test "refresh: an unknown refresh token is 401 invalid_token" {
    refresh "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    assert_problem 401 invalid_token
    refresh 'not a token'
    assert_problem 401 invalid_token
}

@test "refresh: a missing refresh token is refused" {
    # API.md: 400 for a missing required field or 401 invalid_token; either is clean.
    api_json POST "$API/auth/refresh" '{}'
    assert_clean_4xx
    assert_status 400 401
}

# --- logout ------------------------------------------------------------------

@test "logout: 204, then its access token and refresh token are refused" {
    new_account
    api POST "$API/auth/logout" -H "Authorization: Bearer $ACCESS" -H 'Content-Length: 0'
    assert_status 204
    [[ -z $body ]] || _af_fail "a 204 has no body"
    me "$ACCESS"
    # API.md: "its access tokens rejected from then on" — 401; the code is not fixed.
    assert_problem 401
    refresh "$REFRESH"
    assert_problem 401
}

@test "logout: without a token is 401 unauthorized" {
    api POST "$API/auth/logout" -H 'Content-Length: 0'
    assert_problem 401 unauthorized
}

@test "logout: other sessions of the same user stay alive" {
    new_account
    local other=$ACCESS
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    api POST "$API/auth/logout" -H "Authorization: Bearer $ACCESS" -H 'Content-Length: 0'
    assert_status 204
    me "$other"
    assert_status 200
}

# --- JWKS, health ------------------------------------------------------------

@test "jwks: /.well-known/jwks.json lists public keys with kid, kty and alg" {
    api GET /.well-known/jwks.json
    assert_status 200
    assert_json_response
    assert_json '.keys | type == "array" and length > 0' "jwks.keys should be a non-empty array"
    assert_json 'all(.keys[]; (.kid | type == "string" and length > 0) and (.kty == "EC" or .kty == "RSA") and (.alg == "ES256" or .alg == "RS256"))' \
        "every key needs kid, kty and alg"
    # Public halves only.
    assert_json 'all(.keys[]; has("d") or has("p") or has("q") or has("dp") or has("dq") or has("qi") | not)' \
        "the JWKS publishes private key material"
    assert_json '[.keys[].kid] | length == (unique | length)' "kids are not unique"
}

@test "health: 200 with postgres and redis checks" {
    api GET /health
    assert_status 200
    assert_json_response
    assert_json '.status | type == "string"' "health.status missing"
    assert_json '.checks | has("postgres") and has("redis")' "health.checks should name postgres and redis"
}

# --- protocol ----------------------------------------------------------------

@test "X-Request-Id: present on every answer, echoed when sane, replaced when not" {
    api GET /health
    assert_header_present X-Request-Id

    api GET /health -H 'X-Request-Id: 6b1f1c2e-8a43-4b8e-9b0a-5d3f2e1c7a90'
    assert_equal "$(header x-request-id)" 6b1f1c2e-8a43-4b8e-9b0a-5d3f2e1c7a90

    api GET /health -H 'X-Request-Id: <script>alert(1)</script> "quoted"'
    assert_header_present X-Request-Id
    [[ $(header x-request-id) != *'<'* && $(header x-request-id) != *'"'* ]] ||
        _af_fail "an unsafe request id was echoed"

    api GET /health -H "X-Request-Id: $(printf 'a%.0s' {1..2000})"
    assert_header_present X-Request-Id
    (($(header x-request-id | wc -c) <= 256)) || _af_fail "an oversized request id was echoed"

    # Error answers carry one too.
    api GET "$API/auth/no-such-endpoint"
    assert_header_present X-Request-Id
    api_json POST "$API/auth/login" '{'
    assert_header_present X-Request-Id
}

@test "a method the path does not have is 405 method_not_allowed" {
    api GET "$API/auth/login"
    assert_problem 405 method_not_allowed
    # RFC 9110 §15.5.6: a 405 lists the allowed methods.
    [[ $(header allow) == *POST* ]] || _af_fail "405 without Allow: POST"
    api DELETE "$API/auth/register"
    assert_problem 405 method_not_allowed
}

@test "an unknown path under /api/v1/auth/ is 404 not_found" {
    api GET "$API/auth/no-such-endpoint"
    assert_problem 404 not_found
    api POST "$API/auth/login/extra" -H 'Content-Type: application/json' --data-binary '{}'
    assert_problem 404 not_found
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
