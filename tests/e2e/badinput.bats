#!/usr/bin/env bats
# Hostile input against POST /auth/register, POST /auth/login and
# PATCH /users/me. Every answer must be a clean 4xx problem+json (never a
# 5xx, never a stack trace), and the responders must keep serving after the
# whole table. Each hostile body is otherwise valid, so an answer of 2xx
# means the defect went unnoticed.

load helpers

setup_file() {
    af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false
    new_account "Table Owner"
    export OWNER_EMAIL=$EMAIL OWNER_PASSWORD=$PASSWORD OWNER_TOKEN=$ACCESS
}
teardown_file() { af_stack_down; }

ENDPOINTS=(register login patch)

# A file holding printf FORMAT ARGS... (bytes exactly; NUL possible).
bodyf() {
    local f
    f=$(mktemp "$BATS_TEST_TMPDIR/body.XXXXXX")
    # shellcheck disable=SC2059
    printf "$@" >"$f"
    printf '%s' "$f"
}

# hit ENDPOINT CONTENT_TYPE FILE [curl args...]: FILE as the body of the
# endpoint's request ("" content type: none at all).
hit() {
    local which=$1 ct=$2 file=$3
    shift 3
    local -a args=(--data-binary "@$file" -H 'Expect:')
    if [[ -n $ct ]]; then args+=(-H "Content-Type: $ct"); else args+=(-H 'Content-Type:'); fi
    case $which in
    register) api POST "$API/auth/register" "${args[@]}" "$@" ;;
    login) api POST "$API/auth/login" "${args[@]}" "$@" ;;
    patch) api PATCH "$API/users/me" -H "Authorization: Bearer $OWNER_TOKEN" "${args[@]}" "$@" ;;
    esac
}

# valid_body ENDPOINT: a JSON object the endpoint accepts, with a spare
# field "x" (null) that tests may replace; printed as jq input.
valid_body() {
    case $1 in
    register) jq -cn --arg e "$(unique_email)" --arg p "$(unique_password)" '{email: $e, password: $p, full_name: "Valid Name", x: null}' ;;
    login) jq -cn --arg e "$OWNER_EMAIL" --arg p "$OWNER_PASSWORD" '{email: $e, password: $p, x: null}' ;;
    patch) jq -cn '{full_name: "Table Owner", x: null}' ;;
    esac
}

# The string field each endpoint takes free text in.
text_field() { case $1 in register | patch) echo full_name ;; login) echo password ;; esac; }

# with_raw ENDPOINT FIELD RAW: the valid body with FIELD's value replaced by
# the raw JSON text RAW (printf escapes in RAW are interpreted by bodyf).
with_raw() {
    local j
    j=$(valid_body "$1" | jq -c --arg f "$2" '.[$f] = "@@RAW@@"')
    # Not ${j/pat/rep}: bash 5.2 gives '&' in a replacement a meaning.
    j="${j%%\"@@RAW@@\"*}$3${j#*\"@@RAW@@\"}"
    bodyf "$(sed 's/%/%%/g' <<<"$j")"
}

# json_at ENDPOINT FIELD JQ_VALUE: valid body with FIELD set to a jq value.
json_at() {
    local j
    j=$(valid_body "$1" | jq -c --arg f "$2" ".[\$f] = ($3)")
    bodyf '%s' "$j"
}

assert_never_5xx() {
    [[ ! $status_code =~ ^5 ]] || _af_fail "a hostile request got a $status_code"
    [[ ! $status_code =~ ^[4] ]] || assert_problem "$status_code"
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
    local e
    for e in register login; do
        api POST "$API/auth/$e" -F "email=$(unique_email)" -F "password=$(unique_password)"
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
    # Exactly at the limit: an ordinary login.
    f=$(mktemp "$BATS_TEST_TMPDIR/big.XXXXXX")
    valid_body login | sed 's/}$/,"pad":"/' | tr -d '\n' >"$f"
    n=$(stat -c %s "$f")
    { head -c $((max - n - 2)) /dev/zero | tr '\0' a; printf '"}'; } >>"$f"
    assert_equal "$(stat -c %s "$f")" "$max"
    hit login application/json "$f"
    assert_status 200
    remember_pair
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
}

@test "an escaped lone surrogate never causes a 5xx" {
    local e field
    for e in "${ENDPOINTS[@]}"; do
        field=$(text_field "$e")
        for raw in '"A \\ud800 B 12345678"' '"A \\udfff B 12345678"' '"A \\ud800\\u0041 B 12345678"'; do
            hit "$e" application/json "$(with_raw "$e" "$field" "$raw")"
            # API.md is silent on escaped surrogates: refusing (400) or
            # accepting is fine, breaking is not.
            assert_never_5xx
        done
    done
}

@test "duplicate keys are 400" {
    local f
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
    # Nested duplicates count too.
    f=$(bodyf '{"full_name":"One","x":{"a":1,"a":2}}')
    hit patch application/json "$f"
    assert_problem 400 invalid_json validation_failed
    # Form bodies as well.
    api POST "$API/auth/login" --data-urlencode "email=$OWNER_EMAIL" --data-urlencode "password=wrong but long enough" \
        --data-urlencode "password=$OWNER_PASSWORD"
    assert_problem 400 invalid_json validation_failed
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
        case $e in register) assert_status 201 ;; *) assert_status 200 ;; esac
        [[ $e != login ]] || remember_pair
    done
}

@test "NUL inside a string is 400" {
    local e field
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
    # %00 in a form body.
    api POST "$API/auth/login" --data-binary "email=$OWNER_EMAIL&password=vivid%00lantern%00river"
    assert_problem 400 invalid_json validation_failed
}

@test "malformed form bodies are 400" {
    local e
    for e in register login; do
        api POST "$API/auth/$e" --data-binary "email=a%ZZ@example.test&password=vivid%lantern%"
        assert_problem 400
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

# --- after the table ---------------------------------------------------------

@test "no answer in this file was a 5xx" {
    local bad
    bad=$(grep -E '^(5[0-9][0-9]|000) ' "$BATS_FILE_TMPDIR/statuses" || true)
    [[ -z $bad ]] || fail "$(printf '5xx answers:\n%s' "$bad")"
}

@test "the responders still serve after the table: register, login, me, patch" {
    new_account "Still Here"
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .email)" "$EMAIL"
    api_json PATCH "$API/users/me" '{"full_name": "Still Here 2"}' -H "Authorization: Bearer $ACCESS"
    assert_status 200
    login "$OWNER_EMAIL" "$OWNER_PASSWORD"
    assert_status 200
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
