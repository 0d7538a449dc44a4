#!/usr/bin/env bats
# Mail through the whole stack: registration codes, resend, password reset
# and change, as a user sees them — HTTP to lighttpd, the message read from
# the SMTP sink the stack runs (tests/smtp-sink.py), the outbox via psql.
#
# The stack runs its authflow-mailer with a 1 s retry base; everything else
# (code lifetime, 5 tries, 60 s resend cooldown, verified email required
# for login) is the shipped default.

load helpers
load mail-helpers

setup_file() { af_stack_up AUTHFLOW_MAIL_RETRY_BASE_SECONDS=1; }
teardown_file() { af_stack_down; }

# verify EMAIL CODE: POST /auth/verify-email.
verify() {
    api_json POST "$API/auth/verify-email" "$(jq -cn --arg e "$1" --arg c "$2" '{email: $e, code: $c}')"
}

# resend EMAIL: POST /auth/verify-email/resend.
resend() {
    api_json POST "$API/auth/verify-email/resend" "$(jq -cn --arg e "$1" '{email: $e}')"
}

# forgot EMAIL [curl args...]: POST /auth/password/forgot.
forgot() {
    api_json POST "$API/auth/password/forgot" "$(jq -cn --arg e "$1" '{email: $e}')" "${@:2}"
}

# reset TOKEN NEW_PASSWORD: POST /auth/password/reset.
reset_password() {
    remember_secret "$1" "$2"
    api_json POST "$API/auth/password/reset" "$(jq -cn --arg t "$1" --arg p "$2" '{token: $t, new_password: $p}')"
}

# change_password ACCESS CURRENT NEW: POST /auth/password/change.
change_password() {
    remember_secret "$2" "$3"
    api_json POST "$API/auth/password/change" \
        "$(jq -cn --arg c "$2" --arg n "$3" '{current_password: $c, new_password: $n}')" \
        -H "Authorization: Bearer $1"
}

# verified_account [FULL_NAME]: registers, verifies with the mailed code and
# logs in. Sets EMAIL, PASSWORD, USER_ID, CODE, ACCESS, REFRESH, SESSION_ID.
verified_account() {
    EMAIL=$(unique_email)
    PASSWORD=$(unique_password)
    register "$EMAIL" "$PASSWORD" "$@"
    assert_status 201
    USER_ID=$(json .id)
    mail_wait_kind "$EMAIL" verify_email
    mail_code "$MAIL_FILE"
    verify "$EMAIL" "$CODE"
    assert_status 200
    login "$EMAIL" "$PASSWORD"
    assert_status 200
}

# The fields of a problem that must not tell two cases apart (request ids
# aside). problem_shape_timed leaves out detail too, which may name the
# seconds left.
problem_shape() { jq -cS '{type, title, status, code, detail, keys: keys}' <<<"$body"; }
problem_shape_timed() { jq -cS '{type, title, status, code, keys: keys}' <<<"$body"; }

# reset_base: what a reset link must start with (the configured page).
reset_base() {
    local u
    u=$(conf_get auth reset_url)
    [[ -n $u ]] || u=$(conf_get server public_url)/reset-password
    printf '%s' "$u"
}

# from_addr: the address of [mail] from (default authflow <no-reply@localhost>).
from_addr() {
    local f
    f=$(conf_get mail from)
    [[ -n $f ]] || f='authflow <no-reply@localhost>'
    if [[ $f =~ \<([^\<\>]+)\> ]]; then f=${BASH_REMATCH[1]}; fi
    printf '%s' "$f"
}

# --- registration -------------------------------------------------------------

@test "register: the verification mail arrives with sane headers, and its code verifies the account" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw" "Ada Lovelace"
    assert_status 201
    assert_equal "$(json .email_verified)" false

    # Not verified yet: no login.
    login "$email" "$pw"
    assert_problem 403 email_not_verified

    # The mail, found by its recipient.
    mail_wait_rcpt "$email"
    local f=$MAIL_FILE
    assert_equal "$(mail_count "$email")" 1

    # Headers.
    local from to subject msgid
    from=$(mail_get "$f" header From)
    [[ $from == *"$(from_addr)"* ]] || fail "From is '$from', should carry $(from_addr) ([mail] from)"
    assert_equal "$(mail_get "$f" header-count From)" 1
    to=$(mail_get "$f" to)
    assert_equal "$(grep -c . <<<"$to")" 1
    assert_equal "${to##*$'\t'}" "$email"
    assert_equal "${to%%$'\t'*}" "Ada Lovelace"
    subject=$(mail_get "$f" header Subject)
    [[ -n ${subject//[[:space:]]/} ]] || fail "the message has no Subject"
    assert_equal "$(mail_get "$f" header-count Subject)" 1
    msgid=$(mail_get "$f" header Message-ID)
    [[ $msgid =~ ^\<[^\<\>@[:space:]]+@[^\<\>@[:space:]]+\>$ ]] || fail "Message-ID '$msgid' is not <left@domain>"
    local domain
    domain=$(from_addr)
    domain=${domain##*@}
    [[ ${msgid#*@} == "$domain>" ]] ||
        fail "the Message-ID's domain should be that of [mail] from ($domain): '$msgid'"
    assert_equal "$(mail_get "$f" header-count Message-ID)" 1
    assert_equal "$(mail_get "$f" header-count Date)" 1
    local age
    age=$(mail_get "$f" date-age) || fail "Date '$(mail_get "$f" header Date)' does not parse"
    ((age < 600)) || fail "Date is ${age}s away from now: '$(mail_get "$f" header Date)'"
    assert_equal "$(mail_get "$f" header MIME-Version)" 1.0
    assert_equal "$(mail_get "$f" header Auto-Submitted)" auto-generated
    assert_equal "$(mail_get "$f" nonascii-headers)" ''
    # The body: text/plain UTF-8 quoted-printable, with an HTML alternative
    # (the shipped templates have one).
    local structure
    structure=$(mail_get "$f" structure)
    grep -qx 'text/plain utf-8 quoted-printable' <<<"$structure" ||
        fail "no text/plain UTF-8 quoted-printable part; parts: $structure"
    grep -qx 'multipart/alternative - -' <<<"$structure" ||
        fail "not multipart/alternative; parts: $structure"
    grep -q '^text/html utf-8 ' <<<"$structure" || fail "no text/html part; parts: $structure"

    # The outbox row of this message: same Message-ID, sent, its code erased.
    local mid
    mid=$(mid_of "$msgid")
    assert_equal "$(sql "SELECT kind || ' ' || lower(recipient) FROM mail_outbox WHERE message_id = :'m'" m="$mid")" \
        "verify_email $email"
    _row_sent() { [[ $(sql "SELECT status FROM mail_outbox WHERE message_id = :'m'" m="$1") == sent ]]; }
    wait_until 10 "the outbox row $mid to be marked sent" _row_sent "$mid"
    assert_equal "$(sql "SELECT params IS NULL FROM mail_outbox WHERE message_id = :'m'" m="$mid")" t

    # The code from the mail verifies the account.
    mail_code "$f"
    [[ $(mail_get "$f" html) == *"$CODE"* ]] || fail "the HTML part lacks the code"
    verify "$email" "$CODE"
    assert_status 200
    assert_user_object
    assert_equal "$(json .email_verified)" true
    assert_equal "$(json .email)" "$email"

    login "$email" "$pw"
    assert_status 200
    assert_token_pair
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .email_verified)" true

    # A code works once.
    verify "$email" "$CODE"
    assert_problem 400 invalid_code
}

@test "verify-email: five wrong codes burn the code; then the right code is 400 invalid_code too" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    mail_wait_kind "$email" verify_email
    mail_code "$MAIL_FILE"
    local i wrong
    for i in 1 2 3 4 5; do
        wrong=$(printf '%06d' $(((10#$CODE + i * 7919) % 1000000)))
        verify "$email" "$wrong"
        assert_problem 400 invalid_code
    done
    verify "$email" "$CODE"
    assert_problem 400 invalid_code
    login "$email" "$pw"
    assert_problem 403 email_not_verified
}

@test "verify-email: an unknown email is 400 invalid_code, the same problem as a wrong code" {
    local email
    email=$(unique_email)
    register "$email" "$(unique_password)"
    assert_status 201
    mail_wait_kind "$email" verify_email
    mail_code "$MAIL_FILE"
    local wrong
    wrong=$(printf '%06d' $(((10#$CODE + 1) % 1000000)))
    verify "$email" "$wrong"
    assert_problem 400 invalid_code
    local known
    known=$(problem_shape)
    verify "$(unique_email)" "$wrong"
    assert_problem 400 invalid_code
    assert_equal "$(problem_shape)" "$known"
}

@test "resend: inside the cooldown 429 rate_limited with Retry-After; an unknown email answers alike" {
    local email
    email=$(unique_email)
    register "$email" "$(unique_password)"
    assert_status 201
    # Registration counts as a send.
    resend "$email"
    assert_problem 429 rate_limited
    local ra
    ra=$(header retry-after)
    [[ $ra =~ ^[0-9]+$ ]] && ((ra >= 1 && ra <= 60)) || _af_fail "Retry-After should be 1..60 seconds, is '$ra'"
    local known
    known=$(problem_shape_timed)

    # An unknown address: accepted once, then the same 429.
    local unknown
    unknown=$(unique_email)
    resend "$unknown"
    assert_status 202
    assert_json_response
    assert_equal "$(json -cS .)" '{"status":"accepted"}'
    resend "$unknown"
    assert_problem 429 rate_limited
    ra=$(header retry-after)
    [[ $ra =~ ^[0-9]+$ ]] && ((ra >= 1 && ra <= 60)) || _af_fail "Retry-After should be 1..60 seconds, is '$ra'"
    assert_equal "$(problem_shape_timed)" "$known"

    # One mail for the known address (the registration's), none for the other.
    mail_wait_kind "$email" verify_email
    mail_code "$MAIL_FILE"
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE lower(recipient) = lower(:'e')" e="$email")" 1
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE lower(recipient) = lower(:'e')" e="$unknown")" 0
    assert_equal "$(mail_count "$email")" 1
    assert_equal "$(mail_count "$unknown")" 0
}

# --- password reset -----------------------------------------------------------

@test "forgot -> reset: the mailed link works once, the password changes, every session ends, a notice arrives" {
    verified_account
    local s1_access=$ACCESS s1_refresh=$REFRESH
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    local s2_access=$ACCESS s2_refresh=$REFRESH

    # The link is built from the configuration, never from the request.
    forgot "$EMAIL" -H 'Host: attacker.example.test' -H 'X-Forwarded-Host: attacker.example.test'
    assert_status 202
    assert_equal "$(json -cS .)" '{"status":"accepted"}'
    # At most one reset mail a minute: a second request answers alike and sends nothing.
    forgot "$EMAIL"
    assert_status 202
    assert_equal "$(json -cS .)" '{"status":"accepted"}'

    mail_wait_kind "$EMAIL" password_reset
    mail_reset_link "$MAIL_FILE"
    assert_equal "$RESET_LINK" "$(reset_base)?token=$RESET_TOKEN"
    [[ $RESET_LINK != *attacker* ]] || fail "the reset link follows the request's Host: $RESET_LINK"
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE lower(recipient) = lower(:'e') AND kind = 'password_reset'" e="$EMAIL")" 1

    local newpw
    newpw=$(unique_password)
    reset_password "$RESET_TOKEN" "$newpw"
    assert_status 204
    [[ -z $body ]] || _af_fail "a 204 has no body"

    # Once only.
    reset_password "$RESET_TOKEN" "$(unique_password)"
    assert_problem 400 invalid_token

    login "$EMAIL" "$PASSWORD"
    assert_problem 401 invalid_credentials
    login "$EMAIL" "$newpw"
    assert_status 200
    me "$ACCESS"
    assert_status 200

    # The sessions from before the reset are gone, access and refresh tokens alike.
    me "$s1_access"
    assert_problem 401
    me "$s2_access"
    assert_problem 401
    refresh "$s1_refresh"
    assert_problem 401
    refresh "$s2_refresh"
    assert_problem 401

    # The notice.
    mail_wait_kind "$EMAIL" password_changed
    [[ $(mail_get "$MAIL_FILE" text) != *token=* ]] || fail "the password_changed notice carries a link with a token"
    assert_equal "$(mail_get "$MAIL_FILE" to | cut -f2)" "$EMAIL"
}

@test "reset: an expired, unknown or malformed token is 400 invalid_token; a bad new password is 400 validation_failed" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    # An unverified account may reset its password too.
    forgot "$email"
    assert_status 202
    mail_wait_kind "$email" password_reset
    mail_reset_link "$MAIL_FILE"

    # Too short: refused, and the token is not spent by it.
    reset_password "$RESET_TOKEN" 'short pw 1'
    assert_problem 400 validation_failed

    sql "UPDATE password_resets SET expires_at = now() - interval '1 second'
          WHERE user_id = (SELECT id FROM users WHERE lower(email) = lower(:'e'))" e="$email"
    local newpw
    newpw=$(unique_password)
    reset_password "$RESET_TOKEN" "$newpw"
    assert_problem 400 invalid_token
    login "$email" "$newpw"
    assert_problem 401 invalid_credentials

    reset_password "$(head -c 32 /dev/urandom | b64url_encode)" "$(unique_password)"
    assert_problem 400 invalid_token
    # Malformed: unknown as well (or refused as a bad field).
    local pw2
    pw2=$(unique_password)
    remember_secret "$pw2"
    api_json POST "$API/auth/password/reset" "$(jq -cn --arg p "$pw2" '{token: "not a token", new_password: $p}')"
    assert_problem 400 invalid_token validation_failed
}

@test "forgot: an unknown email gets the same 202 and body as a known one, and no mail" {
    local email unknown known_body known_ct
    email=$(unique_email)
    register "$email" "$(unique_password)"
    assert_status 201
    forgot "$email"
    assert_status 202
    known_body=$(json -cS .)
    known_ct=$(header content-type)

    unknown=$(unique_email)
    forgot "$unknown"
    assert_status 202
    assert_equal "$(json -cS .)" "$known_body"
    assert_equal "$(header content-type)" "$known_ct"

    # The known address gets its link; by then a message for the unknown
    # one, had it been queued, would be in the outbox.
    mail_wait_kind "$email" password_reset
    mail_reset_link "$MAIL_FILE"
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE lower(recipient) = lower(:'e')" e="$unknown")" 0
    assert_equal "$(mail_count "$unknown")" 0
}

# --- password change ----------------------------------------------------------

@test "password change: wrong current password 401; right one 204, other sessions end, this one stays, a notice arrives" {
    verified_account
    local a_access=$ACCESS a_refresh=$REFRESH
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    local b_access=$ACCESS b_refresh=$REFRESH

    local newpw
    newpw=$(unique_password)
    change_password "$a_access" "$(unique_password)" "$newpw"
    assert_problem 401 invalid_credentials
    # Nothing changed.
    me "$b_access"
    assert_status 200

    api_json POST "$API/auth/password/change" \
        "$(jq -cn --arg c "$PASSWORD" --arg n "$newpw" '{current_password: $c, new_password: $n}')"
    assert_problem 401

    change_password "$a_access" "$PASSWORD" "$newpw"
    assert_status 204

    # This session goes on (access and refresh)...
    me "$a_access"
    assert_status 200
    refresh "$a_refresh"
    assert_status 200
    me "$(json .access_token)"
    assert_status 200
    # ...the other one does not.
    me "$b_access"
    assert_problem 401
    refresh "$b_refresh"
    assert_problem 401

    login "$EMAIL" "$PASSWORD"
    assert_problem 401 invalid_credentials
    login "$EMAIL" "$newpw"
    assert_status 200

    mail_wait_kind "$EMAIL" password_changed
    assert_equal "$(mail_get "$MAIL_FILE" to | cut -f2)" "$EMAIL"
}

# --- what a name can do to a message --------------------------------------------

@test "header injection: CR/LF in full_name cannot add a Bcc header or a recipient" {
    local name email
    for name in $'Eve\r\nBcc: x@example.test' $'Eve\nBcc: y@example.test' $'Eve\rBcc: z@example.test'; do
        email=$(unique_email)
        register "$email" "$(unique_password)" "$name"
        if [[ $status_code == 400 ]]; then
            assert_problem 400 validation_failed
            continue
        fi
        assert_status 201
        mail_wait_kind "$email" verify_email
        local f=$MAIL_FILE seq
        seq=${f##*/}
        # No Bcc, and To names the one address.
        assert_equal "$(mail_get "$f" header-count Bcc)" 0
        if grep -qiE '^bcc:' <<<"$(mail_get "$f" raw-headers)"; then
            fail "a Bcc header line reached the message: $(mail_get "$f" raw-headers)"
        fi
        assert_equal "$(mail_get "$f" to | cut -f2)" "$email"
        # One envelope recipient: one index line for the file.
        assert_equal "$(awk -F'\t' -v s="$seq" '$1 == s' "$(mail_index)" | cut -f2)" "$email"
        mail_code "$f"
    done
    # Nothing ever went to the injected addresses.
    assert_equal "$(mail_count x@example.test)" 0
    assert_equal "$(mail_count y@example.test)" 0
    assert_equal "$(mail_count z@example.test)" 0
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE recipient ~* '[xyz]@example\.test'")" 0
}

@test "a Unicode full_name arrives decoded in To (RFC 2047 on the wire)" {
    local email name='Zoë Ŝmith 山田'
    email=$(unique_email)
    register "$email" "$(unique_password)" "$name"
    assert_status 201
    mail_wait_kind "$email" verify_email
    assert_equal "$(mail_get "$MAIL_FILE" to)" "$name"$'\t'"$email"
    # Header lines stay 7-bit: the name is encoded, not sent raw.
    assert_equal "$(mail_get "$MAIL_FILE" nonascii-headers)" ''
    mail_code "$MAIL_FILE"
}

# Keep this last: it checks everything the file sent.
@test "logs: no password, code, reset token or access token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
