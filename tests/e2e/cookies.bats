#!/usr/bin/env bats
# Cookie (browser) mode: the cookies login sets, and the CSRF double submit
# on every unsafe cookie-authenticated request.
#
# The stack serves plain http on loopback with cookies.secure=false, so the
# cookies carry no Secure flag and no __Host-/__Secure- prefixes.

load helpers

setup_file() {
    af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false \
        AUTHFLOW_SERVER_ALLOWED_ORIGINS='https://app.example.test, https://admin.example.test'
    if [[ $(conf_get cookies secure) == true ]]; then
        export ACCESS_COOKIE=__Host-af_access REFRESH_COOKIE=__Secure-af_refresh COOKIES_SECURE=1
    else
        export ACCESS_COOKIE=af_access REFRESH_COOKIE=af_refresh COOKIES_SECURE=0
    fi
}
teardown_file() { af_stack_down; }

# cookie_login: new_account, then C_ACCESS, C_REFRESH, C_CSRF from its cookies.
cookie_login() {
    new_account
    C_ACCESS=$(cookie_value "$ACCESS_COOKIE")
    C_REFRESH=$(cookie_value "$REFRESH_COOKIE")
    C_CSRF=$(cookie_value csrf)
    [[ -n $C_ACCESS && -n $C_REFRESH && -n $C_CSRF ]] ||
        _af_fail "login did not set the $ACCESS_COOKIE, $REFRESH_COOKIE and csrf cookies"
    remember_secret "$C_ACCESS" "$C_REFRESH" "$C_CSRF"
}

@test "login sets the access, refresh and csrf cookies with the documented attributes" {
    cookie_login
    local sc
    sc=$(set_cookie "$ACCESS_COOKIE")
    cookie_attr "$sc" httponly >/dev/null || fail "$ACCESS_COOKIE is not HttpOnly: $sc"
    [[ $(cookie_attr "$sc" samesite) == [Ll]ax ]] || fail "$ACCESS_COOKIE is not SameSite=Lax: $sc"
    [[ $(cookie_attr "$sc" path) == / ]] || fail "$ACCESS_COOKIE has not Path=/: $sc"

    sc=$(set_cookie "$REFRESH_COOKIE")
    cookie_attr "$sc" httponly >/dev/null || fail "$REFRESH_COOKIE is not HttpOnly: $sc"
    [[ $(cookie_attr "$sc" samesite) == [Ss]trict ]] || fail "$REFRESH_COOKIE is not SameSite=Strict: $sc"
    [[ $(cookie_attr "$sc" path) == "$API/auth" ]] || fail "$REFRESH_COOKIE has not Path=$API/auth: $sc"

    sc=$(set_cookie csrf)
    # Scripts read it to send it back.
    ! cookie_attr "$sc" httponly >/dev/null || fail "csrf must not be HttpOnly: $sc"
    [[ $(cookie_attr "$sc" samesite) == [Ss]trict ]] || fail "csrf is not SameSite=Strict: $sc"
    [[ $(cookie_attr "$sc" path) == / ]] || fail "csrf has not Path=/: $sc"
    ((${#C_CSRF} >= 16)) || fail "the csrf value is too short to be unguessable: $C_CSRF"

    local name
    for name in "$ACCESS_COOKIE" "$REFRESH_COOKIE" csrf; do
        sc=$(set_cookie "$name")
        if ((COOKIES_SECURE)); then
            cookie_attr "$sc" secure >/dev/null || fail "$name lacks Secure: $sc"
        else
            ! cookie_attr "$sc" secure >/dev/null || fail "$name has Secure although cookies.secure=false: $sc"
        fi
    done
    # No prefixed names without Secure (browsers would drop them).
    ((COOKIES_SECURE)) || [[ $headers != *__Host-* && $headers != *__Secure-* ]] ||
        fail "prefixed cookie names without Secure"
}

@test "GET /users/me with only the access cookie works" {
    cookie_login
    api GET "$API/users/me" -b "$ACCESS_COOKIE=$C_ACCESS"
    assert_status 200
    assert_user_object
    assert_equal "$(json .email)" "$EMAIL"
}

@test "PATCH /users/me by cookie without X-CSRF-Token is 403 csrf_failed" {
    cookie_login
    api_json PATCH "$API/users/me" '{"full_name": "Forged"}' -b "$ACCESS_COOKIE=$C_ACCESS; csrf=$C_CSRF"
    assert_problem 403 csrf_failed
    me "$ACCESS"
    [[ $(json .full_name) != Forged ]] || fail "the refused PATCH was applied"
}

@test "PATCH /users/me by cookie with a wrong X-CSRF-Token is 403 csrf_failed" {
    cookie_login
    api_json PATCH "$API/users/me" '{"full_name": "Forged"}' -b "$ACCESS_COOKIE=$C_ACCESS; csrf=$C_CSRF" \
        -H "X-CSRF-Token: ${C_CSRF}x"
    assert_problem 403 csrf_failed
    # A header matching a cookie the attacker chose is no proof either: the
    # csrf cookie must be sent and equal.
    api_json PATCH "$API/users/me" '{"full_name": "Forged"}' -b "$ACCESS_COOKIE=$C_ACCESS" \
        -H "X-CSRF-Token: $C_CSRF"
    assert_problem 403 csrf_failed
    api_json PATCH "$API/users/me" '{"full_name": "Forged"}' -b "$ACCESS_COOKIE=$C_ACCESS; csrf=" \
        -H 'X-CSRF-Token;'
    assert_problem 403 csrf_failed
}

@test "PATCH /users/me by cookie with the right X-CSRF-Token is 200" {
    cookie_login
    api_json PATCH "$API/users/me" '{"full_name": "Cookie Monster"}' -b "$ACCESS_COOKIE=$C_ACCESS; csrf=$C_CSRF" \
        -H "X-CSRF-Token: $C_CSRF"
    assert_status 200
    assert_equal "$(json .full_name)" "Cookie Monster"
}

@test "a cookie request from an Origin outside the allow-list is 403 csrf_failed" {
    cookie_login
    api_json PATCH "$API/users/me" '{"full_name": "Cross Site"}' -b "$ACCESS_COOKIE=$C_ACCESS; csrf=$C_CSRF" \
        -H "X-CSRF-Token: $C_CSRF" -H 'Origin: https://evil.example'
    assert_problem 403 csrf_failed
}

@test "a cookie request from an allowed Origin with the CSRF header is 200" {
    cookie_login
    api_json PATCH "$API/users/me" '{"full_name": "Allowed App"}' -b "$ACCESS_COOKIE=$C_ACCESS; csrf=$C_CSRF" \
        -H "X-CSRF-Token: $C_CSRF" -H 'Origin: https://app.example.test'
    assert_status 200
    assert_equal "$(header Access-Control-Allow-Origin)" "https://app.example.test"
    assert_equal "$(header Access-Control-Allow-Credentials)" "true"
    assert_equal "$(header Vary)" "Origin"
}

@test "CORS preflight from an allowed origin: 204 with the path's methods, the headers and credentials" {
    api OPTIONS "$API/users/me" -H 'Origin: https://admin.example.test' \
        -H 'Access-Control-Request-Method: PATCH' -H 'Access-Control-Request-Headers: content-type, x-csrf-token'
    assert_status 204
    assert_equal "$(header Access-Control-Allow-Origin)" "https://admin.example.test"
    assert_equal "$(header Access-Control-Allow-Credentials)" "true"
    local methods allowed
    methods=$(header Access-Control-Allow-Methods)
    for m in GET PATCH DELETE; do
        [[ $methods == *"$m"* ]] || fail "Access-Control-Allow-Methods '$methods' lacks $m"
    done
    allowed=$(header Access-Control-Allow-Headers)
    for h in Content-Type X-CSRF-Token Authorization; do
        [[ ${allowed,,} == *"${h,,}"* ]] || fail "Access-Control-Allow-Headers '$allowed' lacks $h"
    done
    [[ $(header Access-Control-Max-Age) =~ ^[0-9]+$ ]]
    [[ -z $body ]]
}

@test "CORS preflight from a foreign origin: 403 and no CORS header at all" {
    api OPTIONS "$API/auth/login" -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST'
    assert_problem 403 forbidden
    if grep -qi '^access-control-' <<<"$headers"; then
        fail "CORS headers for a foreign origin: $(grep -i '^access-control-' <<<"$headers")"
    fi
    # Origin "null" (sandboxed frames, file: pages) is no allowed origin either.
    api OPTIONS "$API/auth/login" -H 'Origin: null' -H 'Access-Control-Request-Method: POST'
    assert_status 403
    ! grep -qi '^access-control-allow-origin' <<<"$headers"
}

@test "CORS: a foreign origin's simple request gets no CORS header; an unknown path's preflight is 404" {
    new_account
    me "$ACCESS" -H 'Origin: https://evil.example'
    assert_status 200
    ! grep -qi '^access-control-' <<<"$headers"
    api OPTIONS "$API/users/nothing-here" -H 'Origin: https://app.example.test' -H 'Access-Control-Request-Method: GET'
    assert_status 404
}

@test "security headers on every answer: nosniff, no referrer, no-store where tokens or personal data travel" {
    new_account
    local what
    for what in login me problem; do
        case $what in
        login) login "$EMAIL" "$PASSWORD" ;;
        me) me "$ACCESS" ;;
        problem) api_json POST "$API/auth/login" '{"email": 1}' ;;
        esac
        assert_equal "$(header X-Content-Type-Options)" "nosniff"
        assert_equal "$(header Referrer-Policy)" "no-referrer"
        assert_no_store
    done
}

@test "a Bearer request is unaffected by the CSRF rule" {
    cookie_login
    api_json PATCH "$API/users/me" '{"full_name": "Bearer Person"}' -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_equal "$(json .full_name)" "Bearer Person"
    api_json PATCH "$API/users/me" '{"full_name": "Bearer Person 2"}' -H "Authorization: Bearer $ACCESS" \
        -H 'Origin: https://elsewhere.example'
    assert_status 200
}

@test "refresh via the refresh cookie (no body) with the CSRF header rotates the cookies" {
    cookie_login
    api POST "$API/auth/refresh" -b "$REFRESH_COOKIE=$C_REFRESH; csrf=$C_CSRF" \
        -H "X-CSRF-Token: $C_CSRF" -H 'Content-Length: 0'
    assert_status 200
    assert_no_store
    remember_pair
    local a r c
    a=$(cookie_value "$ACCESS_COOKIE")
    r=$(cookie_value "$REFRESH_COOKIE")
    c=$(cookie_value csrf)
    remember_secret "$a" "$r" "$c"
    [[ -n $a && $a != "$C_ACCESS" ]] || _af_fail "refresh set no new $ACCESS_COOKIE"
    [[ -n $r && $r != "$C_REFRESH" ]] || _af_fail "refresh set no new $REFRESH_COOKIE"
    # The csrf cookie may or may not be renewed; whichever is current works.
    [[ -n $c ]] || c=$C_CSRF
    api GET "$API/users/me" -b "$ACCESS_COOKIE=$a"
    assert_status 200
    api POST "$API/auth/refresh" -b "$REFRESH_COOKIE=$r; csrf=$c" -H "X-CSRF-Token: $c" -H 'Content-Length: 0'
    assert_status 200
    remember_pair
    remember_secret "$(cookie_value "$ACCESS_COOKIE")" "$(cookie_value "$REFRESH_COOKIE")" "$(cookie_value csrf)"
}

@test "refresh via the refresh cookie without the CSRF header is 403 csrf_failed" {
    # API.md: every unsafe cookie-mode request carries X-CSRF-Token.
    cookie_login
    api POST "$API/auth/refresh" -b "$REFRESH_COOKIE=$C_REFRESH; csrf=$C_CSRF" -H 'Content-Length: 0'
    assert_problem 403 csrf_failed
}

@test "logout by cookie without the CSRF header is 403 csrf_failed and the session lives" {
    cookie_login
    api POST "$API/auth/logout" -b "$ACCESS_COOKIE=$C_ACCESS; csrf=$C_CSRF" -H 'Content-Length: 0'
    assert_problem 403 csrf_failed
    api GET "$API/users/me" -b "$ACCESS_COOKIE=$C_ACCESS"
    assert_status 200
}

@test "logout by cookie with the CSRF header is 204 and clears the cookies" {
    cookie_login
    api POST "$API/auth/logout" -b "$ACCESS_COOKIE=$C_ACCESS; $REFRESH_COOKIE=$C_REFRESH; csrf=$C_CSRF" \
        -H "X-CSRF-Token: $C_CSRF" -H 'Content-Length: 0'
    assert_status 204
    local name sc
    for name in "$ACCESS_COOKIE" "$REFRESH_COOKIE" csrf; do
        sc=$(set_cookie "$name")
        [[ -n $sc ]] || _af_fail "logout does not clear $name"
        [[ $(cookie_attr "$sc" max-age) == 0 ]] || _af_fail "$name is not cleared with Max-Age=0: $sc"
    done
    # A cleared cookie only stays away if its Path matches the one it was set with.
    [[ $(cookie_attr "$(set_cookie "$REFRESH_COOKIE")" path) == "$API/auth" ]] ||
        _af_fail "$REFRESH_COOKIE is cleared on another Path than it was set"
    api GET "$API/users/me" -b "$ACCESS_COOKIE=$C_ACCESS"
    assert_problem 401
    api POST "$API/auth/refresh" -b "$REFRESH_COOKIE=$C_REFRESH; csrf=$C_CSRF" -H "X-CSRF-Token: $C_CSRF" \
        -H 'Content-Length: 0'
    assert_problem 401
}

@test "a browser-like session with a cookie jar: login, me, refresh, logout" {
    local jar="$BATS_TEST_TMPDIR/jar" email pw csrf
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    remember_secret "$pw"
    api POST "$API/auth/login" -c "$jar" -H 'Content-Type: application/json' \
        --data-binary "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p}')"
    assert_status 200
    remember_pair
    # Netscape jar: HttpOnly lines start with #HttpOnly_; name and value are fields 6 and 7.
    jar_value() { awk -F'\t' -v n="$1" '$6 == n { v = $7 } END { printf "%s", v }' "$jar"; }
    csrf=$(jar_value csrf)
    [[ -n $csrf ]] || fail "no csrf cookie in the jar: $(cat "$jar")"
    remember_secret "$csrf" "$(jar_value "$ACCESS_COOKIE")" "$(jar_value "$REFRESH_COOKIE")"

    api GET "$API/users/me" -b "$jar" -c "$jar"
    assert_status 200
    assert_equal "$(json .email)" "$email"

    api POST "$API/auth/refresh" -b "$jar" -c "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Length: 0'
    assert_status 200
    remember_pair
    csrf=$(jar_value csrf)
    remember_secret "$csrf" "$(jar_value "$ACCESS_COOKIE")" "$(jar_value "$REFRESH_COOKIE")"

    api GET "$API/users/me" -b "$jar" -c "$jar"
    assert_status 200

    api POST "$API/auth/logout" -b "$jar" -c "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Length: 0'
    assert_status 204
    api GET "$API/users/me" -b "$jar" -c "$jar"
    assert_problem 401
}

# Keep this last: it checks everything the file sent.
@test "logs: no password, token or csrf value used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
