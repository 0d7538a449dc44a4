#!/usr/bin/env bats
# The password policy through the whole stack (NIST SP 800-63B 5.1.1):
# 12..128 code points, never truncated, any Unicode and spaces, no
# composition rules; common passwords and those built on one, passwords
# made of the account's email or name, sequences and repeats are refused
# with one clear message, wherever a password is set: registration, reset,
# change, admin creation and authflowctl. Login only asks whether a
# password could match.
#
# The stack screens against the source tree's etc/common-passwords.txt
# (tests/stack.sh) with the dictionary check on (the default), and lets
# unverified accounts log in.

# shellcheck disable=SC2016 # jq programs in single quotes

bats_require_minimum_version 1.5.0

load helpers
load mail-helpers

setup_file() {
    af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false AUTHFLOW_MAIL_RETRY_BASE_SECONDS=1
}
teardown_file() { af_stack_down; }

COMMON='^is too common'
CONTEXT='^must not contain your email address, your name'
SIMPLE='^is too simple'
SHORT='^must be at least 12 characters long$'
LONG='^must be at most 128 characters long$'

# 64 code points: spaces, two emoji, a dash and letters outside ASCII.
PASSPHRASE='Grüße aus Köln 🌉 und Zürich, wir träumen vom Meer 🌸 — ça va bien'

# random_password N: N random characters of base64 (N a multiple of 4).
random_password() { head -c $(($1 * 3 / 4)) /dev/urandom | base64 -w0; }

# assert_refused FIELD PATTERN: 400 validation_failed whose first error
# names FIELD with a message matching the extended regex PATTERN.
assert_refused() {
    assert_problem 400 validation_failed
    jq -e --arg f "$1" '.errors[0].field == $f' >/dev/null <<<"$body" ||
        _af_fail "errors[0].field should be '$1'"
    [[ $(json '.errors[0].message') =~ $2 ]] || _af_fail "errors[0].message should match /$2/"
}

# assert_no_user EMAIL: no account holds EMAIL.
assert_no_user() {
    assert_equal "$(sql "SELECT count(*) FROM users WHERE lower(email) = lower(:'e')" e="$1")" 0
}

# register_refused EMAIL PASSWORD PATTERN [FULL_NAME]: registration is
# refused on the password, and no account is made.
register_refused() {
    register "$1" "$2" "${@:4}"
    assert_refused password "$3"
    assert_no_user "$1"
}

# --- registration ------------------------------------------------------------

@test "register: common passwords and ones built on them are refused" {
    local pw
    for pw in password1234 'Password123!' 'P@ssw0rd2024' iloveyou2024 sunshine2023 letmein12345 \
        qwertyuiop12 trustno1trustno1; do
        register_refused "$(unique_email)" "$pw" "$COMMON"
    done
    assert_equal "$(json '.errors[0].message')" 'is too common: it is, or is built on, one of the most used passwords'
}

@test "register: sequences and repeats are refused" {
    local pw
    for pw in 123456789012 abcdefghijklmn aaaaaaaaaaaa '            '; do
        register_refused "$(unique_email)" "$pw" "$SIMPLE"
    done
}

@test "register: the email's local part, with digits or not, and the name are refused" {
    register_refused margarethamilton@example.test margarethamilton "$CONTEXT"
    register_refused margarethamilton@example.test margarethamilton1969 "$CONTEXT"
    register_refused margarethamilton@example.test 'MargaretHamilton!!' "$CONTEXT"
    register_refused margaret.hamilton@example.test 'hamilton to the moon' "$CONTEXT"
    register_refused "$(unique_email)" 'the lovelace engine' "$CONTEXT" "Ada Lovelace"
    register_refused "$(unique_email)" 'my authflow account' "$CONTEXT"
    assert_equal "$(json '.errors[0].message')" \
        'must not contain your email address, your name or the name of this service'
    # The same password is fine for someone else.
    register "$(unique_email)" 'hamilton to the moon'
    assert_status 201
}

@test "register: 11 and 129 characters are refused, 12 and 128 accepted" {
    register_refused "$(unique_email)" 'Vq7#kXz2!mW' "$SHORT"
    register_refused "$(unique_email)" "$(printf 'é%.0s' {1..11})" "$SHORT"
    register_refused "$(unique_email)" "$(random_password 128)x" "$LONG"
    register "$(unique_email)" 'Vq7#kXz2!mWp'
    assert_status 201
    register "$(unique_email)" "$(random_password 128)"
    assert_status 201
}

@test "register: a 64-character passphrase with spaces, emoji and non-ASCII letters is accepted and logs in" {
    assert_equal "$(jq -rn --arg p "$PASSPHRASE" '$p | length')" 64
    local email
    email=$(unique_email)
    register "$email" "$PASSPHRASE" "Zoë Ŝmith"
    assert_status 201
    assert_user_object
    login "$email" "$PASSPHRASE"
    assert_status 200
    assert_token_pair
    # Every character counts.
    login "$email" "${PASSPHRASE% bien} bie"
    assert_problem 401 invalid_credentials
}

@test "a 100-character password is never truncated: its first 72 characters do not log in" {
    local email pw
    email=$(unique_email)
    pw=$(random_password 100)
    assert_equal "${#pw}" 100
    register "$email" "$pw"
    assert_status 201
    login "$email" "${pw:0:72}"
    assert_problem 401 invalid_credentials
    login "$email" "${pw:0:99}"
    assert_problem 401 invalid_credentials
    login "$email" "$pw"
    assert_status 200
}

@test "login asks only whether a password could match, never the policy" {
    new_account
    # A common or short password is a wrong password here, not a malformed one.
    login "$EMAIL" password1234
    assert_problem 401 invalid_credentials
    login "$EMAIL" short
    assert_problem 401 invalid_credentials
}

# --- reset and change --------------------------------------------------------

# reset_with PATTERN PASSWORD: POST /auth/password/reset with $RESET_TOKEN
# is refused on new_password with a message matching PATTERN.
reset_with() {
    remember_secret "$2"
    api_json POST "$API/auth/password/reset" \
        "$(jq -cn --arg t "$RESET_TOKEN" --arg p "$2" '{token: $t, new_password: $p}')"
    assert_refused new_password "$1"
}

@test "password reset: the policy, with the account's email and name" {
    new_account "Dorothy Vaughan"
    api_json POST "$API/auth/password/forgot" "$(jq -cn --arg e "$EMAIL" '{email: $e}')"
    assert_status 202
    mail_wait_kind "$EMAIL" password_reset
    mail_reset_link "$MAIL_FILE"
    remember_secret "$RESET_TOKEN"

    reset_with "$COMMON" password1234
    reset_with "$SIMPLE" 123456789012
    reset_with "$SHORT" 'Vq7#kXz2!mW'
    # Known only from the link's account:
    reset_with "$CONTEXT" "${EMAIL%@*} is my password"
    reset_with "$CONTEXT" 'vaughan at langley'
    # A refused password leaves the link usable.
    local pw
    pw=$(unique_password)
    remember_secret "$pw"
    api_json POST "$API/auth/password/reset" \
        "$(jq -cn --arg t "$RESET_TOKEN" --arg p "$pw" '{token: $t, new_password: $p}')"
    assert_status 204
    login "$EMAIL" "$pw"
    assert_status 200
}

# change_with PATTERN PASSWORD: POST /auth/password/change as $ACCESS,
# from $PASSWORD, is refused on new_password matching PATTERN.
change_with() {
    remember_secret "$2"
    api_json POST "$API/auth/password/change" \
        "$(jq -cn --arg c "$PASSWORD" --arg n "$2" '{current_password: $c, new_password: $n}')" \
        -H "Authorization: Bearer $ACCESS"
    assert_refused new_password "$1"
}

@test "password change: the policy, with the account's email and name" {
    new_account "Dorothy Vaughan"
    change_with "$COMMON" 'Password123!'
    change_with "$LONG" "$(random_password 128)x"
    change_with "$CONTEXT" "${EMAIL%@*} is my password"
    change_with "$CONTEXT" 'vaughan at langley'
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    api_json POST "$API/auth/password/change" \
        "$(jq -cn --arg c "$PASSWORD" --arg n "$PASSPHRASE" '{current_password: $c, new_password: $n}')" \
        -H "Authorization: Bearer $ACCESS"
    assert_status 204
    login "$EMAIL" "$PASSPHRASE"
    assert_status 200
}

# --- administration ----------------------------------------------------------

# admin_create_with PATTERN PASSWORD: POST /admin/users for $NEW_EMAIL,
# "Grace Hopper", as $ADMIN is refused on password matching PATTERN.
admin_create_with() {
    remember_secret "$2"
    api_json POST "$API/admin/users" \
        "$(jq -cn --arg e "$NEW_EMAIL" --arg p "$2" '{email: $e, password: $p, full_name: "Grace Hopper"}')" \
        -H "Authorization: Bearer $ADMIN"
    assert_refused password "$1"
    assert_no_user "$NEW_EMAIL"
}

@test "POST /admin/users: the policy, with the new account's email and name" {
    new_account
    psql -qAtX -c "INSERT INTO user_roles (user_id, role) VALUES ('$USER_ID', 'admin')"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    ADMIN=$ACCESS
    NEW_EMAIL=$(unique_email)
    admin_create_with "$COMMON" password1234
    admin_create_with "$SHORT" 'Vq7#kXz2!mW'
    admin_create_with "$CONTEXT" "${NEW_EMAIL%@*} is my password"
    admin_create_with "$CONTEXT" 'hopper of the navy'
    local pw
    pw=$(unique_password)
    remember_secret "$pw"
    api_json POST "$API/admin/users" \
        "$(jq -cn --arg e "$NEW_EMAIL" --arg p "$pw" '{email: $e, password: $p, full_name: "Grace Hopper"}')" \
        -H "Authorization: Bearer $ADMIN"
    assert_status 201
}

@test "authflowctl user create --password-stdin: the policy, with the email and name" {
    local email pw
    email=$(unique_email)
    for pw in password1234 "${email%@*} is my password" 'hopper of the navy' 123456789012 'Vq7#kXz2!mW'; do
        remember_secret "$pw"
        run --separate-stderr timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" \
            user create "$email" --name "Grace Hopper" --password-stdin <<<"$pw"
        [[ $status == 1 && -z $output ]] || fail "authflowctl should exit 1 for '$pw': $status $output $stderr"
        [[ $stderr =~ ^authflowctl:\ password\ (is\ too|must\ ) ]] ||
            fail "authflowctl should say why the password is refused: $stderr"
        assert_no_user "$email"
    done
    pw=$(unique_password)
    remember_secret "$pw"
    run --separate-stderr timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" \
        user create "$email" --name "Grace Hopper" --password-stdin --verified <<<"$pw"
    [[ $status == 0 && $output =~ $UUID_RE ]] || fail "authflowctl should create the user: $status $output $stderr"
    login "$email" "$pw"
    assert_status 200
}

# --- configuration -----------------------------------------------------------

@test "a missing common-password list stops the programs that set passwords from starting" {
    local prog
    for prog in authflow-auth authflow-admin; do
        run --separate-stderr env AUTHFLOW_PASSWORDS_COMMON_LIST=/nonexistent/common.txt \
            timeout 20 "$AUTHFLOW_BUILDDIR/$prog" </dev/null
        [[ $status != 0 ]] || fail "$prog started without its list"
        [[ $stderr == *"[passwords] common_list: cannot read /nonexistent/common.txt"* ]] ||
            fail "$prog should name the key and the file: $stderr"
    done
    # authflowctl needs it only to create a user with a password.
    run --separate-stderr env AUTHFLOW_PASSWORDS_COMMON_LIST=/nonexistent/common.txt \
        timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" user list
    [[ $status == 0 ]] || fail "authflowctl user list should not need the list: $stderr"
    run --separate-stderr env AUTHFLOW_PASSWORDS_COMMON_LIST=/nonexistent/common.txt \
        timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" \
        user create "$(unique_email)" --password-stdin <<<"$(unique_password)"
    [[ $status == 1 && $stderr == *"[passwords] common_list"* ]] ||
        fail "authflowctl user create should name the missing list: $status $stderr"
}

@test "no password of this file reached a log" {
    assert_logs_free_of_secrets
}
