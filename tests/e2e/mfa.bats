#!/usr/bin/env bats
# Two-factor login with TOTP (RFC 6238) through the whole stack:
# POST /auth/mfa/totp/setup, /enable and /disable, the mfa_required answer
# of /auth/login and its single-use mfa_token, POST /auth/mfa/verify with a
# code or a recovery code, the replay rules (each 30 s step once, and only
# steps later than the last one accepted for the user), the audit events,
# and login throttling counting wrong second-factor codes.
#
# Written from API.md and the MFA decisions, not from the code. The codes
# are computed here with Python's hmac (no pyotp). The server takes the
# steps now-1, now and now+1; fresh_code hands out the lowest usable step
# after the last one this test spent, and waits for the next step boundary
# only when it must, so most tests need no sleep at all. One test ages a
# pending login through psql (mfa_challenges.expires_at, sql/005_mfa.sql)
# rather than wait 300 s.
#
# The stack allows 7 failed logins per account before it waits (the shipped
# default is 5; helpers.bash's test stack allows 1000): low enough for the
# throttling test to reach it, high enough that the other tests, which each
# stay below 7 failures per account, never do.

# shellcheck disable=SC2016,SC2030,SC2031,SC2153,SC2154 # jq programs in single quotes; bats subshells; helpers' globals

load helpers
load mail-helpers

LOGIN_FAILURES=7

setup_file() {
    af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false \
        AUTHFLOW_RATELIMIT_LOGIN_FAILURES=$LOGIN_FAILURES
    if [[ $(conf_get cookies secure) == true ]]; then
        export ACCESS_COOKIE=__Host-af_access REFRESH_COOKIE=__Secure-af_refresh
    else
        export ACCESS_COOKIE=af_access REFRESH_COOKIE=af_refresh
    fi
}
teardown_file() { af_stack_down; }

# ---------------------------------------------------------------------------
# TOTP arithmetic

# totp MODE ARGS...:
#   code SECRET STEP   the code of SECRET for the absolute 30 s STEP
#   now                the current step
#   fresh SECRET LAST  "STEP CODE" for the lowest step after LAST that the
#                      server takes (now-1..now+1); now-1 only early in a
#                      step, so that it is still in the window when the
#                      request arrives; sleeps into the next step if needed
#   wrong SECRET       a 6-digit string that is no code of now-3..now+3
#   guard              sleeps into the next step when fewer than 5 s are left
TOTP_PY='
import base64, hmac, hashlib, struct, sys, time
def key(s):
    return base64.b32decode(s + "=" * (-len(s) % 8))
def code(k, c):
    h = hmac.new(k, struct.pack(">Q", c), hashlib.sha1).digest()
    o = h[-1] & 15
    return "%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7fffffff) % 1000000)
def wait_next():
    t = time.time()
    time.sleep((int(t) // 30 + 1) * 30 - t + 0.2)
mode = sys.argv[1]
if mode == "code":
    print(code(key(sys.argv[2]), int(sys.argv[3])))
elif mode == "now":
    print(int(time.time()) // 30)
elif mode == "fresh":
    k, last = key(sys.argv[2]), int(sys.argv[3])
    while True:
        t = time.time()
        now, frac = int(t) // 30, t % 30
        s = max(last + 1, now - 1)
        if s == now - 1 and frac > 20:
            s = now
        if s <= now + 1:
            break
        wait_next()
    print(s, code(k, s))
elif mode == "wrong":
    k = key(sys.argv[2])
    now = int(time.time()) // 30
    bad = {code(k, now + d) for d in range(-3, 4)}
    for c in ("000000", "123456", "999999", "314159", "271828", "141421", "173205", "223606"):
        if c not in bad:
            print(c)
            break
elif mode == "guard":
    if time.time() % 30 > 25:
        wait_next()
'
totp() { "$AF_PY" -c "$TOTP_PY" "$@"; }

# fresh_code: CODE (recorded as a secret) and CODE_STEP for $SECRET, the
# lowest step after LAST_STEP the server takes; LAST_STEP moves on to it.
fresh_code() {
    local out
    out=$(totp fresh "$SECRET" "${LAST_STEP:-0}") || return 1
    CODE_STEP=${out% *}
    CODE=${out#* }
    LAST_STEP=$CODE_STEP
    remember_secret "$CODE"
}

# wrong_code: WRONG, a well-formed code that is not one of $SECRET's now.
wrong_code() { WRONG=$(totp wrong "$SECRET"); }

# ---------------------------------------------------------------------------
# Requests

# mfa_setup TOKEN: POST /auth/mfa/totp/setup; on 200 sets SECRET and
# OTPAUTH (any other answer leaves them as they were).
mfa_setup() {
    api_json POST "$API/auth/mfa/totp/setup" '{}' -H "Authorization: Bearer $1" || return 1
    if [[ $status_code == 200 ]]; then
        SECRET=$(json '.secret // empty')
        OTPAUTH=$(json '.otpauth_uri // empty')
        remember_secret "$SECRET" "$OTPAUTH"
    fi
}

# mfa_enable TOKEN CODE: POST /auth/mfa/totp/enable; on 200 sets RECOVERY
# (an array) and records the codes.
mfa_enable() {
    RECOVERY=()
    api_json POST "$API/auth/mfa/totp/enable" "$(jq -cn --arg c "$2" '{code: $c}')" \
        -H "Authorization: Bearer $1" || return 1
    if [[ $status_code == 200 ]]; then
        mapfile -t RECOVERY < <(json '.recovery_codes[]?')
        remember_secret "${RECOVERY[@]}"
    fi
}

# mfa_disable TOKEN JSON: POST /auth/mfa/totp/disable.
mfa_disable() {
    api_json POST "$API/auth/mfa/totp/disable" "$2" -H "Authorization: Bearer $1"
}

# mfa_account: a fresh account (new_account) with TOTP on. Sets EMAIL,
# PASSWORD, USER_ID, SECRET, RECOVERY, LAST_STEP and ACCT_ACCESS (the
# access token of the password-only session new_account opened).
mfa_account() {
    new_account || return 1
    ACCT_ACCESS=$ACCESS
    LAST_STEP=0
    mfa_setup "$ACCT_ACCESS" || return 1
    assert_status 200 || return 1
    fresh_code || return 1
    mfa_enable "$ACCT_ACCESS" "$CODE" || return 1
    assert_status 200 || return 1
    ((${#RECOVERY[@]} == 10)) || _af_fail "enable should give 10 recovery codes, gave ${#RECOVERY[@]}"
}

# mfa_login EMAIL PASSWORD [curl args...]: a login that must answer 401
# mfa_required; sets MFA_TOKEN.
mfa_login() {
    MFA_TOKEN=''
    login "$@" || return 1
    assert_problem 401 mfa_required || return 1
    MFA_TOKEN=$(json '.mfa_token // empty')
    remember_secret "$MFA_TOKEN"
    [[ $MFA_TOKEN =~ $OPAQUE_TOKEN_RE ]] || _af_fail "mfa_token should be 43 characters of base64url"
}

# verify_json JSON [curl args...]: POST /auth/mfa/verify; on 200 sets
# ACCESS, REFRESH, SESSION_ID (take_pair).
verify_json() {
    api_json POST "$API/auth/mfa/verify" "$@" || return 1
    take_pair
}

# verify_code MFA_TOKEN CODE [curl args...]
verify_code() {
    verify_json "$(jq -cn --arg t "$1" --arg c "$2" '{mfa_token: $t, code: $c}')" "${@:3}"
}

# verify_recovery MFA_TOKEN RECOVERY_CODE [curl args...]
verify_recovery() {
    remember_secret "$2"
    verify_json "$(jq -cn --arg t "$1" --arg c "$2" '{mfa_token: $t, recovery_code: $c}')" "${@:3}"
}

# activity TOKEN: GET /users/me/activity?limit=200 as a page of events.
activity() {
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $1" || return 1
    assert_status 200 || return 1
    assert_json '(.items | type == "array") and all(.items[]; (.type | type == "string") and (.detail | type == "object"))' \
        "the activity should be a page of {type, ..., detail} events"
}

# event_count TYPE: how many events of TYPE the last activity page lists.
event_count() { json --arg t "$1" '[.items[] | select(.type == $t)] | length'; }

# pct STRING: STRING percent-encoded with only A-Z a-z 0-9 - . _ ~ left plain.
pct() { "$AF_PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="-._~"))' "$1"; }

# ===========================================================================
# Setup and enable

@test "setup, enable and disable need an authenticated caller" {
    api_json POST "$API/auth/mfa/totp/setup" '{}'
    assert_problem 401 unauthorized
    api_json POST "$API/auth/mfa/totp/enable" '{"code": "123456"}'
    assert_problem 401 unauthorized
    api_json POST "$API/auth/mfa/totp/disable" '{"password": "whatever it is here", "code": "123456"}'
    assert_problem 401 unauthorized
    api_json POST "$API/auth/mfa/totp/setup" '{}' -H 'Authorization: Bearer not.a.token'
    assert_problem 401
}

@test "setup: 200 with a base32 secret, the otpauth URI and an SVG QR code; nothing is on yet" {
    new_account
    local tok=$ACCESS
    mfa_setup "$tok"
    assert_status 200
    assert_json_response
    assert_no_store
    [[ $SECRET =~ ^[A-Z2-7]{32}$ ]] || _af_fail "secret should be 32 characters of base32 without padding"
    assert_equal "$("$AF_PY" -c 'import base64, sys; print(len(base64.b32decode(sys.argv[1])))' "$SECRET")" 20
    local issuer
    issuer=$(conf_get mail product_name)
    : "${issuer:=authflow}"
    local want
    want="otpauth://totp/$(pct "$issuer"):$(pct "$EMAIL")?secret=$SECRET&issuer=$(pct "$issuer")&algorithm=SHA1&digits=6&period=30"
    assert_equal "$OTPAUTH" "$want"
    assert_json '.qr_svg | type == "string" and contains("<svg") and contains("</svg>")' \
        "qr_svg should be an SVG document"
    # Not on before a code proves the authenticator has the secret.
    me "$tok"
    assert_status 200
    assert_user_object
    assert_json '.mfa_enabled == false'
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_token_pair
}

@test "enable without a setup first is 400 validation_failed" {
    new_account
    mfa_enable "$ACCESS" 123456
    assert_problem 400 validation_failed
    me "$ACCESS"
    assert_json '.mfa_enabled == false'
}

@test "enable: a missing code is 400 validation_failed, a wrong one 400 invalid_code; the right one gives 10 recovery codes" {
    new_account
    local tok=$ACCESS
    LAST_STEP=0
    mfa_setup "$tok"
    assert_status 200
    api_json POST "$API/auth/mfa/totp/enable" '{}' -H "Authorization: Bearer $tok"
    assert_problem 400 validation_failed
    wrong_code
    mfa_enable "$tok" "$WRONG"
    assert_problem 400 invalid_code
    me "$tok"
    assert_json '.mfa_enabled == false'

    fresh_code
    mfa_enable "$tok" "$CODE"
    assert_status 200
    assert_json_response
    assert_no_store
    assert_json '.recovery_codes | type == "array" and length == 10 and all(.[]; type == "string")' \
        "recovery_codes should be an array of 10 strings"
    assert_json '.recovery_codes | unique | length == 10' "the recovery codes should be distinct"
    assert_json 'all(.recovery_codes[]; test("^[a-z0-9]{5}-[a-z0-9]{5}$"))' \
        "recovery codes should look like abcde-fghij"
    me "$tok"
    assert_status 200
    assert_user_object
    assert_json '.mfa_enabled == true'
}

@test "setup once TOTP is on is 409 mfa_already_enabled" {
    mfa_account
    mfa_setup "$ACCT_ACCESS"
    assert_problem 409 mfa_already_enabled
    # The secret in use is unchanged: its next code still logs in.
    mfa_login "$EMAIL" "$PASSWORD"
    fresh_code
    verify_code "$MFA_TOKEN" "$CODE"
    assert_status 200
}

@test "setup again before enabling replaces the pending secret: the old one's codes no longer enable" {
    new_account
    local tok=$ACCESS
    LAST_STEP=0
    mfa_setup "$tok"
    assert_status 200
    local old=$SECRET
    mfa_setup "$tok"
    assert_status 200
    local new=$SECRET
    [[ $new != "$old" ]] || fail "a second setup gave the same secret"
    SECRET=$old
    fresh_code
    # No code of the new secret equals this one now (else the check proves nothing).
    local n i clash=''
    n=$(totp now)
    for i in -1 0 1; do
        [[ $(totp code "$new" $((n + i))) == "$CODE" ]] && clash=1
    done
    if [[ -z $clash ]]; then
        mfa_enable "$tok" "$CODE"
        assert_problem 400 invalid_code
    fi
    SECRET=$new
    fresh_code
    mfa_enable "$tok" "$CODE"
    assert_status 200
    me "$tok"
    assert_json '.mfa_enabled == true'
}

# ===========================================================================
# Login with the second factor

@test "login with TOTP on: 401 mfa_required with an mfa_token, no tokens, no cookies; a wrong password is still invalid_credentials" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    assert_no_store
    assert_json '.mfa_expires_in == 300' "mfa_expires_in should be 300"
    assert_json '(has("access_token") or has("refresh_token") or has("session_id")) | not' \
        "an mfa_required answer must carry no token pair"
    [[ -z $(cookie_value "$ACCESS_COOKIE") && -z $(cookie_value "$REFRESH_COOKIE") ]] ||
        _af_fail "an mfa_required answer must set no access or refresh cookie"
    # The mfa_token is not an access token, nor a refresh token.
    me "$MFA_TOKEN"
    assert_problem 401
    refresh "$MFA_TOKEN"
    assert_problem 401 invalid_token

    login "$EMAIL" "not the password $RANDOM"
    assert_problem 401 invalid_credentials
    assert_json 'has("mfa_token") | not' "a wrong password must not get an mfa_token"
    assert_json 'has("mfa_expires_in") | not'
}

@test "verify with the current code: a token pair with amr [pwd, otp], cookies like login; the mfa_token is then spent" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN
    fresh_code
    verify_code "$t" "$CODE"
    assert_status 200
    assert_token_pair
    assert_equal "$(jwt_claims "$ACCESS" | jq -c .amr)" '["pwd","otp"]'
    assert_equal "$(jwt_claims "$ACCESS" | jq -r .sub)" "$USER_ID"
    # Cookie mode: the same cookies as a password login.
    local c_access c_refresh c_csrf
    c_access=$(cookie_value "$ACCESS_COOKIE")
    c_refresh=$(cookie_value "$REFRESH_COOKIE")
    c_csrf=$(cookie_value csrf)
    remember_secret "$c_access" "$c_refresh" "$c_csrf"
    [[ -n $c_access && -n $c_refresh && -n $c_csrf ]] ||
        _af_fail "verify should set the $ACCESS_COOKIE, $REFRESH_COOKIE and csrf cookies as login does"
    local access=$ACCESS sid=$SESSION_ID refresh_token=$REFRESH
    me "$access"
    assert_status 200
    assert_json '.mfa_enabled == true'
    api GET "$API/users/me" -b "$ACCESS_COOKIE=$c_access"
    assert_status 200
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $access"
    assert_status 200
    assert_json ".[] | select(.id == \"$sid\") | .amr == [\"pwd\",\"otp\"]" \
        "the session should list amr [pwd, otp]"
    # The session refreshes like any other.
    refresh "$refresh_token"
    assert_status 200

    # Single use, whatever the code.
    fresh_code
    verify_code "$t" "$CODE"
    assert_problem 401 invalid_token
}

@test "verify with an unknown or garbage mfa_token is 401 invalid_token" {
    mfa_account
    local fake
    fake=$(head -c 32 /dev/urandom | b64url_encode)
    fresh_code
    verify_code "$fake" "$CODE"
    assert_problem 401 invalid_token
    verify_code garbage "$CODE"
    assert_problem 401 invalid_token
    verify_code "$fake" 123456
    assert_problem 401 invalid_token
    verify_recovery "$fake" "${RECOVERY[0]}"
    assert_problem 401 invalid_token
    # Another user's login cannot be finished with this user's code.
    local other_secret=$SECRET other_step=$LAST_STEP
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN
    SECRET=$other_secret LAST_STEP=$other_step
    fresh_code
    verify_code "$t" "$CODE"
    assert_problem 401 invalid_code
}

@test "verify: a wrong code is 401 invalid_code and the mfa_token lives on; after 5 wrong codes it is dead" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN i
    # Four wrong codes leave the fifth try to a right one.
    for i in 1 2 3 4; do
        wrong_code
        verify_code "$t" "$WRONG"
        assert_problem 401 invalid_code
    done
    fresh_code
    verify_code "$t" "$CODE"
    assert_status 200
    assert_token_pair

    mfa_login "$EMAIL" "$PASSWORD"
    t=$MFA_TOKEN
    for i in 1 2 3 4 5; do
        wrong_code
        verify_code "$t" "$WRONG"
        assert_problem 401 invalid_code
    done
    fresh_code
    verify_code "$t" "$CODE"
    assert_problem 401 invalid_token
    verify_recovery "$t" "${RECOVERY[0]}"
    assert_problem 401 invalid_token
}

@test "verify: malformed codes (letters, 7 digits, 5 digits) are 401 invalid_code" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN
    fresh_code
    verify_code "$t" abcdef
    assert_problem 401 invalid_code
    # The right code with a digit more is not the right code.
    verify_code "$t" "${CODE}0"
    assert_problem 401 invalid_code
    verify_code "$t" "${CODE:0:5}"
    assert_problem 401 invalid_code
    verify_code "$t" "$CODE"
    assert_status 200
}

@test "verify: missing fields, wrong JSON types, both or neither of code and recovery_code are 400 validation_failed" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN
    fresh_code
    verify_json "$(jq -cn --arg c "$CODE" '{code: $c}')"
    assert_problem 400 validation_failed
    assert_field_error mfa_token
    verify_json "$(jq -cn --arg t "$t" '{mfa_token: $t}')"
    assert_problem 400 validation_failed
    verify_json "$(jq -cn --arg t "$t" --arg c "$CODE" --arg r "${RECOVERY[0]}" \
        '{mfa_token: $t, code: $c, recovery_code: $r}')"
    assert_problem 400 validation_failed
    verify_json "$(jq -cn --arg t "$t" --arg c "$CODE" '{mfa_token: $t, code: ($c | tonumber)}')"
    assert_problem 400 validation_failed
    assert_field_error code
    verify_json "$(jq -cn --arg t "$t" '{mfa_token: $t, recovery_code: 12345}')"
    assert_problem 400 validation_failed
    verify_json "$(jq -cn --arg c "$CODE" '{mfa_token: 42, code: $c}')"
    assert_problem 400 validation_failed
    verify_json "$(jq -cn --arg t "$t" --arg c "$CODE" '{mfa_token: [$t], code: $c}')"
    assert_problem 400 validation_failed
    verify_json '{"mfa_token": '
    assert_clean_4xx
    # None of that was an attempt: the token still takes the right code.
    verify_code "$t" "$CODE"
    assert_status 200
    assert_token_pair
}

@test "an expired mfa_token is 401 invalid_token" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    # As if the 300 s had passed.
    sql "UPDATE mfa_challenges SET expires_at = now() - interval '1 second' WHERE user_id = :'u'" u="$USER_ID" >/dev/null
    fresh_code
    verify_code "$MFA_TOKEN" "$CODE"
    assert_problem 401 invalid_token
    # The code was not spent on it: a new login takes it.
    mfa_login "$EMAIL" "$PASSWORD"
    verify_code "$MFA_TOKEN" "$CODE"
    assert_status 200
}

# ===========================================================================
# Replays

@test "the code that enabled TOTP cannot log in; a code spent on one login cannot finish another" {
    mfa_account
    local enable_code=$CODE
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN
    verify_code "$t" "$enable_code"
    assert_problem 401 invalid_code
    fresh_code
    local used=$CODE
    verify_code "$t" "$used"
    assert_status 200

    mfa_login "$EMAIL" "$PASSWORD"
    t=$MFA_TOKEN
    verify_code "$t" "$used"
    assert_problem 401 invalid_code
    # That mfa_token lives on: a later step's code finishes it.
    fresh_code
    verify_code "$t" "$CODE"
    assert_status 200
    assert_token_pair
}

@test "a code of a step before the last one accepted is refused even though it was never used" {
    new_account
    local tok=$ACCESS
    mfa_setup "$tok"
    assert_status 200
    totp guard
    local n
    n=$(totp now)
    # Enable with the next step's code, then try this step's (in the window, unused).
    CODE=$(totp code "$SECRET" $((n + 1)))
    remember_secret "$CODE"
    mfa_enable "$tok" "$CODE"
    assert_status 200
    local earlier
    earlier=$(totp code "$SECRET" "$n")
    remember_secret "$earlier"
    mfa_login "$EMAIL" "$PASSWORD"
    verify_code "$MFA_TOKEN" "$earlier"
    assert_problem 401 invalid_code
    verify_recovery "$MFA_TOKEN" "${RECOVERY[0]}"
    assert_status 200
}

# race_verify JSON1 JSON2: the two POST /auth/mfa/verify at once; sets
# RACE to their sorted status codes ("200 401") and records the tokens.
race_verify() {
    local a=$BATS_TEST_TMPDIR/race-a b=$BATS_TEST_TMPDIR/race-b f
    api_raw "$a" POST "$API/auth/mfa/verify" -H 'Content-Type: application/json' --data-binary "$1" &
    local pa=$!
    api_raw "$b" POST "$API/auth/mfa/verify" -H 'Content-Type: application/json' --data-binary "$2" &
    local pb=$!
    wait "$pa" || return 1
    wait "$pb" || return 1
    for f in "$a" "$b"; do
        remember_secret "$(jq -r '.access_token // empty' "$f.body" 2>/dev/null)" \
            "$(jq -r '.refresh_token // empty' "$f.body" 2>/dev/null)"
    done
    RACE=$(printf '%s\n%s\n' "$(<"$a.code")" "$(<"$b.code")" | sort | tr '\n' ' ')
    RACE=${RACE% }
    RACE_BODIES="$(<"$a.body") $(<"$b.body")"
}

@test "at once: one code on two pending logins, or one mfa_token with two right answers, finishes only one" {
    mfa_account
    local t1 t2 round
    for round in totp recovery; do
        mfa_login "$EMAIL" "$PASSWORD"
        t1=$MFA_TOKEN
        mfa_login "$EMAIL" "$PASSWORD"
        t2=$MFA_TOKEN
        if [[ $round == totp ]]; then
            fresh_code
            race_verify "$(jq -cn --arg t "$t1" --arg c "$CODE" '{mfa_token: $t, code: $c}')" \
                "$(jq -cn --arg t "$t2" --arg c "$CODE" '{mfa_token: $t, code: $c}')"
        else
            race_verify "$(jq -cn --arg t "$t1" --arg c "${RECOVERY[8]}" '{mfa_token: $t, recovery_code: $c}')" \
                "$(jq -cn --arg t "$t2" --arg c "${RECOVERY[8]}" '{mfa_token: $t, recovery_code: $c}')"
        fi
        [[ $RACE == "200 401" ]] ||
            fail "the same $round code on two logins at once: expected one 200 and one 401, got $RACE: $RACE_BODIES"
    done
    # One mfa_token, two different right recovery codes at once.
    mfa_login "$EMAIL" "$PASSWORD"
    race_verify "$(jq -cn --arg t "$MFA_TOKEN" --arg c "${RECOVERY[0]}" '{mfa_token: $t, recovery_code: $c}')" \
        "$(jq -cn --arg t "$MFA_TOKEN" --arg c "${RECOVERY[1]}" '{mfa_token: $t, recovery_code: $c}')"
    [[ $RACE == "200 401" ]] ||
        fail "one mfa_token with two right recovery codes at once: expected one 200 and one 401, got $RACE: $RACE_BODIES"
}

# ===========================================================================
# Recovery codes

@test "recovery codes: each works once, case, spaces and dashes do not matter, form bodies work too" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    verify_recovery "$MFA_TOKEN" "${RECOVERY[0]}"
    assert_status 200
    assert_token_pair
    local access=$ACCESS
    me "$access"
    assert_status 200

    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN
    verify_recovery "$t" "${RECOVERY[0]}"
    assert_problem 401 invalid_code
    # The same mfa_token takes another code, typed in capitals without the
    # dash and with spaces.
    local typed=${RECOVERY[1]//-/}
    typed=${typed^^}
    typed=" ${typed:0:3} ${typed:3}  "
    verify_recovery "$t" "$typed"
    assert_status 200
    assert_token_pair
    # Capitals with the dash in place, then the spent code again.
    mfa_login "$EMAIL" "$PASSWORD"
    verify_recovery "$MFA_TOKEN" "${RECOVERY[2]^^}"
    assert_status 200
    mfa_login "$EMAIL" "$PASSWORD"
    verify_recovery "$MFA_TOKEN" "${RECOVERY[1]}"
    assert_problem 401 invalid_code

    # application/x-www-form-urlencoded, as for every flat POST.
    api POST "$API/auth/mfa/verify" --data-urlencode "mfa_token=$MFA_TOKEN" \
        --data-urlencode "recovery_code=${RECOVERY[3]}"
    assert_status 200
    take_pair
    assert_token_pair

    activity "$access"
    assert_equal "$(event_count mfa_recovery_code_used)" 4
}

# ===========================================================================
# Disable

@test "disable when TOTP is off is 400 validation_failed" {
    new_account
    mfa_disable "$ACCESS" "$(jq -cn --arg p "$PASSWORD" '{password: $p, code: "123456"}')"
    assert_problem 400 validation_failed
}

@test "disable: wrong password 401 invalid_credentials, wrong code 401 invalid_code; then 204, login without a second factor, old recovery codes gone" {
    mfa_account
    local tok=$ACCT_ACCESS old=("${RECOVERY[@]}")
    local wrong_pw="not the password $RANDOM"
    remember_secret "$wrong_pw"
    # A recovery code here, so that no TOTP step is at stake.
    mfa_disable "$tok" "$(jq -cn --arg p "$wrong_pw" --arg r "${RECOVERY[7]}" '{password: $p, recovery_code: $r}')"
    assert_problem 401 invalid_credentials
    wrong_code
    mfa_disable "$tok" "$(jq -cn --arg p "$PASSWORD" --arg c "$WRONG" '{password: $p, code: $c}')"
    assert_problem 401 invalid_code
    me "$tok"
    assert_json '.mfa_enabled == true'
    fresh_code
    mfa_disable "$tok" "$(jq -cn --arg p "$PASSWORD" --arg c "$CODE" '{password: $p, code: $c}')"
    assert_status 204
    me "$tok"
    assert_status 200
    assert_json '.mfa_enabled == false'
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_token_pair
    assert_equal "$(jwt_claims "$ACCESS" | jq -c .amr)" '["pwd"]'

    # On again: a new secret, ten new recovery codes; the old ones are void.
    mfa_setup "$tok"
    assert_status 200
    fresh_code
    mfa_enable "$tok" "$CODE"
    assert_status 200
    assert_equal "${#RECOVERY[@]}" 10
    local c
    for c in "${old[@]}"; do
        [[ " ${RECOVERY[*]} " != *" $c "* ]] || fail "recovery code $c came back after disable and enable"
    done
    mfa_login "$EMAIL" "$PASSWORD"
    verify_recovery "$MFA_TOKEN" "${old[4]}"
    assert_problem 401 invalid_code
    verify_recovery "$MFA_TOKEN" "${RECOVERY[4]}"
    assert_status 200
}

@test "disable with a recovery code instead of a TOTP code" {
    mfa_account
    mfa_disable "$ACCT_ACCESS" "$(jq -cn --arg p "$PASSWORD" --arg r "${RECOVERY[5]}" '{password: $p, recovery_code: $r}')"
    assert_status 204
    me "$ACCT_ACCESS"
    assert_json '.mfa_enabled == false'
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_token_pair
}

@test "authflowctl user mfa-off: an operator turns TOTP off for a user who lost the app and the codes" {
    mfa_account
    run timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" user mfa-off "$EMAIL"
    assert_success
    me "$ACCT_ACCESS"
    assert_json '.mfa_enabled == false'
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_token_pair
    activity "$ACCESS"
    assert_equal "$(json '[.items[] | select(.type == "mfa_disabled")][0].detail.via')" authflowctl
    # TOTP can be set up again.
    mfa_setup "$ACCESS"
    assert_status 200
    run timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" user mfa-off nobody@example.test
    assert_failure 1
}

# ===========================================================================
# Audit and throttling

@test "activity: mfa_enabled, a login row with amr [pwd, otp], mfa_recovery_code_used, mfa_disabled" {
    mfa_account
    local tok=$ACCT_ACCESS
    mfa_login "$EMAIL" "$PASSWORD"
    fresh_code
    verify_code "$MFA_TOKEN" "$CODE"
    assert_status 200
    mfa_login "$EMAIL" "$PASSWORD"
    verify_recovery "$MFA_TOKEN" "${RECOVERY[6]}"
    assert_status 200
    fresh_code
    mfa_disable "$tok" "$(jq -cn --arg p "$PASSWORD" --arg c "$CODE" '{password: $p, code: $c}')"
    assert_status 204

    activity "$tok"
    assert_equal "$(event_count mfa_enabled)" 1
    assert_equal "$(event_count mfa_disabled)" 1
    assert_equal "$(event_count mfa_recovery_code_used)" 1
    # One login row per session opened: the password-only one of
    # new_account and the two second-factor ones (mfa_required opens none).
    assert_equal "$(event_count login)" 3
    assert_json '[.items[] | select(.type == "login" and .detail.amr == ["pwd","otp"])] | length >= 1' \
        "the second-factor login should leave a login row with amr [pwd, otp]"
    # Newest first: disable came last.
    assert_equal "$(json '[.items[] | select(.type | startswith("mfa_"))][0].type')" mfa_disabled
    # No secret in the events.
    [[ $body != *"$SECRET"* && $body != *"${RECOVERY[6]}"* ]] || _af_fail "the activity shows a secret or a recovery code"
}

@test "wrong second-factor codes count as failed logins: the account waits (429) after $LOGIN_FAILURES" {
    mfa_account
    mfa_login "$EMAIL" "$PASSWORD"
    local t=$MFA_TOKEN i
    for i in 1 2 3 4 5; do
        wrong_code
        verify_code "$t" "$WRONG"
        assert_problem 401 invalid_code
    done
    # The right password does not wipe the count of wrong codes.
    mfa_login "$EMAIL" "$PASSWORD"
    t=$MFA_TOKEN
    for ((i = 6; i <= LOGIN_FAILURES; i++)); do
        wrong_code
        verify_code "$t" "$WRONG"
        assert_problem 401 invalid_code
    done
    login "$EMAIL" "$PASSWORD"
    assert_problem 429 too_many_attempts
    assert_header_present Retry-After
}

@test "logs: no password, token, TOTP secret, code, recovery code or mfa_token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
