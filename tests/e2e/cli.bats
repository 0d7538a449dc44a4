#!/usr/bin/env bats
# authflowctl's user, role and audit commands against a real stack: each
# command's success, its exit statuses (1: the operation failed, 2: wrong
# usage), its --json output (one document on stdout, nothing else), that a
# change made here is what the API answers on the very next request (the
# cached user object dropped, sessions revoked), the audit chain's check
# with a tampered row, and the pruning of old audit rows by cleanup.
#
# The stack requires a verified email for login (the default): users meant
# to log in are created with --verified.

# shellcheck disable=SC2016,SC2030,SC2031,SC2153 # jq programs in single quotes; bats subshells; helpers' globals

bats_require_minimum_version 1.5.0

load helpers
load mail-helpers

setup_file() { af_stack_up; }
teardown_file() { af_stack_down; }

# ---------------------------------------------------------------------------
# Running authflowctl

# ctl ARGS...: authflowctl with the stack's configuration, stdin closed.
# Sets status, output (stdout only) and stderr.
ctl() {
    run --separate-stderr timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" "$@" </dev/null
}

# ctl_pw PASSWORD ARGS...: the same with PASSWORD as the line on stdin.
ctl_pw() {
    local pw=$1
    shift
    remember_secret "$pw"
    run --separate-stderr timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" "$@" <<<"$pw"
}

_ctl_fail() {
    fail "$(printf '%s\n--- exit status: %s\n--- stdout:\n%s\n--- stderr:\n%s' "$1" "$status" "$output" "$stderr")"
}

# assert_ctl STATUS [PATTERN]: the last ctl exited STATUS. On failure (1)
# stdout is empty and stderr has a line "authflowctl: ..." (matching the
# extended regex PATTERN, when given); on wrong usage (2) stdout is empty
# and stderr has an "authflowctl: " or "usage: " line.
assert_ctl() {
    [[ $status == "$1" ]] || _ctl_fail "authflowctl should exit $1"
    case $1 in
    0) return 0 ;;
    1) grep -q '^authflowctl: ' <<<"$stderr" || _ctl_fail "stderr should have a line starting 'authflowctl: '" ;;
    2) grep -qE '^(authflowctl|usage): ' <<<"$stderr" || _ctl_fail "stderr should have a usage or 'authflowctl: ' line" ;;
    esac
    [[ -z $output ]] || _ctl_fail "a failed command prints nothing on stdout"
    if (($# > 1)); then
        grep -E '^authflowctl: ' <<<"$stderr" | grep -qiE "$2" || _ctl_fail "the message should match /$2/"
    fi
}

# assert_one_json [JQ]: exit 0, stdout exactly one JSON document (for
# which JQ holds, when given), stderr empty.
assert_one_json() {
    assert_ctl 0
    [[ $(jq -s length <<<"$output" 2>/dev/null) == 1 ]] || _ctl_fail "stdout should be exactly one JSON document"
    [[ -z $stderr ]] || _ctl_fail "stderr should be empty with --json"
    if (($#)); then
        jq -e "$1" >/dev/null <<<"$output" || _ctl_fail "the JSON should satisfy: $1"
    fi
}

# assert_user_json JSON: JSON is API.md's user object, nothing secret in it
# (the helpers' check, which reads the body of a JSON answer).
assert_user_json() {
    # shellcheck disable=SC2034 # read by assert_user_object
    local body=$1 headers='Content-Type: application/json'
    assert_user_object
}

# ---------------------------------------------------------------------------
# Accounts

# new_user [ARGS...]: a verified user made with authflowctl (role user
# unless ARGS say otherwise). Sets EMAIL, PASSWORD, USER_ID.
new_user() {
    EMAIL=$(unique_email)
    PASSWORD=$(unique_password)
    ctl_pw "$PASSWORD" user create "$EMAIL" --password-stdin --verified "$@"
    assert_ctl 0
    USER_ID=$output
    [[ $USER_ID =~ $UUID_RE ]] || _ctl_fail "user create should print the new id"
}

# logged_in_user [ARGS...]: new_user, then a login. Also sets ACCESS,
# REFRESH, SESSION_ID.
logged_in_user() {
    new_user "$@"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
}

# active_admins: the ids of the enabled users holding the admin role.
active_admins() {
    sql "SELECT u.id FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role = 'admin'
          WHERE NOT u.disabled ORDER BY u.id"
}

# only_admin: a new verified admin, made the last active one (every other
# admin demoted through authflowctl). Sets ADMIN_ID, ADMIN_EMAIL.
only_admin() {
    new_user --role admin
    ADMIN_ID=$USER_ID ADMIN_EMAIL=$EMAIL
    local id
    for id in $(active_admins); do
        [[ $id == "$ADMIN_ID" ]] && continue
        ctl user set-roles "$id" user
        assert_ctl 0
    done
    assert_equal "$(active_admins)" "$ADMIN_ID"
}

# audit_rows TYPE SUBJECT: the detail of the audit rows of TYPE about
# SUBJECT, one JSON object a line, oldest first.
audit_rows() {
    sql "SELECT detail FROM audit_log WHERE type = :'t' AND subject_id = :'s' ORDER BY id" t="$1" s="$2"
}

# ---------------------------------------------------------------------------
# user create

@test "user create: prints the new id; the password logs in; role user by default" {
    EMAIL=$(unique_email)
    PASSWORD=$(unique_password)
    # Mixed case and spaces around: stored normalised.
    ctl_pw "$PASSWORD" user create "  ${EMAIL^^} " --name "Grace Hopper" --password-stdin --verified
    assert_ctl 0
    [[ $output =~ $UUID_RE ]] || _ctl_fail "stdout should be the new id"
    [[ -z $stderr ]] || _ctl_fail "nothing on stderr"
    USER_ID=$output
    ctl user show "$USER_ID" --json
    assert_one_json
    jq -e --arg e "$EMAIL" '.email == $e and .full_name == "Grace Hopper" and .roles == ["user"]
        and .email_verified == true and .disabled == false' <<<"$output" >/dev/null ||
        _ctl_fail "the stored user is not what was asked for"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .id)" "$USER_ID"
    # Its audit row says who acted: nobody, via authflowctl.
    assert_equal "$(sql "SELECT count(*) FROM audit_log WHERE type = 'user_created' AND subject_id = :'s'
                          AND actor_id IS NULL AND detail->>'via' = 'authflowctl'" s="$USER_ID")" 1
}

@test "user create --json: one user object with the roles asked for; the password is only on stdin" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    ctl_pw "$pw" user create "$email" --role admin --role user --role admin --password-stdin --json
    assert_one_json '.roles == ["admin", "user"] and .email_verified == false and .full_name == ""'
    assert_user_json "$output"
    # Only the newline is stripped: a password with spaces at either end is
    # kept whole.
    email=$(unique_email)
    pw="  $(unique_password)  "
    ctl_pw "$pw" user create "$email" --password-stdin --verified
    assert_ctl 0
    login "$email" "$pw"
    assert_status 200
    login "$email" "$(sed 's/^ *//; s/ *$//' <<<"$pw")"
    assert_problem 401 invalid_credentials
}

@test "user create without --password-stdin invites: an invite mail with a link, and no password" {
    local email
    email=$(unique_email)
    ctl user create "$email" --name "Invited Person"
    assert_ctl 0
    local id=$output
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE kind = 'invite' AND recipient = :'e'" e="$email")" 1
    assert_equal "$(sql "SELECT count(*) FROM password_resets WHERE user_id = :'u' AND used_at IS NULL" u="$id")" 1
    assert_equal "$(sql "SELECT password_hash IS NULL FROM users WHERE id = :'u'" u="$id")" t
    assert_equal "$(audit_rows user_created "$id" | jq -r .invited)" true
}

@test "user create: refused input and conflicts" {
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    # Weak password: 1, and no account.
    ctl_pw "short pw" user create "$email" --password-stdin
    assert_ctl 1 'password'
    ctl_pw "" user create "$email" --password-stdin
    assert_ctl 1 'password'
    ctl_pw "$(printf 'x%.0s' {1..129})" user create "$email" --password-stdin
    assert_ctl 1 'password'
    ctl user show "$email"
    assert_ctl 1 'no user'
    # Unknown role: 1, and no account.
    ctl_pw "$pw" user create "$email" --role no-such-role --password-stdin
    assert_ctl 1 "no-such-role"
    ctl user show "$email"
    assert_ctl 1
    # Taken address (in any case): 1.
    ctl_pw "$pw" user create "$email" --password-stdin
    assert_ctl 0
    ctl_pw "$pw" user create "${email^^}" --password-stdin
    assert_ctl 1 'already'
    assert_equal "$(sql "SELECT count(*) FROM users WHERE email = :'e'" e="$email")" 1
    # Usage: 2.
    ctl user create
    assert_ctl 2
    ctl user create "$(unique_email)" "$(unique_email)"
    assert_ctl 2
    ctl user create not-an-address
    assert_ctl 2 'email'
    ctl user create "$(unique_email)" --name "$(printf 'bad\nname')"
    assert_ctl 2 'name'
    ctl user create "$(unique_email)" --frobnicate
    assert_ctl 2
    ctl user create "$(unique_email)" --status active
    assert_ctl 2
    ctl user create "$(unique_email)" --role
    assert_ctl 2
}

# ---------------------------------------------------------------------------
# user list

@test "user list: walks every page; filters by query, role and status; --json is one array" {
    local tag
    tag=$(unique_tag)
    # 450 users: three pages of 200. A third of them verified admins, a
    # third disabled, a third unverified without roles.
    sql "INSERT INTO users (email, full_name, email_verified, disabled)
           SELECT :'tag' || '-' || g || '@example.test', 'Bulk ' || g, g % 3 <> 2, g % 3 = 1
             FROM generate_series(1, 450) g;
         INSERT INTO user_roles (user_id, role)
           SELECT id, 'admin' FROM users WHERE email LIKE :'tag' || '-%' AND NOT disabled AND email_verified;" \
        tag="$tag"

    ctl user list --query "$tag"
    assert_ctl 0
    assert_equal "$(grep -c . <<<"$output")" 450
    # id, email, roles, status; each user once.
    assert_equal "$(awk 'NF == 4' <<<"$output" | grep -c .)" 450
    assert_equal "$(awk '{print $1}' <<<"$output" | sort -u | grep -cE "$UUID_RE")" 450
    assert_equal "$(awk '$3 == "admin" && $4 == "active"' <<<"$output" | grep -c .)" 150
    assert_equal "$(awk '$3 == "-" && $4 == "disabled"' <<<"$output" | grep -c .)" 150
    assert_equal "$(awk '$3 == "-" && $4 == "active,unverified"' <<<"$output" | grep -c .)" 150

    ctl user list --query "${tag^^}" --json
    assert_one_json 'type == "array" and length == 450'
    # Oldest account first, no repeats, the ids of the text output.
    assert_equal "$(jq -r '.[].id' <<<"$output" | sort -u | grep -c .)" 450
    assert_user_json "$(jq '.[0]' <<<"$output")"

    ctl user list --query "$tag" --role admin --json
    assert_one_json 'length == 150 and all(.[]; .roles == ["admin"])'
    ctl user list --query "$tag" --status disabled --json
    assert_one_json 'length == 150 and all(.[]; .disabled)'
    ctl user list --query "$tag" --status unverified --json
    assert_one_json 'length == 150 and all(.[]; .email_verified == false)'
    ctl user list --query "$tag" --status active --json
    assert_one_json 'length == 300 and all(.[]; .disabled == false)'
    ctl user list --query "$tag" --status active
    assert_ctl 0
    assert_equal "$(grep -c . <<<"$output")" 300
    ctl user list --query "$tag-77@" --json
    assert_one_json 'length == 1 and .[0].full_name == "Bulk 77"'
    ctl user list --query "nothing-matches-$tag" --json
    assert_one_json '. == []'
    ctl user list --query "nothing-matches-$tag"
    assert_ctl 0
    [[ -z $output ]] || _ctl_fail "no users: no lines"
}

@test "user list: wrong usage is 2" {
    ctl user list --status sleeping
    assert_ctl 2 'status'
    ctl user list --role admin --role user
    assert_ctl 2
    ctl user list extra
    assert_ctl 2
    ctl user list --password-stdin
    assert_ctl 2
    ctl user list --query
    assert_ctl 2
}

# ---------------------------------------------------------------------------
# user show

@test "user show: by id or email, with the live session count; unknown is 1, garbage is 2" {
    logged_in_user --name "Show Me"
    ctl user show "$USER_ID" --json
    assert_one_json ".session_count == 1 and .full_name == \"Show Me\" and .email == \"$EMAIL\""
    assert_user_json "$output"
    ctl user show "${EMAIL^^}" --json
    assert_one_json ".id == \"$USER_ID\""
    ctl user show "$EMAIL"
    assert_ctl 0
    grep -qE "^id +$USER_ID\$" <<<"$output" || _ctl_fail "the text form should have an id line"
    grep -qE '^roles +user$' <<<"$output" || _ctl_fail "the text form should have a roles line"
    grep -qE '^status +active$' <<<"$output" || _ctl_fail "the text form should have a status line"
    grep -qE '^session_count +1$' <<<"$output" || _ctl_fail "the text form should have the session count"
    # Nothing secret in either form.
    ! grep -qiE 'argon2|password|hash' <<<"$output" || _ctl_fail "user show prints a secret"

    ctl user show "$(cat /proc/sys/kernel/random/uuid)"
    assert_ctl 1 'no user'
    ctl user show "$(unique_email)" --json
    assert_ctl 1 'no user'
    ctl user show not-a-user
    assert_ctl 2
    ctl user show
    assert_ctl 2
    ctl user show "$USER_ID" "$EMAIL"
    assert_ctl 2
}

# ---------------------------------------------------------------------------
# set-name, set-roles, disable, enable, delete

@test "user set-name: GET /users/me shows the new name on the next request" {
    logged_in_user
    # Warm the cached user object first.
    me "$ACCESS"
    assert_status 200
    ctl user set-name "$EMAIL" "Grace Hopper"
    assert_ctl 0
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .full_name)" "Grace Hopper"
    audit_rows user_updated "$USER_ID" | tail -n 1 |
        jq -e '.via == "authflowctl" and .fields == ["full_name"]' >/dev/null ||
        fail "user_updated row: $(audit_rows user_updated "$USER_ID")"
    ctl user set-name "$(unique_email)" "Nobody"
    assert_ctl 1 'no user'
    ctl user set-name "$USER_ID" $'bad\nname'
    assert_ctl 2
    ctl user set-name "$USER_ID"
    assert_ctl 2
    me "$ACCESS"
    assert_equal "$(json .full_name)" "Grace Hopper"
}

@test "user set-roles: the complete set; GET /users/me shows it on the next request" {
    ctl role add "editor-$BATS_TEST_NUMBER" --description "Edits things"
    assert_ctl 0
    logged_in_user
    # Warm the cached user object first.
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json -c .roles)" '["user"]'
    ctl user set-roles "$EMAIL" "editor-$BATS_TEST_NUMBER" user
    assert_ctl 0
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json -c .roles)" "[\"editor-$BATS_TEST_NUMBER\",\"user\"]"
    ctl user set-roles "$USER_ID" "editor-$BATS_TEST_NUMBER"
    assert_ctl 0
    me "$ACCESS"
    assert_equal "$(json -c .roles)" "[\"editor-$BATS_TEST_NUMBER\"]"
    # The audit row: from, to, via authflowctl.
    audit_rows roles_changed "$USER_ID" | tail -n 1 |
        jq -e --arg r "editor-$BATS_TEST_NUMBER" '.via == "authflowctl" and .from == [$r, "user"] and .to == [$r]' >/dev/null ||
        fail "roles_changed row: $(audit_rows roles_changed "$USER_ID")"

    # An unknown role changes nothing.
    ctl user set-roles "$USER_ID" user no-such-role
    assert_ctl 1 'no-such-role'
    me "$ACCESS"
    assert_equal "$(json -c .roles)" "[\"editor-$BATS_TEST_NUMBER\"]"
    ctl user set-roles "$(cat /proc/sys/kernel/random/uuid)" user
    assert_ctl 1 'no user'
    ctl user set-roles "$(unique_email)" user
    assert_ctl 1 'no user'
    ctl user set-roles "$USER_ID"
    assert_ctl 2
    ctl user set-roles
    assert_ctl 2
    ctl user set-roles garbage user
    assert_ctl 2
}

@test "user disable: the old token is refused at once, login is 403 account_disabled; enable lets them back" {
    logged_in_user
    local a1=$ACCESS r1=$REFRESH
    login "$EMAIL" "$PASSWORD" -A "second device"
    local a2=$ACCESS
    me "$a1"
    assert_status 200
    assert_equal "$(json .disabled)" false

    ctl user disable "$EMAIL"
    assert_ctl 0
    me "$a1"
    assert_problem 401
    me "$a2" -A "second device"
    assert_problem 401
    refresh "$r1"
    assert_problem 401
    login "$EMAIL" "$PASSWORD"
    assert_problem 403 account_disabled
    ctl user show "$USER_ID" --json
    assert_one_json '.disabled == true and .session_count == 0'
    ctl user list --query "$EMAIL" --status disabled --json
    assert_one_json "length == 1 and .[0].id == \"$USER_ID\""
    assert_equal "$(audit_rows user_disabled "$USER_ID" | jq -c '[.via, .sessions_revoked]')" '["authflowctl",2]'
    # Twice is fine.
    ctl user disable "$USER_ID"
    assert_ctl 0

    ctl user enable "$USER_ID"
    assert_ctl 0
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .disabled)" false
    # The old sessions stay ended.
    me "$a1"
    assert_problem 401

    ctl user disable "$(cat /proc/sys/kernel/random/uuid)"
    assert_ctl 1 'no user'
    ctl user enable "$(unique_email)"
    assert_ctl 1 'no user'
    ctl user disable
    assert_ctl 2
    ctl user enable "$USER_ID" extra
    assert_ctl 2
    ctl user disable "$USER_ID" --json
    assert_ctl 2
}

@test "user delete: gone at once, tokens refused, personal data off the audit rows" {
    logged_in_user
    local access=$ACCESS refresh_token=$REFRESH
    me "$access"
    assert_status 200
    ctl user delete "$EMAIL"
    assert_ctl 0
    me "$access"
    assert_problem 401
    refresh "$refresh_token"
    assert_problem 401
    login "$EMAIL" "$PASSWORD"
    assert_problem 401 invalid_credentials
    ctl user show "$USER_ID"
    assert_ctl 1 'no user'
    assert_equal "$(sql "SELECT count(*) FROM audit_log WHERE actor_id = :'u' AND (ip IS NOT NULL OR user_agent IS NOT NULL)" u="$USER_ID")" 0
    assert_equal "$(audit_rows user_deleted "$USER_ID" | jq -c '[.via, .sessions_revoked]')" '["authflowctl",1]'
    # The erased addresses do not break the chain.
    ctl audit verify
    assert_ctl 0

    ctl user delete "$USER_ID"
    assert_ctl 1 'no user'
    ctl user delete
    assert_ctl 2
    ctl user delete garbage
    assert_ctl 2
}

@test "the last active admin can be neither demoted, disabled nor deleted (1); with a second admin they can" {
    only_admin
    ctl user set-roles "$ADMIN_ID" user
    assert_ctl 1 'last active admin'
    ctl user disable "$ADMIN_EMAIL"
    assert_ctl 1 'last active admin'
    ctl user delete "$ADMIN_ID"
    assert_ctl 1 'last active admin'
    ctl user show "$ADMIN_ID" --json
    assert_one_json '.roles == ["admin"] and .disabled == false'
    # A disabled admin does not count.
    new_user --role admin
    local second=$USER_ID
    ctl user disable "$second"
    assert_ctl 0
    ctl user set-roles "$ADMIN_ID" user
    assert_ctl 1 'last active admin'

    ctl user enable "$second"
    assert_ctl 0
    ctl user set-roles "$ADMIN_ID" user
    assert_ctl 0
    ctl user delete "$second"
    assert_ctl 1 'last active admin'
    ctl user set-roles "$ADMIN_ID" admin
    assert_ctl 0
    ctl user delete "$second"
    assert_ctl 0
    assert_equal "$(active_admins)" "$ADMIN_ID"
}

# ---------------------------------------------------------------------------
# role add, role list

@test "role add / role list: added roles are listed and usable; a duplicate is 1, a bad name 2" {
    local r=auditor-$RANDOM
    ctl role add "$r" --description "Reads the audit trail"
    assert_ctl 0
    ctl role list
    assert_ctl 0
    grep -qE "^$r 0 Reads the audit trail\$" <<<"$output" || _ctl_fail "role list should show '$r 0 Reads the audit trail'"
    grep -qE '^admin [0-9]+ ' <<<"$output" || _ctl_fail "role list should show admin"
    ctl role list --json
    assert_one_json "type == \"array\" and any(.[]; .name == \"$r\" and .description == \"Reads the audit trail\" and .users == 0)
        and any(.[]; .name == \"user\") and ([.[].name] == ([.[].name] | sort))"
    jq -e "all(.[]; (.created_at | test(\"$TIME_RE\")))" >/dev/null <<<"$output" || _ctl_fail "created_at should be RFC 3339"
    new_user --role "$r"
    ctl role list --json
    assert_one_json "any(.[]; .name == \"$r\" and .users == 1)"
    assert_equal "$(sql "SELECT detail->>'via' FROM audit_log WHERE type = 'role_added' AND detail->>'role' = :'r'" r="$r")" authflowctl

    ctl role add "$r"
    assert_ctl 1 'already exists'
    ctl role add user
    assert_ctl 1 'already exists'
    local bad
    for bad in Editor 1editor "bad role" -editor "$(printf 'r%.0s' {1..64})" ""; do
        ctl role add "$bad"
        assert_ctl 2
    done
    ctl role add "ok-$RANDOM" --description "$(printf 'two\nlines')"
    assert_ctl 2 'description'
    ctl role add
    assert_ctl 2
    ctl role add a b
    assert_ctl 2
    ctl role list extra
    assert_ctl 2
    ctl role remove "$r"
    assert_ctl 2
    ctl role
    assert_ctl 2
}

# ---------------------------------------------------------------------------
# The audit chain

@test "audit verify: intact after activity, in text and JSON" {
    new_user
    ctl user disable "$USER_ID"
    ctl audit verify
    assert_ctl 0
    [[ $output =~ ^audit\ chain\ intact:\ ([0-9]+)\ rows,\ head\ ([0-9]+)\ ([0-9a-f]{64})$ ]] ||
        _ctl_fail "expected 'audit chain intact: N rows, head ID HASH'"
    local rows=${BASH_REMATCH[1]} head=${BASH_REMATCH[2]} hash=${BASH_REMATCH[3]}
    assert_equal "$head $hash" "$(sql "SELECT id || ' ' || encode(hash, 'hex') FROM audit_log ORDER BY seq DESC LIMIT 1")"
    assert_equal "$rows" "$(sql "SELECT count(*) FROM audit_log")"
    ctl audit verify --json
    assert_one_json ".intact == true and .rows == $rows and .head_id == $head and .head_hash == \"$hash\"
        and .bad_id == null and .reason == null"
    ctl audit
    assert_ctl 2
    ctl audit verify extra
    assert_ctl 2
    ctl audit check
    assert_ctl 2
}

@test "audit verify: a changed row is named (exit 1), and so is the row after a removed one" {
    new_user
    ctl user set-roles "$USER_ID" admin user
    assert_ctl 0
    # Sealed from here on.
    ctl audit verify
    assert_ctl 0
    local id
    id=$(sql "SELECT id FROM audit_log WHERE type = 'roles_changed' AND subject_id = :'u'" u="$USER_ID")
    [[ $id =~ ^[0-9]+$ ]] || fail "no roles_changed row for $USER_ID"

    # Tamper with the detail of that row: granted admin? Who says so.
    sql "UPDATE audit_log SET detail = jsonb_set(detail, '{to}', '[\"user\"]') WHERE id = :id" id="$id"
    ctl audit verify
    assert_equal "$status" 1
    [[ $output == "audit chain broken at row $id: "* ]] || _ctl_fail "expected 'audit chain broken at row $id: ...'"
    ctl audit verify --json
    assert_equal "$status" 1
    [[ -z $stderr ]] || _ctl_fail "stderr should be empty with --json"
    jq -e ".intact == false and .bad_id == $id and (.reason | type == \"string\" and length > 0)
        and .head_id == null and .head_hash == null" >/dev/null <<<"$output" || _ctl_fail "bad JSON for a broken chain"
    # Put it back: intact again.
    sql "UPDATE audit_log SET detail = jsonb_set(detail, '{to}', '[\"admin\", \"user\"]') WHERE id = :id" id="$id"
    ctl audit verify
    assert_ctl 0

    # A changed address breaks it too (only a deleted user's may be erased).
    sql "UPDATE audit_log SET ip = '192.0.2.1' WHERE id = :id" id="$id"
    ctl audit verify
    assert_equal "$status" 1
    [[ $output == "audit chain broken at row $id: "* ]] || _ctl_fail "expected 'audit chain broken at row $id: ...'"
    sql "UPDATE audit_log SET ip = NULL WHERE id = :id" id="$id"
    ctl audit verify
    assert_ctl 0

    # A removed row: the next one no longer follows.
    ctl user disable "$USER_ID"
    assert_ctl 0
    ctl audit verify
    assert_ctl 0
    local next
    next=$(sql "SELECT id FROM audit_log WHERE seq > (SELECT seq FROM audit_log WHERE id = :id) ORDER BY seq LIMIT 1" id="$id")
    [[ $next =~ ^[0-9]+$ ]] || fail "no sealed row after row $id"
    sql "CREATE TABLE audit_saved AS SELECT * FROM audit_log WHERE id = :id;
         DELETE FROM audit_log WHERE id = :id" id="$id"
    ctl audit verify
    assert_equal "$status" 1
    [[ $output == "audit chain broken at row $next: "* ]] || _ctl_fail "expected 'audit chain broken at row $next: ...'"
    # Back as it was.
    sql "INSERT INTO audit_log SELECT * FROM audit_saved; DROP TABLE audit_saved"
    ctl audit verify
    assert_ctl 0
}

@test "cleanup prunes audit rows past [cleanup] audit_keep_days in batches; the chain still verifies" {
    local keep old=12000
    keep=$(conf_get cleanup audit_keep_days)
    : "${keep:=365}"
    # Pruning takes the oldest end of the chain; for rows to be old there,
    # the trail starts afresh here (no anchor: the first row follows none).
    # Sealing chains the rows in id order and keeps the time they are given.
    sql "TRUNCATE audit_log; DELETE FROM audit_anchor;
         INSERT INTO audit_log (type, at, detail)
           SELECT 'e2e_old', now() - make_interval(days => :keep + 1) + g * interval '1 second',
                  jsonb_build_object('n', g)
             FROM generate_series(1, :old) g;
         INSERT INTO audit_log (type, at, detail)
           VALUES ('e2e_recent', now() - make_interval(days => :keep - 1), '{}')" keep="$keep" old="$old"
    new_user
    ctl user disable "$USER_ID"
    assert_ctl 0
    local last_old kept
    kept=$(sql "SELECT count(*) FROM audit_log WHERE type <> 'e2e_old'")
    ((kept >= 3)) || fail "expected a recent row, user_created and user_disabled; have $kept rows"
    ctl audit verify
    assert_ctl 0
    [[ $output == "audit chain intact: $((old + kept)) rows, "* ]] || _ctl_fail "all rows should be checked"
    last_old=$(sql "SELECT max(seq) FROM audit_log WHERE type = 'e2e_old'")
    assert_equal "$(sql "SELECT count(*) FROM audit_log WHERE type <> 'e2e_old' AND seq < :s" s="$last_old")" 0

    run timeout 120 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" cleanup
    assert_success
    assert_line "audit_log $old"
    assert_equal "$(sql "SELECT count(*) FROM audit_log WHERE type = 'e2e_old'")" 0
    assert_equal "$(sql "SELECT count(*) FROM audit_log")" "$kept"
    assert_equal "$(sql "SELECT last_seq FROM audit_anchor")" "$last_old"
    ctl audit verify
    assert_ctl 0
    [[ $output == "audit chain intact: $kept rows, "* ]] || _ctl_fail "the rows after the anchor should be checked"

    # Nothing more to prune; new rows chain on.
    run timeout 60 "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" cleanup
    assert_success
    assert_line "audit_log 0"
    ctl user enable "$USER_ID"
    ctl audit verify --json
    assert_one_json ".intact == true and .rows == $((kept + 1))"

    # Taking the first row after the anchor away shows.
    local first second
    first=$(sql "SELECT id FROM audit_log ORDER BY seq LIMIT 1")
    second=$(sql "SELECT id FROM audit_log ORDER BY seq LIMIT 1 OFFSET 1")
    sql "DELETE FROM audit_log WHERE id = :id" id="$first"
    ctl audit verify --json
    assert_equal "$status" 1
    jq -e ".intact == false and .bad_id == $second" >/dev/null <<<"$output" || _ctl_fail "a removed first row should break the chain at the next"
    # Leave an intact trail behind.
    sql "TRUNCATE audit_log; DELETE FROM audit_anchor"
}

# ---------------------------------------------------------------------------
# The database out of reach, wrong usage in general

@test "the database out of reach: every command exits 1 with a message and prints nothing" {
    new_user
    export AUTHFLOW_DATABASE_DSN="host=127.0.0.1 port=1 dbname=authflow user=authflow"
    ctl_pw "$(unique_password)" user create "$(unique_email)" --password-stdin
    assert_ctl 1 'database'
    ctl user create "$(unique_email)" --json
    assert_ctl 1 'database'
    ctl user list --json
    assert_ctl 1 'database'
    ctl user show "$USER_ID" --json
    assert_ctl 1 'database'
    ctl user show "$EMAIL"
    assert_ctl 1 'database'
    ctl user set-roles "$USER_ID" user
    assert_ctl 1 'database'
    ctl user disable "$EMAIL"
    assert_ctl 1 'database'
    ctl user delete "$USER_ID"
    assert_ctl 1 'database'
    ctl role add "down-$RANDOM"
    assert_ctl 1
    ctl role list --json
    assert_ctl 1
    ctl audit verify --json
    assert_ctl 1
    unset AUTHFLOW_DATABASE_DSN
    ctl user show "$USER_ID" --json
    assert_one_json '.disabled == false'
}

@test "wrong usage is 2 and the usage names the new commands" {
    ctl user
    assert_ctl 2
    grep -q 'authflowctl user create' <<<"$stderr" || _ctl_fail "the usage should list user create"
    ctl user frobnicate
    assert_ctl 2
    ctl role
    assert_ctl 2
    run "$AUTHFLOW_BUILDDIR/authflowctl" --help
    assert_success
    local c
    for c in 'user create' 'user list' 'user show' 'user set-roles' 'user disable' 'user delete' \
        'role add' 'role list' 'audit verify'; do
        assert_output --partial "$c"
    done
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
