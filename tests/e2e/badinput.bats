#!/usr/bin/env bats
# Hostile input against the endpoints that take a body: POST /auth/register,
# POST /auth/login, PATCH /users/me, POST /auth/mfa/verify,
# POST /auth/mfa/totp/enable and /disable, and POST /oauth/{p}/id-token; and
# hostile query strings against GET /oauth/{p}/start and /callback. Every
# answer must be a clean 4xx problem+json (never a 5xx, never a stack trace),
# and the responders must keep serving after the whole table. Each hostile
# body is otherwise valid, so an answer of 2xx (or the endpoint's own answer
# to a valid body, see expect_valid) means the defect went unnoticed.
#
# The stack has one social-login provider, [oauth.test], whose issuer
# (http://127.0.0.1:9) nothing listens on: its discovery fails, so a
# well-formed id-token or start request ends in 503 service_unavailable (the
# documented answer when a provider is unreachable). That 503 is the only 5xx
# this file allows, and only for well-formed requests (assert_provider_down
# lists each one; the last tests check the whole file against that list).
# Hostile bodies and queries must be refused (400/413/415) before authflow
# calls the provider. lighttpd answers some hostile URLs itself before
# authflow sees them (control characters, invalid UTF-8, over 8 KiB: see
# lighttpd_refusal); only those may get its HTML page instead of a problem.

# shellcheck disable=SC2016,SC2030,SC2031,SC2153,SC2154 # jq programs in single quotes; bats subshells; helpers' globals

load helpers

AF_PY=/usr/bin/python3

# TOTP arithmetic (RFC 6238, SHA-1, 30 s, 6 digits), as in mfa.bats:
#   fresh SECRET LAST  "STEP CODE" for the lowest step after LAST that the
#                      server takes (now-1..now+1); sleeps into the next step
#                      if needed
#   wrong SECRET       a 6-digit string that is no code of now-3..now+3
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
if mode == "fresh":
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
    for c in ("123456", "000000", "999999", "314159", "271828", "141421", "173205", "223606"):
        if c not in bad:
            print(c)
            break
'
totp() { "$AF_PY" -c "$TOTP_PY" "$@"; }

# mfa_setup_for TOKEN: POST /auth/mfa/totp/setup; prints the secret.
mfa_setup_for() {
    api_json POST "$API/auth/mfa/totp/setup" '{}' -H "Authorization: Bearer $1" || return 1
    assert_status 200 || return 1
    local s
    s=$(json .secret)
    remember_secret "$s" "$(json .otpauth_uri)"
    printf '%s' "$s"
}

setup_file() {
    # The provider: discovery at http://127.0.0.1:9 (the discard port;
    # nothing listens) fails at once. Its client_secret ("y") is a single
    # letter, too short to look for in the logs.
    local extra=$BATS_FILE_TMPDIR/oauth-provider.conf
    printf '\n[oauth.test]\nissuer = http://127.0.0.1:9\nclient_id = x\nclient_secret = y\n' >"$extra"
    af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false AUTHFLOW_CONFIG_EXTRA="$extra"
    : >"$BATS_FILE_TMPDIR/allowed-5xx"
    new_account "Table Owner"
    export OWNER_EMAIL=$EMAIL OWNER_PASSWORD=$PASSWORD OWNER_TOKEN=$ACCESS

    # totp_enable's caller: a set-up started, not enabled. A valid body (a
    # code that is not the current one) is 400 invalid_code.
    new_account "Pending Totp"
    PENDING_ACCESS=$ACCESS
    PENDING_SECRET=$(mfa_setup_for "$ACCESS") || return 1
    export PENDING_ACCESS PENDING_SECRET

    # totp_disable's caller: TOTP on. A valid body (the right password, a
    # wrong code) is 401 invalid_code; nothing in this file turns it off.
    new_account "Totp On"
    TOTP_ON_EMAIL=$EMAIL TOTP_ON_PASSWORD=$PASSWORD TOTP_ON_ACCESS=$ACCESS
    TOTP_ON_SECRET=$(mfa_setup_for "$ACCESS") || return 1
    local out codes
    out=$(totp fresh "$TOTP_ON_SECRET" 0) || return 1
    remember_secret "${out#* }"
    api_json POST "$API/auth/mfa/totp/enable" "$(jq -cn --arg c "${out#* }" '{code: $c}')" \
        -H "Authorization: Bearer $TOTP_ON_ACCESS"
    assert_status 200 || return 1
    mapfile -t codes < <(json '.recovery_codes[]')
    remember_secret "${codes[@]}"
    export TOTP_ON_EMAIL TOTP_ON_PASSWORD TOTP_ON_ACCESS TOTP_ON_SECRET TOTP_ON_STEP=${out% *}

    # An id_token-shaped string (never verified: the keys cannot be fetched).
    local h c
    h=$(printf '{"alg":"RS256","typ":"JWT","kid":"badinput"}' | b64url_encode)
    c=$(printf '{"iss":"http://127.0.0.1:9","aud":"x","sub":"s-1","exp":4102444800,"iat":1700000000,"nonce":"n-0123456789"}' | b64url_encode)
    export FAKE_IDT="$h.$c.c2lnbmF0dXJlLW5vdC1yZWFsbHk"
}
teardown_file() { af_stack_down; }

ENDPOINTS=(register login patch mfa_verify totp_enable totp_disable id_token)
# The ones new with TOTP and social login.
NEW_ENDPOINTS=(mfa_verify totp_enable totp_disable id_token)
# The POSTs that take flat fields, so also form bodies (API.md).
FORM_ENDPOINTS=(register login mfa_verify totp_enable totp_disable id_token)

# A file holding printf FORMAT ARGS... (bytes exactly; NUL possible).
bodyf() {
    local f
    f=$(mktemp "$BATS_TEST_TMPDIR/body.XXXXXX")
    # shellcheck disable=SC2059
    printf "$@" >"$f"
    printf '%s' "$f"
}

# req ENDPOINT [curl args...]: the endpoint's request (method, path and the
# caller's credentials) with the curl args.
req() {
    local which=$1
    shift
    case $which in
    register) api POST "$API/auth/register" "$@" ;;
    login) api POST "$API/auth/login" "$@" ;;
    patch) api PATCH "$API/users/me" -H "Authorization: Bearer $OWNER_TOKEN" "$@" ;;
    mfa_verify) api POST "$API/auth/mfa/verify" "$@" ;;
    totp_enable) api POST "$API/auth/mfa/totp/enable" -H "Authorization: Bearer $PENDING_ACCESS" "$@" ;;
    totp_disable) api POST "$API/auth/mfa/totp/disable" -H "Authorization: Bearer $TOTP_ON_ACCESS" "$@" ;;
    id_token) api POST "$API/oauth/test/id-token" "$@" ;;
    *) fail "no endpoint $which" ;;
    esac
}

# hit ENDPOINT CONTENT_TYPE FILE [curl args...]: FILE as the body of the
# endpoint's request ("" content type: none at all).
hit() {
    local which=$1 ct=$2 file=$3
    shift 3
    local -a args=(--data-binary "@$file" -H 'Expect:')
    if [[ -n $ct ]]; then args+=(-H "Content-Type: $ct"); else args+=(-H 'Content-Type:'); fi
    req "$which" "${args[@]}" "$@"
}

# A well-formed mfa_token nobody was given (recorded: it must not be logged).
fake_mfa_token() {
    local t
    t=$(head -c 32 /dev/urandom | b64url_encode)
    remember_secret "$t"
    printf '%s' "$t"
}

# valid_body ENDPOINT: a JSON object the endpoint accepts, with a spare
# field "x" (null) that tests may replace; printed as jq input.
valid_body() {
    case $1 in
    register) jq -cn --arg e "$(unique_email)" --arg p "$(unique_password)" '{email: $e, password: $p, full_name: "Valid Name", x: null}' ;;
    login) jq -cn --arg e "$OWNER_EMAIL" --arg p "$OWNER_PASSWORD" '{email: $e, password: $p, x: null}' ;;
    patch) jq -cn '{full_name: "Table Owner", x: null}' ;;
    mfa_verify) jq -cn --arg t "$(fake_mfa_token)" '{mfa_token: $t, code: "123456", x: null}' ;;
    totp_enable) jq -cn --arg c "$(totp wrong "$PENDING_SECRET")" '{code: $c, x: null}' ;;
    totp_disable) jq -cn --arg p "$TOTP_ON_PASSWORD" --arg c "$(totp wrong "$TOTP_ON_SECRET")" '{password: $p, code: $c, x: null}' ;;
    id_token) jq -cn --arg t "$FAKE_IDT" '{id_token: $t, nonce: "n-0123456789", x: null}' ;;
    esac
}

# expect_valid ENDPOINT: the last answer is the endpoint's answer to a valid
# body (for the new endpoints, a 4xx or the documented 503 the test's
# accounts and provider make it).
expect_valid() {
    case $1 in
    register) assert_status 201 ;;
    login)
        assert_status 200
        remember_pair
        ;;
    patch) assert_status 200 ;;
    # An unknown mfa_token.
    mfa_verify) assert_problem 401 invalid_token ;;
    # A set-up pending, a code that is not the current one.
    totp_enable) assert_problem 400 invalid_code ;;
    # TOTP on, the right password, a code that is not the current one.
    totp_disable) assert_problem 401 invalid_code ;;
    # The provider's keys cannot be fetched.
    id_token) assert_provider_down ;;
    esac
}

# The string field each endpoint takes free text in.
text_field() {
    case $1 in
    register | patch) echo full_name ;;
    login | totp_disable) echo password ;;
    mfa_verify | totp_enable) echo code ;;
    id_token) echo id_token ;;
    esac
}

# with_raw ENDPOINT FIELD RAW: the valid body with FIELD's value replaced by
# the raw JSON text RAW (printf escapes in RAW are interpreted by bodyf).
with_raw() {
    local j
    j=$(valid_body "$1" | jq -c --arg f "$2" '.[$f] = "@@RAW@@"')
    # Not ${j/pat/rep}: bash 5.2 gives '&' in a replacement a meaning.
    j="${j%%\"@@RAW@@\"*}$3${j#*\"@@RAW@@\"}"
    bodyf "$(sed 's/%/%%/g' <<<"$j")"
}

# json_with ENDPOINT JQ_PROGRAM [jq args...]: the valid body changed by the
# jq program.
json_with() {
    local j
    j=$(valid_body "$1" | jq -c "${@:3}" "$2")
    bodyf '%s' "$j"
}

# json_at ENDPOINT FIELD JQ_VALUE: valid body with FIELD set to a jq value.
json_at() { json_with "$1" ".[\$f] = ($3)" --arg f "$2"; }

# form_with ENDPOINT FIELD RAW: the valid body as a form, FIELD's value the
# raw (already %-encoded) text RAW; FIELD "" changes nothing.
form_with() {
    local f
    f=$(valid_body "$1" | jq -r --arg f "$2" \
        'del(.x) | to_entries | map(.key + "=" + (if .key == $f then "@@RAW@@" else (.value | @uri) end)) | join("&")')
    [[ -z $2 ]] || f="${f%%@@RAW@@*}$3${f#*@@RAW@@}"
    bodyf '%s' "$f"
}

# form_hit ENDPOINT FILE: FILE as a form body.
form_hit() { hit "$1" application/x-www-form-urlencoded "$2"; }

assert_never_5xx() {
    [[ ! $status_code =~ ^5 ]] || _af_fail "a hostile request got a $status_code"
    [[ ! $status_code =~ ^[4] ]] || assert_problem "$status_code"
}

# The documented answer of a well-formed request that needs the unreachable
# provider: 503 service_unavailable with Retry-After, nothing set, nowhere
# sent. Listed as allowed for the no-5xx check at the end.
assert_provider_down() {
    assert_problem 503 service_unavailable
    assert_header_present retry-after
    [[ -z $(header set-cookie) ]] || _af_fail "a 503 set a cookie"
    [[ -z $(header location) ]] || _af_fail "a 503 redirected"
    printf '%s %s\n' "$status_code" "$last_request" >>"$BATS_FILE_TMPDIR/allowed-5xx"
}

# assert_some_field_error FIELD...: errors[] names one of the FIELDs.
assert_some_field_error() {
    local f
    for f in "$@"; do
        jq -e --arg f "$f" '.errors | type == "array" and any(.[]; .field == $f)' >/dev/null 2>&1 <<<"$body" &&
            return 0
    done
    _af_fail "errors[] should name one of: $*"
}

# --- structure ---------------------------------------------------------------

@test "malformed JSON is 400 invalid_json" {
    local e b
    local bodies=('{"email":' '{email: "a@example.test"}' 'not json' '{"a":1}}' "{'email':'a@example.test'}"
        '{"a":1,}' '{"a":"\x"}' '{"a":"unterminated}' '{"a" 1}' '{"a":tru}' '{"a":01}')
    for e in "${ENDPOINTS[@]}"; do
        for b in "${bodies[@]}"; do
            hit "$e" application/json "$(bodyf '%s' "$b")"
            assert_problem 400 invalid_json
        done
    done
}

@test "a JSON body that is not an object is 400" {
    local e b
    for e in "${ENDPOINTS[@]}"; do
        for b in '[]' '[{"email":"a@example.test"}]' '"a string"' '42' 'null' 'true'; do
            hit "$e" application/json "$(bodyf '%s' "$b")"
            # API.md names no code for this; the decoder's is invalid_json.
            assert_problem 400 invalid_json validation_failed
        done
    done
}

@test "another content type is 415 unsupported_media_type" {
    local e ct
    for e in "${ENDPOINTS[@]}"; do
        for ct in text/plain application/xml text/html application/octet-stream; do
            hit "$e" "$ct" "$(bodyf '%s' "$(valid_body "$e")")"
            assert_problem 415 unsupported_media_type
        done
    done
}

@test "multipart/form-data is 415 unsupported_media_type" {
    local e k v
    local -a args
    for e in "${FORM_ENDPOINTS[@]}"; do
        args=()
        while IFS=$'\t' read -r k v; do args+=(-F "$k=$v"); done < <(valid_body "$e" | jq -r 'del(.x) | to_entries[] | [.key, .value] | @tsv')
        req "$e" "${args[@]}"
        assert_problem 415 unsupported_media_type
    done
}

@test "a body without a content type is refused cleanly" {
    local e
    for e in "${ENDPOINTS[@]}"; do
        hit "$e" "" "$(bodyf '%s' "$(valid_body "$e")")"
        # API.md: only JSON and urlencoded bodies are accepted; 400 or 415.
        assert_problem "$status_code"
        assert_status 400 415
    done
}

@test "a 1 MiB body is 413" {
    local e f
    for e in "${ENDPOINTS[@]}"; do
        f=$(mktemp "$BATS_TEST_TMPDIR/big.XXXXXX")
        {
            valid_body "$e" | sed 's/}$/,"pad":"/' | tr -d '\n'
            head -c 1048576 /dev/zero | tr '\0' a
            printf '"}'
        } >"$f"
        hit "$e" application/json "$f"
        assert_status 413
        # The web server may answer before the responder does; if the
        # responder answers, it is a problem.
        if [[ $(header content-type) == application/problem+json* ]]; then
            assert_problem 413 payload_too_large
        fi
    done
}

@test "a body one byte over max_body_bytes is 413 payload_too_large; one at the limit is served" {
    local max e f n
    max=$(conf_get server max_body_bytes)
    max=${max:-65536}
    for e in "${ENDPOINTS[@]}"; do
        f=$(mktemp "$BATS_TEST_TMPDIR/big.XXXXXX")
        valid_body "$e" | sed 's/}$/,"pad":"/' | tr -d '\n' >"$f"
        n=$(stat -c %s "$f")
        {
            head -c $((max + 1 - n - 2)) /dev/zero | tr '\0' a
            printf '"}'
        } >>"$f"
        assert_equal "$(stat -c %s "$f")" $((max + 1))
        hit "$e" application/json "$f"
        assert_problem 413 payload_too_large
    done
    # Exactly at the limit: each endpoint's answer to a valid body (an
    # ordinary login, ...; the id-token endpoint gets as far as the provider).
    for e in "${ENDPOINTS[@]}"; do
        f=$(mktemp "$BATS_TEST_TMPDIR/big.XXXXXX")
        valid_body "$e" | sed 's/}$/,"pad":"/' | tr -d '\n' >"$f"
        n=$(stat -c %s "$f")
        { head -c $((max - n - 2)) /dev/zero | tr '\0' a; printf '"}'; } >>"$f"
        assert_equal "$(stat -c %s "$f")" "$max"
        hit "$e" application/json "$f"
        expect_valid "$e"
    done
}

# --- encoding ----------------------------------------------------------------

@test "invalid UTF-8 inside a string is 400" {
    local e seq field
    for e in "${ENDPOINTS[@]}"; do
        field=$(text_field "$e")
        # a stray byte, an overlong '/', a truncated sequence, an encoded surrogate
        for seq in '\xff' '\xc0\xaf' '\xe2\x82' '\xed\xa0\x80' '\xf8\x88\x80\x80\x80'; do
            hit "$e" application/json "$(with_raw "$e" "$field" "\"Bad ${seq} Name 1234\"")"
            assert_problem 400 invalid_json validation_failed
        done
    done
}

@test "invalid UTF-8 in a form body is 400" {
    local e
    for e in register login; do
        api POST "$API/auth/$e" --data-binary "email=$(unique_email)&password=vivid%FFlantern%FEriver%C0%AF"
        assert_problem 400 invalid_json validation_failed
    done
    for e in "${NEW_ENDPOINTS[@]}"; do
        # Control: the form itself is accepted.
        form_hit "$e" "$(form_with "$e" "" "")"
        expect_valid "$e"
        form_hit "$e" "$(form_with "$e" "$(text_field "$e")" 'vivid%FFlantern%FEriver%C0%AF')"
        assert_problem 400 invalid_json validation_failed
        # In a key.
        form_hit "$e" "$(bodyf '%s&x%%FF=1' "$(<"$(form_with "$e" "" "")")")"
        assert_problem 400 invalid_json validation_failed
    done
}

@test "an escaped lone surrogate never causes a 5xx" {
    local e field
    for e in "${ENDPOINTS[@]}"; do
        field=$(text_field "$e")
        for raw in '"A \\ud800 B 12345678"' '"A \\udfff B 12345678"' '"A \\ud800\\u0041 B 12345678"'; do
            hit "$e" application/json "$(with_raw "$e" "$field" "$raw")"
            # API.md is silent on escaped surrogates: refusing (400) or
            # accepting is fine, breaking is not. An id-token body that is
            # accepted gets as far as the provider: its documented 503.
            if [[ $e == id_token && $status_code == 503 ]]; then
                assert_provider_down
            else
                assert_never_5xx
            fi
        done
    done
}

@test "duplicate keys are 400" {
    local f e t first
    f=$(bodyf '{"email":"%s","email":"%s","password":"%s"}' "$(unique_email)" "$(unique_email)" "$(unique_password)")
    hit register application/json "$f"
    assert_problem 400 invalid_json validation_failed
    # The second password is the right one: last-wins parsing would log in.
    f=$(bodyf '{"email":"%s","password":"%s","password":"%s"}' "$OWNER_EMAIL" "wrong but long enough" "$OWNER_PASSWORD")
    hit login application/json "$f"
    assert_problem 400 invalid_json validation_failed
    f=$(bodyf '{"full_name":"One","full_name":"Two"}')
    hit patch application/json "$f"
    assert_problem 400 invalid_json validation_failed
    # The new endpoints: the factor, the token, the password twice.
    t=$(fake_mfa_token)
    hit mfa_verify application/json "$(bodyf '{"mfa_token":"%s","code":"123456","code":"654321"}' "$t")"
    assert_problem 400 invalid_json validation_failed
    hit mfa_verify application/json "$(bodyf '{"mfa_token":"%s","mfa_token":"%s","code":"123456"}' "$t" "$(fake_mfa_token)")"
    assert_problem 400 invalid_json validation_failed
    hit mfa_verify application/json "$(bodyf '{"mfa_token":"%s","recovery_code":"aaaaa-bbbbb","recovery_code":"ccccc-ddddd"}' "$t")"
    assert_problem 400 invalid_json validation_failed
    hit totp_enable application/json "$(bodyf '{"code":"123456","code":"654321"}')"
    assert_problem 400 invalid_json validation_failed
    # The second password is the right one: last-wins parsing would get as
    # far as the code (invalid_code).
    hit totp_disable application/json "$(bodyf '{"password":"wrong but long enough","password":"%s","code":"%s"}' \
        "$TOTP_ON_PASSWORD" "$(totp wrong "$TOTP_ON_SECRET")")"
    assert_problem 400 invalid_json validation_failed
    hit totp_disable application/json "$(bodyf '{"password":"%s","code":"123456","code":"654321"}' "$TOTP_ON_PASSWORD")"
    assert_problem 400 invalid_json validation_failed
    hit id_token application/json "$(bodyf '{"id_token":"%s","id_token":"a.b.c"}' "$FAKE_IDT")"
    assert_problem 400 invalid_json validation_failed
    hit id_token application/json "$(bodyf '{"id_token":"%s","nonce":"a","nonce":"b"}' "$FAKE_IDT")"
    assert_problem 400 invalid_json validation_failed
    # Nested duplicates count too.
    f=$(bodyf '{"full_name":"One","x":{"a":1,"a":2}}')
    hit patch application/json "$f"
    assert_problem 400 invalid_json validation_failed
    for e in "${NEW_ENDPOINTS[@]}"; do
        hit "$e" application/json "$(with_raw "$e" x '{"a":1,"a":2}')"
        assert_problem 400 invalid_json validation_failed
        hit "$e" application/json "$(with_raw "$e" x '[{"b":{"a":1,"a":2}}]')"
        assert_problem 400 invalid_json validation_failed
    done
    # Form bodies as well.
    api POST "$API/auth/login" --data-urlencode "email=$OWNER_EMAIL" --data-urlencode "password=wrong but long enough" \
        --data-urlencode "password=$OWNER_PASSWORD"
    assert_problem 400 invalid_json validation_failed
    for e in "${NEW_ENDPOINTS[@]}"; do
        f=$(form_with "$e" "" "")
        first=$(<"$f")
        # The first field once more, with its own value and with another.
        form_hit "$e" "$(bodyf '%s&%s' "$first" "${first%%&*}")"
        assert_problem 400 invalid_json validation_failed
        form_hit "$e" "$(bodyf '%s&%s=other' "$first" "${first%%=*}")"
        assert_problem 400 invalid_json validation_failed
    done
}

@test "nesting deeper than 32 is 400; 28 levels in an unknown field are ignored" {
    local e deep deep_obj ok
    deep="$(printf '[%.0s' {1..40})$(printf ']%.0s' {1..40})"
    ok="$(printf '[%.0s' {1..28})$(printf ']%.0s' {1..28})"
    for e in "${ENDPOINTS[@]}"; do
        hit "$e" application/json "$(with_raw "$e" x "$deep")"
        assert_problem 400 invalid_json validation_failed
        deep_obj=$(printf '{"a":%.0s' {1..40})1$(printf '}%.0s' {1..40})
        hit "$e" application/json "$(with_raw "$e" x "$deep_obj")"
        assert_problem 400 invalid_json validation_failed
        hit "$e" application/json "$(with_raw "$e" x "$ok")"
        expect_valid "$e"
    done
}

@test "NUL inside a string is 400" {
    local e field j
    for e in "${ENDPOINTS[@]}"; do
        field=$(text_field "$e")
        hit "$e" application/json "$(with_raw "$e" "$field" '"Before\\u0000After 12345678"')"
        assert_problem 400 invalid_json validation_failed
        # A raw NUL byte.
        hit "$e" application/json "$(with_raw "$e" "$field" '"Before\x00After 12345678"')"
        assert_problem 400 invalid_json validation_failed
    done
    # In a key.
    hit patch application/json "$(bodyf '{"full_name":"Ok","a\\u0000b":1}')"
    assert_problem 400 invalid_json validation_failed
    for e in "${NEW_ENDPOINTS[@]}"; do
        j=$(valid_body "$e")
        j="${j%%\"x\":null*}\"a\\u0000b\":1${j#*\"x\":null}"
        hit "$e" application/json "$(bodyf '%s' "$j")"
        assert_problem 400 invalid_json validation_failed
    done
    # %00 in a form body.
    api POST "$API/auth/login" --data-binary "email=$OWNER_EMAIL&password=vivid%00lantern%00river"
    assert_problem 400 invalid_json validation_failed
    for e in "${NEW_ENDPOINTS[@]}"; do
        form_hit "$e" "$(form_with "$e" "$(text_field "$e")" 'vivid%00lantern%00river')"
        assert_problem 400 invalid_json validation_failed
        # A raw NUL byte in a form.
        form_hit "$e" "$(bodyf '%s&a\x00b=1' "$(<"$(form_with "$e" "" "")")")"
        assert_problem 400 invalid_json validation_failed
    done
}

@test "malformed form bodies are 400" {
    local e raw
    for e in register login; do
        api POST "$API/auth/$e" --data-binary "email=a%ZZ@example.test&password=vivid%lantern%"
        assert_problem 400
    done
    for e in "${NEW_ENDPOINTS[@]}"; do
        for raw in 'a%ZZb' 'ab%' 'ab%4' '%G0ab' '%%41'; do
            form_hit "$e" "$(form_with "$e" "$(text_field "$e")" "$raw")"
            assert_problem 400
        done
    done
}

# --- fields ------------------------------------------------------------------

@test "missing fields are 400 validation_failed naming the field" {
    hit register application/json "$(bodyf '{"password":"%s"}' "$(unique_password)")"
    assert_problem 400 validation_failed
    assert_field_error email
    hit register application/json "$(bodyf '{"email":"%s"}' "$(unique_email)")"
    assert_problem 400 validation_failed
    assert_field_error password
    hit login application/json "$(bodyf '{"email":"%s"}' "$OWNER_EMAIL")"
    assert_problem 400 validation_failed
    assert_field_error password
    hit login application/json "$(bodyf '{"password":"%s"}' "$OWNER_PASSWORD")"
    assert_problem 400 validation_failed
    assert_field_error email
    api POST "$API/auth/register" --data-urlencode "email=$(unique_email)"
    assert_problem 400 validation_failed
    assert_field_error password
    # The new endpoints: "ENDPOINT FIELD JQ_PROGRAM" (the program turns the
    # valid body into one without FIELD).
    local case e field prog
    local cases=(
        'mfa_verify mfa_token del(.mfa_token)'
        'mfa_verify code del(.code)'
        'mfa_verify code .recovery_code="aaaaa-bbbbb"'
        'totp_enable code del(.code)'
        'totp_disable password del(.password)'
        'totp_disable code del(.code)'
        'totp_disable code .recovery_code="aaaaa-bbbbb"'
        'id_token id_token del(.id_token)'
        'id_token id_token del(.id_token,.nonce)'
    )
    for case in "${cases[@]}"; do
        read -r e field prog <<<"$case"
        hit "$e" application/json "$(json_with "$e" "$prog")"
        assert_problem 400 validation_failed
        assert_field_error "$field"
    done
    # An empty object.
    for e in "${NEW_ENDPOINTS[@]}"; do
        hit "$e" application/json "$(bodyf '{}')"
        assert_problem 400 validation_failed
    done
    # Form bodies.
    api POST "$API/auth/mfa/verify" --data-urlencode "code=123456"
    assert_problem 400 validation_failed
    assert_field_error mfa_token
    api POST "$API/oauth/test/id-token" --data-urlencode "nonce=n-1"
    assert_problem 400 validation_failed
    assert_field_error id_token
}

@test "wrongly typed fields are 400 validation_failed naming the field" {
    local e case field value
    local cases=(
        'register email 42'
        'register email null'
        'register email ["a@example.test"]'
        'register password ["vivid lantern river 1234"]'
        'register password true'
        'register password 123456789012345'
        'register full_name {"first":"A"}'
        'register full_name 42'
        'login email 42'
        'login email {"$gt":""}'
        'login password ["vivid lantern river 1234"]'
        'login password {"$ne":null}'
        'patch full_name 42'
        'patch full_name ["A","B"]'
        'patch full_name {"a":1}'
        'patch full_name true'
        'mfa_verify mfa_token 42'
        'mfa_verify mfa_token null'
        'mfa_verify mfa_token ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]'
        'mfa_verify mfa_token {"$ne":null}'
        'mfa_verify code 123456'
        'mfa_verify code ["123456"]'
        'mfa_verify code {"$ne":null}'
        'mfa_verify code true'
        'totp_enable code 123456'
        'totp_enable code null'
        'totp_enable code ["123456"]'
        'totp_enable code {"$gt":""}'
        'totp_disable password 42'
        'totp_disable password null'
        'totp_disable password {"$ne":null}'
        'totp_disable code 123456'
        'totp_disable code ["123456"]'
        'id_token id_token 42'
        'id_token id_token null'
        'id_token id_token ["a.b.c"]'
        'id_token id_token {"alg":"none"}'
        'id_token nonce 42'
        'id_token nonce ["n-0123456789"]'
        'id_token nonce {"$ne":null}'
    )
    for case in "${cases[@]}"; do
        read -r e field value <<<"$case"
        hit "$e" application/json "$(json_at "$e" "$field" "$value")"
        assert_problem 400 validation_failed
        assert_field_error "$field"
    done
}

@test "an email full of SQL and shell metacharacters is 400 validation_failed" {
    local email
    local emails=(
        "a'; DROP TABLE users;--\$(id)\`x\`@example.test"
        "\"; rm -rf / #@example.test"
        "a@example.test' OR '1'='1"
        "a@example.test; cat /etc/passwd"
        "\$(touch /tmp/af-pwned)@example.test"
        "a@example.test|id"
        "<script>alert(1)</script>@example.test"
        "a@example.test\r\nBcc: victim@example.test"
        "a@example.test\nX-Injected: 1"
    )
    for email in "${emails[@]}"; do
        email=$(printf '%b' "$email")
        register "$email" "$(unique_password)"
        assert_problem 400 validation_failed
        assert_field_error email
        login "$email" "$(unique_password)"
        # API.md fixes only register's answer; login may refuse the address (400)
        # or treat it as unknown (401 invalid_credentials).
        assert_problem "$status_code" validation_failed invalid_credentials
        assert_status 400 401
    done
    [[ ! -e /tmp/af-pwned ]] || fail "a shell ran a metacharacter email"
}

@test "SQL metacharacters in a name are data: stored and returned verbatim" {
    local name="Robert'); DROP TABLE users;-- \$(id) \`id\` \${HOME} %s%n \\\\ \"quoted\""
    local pw email
    pw=$(unique_password)
    email=$(unique_email)
    register "$email" "$pw" "$name"
    assert_status 201
    assert_equal "$(json .full_name)" "$name"
    api_json PATCH "$API/users/me" "$(jq -cn --arg n "$name!" '{full_name: $n}')" -H "Authorization: Bearer $OWNER_TOKEN"
    assert_status 200
    assert_equal "$(json .full_name)" "$name!"
    login "$email" "$pw"
    assert_status 200
}

@test "SQL, shell and header metacharacters in the new endpoints' fields are refused as wrong values" {
    # Each value is a well-formed string: the answer is the one a wrong
    # value of that field gets (an unknown token, a wrong code or password),
    # or for the id-token endpoint the provider's 503 (the token is only
    # looked at with the provider's keys). Never a header of its own.
    local v case e field prog want
    local values=(
        "x'; DROP TABLE users;--"
        "\" OR \"1\"=\"1"
        "\$(touch /tmp/af-pwned)\`id\`"
        "%s%n%x%p"
        "\r\nSet-Cookie: x=y"
        "123456\r\nX-Injected: 1"
        "../../../etc/passwd"
        "<script>alert(1)</script>"
    )
    local cases=(
        'mfa_verify mfa_token .mfa_token=$v 401:invalid_token'
        'mfa_verify code .code=$v 401:invalid_token'
        'mfa_verify recovery_code del(.code)|.recovery_code=$v 401:invalid_token'
        'totp_enable code .code=$v 400:invalid_code'
        'totp_disable password .password=$v 401:invalid_credentials'
        'totp_disable code .code=$v 401:invalid_code'
        'totp_disable recovery_code del(.code)|.recovery_code=$v 401:invalid_code'
        'id_token id_token .id_token=$v 503'
        'id_token nonce .nonce=$v 503'
    )
    for v in "${values[@]}"; do
        v=$(printf '%b' "$v")
        for case in "${cases[@]}"; do
            read -r e field prog want <<<"$case"
            hit "$e" application/json "$(json_with "$e" "$prog" --arg v "$v")"
            if [[ $want == 503 ]]; then
                assert_provider_down
            else
                assert_problem "${want%%:*}" "${want#*:}"
            fi
            [[ -z $(set_cookie x) && -z $(header x-injected) ]] || _af_fail "a value in $field set a header"
        done
    done
    [[ ! -e /tmp/af-pwned ]] || fail "a shell ran a metacharacter value"
}

@test "CR or LF in full_name is 400 validation_failed naming full_name" {
    local e v
    for e in register patch; do
        for v in 'Eve\r\nSet-Cookie: x=y' 'Eve\nAdmin' 'Eve\rAdmin'; do
            hit "$e" application/json "$(json_at "$e" full_name "\"$v\"")"
            assert_problem 400 validation_failed
            assert_field_error full_name
        done
    done
}

@test "an absurdly long email is refused cleanly" {
    local long
    long="$(printf 'a%.0s' {1..1000})@example.test"
    register "$long" "$(unique_password)"
    assert_problem 400 validation_failed
    assert_field_error email
    login "$long" "$(unique_password)"
    assert_status 400 401
    assert_problem "$status_code"
}

@test "over-long values in the new endpoints' fields are 400 validation_failed; at the limit they are served" {
    # "ENDPOINT FIELD LIMIT JQ_PREFIX": FIELD's value LIMIT+1 characters long
    # is refused, LIMIT long served as a wrong value; 10 kB (or twice the
    # limit, when that is more) refused too.
    local case e field n prog long
    local cases=(
        'mfa_verify mfa_token 128 .'
        'mfa_verify code 64 .'
        'mfa_verify recovery_code 64 del(.code)'
        'totp_enable code 64 .'
        'totp_disable password 128 .'
        'totp_disable code 64 .'
        'totp_disable recovery_code 64 del(.code)'
        'id_token id_token 16384 .'
        'id_token nonce 255 .'
    )
    for case in "${cases[@]}"; do
        read -r e field n prog <<<"$case"
        for long in $((n + 1)) $((n < 10240 ? 10240 : 2 * n)); do
            hit "$e" application/json "$(json_with "$e" "$prog | .[\$f] = (\"a\" * \$n)" --arg f "$field" --argjson n "$long")"
            assert_problem 400 validation_failed
            assert_field_error "$field"
        done
        hit "$e" application/json "$(json_with "$e" "$prog | .[\$f] = (\"a\" * \$n)" --arg f "$field" --argjson n "$n")"
        case $e:$field in
        totp_disable:password) assert_problem 401 invalid_credentials ;;
        *) expect_valid "$e" ;;
        esac
    done
}

# --- social login: hostile query strings ---------------------------------------

# oauth_get WHAT QUERY: GET /oauth/test/WHAT?QUERY, the query sent as
# written (curl -g: no globbing; "-": no query at all).
oauth_get() {
    local url="$API/oauth/test/$1"
    [[ $2 == - ]] || url+="?$2"
    api GET "$url" -g "${@:3}"
}

refute_redirect_and_cookie() {
    [[ -z $(header location) ]] || _af_fail "a refused request redirected to '$(header location)'"
    [[ -z $(header set-cookie) ]] || _af_fail "a refused request set a cookie: $(header set-cookie)"
    [[ -z $(header x-injected) ]] || _af_fail "a value in the query became a header"
}

# lighttpd_refusal QUERY: the status lighttpd itself answers a request with
# this query with, before authflow sees it (nothing when it passes it on):
#   431  the request line and headers are over 8 KiB
#        (server.max-request-field-size, 8192 by default);
#   400  once %-decoded, the query holds a control character (%00-%1F, %7F;
#        CR and LF among them: server.http-parseopts url-ctrls-reject) or
#        is not UTF-8 (url-invalid-utf8-reject); lighttpd 1.4.69 does both
#        by default. authflow's own decoding of such a query is the form
#        decoder, which the form-body tests above reach with %FF and %00.
lighttpd_refusal() {
    if ((${#1} > 7900)); then
        echo 431
        return
    fi
    "$AF_PY" -c '
import sys, urllib.parse
b = urllib.parse.unquote_to_bytes(sys.argv[1])
try:
    b.decode("utf-8")
    bad = any(c < 0x20 or c == 0x7f for c in b)
except UnicodeDecodeError:
    bad = True
print(400 if bad else "")' "$1"
}

# assert_get_refused QUERY STATUS CODE [FIELD...]: the refusal of a start or
# callback: authflow's problem STATUS CODE (naming one of the FIELDs, when
# given), or lighttpd's own refusal where lighttpd_refusal says so (its
# HTML page: nothing of authflow's ran); never a Location, never a
# Set-Cookie, never a header made of the query.
assert_get_refused() {
    local q=$1 st=$2 code=$3 own
    shift 3
    own=$(lighttpd_refusal "$q")
    if [[ -n $own && $(header content-type) != application/problem+json* ]]; then
        assert_status "$own"
    else
        assert_problem "$st" "$code"
        (($# == 0)) || assert_some_field_error "$@"
    fi
    refute_redirect_and_cookie
}

long() { printf "${2:-a}%.0s" $(seq "$1"); }

@test "start: a redirect that is not a relative path on this site is 400 naming redirect" {
    local r
    local redirects=(
        'https://evil.example/' 'https%3A%2F%2Fevil.example%2Fx' 'HTTPS://evil.example' 'http://127.0.0.1:9/x'
        'ftp://evil.example/' '//evil.example' '%2F%2Fevil.example' '///evil.example' '/%2Fevil.example'
        '/%5Cevil.example' '%2F%5Cevil.example' '/%5C/evil.example' '%5C%5Cevil.example' '/\evil.example'
        'javascript:alert(1)' 'javascript%3Aalert%281%29' 'JaVaScRiPt:alert(1)' '%20javascript:alert(1)'
        'data:text/html,x' 'evil.example' 'app' '/app+x' '/app%20x' '/app%22%3E%3Cscript%3E' '/app%23frag'
        "/$(long 1024)" "/$(long 7000)" "/$(long 10240)"
    )
    for r in "${redirects[@]}"; do
        oauth_get start "redirect=$r"
        assert_get_refused "redirect=$r" 400 validation_failed redirect
    done
}

@test "start: CR, LF, NUL and other control characters in the query are refused" {
    local q
    local queries=(
        'redirect=%2Fapp%0d%0aSet-Cookie:%20x%3D1' 'redirect=/app%0D%0ALocation:%20https://evil.example'
        'redirect=/app%0aX-Injected:%201' 'redirect=/app%0dx' 'redirect=%0d%0a' 'redirect=/app%09x' 'redirect=/app%7f'
        'redirect=/app%00.evil.example' 'redirect=%00' 'redirect=/app&x%00=1'
        'mode=popup%0d%0aSet-Cookie:%20x=1' 'mode=popup%00' 'redirect=/app&mode=%0a'
    )
    for q in "${queries[@]}"; do
        oauth_get start "$q"
        assert_get_refused "$q" 400 validation_failed redirect mode query
        [[ -z $(set_cookie x) ]] || _af_fail "a value in the query set a cookie"
    done
}

@test "start: invalid UTF-8 in the query is 400" {
    local q
    for q in 'redirect=/app%ff' 'redirect=/%c0%af' 'redirect=/%ed%a0%80' 'redirect=/%e2%82' 'redirect=/%f8%88%80%80%80' \
        'mode=%ff' 'mode=popup%c0' '%ff=1&redirect=/app'; do
        oauth_get start "$q"
        assert_get_refused "$q" 400 validation_failed query redirect mode
    done
}

@test "start: malformed %-escapes in the query are 400" {
    local q
    for q in 'redirect=/app%zz' 'redirect=/app%' 'redirect=/app%4' 'redirect=%' 'redirect%zz=/app' 'redirect=/app&%=x' \
        'redirect=/app%%41' 'mode=%zzpopup' 'redirect=/app&mode=popup%'; do
        oauth_get start "$q"
        assert_get_refused "$q" 400 validation_failed query
    done
}

@test "start: duplicate parameters are 400" {
    local q
    for q in 'redirect=/app&redirect=//evil.example' 'redirect=//evil.example&redirect=/app' 'redirect=/app&redirect=/app' \
        'mode=popup&mode=redirect&redirect=/app' 'redirect=/a&mode=popup&redirect=/b' 'redirect=/app&redirect='; do
        oauth_get start "$q"
        assert_get_refused "$q" 400 validation_failed query redirect
    done
}

@test "start: a mode other than redirect or popup is 400 naming mode" {
    local m
    for m in bogus POPUP Redirect 'popup%20' 'popup;x' 'popup,redirect' 'popup&x' 'window' "$(long 300)" "$(long 7000)" \
        "$(long 10240)"; do
        oauth_get start "redirect=/app&mode=$m"
        # popup&x is mode=popup and an unknown x: well-formed.
        if [[ $m == 'popup&x' ]]; then
            assert_provider_down
            continue
        fi
        assert_get_refused "redirect=/app&mode=$m" 400 validation_failed mode
    done
}

@test "start: a well-formed request is the unreachable provider's 503, nothing set, nowhere sent" {
    local q
    for q in - '' 'redirect=/app' 'redirect=%2Fapp%2Fpage%3Fx%3D1' 'redirect=/app/page?x=1' 'redirect=/app&mode=popup' \
        'mode=redirect' 'redirect=' 'mode=' 'redirect=/app@evil.example' 'redirect=/%2e%2e/app' 'redirect=/app&unknown=1' \
        "redirect=/$(long 1023)" "redirect=/app&x=$(long 7000)"; do
        oauth_get start "$q"
        assert_provider_down
    done
    # Not this provider at all.
    api GET "$API/oauth/nope/start?redirect=/app"
    assert_problem 404 not_found
    refute_redirect_and_cookie
}

@test "callback: hostile state, code, error and iss are refused" {
    local t case q st code fields c
    t=$(fake_mfa_token)
    # "QUERY STATUS CODE FIELDS..." (- for no query). No state here was
    # ever handed out (start never gets past discovery): each is unknown.
    local cases=(
        "state=$t&code=x 401 invalid_token"
        "state=short&code=x 401 invalid_token"
        "state=%00&code=x 400 validation_failed query"
        "state=%ff&code=x 400 validation_failed query"
        "state=a%0d%0ab&code=x 401 invalid_token"
        "state=$t%0d%0aSet-Cookie:%20x%3D1&code=x 401 invalid_token"
        "state=$t&code=%00 400 validation_failed query"
        "state=$t&code=%ff 400 validation_failed query"
        "state=$t&code=x%0d%0aSet-Cookie:%20x%3D1 401 invalid_token"
        "state=$(long 7000)&code=x 401 invalid_token"
        "state=$(long 10240)&code=x 401 invalid_token"
        "state=$t&code=$(long 2000) 401 invalid_token"
        "state=$t&code=$(long 7000) 401 invalid_token"
        "state=$t&code=$(long 10240) 401 invalid_token"
        "state=$t&error=$(long 7000) 401 invalid_token"
        "state=$t&error=$(long 10240) 401 invalid_token"
        "state=$t&code=x&iss=$(long 7000) 401 invalid_token"
        "state=$t&code=x&iss=$(long 10240) 401 invalid_token"
        "state=$t&error=%00 400 validation_failed query"
        "state=$t&error=%ff 400 validation_failed query"
        "state=$t&error=access_denied%0d%0aSet-Cookie:%20x%3D1 401 invalid_token"
        "state=$t&error=access_denied&error_description=%3Cscript%3E 401 invalid_token"
        "state=$t&code=x&iss=%00 400 validation_failed query"
        "state=$t&code=x&iss=%ff 400 validation_failed query"
        "state=$t&code=x&iss=https://evil.example 401 invalid_token"
        "state=$t&code=x&iss=http://127.0.0.1:9%0d%0aX-Injected:%201 401 invalid_token"
        "state=$t&state=$t&code=x 400 validation_failed query"
        "state=$t&code=a&code=b 400 validation_failed query"
        "state=$t&code=x&iss=a&iss=b 400 validation_failed query"
        "state=%zz&code=x 400 validation_failed query"
        "state=$t&code=x% 400 validation_failed query"
        "state=$t&code=x&iss=%4 400 validation_failed query"
        "- 400 validation_failed state code"
        "code=x 400 validation_failed state"
        "state=$t 400 validation_failed code"
        "state=&code= 400 validation_failed state code"
    )
    for case in "${cases[@]}"; do
        read -r q st code fields <<<"$case"
        # shellcheck disable=SC2086 # fields: a list
        oauth_get callback "$q"
        # shellcheck disable=SC2086
        assert_get_refused "$q" "$st" "$code" $fields
        [[ -z $(set_cookie x) ]] || _af_fail "a value in the query set a cookie"
    done
    # A hostile binding cookie changes nothing.
    for c in "af_oauth=$(long 4000)" 'af_oauth=%00' 'af_oauth=a; af_oauth=b' "af_oauth=$t"; do
        oauth_get callback "state=$t&code=x" -H "Cookie: $c"
        assert_get_refused - 401 invalid_token
    done
    # Not this provider at all.
    api GET "$API/oauth/nope/callback?state=$t&code=x"
    assert_problem 404 not_found
    refute_redirect_and_cookie
}

# --- the second factor set to null -------------------------------------------
#
# Last in the table: on a live mfa_token, and on disable, these requests
# have been seen to crash the responder (and with it every auth request
# after them).

@test "a null second factor on an unknown mfa_token is 400 validation_failed" {
    # code: null (or recovery_code: null) and nothing else is no factor at
    # all: API.md's "missing required fields" (400), like an absent one.
    local prog
    for prog in '.code = null' 'del(.code) | .recovery_code = null'; do
        hit mfa_verify application/json "$(json_with mfa_verify "$prog")"
        assert_problem 400 validation_failed
        assert_some_field_error code recovery_code
    done
}

@test "a null second factor on a live mfa_token is 400 validation_failed, never a crash" {
    local prog t
    for prog in '.code = null' 'del(.code) | .recovery_code = null'; do
        # The pending login of an account with TOTP on: the factor is
        # looked at once the mfa_token is known.
        login "$TOTP_ON_EMAIL" "$TOTP_ON_PASSWORD"
        assert_problem 401 mfa_required
        t=$(json .mfa_token)
        remember_secret "$t"
        hit mfa_verify application/json "$(json_with mfa_verify "$prog | .mfa_token = \$t" --arg t "$t")"
        assert_problem 400 validation_failed
        assert_some_field_error code recovery_code
    done
}

@test "a null second factor on disable (TOTP on, right password) is 400 validation_failed, never a crash" {
    local prog
    for prog in '.code = null' 'del(.code) | .recovery_code = null'; do
        hit totp_disable application/json "$(json_with totp_disable "$prog")"
        assert_problem 400 validation_failed
        assert_some_field_error code recovery_code
    done
}

# --- after the table ---------------------------------------------------------

@test "no answer in this file was a 5xx but the unreachable provider's documented 503s" {
    local bad allowed
    # Each 5xx must have been checked, one by one, as the 503 of a
    # well-formed request for the provider (assert_provider_down).
    allowed=$(grep -vE '^503 (POST /api/v1/oauth/test/id-token|GET /api/v1/oauth/test/start([?].*)?)$' \
        "$BATS_FILE_TMPDIR/allowed-5xx" || true)
    [[ -z $allowed ]] || fail "$(printf 'a 5xx other than the provider'"'"'s 503 was let through:\n%s' "$allowed")"
    bad=$(awk 'FNR == NR { ok[$0]++; next }
        /^(5[0-9][0-9]|000) / { if (ok[$0] > 0) ok[$0]--; else print }' \
        "$BATS_FILE_TMPDIR/allowed-5xx" "$BATS_FILE_TMPDIR/statuses")
    [[ -z $bad ]] || fail "$(printf '5xx answers:\n%s' "$bad")"
    grep -q '^503 ' "$BATS_FILE_TMPDIR/allowed-5xx" || fail "no request reached the provider: is [oauth.test] configured?"
}

@test "the responders still serve after the table: register, login, me, patch, second factor, social login" {
    new_account "Still Here"
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .email)" "$EMAIL"
    api_json PATCH "$API/users/me" '{"full_name": "Still Here 2"}' -H "Authorization: Bearer $ACCESS"
    assert_status 200
    login "$OWNER_EMAIL" "$OWNER_PASSWORD"
    assert_status 200
    # The second factor: a whole login with TOTP, and disable's and
    # enable's answers to a wrong code.
    login "$TOTP_ON_EMAIL" "$TOTP_ON_PASSWORD"
    assert_problem 401 mfa_required
    local t out
    t=$(json .mfa_token)
    remember_secret "$t"
    out=$(totp fresh "$TOTP_ON_SECRET" "$TOTP_ON_STEP")
    remember_secret "${out#* }"
    api_json POST "$API/auth/mfa/verify" "$(jq -cn --arg t "$t" --arg c "${out#* }" '{mfa_token: $t, code: $c}')"
    assert_status 200
    assert_token_pair
    remember_pair
    assert_equal "$(jwt_claims "$(json .access_token)" | jq -c .amr)" '["pwd","otp"]'
    hit totp_disable application/json "$(bodyf '%s' "$(valid_body totp_disable)")"
    expect_valid totp_disable
    hit totp_enable application/json "$(bodyf '%s' "$(valid_body totp_enable)")"
    expect_valid totp_enable
    hit mfa_verify application/json "$(bodyf '%s' "$(valid_body mfa_verify)")"
    expect_valid mfa_verify
    # Social login: the provider list, and the provider's 503.
    api GET "$API/oauth/providers"
    assert_status 200
    assert_json 'map(.name) == ["test"]'
    hit id_token application/json "$(bodyf '%s' "$(valid_body id_token)")"
    expect_valid id_token
    oauth_get start 'redirect=/app'
    assert_provider_down
    oauth_get callback "state=$(fake_mfa_token)&code=x"
    assert_get_refused - 401 invalid_token
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
