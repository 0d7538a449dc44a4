#!/usr/bin/env bats
# The admin group (authflow-admin, /api/v1/admin/) and the audit trail, end
# to end through lighttpd: who may call it, the user list and its keyset
# pagination, creating (with an invitation mail), reading, changing,
# disabling and deleting users, their sessions, the last-admin rule, the
# audit rows every event leaves (seen through GET /admin/audit and
# GET /users/me/activity), no stale reads after a change, and the admin
# endpoints with Redis down.
#
# Written from API.md and the admin decisions, not from the code. The stack
# requires a verified email for login (the default), so that every reason
# of login_failure can be provoked; test accounts are marked verified with
# psql before their first login. An admin is made the way gate.bats does:
# the role inserted with psql before the login that puts it in the token.
#
# Audit rows are told apart by the X-Request-Id a test sends (a fresh UUID,
# echoed into the row's request_id) and by using a fresh user per test.

# shellcheck disable=SC2016,SC2030,SC2031 # jq programs in single quotes; bats subshells

load helpers
load mail-helpers
load redis-helpers

setup_file() { af_stack_up AUTHFLOW_MAIL_RETRY_BASE_SECONDS=1; }
teardown_file() { af_stack_down; }

# What a failed test leaves behind: the background inserter of the
# pagination test stopped, Redis running again.
teardown() {
    if [[ -f $BATS_FILE_TMPDIR/inserter.pid ]]; then
        local pid
        pid=$(<"$BATS_FILE_TMPDIR/inserter.pid")
        touch "$BATS_FILE_TMPDIR/inserter.stop"
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$BATS_FILE_TMPDIR/inserter.pid"
    fi
    if [[ -f $BATS_FILE_TMPDIR/redis-down ]]; then
        redis_start || true
    fi
}

# ---------------------------------------------------------------------------
# Accounts

# rid: a fresh request id (sent as X-Request-Id, echoed into audit rows).
rid() { cat /proc/sys/kernel/random/uuid; }

# new_user [FULL_NAME]: registers, marks the email verified (psql, before
# anything could have cached the account) and logs in. Sets EMAIL,
# PASSWORD, USER_ID, ACCESS, REFRESH, SESSION_ID.
new_user() {
    _new_account false "$@"
}

# new_admin: the same with the admin role. Sets ADMIN,
# ADMIN_ID, ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_SESSION and leaves EMAIL,
# USER_ID, ACCESS... as they were.
new_admin() {
    local e=${EMAIL:-} p=${PASSWORD:-} u=${USER_ID:-} a=${ACCESS:-} r=${REFRESH:-} s=${SESSION_ID:-}
    _new_account true || return 1
    ADMIN=$ACCESS ADMIN_ID=$USER_ID ADMIN_EMAIL=$EMAIL ADMIN_PASSWORD=$PASSWORD ADMIN_SESSION=$SESSION_ID
    EMAIL=$e PASSWORD=$p USER_ID=$u ACCESS=$a REFRESH=$r SESSION_ID=$s
    [[ ,$(jwt_claims "$ADMIN" | jq -r '.roles | join(",")'), == *,admin,* ]] ||
        fail "the admin's token carries no admin role"
}

_new_account() {
    local admin=$1
    shift
    EMAIL=$(unique_email)
    PASSWORD=$(unique_password)
    register "$EMAIL" "$PASSWORD" "$@" || return 1
    assert_status 201 || return 1
    USER_ID=$(json .id)
    sql "UPDATE users SET email_verified = true WHERE id = :'id'" id="$USER_ID" >/dev/null
    if [[ $admin == true ]]; then
        psql -qAtX -c "INSERT INTO user_roles (user_id, role) VALUES ('$USER_ID', 'admin')"
    fi
    login "$EMAIL" "$PASSWORD" || return 1
    assert_status 200 || return 1
}

# only_admin: the current admin ($ADMIN_ID) becomes the only one (every
# other account's admin role removed with psql; those accounts are not used
# again).
only_admin() {
    sql "DELETE FROM user_roles WHERE role = 'admin' AND user_id <> :'a'" a="$ADMIN_ID" >/dev/null
}

active_admins() {
    sql "SELECT count(*) FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role = 'admin' WHERE NOT u.disabled"
}

# ---------------------------------------------------------------------------
# Requests

# adm METHOD PATH [curl args...]: PATH under /admin as $ADMIN.
adm() {
    local method=$1 path=$2
    shift 2
    api "$method" "$API/admin$path" -H "Authorization: Bearer $ADMIN" "$@"
}

# adm_json METHOD PATH JSON [curl args...]
adm_json() {
    local method=$1 path=$2 j=$3
    shift 3
    api_json "$method" "$API/admin$path" "$j" -H "Authorization: Bearer $ADMIN" "$@"
}

# uri VALUE: VALUE percent-encoded for a query string.
uri() { jq -rn --arg v "$1" '$v | @uri'; }

# create_user JSON [curl args...]: POST /admin/users as $ADMIN (the password
# in JSON, if any, is recorded as a secret).
create_user() {
    remember_secret "$(jq -r '.password // empty' <<<"$1")"
    adm_json POST /users "$@"
}

logout() {
    api POST "$API/auth/logout" -H "Authorization: Bearer $1" -H 'Content-Length: 0' "${@:2}"
}

# The user object's fields, on every item of a page.
assert_user_items() {
    assert_json 'type == "object" and (.items | type == "array") and has("next_cursor")
        and (.next_cursor | type == "string" or type == "null")' "a page should be {items, next_cursor}"
    assert_json 'all(.items[]; (.id | type == "string") and (.email | type == "string")
        and (.email_verified | type == "boolean") and has("full_name") and (.roles | type == "array")
        and (.mfa_enabled | type == "boolean") and (.disabled | type == "boolean")
        and (.created_at | type == "string") and (.updated_at | type == "string") and has("last_login_at"))' \
        "every item should be a user object"
    # shellcheck disable=SC2016 # a literal $
    [[ $body != *'$argon2'* ]] || _af_fail "the page carries a password hash"
    assert_json '[.items[] | keys[] | select(test("pass|hash|secret|salt|totp|recovery|token"; "i"))] | length == 0' \
        "the items carry secret-looking fields"
}

# ---------------------------------------------------------------------------
# Audit

# audit_rows RID: the audit_log rows of request RID (psql), a JSON array.
audit_rows() {
    sql "SELECT coalesce(json_agg(json_build_object('type', type, 'actor_id', actor_id,
            'subject_id', subject_id, 'session_id', session_id, 'detail', detail) ORDER BY id), '[]')
         FROM audit_log WHERE request_id = :'r'" r="$1"
}

# audit_find RID QUERY: GET /admin/audit?limit=200&QUERY as $ADMIN; sets
# ROWS to the items of request RID (a JSON array).
audit_find() {
    adm GET "/audit?limit=200${2:+&$2}"
    assert_status 200 || return 1
    assert_no_store || return 1
    assert_audit_items || return 1
    ROWS=$(json -c --arg r "$1" '[.items[] | select(.request_id == $r)]')
}

assert_audit_items() {
    assert_json 'type == "object" and (.items | type == "array") and has("next_cursor")' \
        "an audit page should be {items, next_cursor}"
    assert_json 'all(.items[]; has("id") and has("type") and has("at") and has("actor_id") and has("subject_id")
        and has("session_id") and has("ip") and has("user_agent") and has("request_id") and has("detail"))' \
        "every audit row should carry id, type, at, actor_id, subject_id, session_id, ip, user_agent, request_id, detail"
    assert_json "all(.items[]; (.type | type == \"string\") and (.at | type == \"string\" and test(\"$TIME_RE\"))
        and (.detail | type == \"object\"))" "audit rows: type a string, at RFC 3339 UTC, detail an object"
}

# assert_event RID TYPE ACTOR SUBJECT: request RID left exactly one audit
# row, of TYPE, with that actor and subject (empty: null), and
# GET /admin/audit shows it once, filtered by type and by the subject (and
# by the actor when another). Sets AUDIT_ROW (the row as the API shows it).
assert_event() {
    local rid=$1 type=$2 actor=$3 subject=$4 rows
    rows=$(audit_rows "$rid")
    jq -e --arg t "$type" --arg a "$actor" --arg s "$subject" \
        'length == 1 and .[0].type == $t and (.[0].actor_id // "") == $a and (.[0].subject_id // "") == $s' \
        <<<"$rows" >/dev/null ||
        fail "$(printf 'request %s should leave exactly one audit row {type: %s, actor_id: %s, subject_id: %s}; audit_log holds:\n%s' \
            "$rid" "$type" "${actor:-null}" "${subject:-null}" "$(jq . <<<"$rows")")"
    local who=${subject:-$actor} q="type=$type"
    [[ -z $who ]] || q+="&user_id=$who"
    audit_find "$rid" "$q"
    jq -e 'length == 1' <<<"$ROWS" >/dev/null ||
        _af_fail "GET /admin/audit?$q should show the $type row of request $rid once; it shows $(jq length <<<"$ROWS")"
    AUDIT_ROW=$(jq -c '.[0]' <<<"$ROWS")
    jq -e --arg t "$type" --arg a "$actor" --arg s "$subject" \
        '.type == $t and (.actor_id // "") == $a and (.subject_id // "") == $s' <<<"$AUDIT_ROW" >/dev/null ||
        _af_fail "the $type row of request $rid should have actor_id ${actor:-null}, subject_id ${subject:-null}: $AUDIT_ROW"
    if [[ -n $actor && $actor != "$subject" ]]; then
        audit_find "$rid" "user_id=$actor"
        jq -e 'length == 1' <<<"$ROWS" >/dev/null ||
            _af_fail "GET /admin/audit?user_id=<actor> should show the $type row of request $rid once"
    fi
}

# assert_activity TOKEN TYPE [N] [curl args...]: GET /users/me/activity with
# TOKEN lists N (default 1) events of TYPE. Sets ACT_ROW to the newest.
assert_activity() {
    local tok=$1 type=$2 n=${3:-1}
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $tok" "${@:4}"
    assert_status 200 || return 1
    assert_no_store
    assert_json 'type == "object" and (.items | type == "array") and has("next_cursor")' \
        "the activity should be a page {items, next_cursor}"
    assert_json "all(.items[]; (.type | type == \"string\") and (.at | type == \"string\" and test(\"$TIME_RE\"))
        and has(\"ip\") and has(\"user_agent\") and (.detail | type == \"object\"))" \
        "activity items should carry type, at, ip, user_agent, detail"
    local got
    got=$(json --arg t "$type" '[.items[] | select(.type == $t)] | length')
    [[ $got == "$n" ]] || _af_fail "the activity should list $n $type event(s), lists $got"
    ACT_ROW=$(json -c --arg t "$type" 'first(.items[] | select(.type == $t)) // null')
}

# ===========================================================================
# Who may call the admin group

@test "authorization matrix: all 8 admin endpoints are 401 anonymous, 403 forbidden for a user, 2xx for an admin" {
    new_admin
    new_user "Matrix Target"
    local target=$USER_ID user_token=$ACCESS
    local new_email new_pw create
    new_email=$(unique_email)
    new_pw=$(unique_password)
    remember_secret "$new_pw"
    create=$(jq -cn --arg e "$new_email" --arg p "$new_pw" '{email: $e, password: $p}')
    local -a eps=("GET /users" "POST /users" "GET /users/$target" "PATCH /users/$target"
        "GET /users/$target/sessions" "DELETE /users/$target/sessions" "GET /audit"
        "DELETE /users/$target")
    local ep method path who
    local -a auth
    for who in anonymous user; do
        auth=()
        [[ $who == user ]] && auth=(-H "Authorization: Bearer $user_token")
        for ep in "${eps[@]}"; do
            method=${ep%% *} path=${ep#* }
            case $ep in
            "POST /users") api_json POST "$API/admin/users" "$create" "${auth[@]}" ;;
            PATCH*) api_json PATCH "$API/admin$path" '{"full_name": "Hijacked", "roles": ["admin"]}' "${auth[@]}" ;;
            *) api "$method" "$API/admin$path" "${auth[@]}" ;;
            esac
            if [[ $who == anonymous ]]; then
                assert_problem 401 unauthorized
            else
                assert_problem 403 forbidden
            fi
        done
    done
    # Nothing the refused requests asked for happened.
    assert_equal "$(sql "SELECT count(*) FROM users WHERE email = lower(:'e')" e="$new_email")" 0
    me "$user_token"
    assert_status 200
    assert_equal "$(json .full_name)" "Matrix Target"
    assert_equal "$(json -c .roles)" '["user"]'

    # The admin: every one succeeds (the deletion last).
    for ep in "${eps[@]}"; do
        method=${ep%% *} path=${ep#* }
        case $ep in
        "POST /users")
            adm_json POST /users "$create"
            assert_status 201
            ;;
        PATCH*)
            adm_json PATCH "$path" '{"full_name": "Renamed By Admin"}'
            assert_status 200
            ;;
        "DELETE /users/$target/sessions" | "DELETE /users/$target")
            adm "$method" "$path"
            assert_status 204
            ;;
        *)
            adm "$method" "$path"
            assert_status 200
            assert_json_response
            assert_no_store
            ;;
        esac
    done
}

@test "admin endpoints: a garbage token is 401 invalid_token; unknown paths 404, unknown methods 405" {
    new_admin
    api GET "$API/admin/users" -H "Authorization: Bearer abc.def.ghi"
    assert_problem 401 invalid_token
    # A token whose payload claims the admin role for a user: not signed.
    new_user
    local h p s
    IFS=. read -r h p s <<<"$ACCESS"
    api GET "$API/admin/users" -H "Authorization: Bearer $h.$(jwt_claims "$ACCESS" | jq -c '.roles = ["admin"]' | b64url_encode).$s"
    assert_problem 401 invalid_token
    adm GET /no-such-thing
    assert_problem 404 not_found
    adm PUT "/users/$USER_ID" -H 'Content-Type: application/json' --data-binary '{}'
    assert_problem 405 method_not_allowed
    adm DELETE /audit
    assert_problem 405 method_not_allowed
}

@test "an admin demoted by another admin is refused (403 forbidden) at once with the old token" {
    new_admin
    local a_token=$ADMIN a_id=$ADMIN_ID
    new_admin
    # The first admin's token works (and whatever is cached of it is warm).
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $a_token"
    assert_status 200
    api GET "$API/admin/users/$ADMIN_ID" -H "Authorization: Bearer $a_token"
    assert_status 200

    adm_json PATCH "/users/$a_id" '{"roles": ["user"]}'
    assert_status 200
    assert_user_object
    assert_equal "$(json -c .roles)" '["user"]'
    # The token still says admin; the account no longer is.
    [[ ,$(jwt_claims "$a_token" | jq -r '.roles | join(",")'), == *,admin,* ]]
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $a_token"
    assert_problem 403 forbidden
    api GET "$API/admin/audit" -H "Authorization: Bearer $a_token"
    assert_problem 403 forbidden
    api_json PATCH "$API/admin/users/$a_id" '{"roles": ["user", "admin"]}' -H "Authorization: Bearer $a_token"
    assert_problem 403 forbidden
    assert_equal "$(sql "SELECT count(*) FROM user_roles WHERE user_id = :'u' AND role = 'admin'" u="$a_id")" 0
    # Not a logout: the session itself lives on.
    me "$a_token"
    assert_status 200
    assert_equal "$(json -c .roles)" '["user"]'

    # Given back, the role counts again for the same token.
    adm_json PATCH "/users/$a_id" '{"roles": ["user", "admin"]}'
    assert_status 200
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $a_token"
    assert_status 200
}

@test "the last active admin cannot be demoted, disabled or deleted (409 last_admin), and nothing changes" {
    new_admin
    only_admin
    [[ $(active_admins) == 1 ]] || fail "expected one active admin, found $(active_admins)"
    local r1 r2 r3
    r1=$(rid) r2=$(rid) r3=$(rid)
    adm_json PATCH "/users/$ADMIN_ID" '{"roles": ["user"]}' -H "X-Request-Id: $r1"
    assert_problem 409 last_admin
    adm_json PATCH "/users/$ADMIN_ID" '{"disabled": true}' -H "X-Request-Id: $r2"
    assert_problem 409 last_admin
    adm DELETE "/users/$ADMIN_ID" -H "X-Request-Id: $r3"
    assert_problem 409 last_admin
    # A refused change also changes nothing else it carried.
    adm_json PATCH "/users/$ADMIN_ID" '{"roles": ["user"], "full_name": "Should Not Stick"}'
    assert_problem 409 last_admin
    adm GET "/users/$ADMIN_ID"
    assert_status 200
    assert_json '.roles | index("admin") != null' "the last admin lost the role"
    assert_equal "$(json .disabled)" false
    [[ $(json .full_name) != "Should Not Stick" ]] || _af_fail "a refused PATCH changed full_name"
    assert_equal "$(json .session_count)" 1
    assert_equal "$(sql "SELECT count(*) FROM audit_log WHERE request_id IN (:'a', :'b', :'c')
        AND type IN ('roles_changed', 'user_disabled', 'user_deleted')" a="$r1" b="$r2" c="$r3")" 0
    me "$ADMIN"
    assert_status 200

    # A disabled admin is no active admin: the rule still holds.
    local a_id=$ADMIN_ID a_token=$ADMIN
    new_admin
    local c_id=$ADMIN_ID c_email=$ADMIN_EMAIL c_pw=$ADMIN_PASSWORD
    ADMIN=$a_token ADMIN_ID=$a_id
    adm_json PATCH "/users/$c_id" '{"disabled": true}'
    assert_status 200
    assert_equal "$(json .disabled)" true
    adm_json PATCH "/users/$a_id" '{"roles": ["user"]}'
    assert_problem 409 last_admin
    adm_json PATCH "/users/$a_id" '{"disabled": true}'
    assert_problem 409 last_admin

    # Two active admins: one may demote the other, then the rule holds for the one left.
    adm_json PATCH "/users/$c_id" '{"disabled": false}'
    assert_status 200
    login "$c_email" "$c_pw"
    assert_status 200
    ADMIN=$ACCESS ADMIN_ID=$c_id
    adm_json PATCH "/users/$a_id" '{"roles": ["user"]}'
    assert_status 200
    [[ $(active_admins) == 1 ]] || fail "expected one active admin, found $(active_admins)"
    adm_json PATCH "/users/$c_id" '{"disabled": true}'
    assert_problem 409 last_admin
    adm DELETE "/users/$c_id"
    assert_problem 409 last_admin
    adm_json PATCH "/users/$c_id" '{"roles": ["user"]}'
    assert_problem 409 last_admin
    [[ $(active_admins) == 1 ]] || fail "expected one active admin, found $(active_admins)"
}

@test "two admins demoting each other at the same moment: exactly one wins, an active admin always remains" {
    new_admin
    only_admin
    local round
    for round in 1 2 3 4 5; do
        local a_id=$ADMIN_ID a_token=$ADMIN
        new_admin
        local b_id=$ADMIN_ID b_token=$ADMIN
        local fa="$BATS_TEST_TMPDIR/r$round-a" fb="$BATS_TEST_TMPDIR/r$round-b"
        api_raw "$fa" PATCH "$API/admin/users/$b_id" -H "Authorization: Bearer $a_token" \
            -H 'Content-Type: application/json' --data-binary '{"roles": ["user"]}' &
        local pa=$!
        api_raw "$fb" PATCH "$API/admin/users/$a_id" -H "Authorization: Bearer $b_token" \
            -H 'Content-Type: application/json' --data-binary '{"roles": ["user"]}' &
        local pb=$!
        wait "$pa" || fail "request A failed"
        wait "$pb" || fail "request B failed"
        local ca cb
        ca=$(<"$fa.code") cb=$(<"$fb.code")
        local ok=0
        [[ $ca == 200 ]] && ok=$((ok + 1))
        [[ $cb == 200 ]] && ok=$((ok + 1))
        ((ok == 1)) || fail "round $round: expected exactly one demotion to succeed, got $ca and $cb ($(<"$fa.body") / $(<"$fb.body"))"
        [[ $ca =~ ^(200|403|409)$ && $cb =~ ^(200|403|409)$ ]] ||
            fail "round $round: the losing demotion should be 409 last_admin or 403 forbidden, got $ca and $cb"
        [[ $(active_admins) == 1 ]] || fail "round $round: $(active_admins) active admins left"
        if [[ $ca == 200 ]]; then
            ADMIN=$a_token ADMIN_ID=$a_id
        else
            ADMIN=$b_token ADMIN_ID=$b_id
        fi
        adm GET /users?limit=1
        assert_status 200
    done
}

# ===========================================================================
# GET /admin/users

@test "GET /admin/users: a page of user objects, oldest account first, with next_cursor" {
    new_admin
    new_user "Listed Person"
    adm GET "/users?q=$(uri "$EMAIL")"
    assert_status 200
    assert_json_response
    assert_no_store
    assert_user_items
    assert_json '.items | length == 1'
    assert_json ".items[0].id == \"$USER_ID\" and .items[0].email == \"$EMAIL\" and .items[0].full_name == \"Listed Person\""
    assert_json '.items[0].roles == ["user"] and .items[0].disabled == false and .items[0].email_verified == true'
    assert_json '.next_cursor == null'
    # Oldest first: a full page is in creation order.
    adm GET "/users?limit=200"
    assert_status 200
    assert_user_items
    local ids want
    ids=$(json '.items[].id')
    want=$(sql "SELECT id FROM users ORDER BY created_at, id LIMIT 200")
    assert_equal "$ids" "$want"
}

@test "GET /admin/users: q (email or name, case-insensitive, literal), role and status filters" {
    new_admin
    local tag up
    tag=$(unique_tag)
    up=${tag^^}
    local pw
    pw=$(unique_password)
    # a: verified, enabled; b: unverified; c: verified, disabled;
    # d: the tag in the name only; e/f: names told apart by a literal "_".
    local a b c d e f
    create_user "$(jq -cn --arg e "a-$tag@example.test" --arg p "$pw" '{email: $e, password: $p, email_verified: true}')"
    assert_status 201
    a=$(json .id)
    create_user "$(jq -cn --arg e "b-$tag@example.test" --arg p "$pw" '{email: $e, password: $p, email_verified: false}')"
    assert_status 201
    b=$(json .id)
    create_user "$(jq -cn --arg e "c-$tag@example.test" --arg p "$pw" '{email: $e, password: $p, email_verified: true}')"
    assert_status 201
    c=$(json .id)
    adm_json PATCH "/users/$c" '{"disabled": true}'
    assert_status 200
    create_user "$(jq -cn --arg e "$(unique_email)" --arg n "Dee $up Person" --arg p "$pw" '{email: $e, full_name: $n, password: $p, email_verified: true}')"
    assert_status 201
    d=$(json .id)
    create_user "$(jq -cn --arg e "$(unique_email)" --arg n "ux_${tag}z" --arg p "$pw" '{email: $e, full_name: $n, password: $p, email_verified: true}')"
    assert_status 201
    e=$(json .id)
    create_user "$(jq -cn --arg e "$(unique_email)" --arg n "uxy${tag}z" --arg p "$pw" '{email: $e, full_name: $n, password: $p, email_verified: true}')"
    assert_status 201
    f=$(json .id)

    # listed QUERY: the ids of the (single) page, sorted, space separated.
    listed() {
        adm GET "/users?limit=200&$1"
        assert_status 200
        assert_user_items
        json '[.items[].id] | sort | join(" ")'
    }
    sorted() { printf '%s\n' "$@" | sort | paste -sd' '; }

    assert_equal "$(listed "q=$up")" "$(sorted "$a" "$b" "$c" "$d" "$e" "$f")"
    assert_equal "$(listed "q=$(uri "a-$up@EXAMPLE")")" "$(sorted "$a")"
    assert_equal "$(listed "q=$(uri "dee $tag")")" "$(sorted "$d")"
    # "_" and "%" are characters, not patterns.
    assert_equal "$(listed "q=$(uri "x_$tag")")" "$(sorted "$e")"
    assert_equal "$(listed "q=$(uri "%$tag")")" ""
    assert_equal "$(listed "q=$(uri "u%${tag}z")")" ""
    # status: active (not disabled), disabled, unverified.
    assert_equal "$(listed "q=$tag&status=active")" "$(sorted "$a" "$b" "$d" "$e" "$f")"
    assert_equal "$(listed "q=$tag&status=disabled")" "$(sorted "$c")"
    assert_equal "$(listed "q=$tag&status=unverified")" "$(sorted "$b")"
    # role: a role of the test's own.
    local role="r$tag"
    sql "INSERT INTO roles (name) VALUES (:'r')" r="$role" >/dev/null
    adm_json PATCH "/users/$b" "$(jq -cn --arg r "$role" '{roles: ["user", $r]}')"
    assert_status 200
    assert_equal "$(json -c '.roles | sort')" "$(jq -cn --arg r "$role" '[$r, "user"] | sort')"
    assert_equal "$(listed "role=$role")" "$(sorted "$b")"
    assert_equal "$(listed "role=$role&status=disabled")" ""
    assert_equal "$(listed "q=$tag&role=user&status=unverified")" "$(sorted "$b")"
    assert_equal "$(listed "role=admin&q=$(uri "$ADMIN_EMAIL")")" "$(sorted "$ADMIN_ID")"
    # Another status is refused.
    adm GET "/users?status=deleted"
    assert_problem 400 validation_failed
    adm GET "/users?status=ACTIVE%20"
    assert_problem 400 validation_failed
}

@test "GET /admin/users: limit 1..200 (default 50); other limits, a bad cursor are 400 validation_failed" {
    new_admin
    local tag
    tag=$(unique_tag)
    sql "INSERT INTO users (email) SELECT 'l' || g || '-' || :'t' || '@example.test' FROM generate_series(1, 250) g" \
        t="$tag" >/dev/null
    adm GET /users
    assert_status 200
    assert_user_items
    assert_json '.items | length == 50' "the default page should hold 50 users"
    assert_json '.next_cursor | type == "string" and length > 0'
    local cursor
    cursor=$(json .next_cursor)
    adm GET "/users?limit=200"
    assert_status 200
    assert_json '.items | length == 200'
    adm GET "/users?limit=1"
    assert_status 200
    assert_json '.items | length == 1'
    # The default page's cursor goes on where it ended.
    local first50
    adm GET "/users?limit=51"
    first50=$(json '.items[50].id')
    adm GET "/users?cursor=$(uri "$cursor")"
    assert_status 200
    assert_equal "$(json '.items[0].id')" "$first50"
    local l
    for l in 0 201 -1 abc 1.5 99999999999999999999; do
        adm GET "/users?limit=$(uri "$l")"
        last_request+=" (limit '$l')"
        assert_problem 400 validation_failed
    done
    local c
    for c in garbage "x${cursor}" "${cursor:0:$((${#cursor} / 2))}" 'AAAA' '%00' "$(printf '%s' "$cursor" | rev)"; do
        [[ $c != "$cursor" ]] || continue
        adm GET "/users?cursor=$(uri "$c")"
        last_request+=" (cursor '$c')"
        assert_problem 400 validation_failed
    done
}

@test "GET /admin/users: walking 1,000+ users at limit=37 while users are inserted sees every existing user exactly once, in order" {
    new_admin
    local tag
    tag=$(unique_tag)
    # One statement: a thousand accounts with the same created_at, so the
    # order (and the cursor) must go down to the id.
    sql "INSERT INTO users (email) SELECT 'p' || g || '-' || :'t' || '@example.test' FROM generate_series(1, 1000) g" \
        t="$tag" >/dev/null
    sql "INSERT INTO user_roles (user_id, role) SELECT id, 'user' FROM users WHERE email LIKE 'p%-' || :'t' || '@example.test'" \
        t="$tag" >/dev/null
    local snap=$BATS_TEST_TMPDIR/snapshot seen=$BATS_TEST_TMPDIR/seen
    sql "SELECT id FROM users ORDER BY created_at, id" >"$snap"
    (($(wc -l <"$snap") >= 1000)) || fail "only $(wc -l <"$snap") users before the walk"

    # Meanwhile, users keep arriving: at the end of the order, an hour in the
    # past (a transaction that began earlier and commits late) and tied with
    # an existing account's created_at (anywhere in the middle).
    local stop=$BATS_FILE_TMPDIR/inserter.stop
    rm -f "$stop"
    (
        i=0
        while [[ ! -e $stop ]]; do
            i=$((i + 1))
            psql -qAtX -c "INSERT INTO users (email, created_at) VALUES
                ('bg$i-a-$tag@example.test', now()),
                ('bg$i-b-$tag@example.test', now() - interval '1 hour'),
                ('bg$i-c-$tag@example.test', (SELECT created_at FROM users ORDER BY random() LIMIT 1)),
                ('bg$i-d-$tag@example.test', (SELECT created_at FROM users WHERE email LIKE 'p%-$tag@example.test' LIMIT 1))" \
                >/dev/null 2>&1 || true
            sleep 0.02
        done
    ) </dev/null >/dev/null 2>&1 3>&- &
    local inserter=$!
    echo "$inserter" >"$BATS_FILE_TMPDIR/inserter.pid"

    : >"$seen"
    local cursor='' pages=0 q
    while :; do
        pages=$((pages + 1))
        ((pages <= 200)) || fail "more than 200 pages of 37 (the walk does not end)"
        q="limit=37"
        [[ -z $cursor ]] || q+="&cursor=$(uri "$cursor")"
        adm GET "/users?$q"
        assert_status 200
        assert_user_items
        assert_json '.items | length <= 37' "a page of limit=37 holds more than 37 users"
        json '.items[].id' >>"$seen"
        cursor=$(json '.next_cursor // empty')
        [[ -n $cursor ]] || break
    done
    touch "$stop"
    wait "$inserter" 2>/dev/null || true
    rm -f "$BATS_FILE_TMPDIR/inserter.pid"
    local added
    added=$(sql "SELECT count(*) FROM users WHERE email LIKE 'bg%-' || :'t' || '@example.test'" t="$tag")
    ((added > 0)) || fail "the background inserter added no users during the walk"

    local dups missing
    dups=$(sort "$seen" | uniq -d | head -n 5)
    [[ -z $dups ]] || fail "$(printf 'users listed more than once (of %s pages):\n%s' "$pages" "$dups")"
    missing=$(comm -23 <(sort "$snap") <(sort "$seen"))
    [[ -z $missing ]] ||
        fail "$(printf '%s existing users never listed (of %s, %s pages), e.g.:\n%s' \
            "$(grep -c . <<<"$missing")" "$(wc -l <"$snap")" "$pages" "$(head -n 5 <<<"$missing")")"
    # The walk's order is the accounts' order (created_at, then id), new
    # users included.
    local order
    order=$(sql "SELECT id FROM users ORDER BY created_at, id" | awk 'NR == FNR { s[$1] = 1; next } $1 in s' "$seen" -)
    [[ $order == "$(<"$seen")" ]] || fail "the pages are not in creation order (created_at, then id)"
    echo "# $pages pages, $(wc -l <"$seen") users listed, $added added during the walk" >&3
}

# ===========================================================================
# POST /admin/users

@test "POST /admin/users: 201 user object, email normalised, roles default [user]; the password works" {
    new_admin
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    create_user "$(jq -cn --arg e "  ${email^^}  " --arg p "$pw" '{email: $e, password: $p, full_name: "Grace Hopper", email_verified: true}')"
    assert_status 201
    assert_user_object
    assert_no_store
    assert_equal "$(json .email)" "$email"
    assert_equal "$(json .full_name)" "Grace Hopper"
    assert_equal "$(json -c .roles)" '["user"]'
    assert_equal "$(json .disabled)" false
    assert_equal "$(json .email_verified)" true
    assert_equal "$(json .mfa_enabled)" false
    assert_equal "$(json .last_login_at)" null
    local id
    id=$(json .id)
    login "$email" "$pw"
    assert_status 200
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .id)" "$id"
    assert_equal "$(json -c .roles)" '["user"]'
    # email_verified defaults to false.
    local e2
    e2=$(unique_email)
    create_user "$(jq -cn --arg e "$e2" --arg p "$pw" '{email: $e, password: $p}')"
    assert_status 201
    assert_equal "$(json .email_verified)" false
    assert_equal "$(json .full_name | sed 's/^null$//')" ""
}

@test "POST /admin/users: roles and email_verified are set as given" {
    new_admin
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    create_user "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p, roles: ["admin", "user"], email_verified: true}')"
    assert_status 201
    assert_user_object
    assert_equal "$(json -c '.roles | sort')" '["admin","user"]'
    assert_equal "$(json .email_verified)" true
    login "$email" "$pw"
    assert_status 200
    # The new admin is an admin.
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $ACCESS"
    assert_status 200
}

@test "POST /admin/users: unknown role, bad email, weak password are 400 validation_failed; a taken email 409 email_taken" {
    new_admin
    local email pw
    email=$(unique_email)
    pw=$(unique_password)
    create_user "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p, roles: ["user", "superuser"]}')"
    assert_problem 400 validation_failed
    assert_field_error roles
    create_user "$(jq -cn --arg p "$pw" '{email: "not-an-email", password: $p}')"
    assert_problem 400 validation_failed
    assert_field_error email
    create_user "$(jq -cn --arg p "$pw" '{password: $p}')"
    assert_problem 400 validation_failed
    assert_field_error email
    create_user "$(jq -cn --arg e "$email" '{email: $e, password: "short pw 1"}')"
    assert_problem 400 validation_failed
    assert_field_error password
    create_user "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p, email_verified: "yes"}')"
    assert_problem 400 validation_failed
    # None of these made an account.
    assert_equal "$(sql "SELECT count(*) FROM users WHERE email = :'e'" e="$email")" 0

    create_user "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p}')"
    assert_status 201
    create_user "$(jq -cn --arg e "${email^^}" --arg p "$(unique_password)" '{email: $e, password: $p}')"
    assert_problem 409 email_taken
    # A registered address too.
    new_user
    create_user "$(jq -cn --arg e "$EMAIL" '{email: $e}')"
    assert_problem 409 email_taken

    # Bad bodies are clean 4xx.
    adm POST /users -H 'Content-Type: application/json' --data-binary '{"email": '
    assert_problem 400 invalid_json
    adm POST /users -H 'Content-Type: text/plain' --data-binary 'email=x@example.test'
    assert_problem 415 unsupported_media_type

    # roles is an array: a string is the wrong type (and must not make an admin).
    local e3
    e3=$(unique_email)
    create_user "$(jq -cn --arg e "$e3" --arg p "$pw" '{email: $e, password: $p, roles: "admin"}')"
    assert_problem 400 validation_failed
    assert_equal "$(sql "SELECT count(*) FROM users WHERE email = :'e'" e="$e3")" 0
}

@test "POST /admin/users: a common password is 400 validation_failed, as at registration" {
    new_admin
    local email
    email=$(unique_email)
    create_user "$(jq -cn --arg e "$email" '{email: $e, password: "password1234"}')"
    assert_problem 400 validation_failed
    assert_field_error password
    assert_equal "$(sql "SELECT count(*) FROM users WHERE email = :'e'" e="$email")" 0
}

@test "POST /admin/users without a password: an invite mail whose token sets the password through /auth/password/reset" {
    new_admin
    local email
    email=$(unique_email)
    create_user "$(jq -cn --arg e "$email" '{email: $e, full_name: "Invited Person"}')"
    assert_status 201
    assert_user_object
    local id
    id=$(json .id)
    # No password yet: nothing logs in.
    login "$email" "$(unique_password)"
    assert_problem 401 invalid_credentials

    mail_wait_kind "$email" invite
    mail_reset_link "$MAIL_FILE"
    [[ $RESET_LINK == *"?token=$RESET_TOKEN" ]] || fail "the invitation link has no ?token=: $RESET_LINK"
    local text
    text=$(mail_get "$MAIL_FILE" text)
    [[ -n $text ]] || fail "the invitation has no text part"
    assert_equal "$(mail_get "$MAIL_FILE" to | cut -f2)" "$email"

    local pw
    pw=$(unique_password)
    remember_secret "$pw"
    api_json POST "$API/auth/password/reset" "$(jq -cn --arg t "$RESET_TOKEN" --arg p "$pw" '{token: $t, new_password: $p}')"
    assert_status 204
    login "$email" "$pw"
    assert_status 200
    me "$ACCESS"
    assert_equal "$(json .id)" "$id"
    # Once only.
    api_json POST "$API/auth/password/reset" "$(jq -cn --arg t "$RESET_TOKEN" --arg p "$(unique_password)" '{token: $t, new_password: $p}')"
    assert_problem 400 invalid_token
}

# ===========================================================================
# GET /admin/users/{id}

@test "GET /admin/users/{id}: the user object plus session_count; unknown or malformed id is 404" {
    new_admin
    new_user "Counted Sessions"
    local first=$ACCESS
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    adm GET "/users/$USER_ID"
    assert_status 200
    assert_user_object
    assert_no_store
    assert_equal "$(json .id)" "$USER_ID"
    assert_equal "$(json .email)" "$EMAIL"
    assert_equal "$(json .full_name)" "Counted Sessions"
    assert_equal "$(json .session_count)" 2
    logout "$first"
    assert_status 204
    adm GET "/users/$USER_ID"
    assert_equal "$(json .session_count)" 1
    local bad
    for bad in 00000000-0000-4000-8000-000000000000 not-a-uuid "${USER_ID^^}x" 1 "$USER_ID'"; do
        adm GET "/users/$(uri "$bad")"
        assert_problem 404 not_found
    done
    adm_json PATCH /users/00000000-0000-4000-8000-000000000000 '{"full_name": "Nobody"}'
    assert_problem 404 not_found
    adm DELETE /users/00000000-0000-4000-8000-000000000000
    assert_problem 404 not_found
    adm GET /users/00000000-0000-4000-8000-000000000000/sessions
    assert_problem 404 not_found
    adm DELETE /users/not-a-uuid/sessions
    assert_problem 404 not_found
}

# ===========================================================================
# PATCH /admin/users/{id}

@test "PATCH /admin/users/{id}: full_name, roles and email_verified are changed and read back" {
    new_admin
    new_user "Before Patch"
    local before
    adm GET "/users/$USER_ID"
    before=$(json .updated_at)
    sleep 1
    adm_json PATCH "/users/$USER_ID" '{"full_name": "Ada Lovelace ✓", "email_verified": false}'
    assert_status 200
    assert_user_object
    assert_no_store
    assert_equal "$(json .full_name)" "Ada Lovelace ✓"
    assert_equal "$(json .email_verified)" false
    assert_equal "$(json -c .roles)" '["user"]'
    [[ $(json .updated_at) != "$before" ]] || _af_fail "updated_at did not move"
    adm_json PATCH "/users/$USER_ID" '{"roles": ["admin", "user"], "email_verified": true}'
    assert_status 200
    assert_equal "$(json -c '.roles | sort')" '["admin","user"]'
    assert_equal "$(json .email_verified)" true
    assert_equal "$(json .full_name)" "Ada Lovelace ✓"
    adm GET "/users/$USER_ID"
    assert_equal "$(json -c '.roles | sort')" '["admin","user"]'
    assert_equal "$(json .full_name)" "Ada Lovelace ✓"
    adm_json PATCH "/users/$USER_ID" '{"roles": ["user"]}'
    assert_status 200
    assert_equal "$(json -c .roles)" '["user"]'
    # Fields an admin does not set here are ignored.
    adm_json PATCH "/users/$USER_ID" '{"email": "other@example.test", "mfa_enabled": true, "id": "00000000-0000-4000-8000-000000000000"}'
    assert_status 200
    assert_equal "$(json .email)" "$EMAIL"
    assert_equal "$(json .mfa_enabled)" false
    assert_equal "$(json .id)" "$USER_ID"
}

@test "PATCH /admin/users/{id}: bad values are 400 validation_failed and change nothing" {
    new_admin
    new_user "Unchanged Name"
    local j
    for j in '{"roles": ["user", "superuser"]}' '{"roles": [1]}' '{"disabled": "yes"}' \
        '{"email_verified": 1}' '{"full_name": 42}'; do
        adm_json PATCH "/users/$USER_ID" "$j"
        last_request+=" $j"
        assert_problem 400 validation_failed
    done
    adm_json PATCH "/users/$USER_ID" '{"full_name": "Changed", "roles": ["nope"]}'
    assert_problem 400 validation_failed
    adm_json PATCH "/users/$USER_ID" '{"disabled": '
    assert_problem 400 invalid_json
    adm GET "/users/$USER_ID"
    assert_equal "$(json .full_name)" "Unchanged Name"
    assert_equal "$(json -c .roles)" '["user"]'
    assert_equal "$(json .disabled)" false
    me "$ACCESS"
    assert_status 200
    # roles is an array: a string is the wrong type (and must not make an admin).
    adm_json PATCH "/users/$USER_ID" '{"roles": "admin"}'
    assert_problem 400 validation_failed
    adm GET "/users/$USER_ID"
    assert_equal "$(json -c .roles)" '["user"]'
}

@test "PATCH disabled: true revokes every session at once and login is 403 account_disabled; false allows login again" {
    new_admin
    new_user
    local a1=$ACCESS r1=$REFRESH
    login "$EMAIL" "$PASSWORD" -A "second device"
    local a2=$ACCESS
    me "$a1"
    assert_status 200
    adm_json PATCH "/users/$USER_ID" '{"disabled": true}'
    assert_status 200
    assert_user_object
    assert_equal "$(json .disabled)" true
    me "$a1"
    assert_problem 401
    me "$a2" -A "second device"
    assert_problem 401
    refresh "$r1"
    assert_problem 401
    login "$EMAIL" "$PASSWORD"
    assert_problem 403 account_disabled
    adm GET "/users/$USER_ID"
    assert_equal "$(json .disabled)" true
    assert_equal "$(json .session_count)" 0
    # The admin's own session is untouched.
    adm GET "/users?limit=1"
    assert_status 200

    adm_json PATCH "/users/$USER_ID" '{"disabled": false}'
    assert_status 200
    assert_equal "$(json .disabled)" false
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    me "$ACCESS"
    assert_status 200
    # The old sessions stay revoked.
    me "$a1"
    assert_problem 401
}

# ===========================================================================
# DELETE /admin/users/{id}

@test "DELETE /admin/users/{id}: 204, then 404; the user's tokens are 401 and login fails" {
    new_admin
    new_user
    local a1=$ACCESS r1=$REFRESH
    me "$a1"
    assert_status 200
    adm DELETE "/users/$USER_ID"
    assert_status 204
    [[ -z $body ]] || _af_fail "a 204 has no body"
    adm GET "/users/$USER_ID"
    assert_problem 404 not_found
    adm GET "/users/$USER_ID/sessions"
    assert_problem 404 not_found
    adm DELETE "/users/$USER_ID"
    assert_problem 404 not_found
    me "$a1"
    assert_problem 401
    refresh "$r1"
    assert_problem 401
    login "$EMAIL" "$PASSWORD"
    assert_problem 401 invalid_credentials
    adm GET "/users?q=$(uri "$EMAIL")"
    assert_status 200
    assert_json '.items | length == 0'
}

# ===========================================================================
# Sessions

@test "GET /admin/users/{id}/sessions lists the user's live sessions, none marked current" {
    new_admin
    new_user
    local s1=$SESSION_ID
    login "$EMAIL" "$PASSWORD" -A "device two"
    local s2=$SESSION_ID a2=$ACCESS
    login "$EMAIL" "$PASSWORD" -A "device three"
    local s3=$SESSION_ID
    logout "$ACCESS" -A "device three"
    assert_status 204
    adm GET "/users/$USER_ID/sessions"
    assert_status 200
    assert_json_response
    assert_no_store
    assert_json 'type == "array" and length == 2' "expected the 2 live sessions (one was logged out)"
    assert_json "[.[].id] | sort == ([\"$s1\", \"$s2\"] | sort)"
    assert_json 'all(.[]; .current == false)' "no session is the admin's current one"
    assert_json "all(.[]; (.created_at | test(\"$TIME_RE\")) and (.last_seen_at | test(\"$TIME_RE\"))
        and (.expires_at | test(\"$TIME_RE\")) and (.ip | type == \"string\") and .amr == [\"pwd\"] and has(\"user_agent\"))"
    assert_json ".[] | select(.id == \"$s2\") | .user_agent == \"device two\""
    [[ $body != *"$s3"* ]] || _af_fail "a logged-out session is listed"
    # The same fields as the user's own view.
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $a2" -A "device two"
    assert_status 200
    local own
    own=$(json -c '[.[] | keys] | add | unique | sort')
    adm GET "/users/$USER_ID/sessions"
    assert_equal "$(json -c '[.[] | keys] | add | unique | sort')" "$own"
    # The admin's own sessions are not in another user's list.
    [[ $body != *"$ADMIN_SESSION"* ]] || _af_fail "the admin's session is listed for the user"
}

@test "DELETE /admin/users/{id}/sessions revokes every session of the user at once, and no one else's" {
    new_user
    local other=$ACCESS
    new_admin
    new_user
    local a1=$ACCESS r1=$REFRESH
    login "$EMAIL" "$PASSWORD" -A "device two"
    local a2=$ACCESS
    me "$a1"
    assert_status 200
    adm DELETE "/users/$USER_ID/sessions"
    assert_status 204
    [[ -z $body ]] || _af_fail "a 204 has no body"
    me "$a1"
    assert_problem 401
    me "$a2" -A "device two"
    assert_problem 401
    refresh "$r1"
    assert_problem 401
    adm GET "/users/$USER_ID/sessions"
    assert_status 200
    assert_json 'length == 0'
    adm GET "/users/$USER_ID"
    assert_equal "$(json .session_count)" 0
    assert_equal "$(json .disabled)" false
    me "$other"
    assert_status 200
    adm GET "/users?limit=1"
    assert_status 200
    # Not disabled: the user logs in again.
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    # With no live session it is still 204.
    adm DELETE "/users/$USER_ID/sessions"
    assert_status 204
    adm DELETE "/users/$USER_ID/sessions"
    assert_status 204
}

# ===========================================================================
# The audit API

@test "GET /admin/audit: every field, newest first; user_id matches actor or subject; type filters" {
    new_admin
    new_user
    local r1 r2 r3
    r1=$(rid) r2=$(rid) r3=$(rid)
    adm GET "/users/$USER_ID" -H "X-Request-Id: $r1"
    assert_status 200
    adm_json PATCH "/users/$USER_ID" '{"full_name": "Audited"}' -H "X-Request-Id: $r2"
    assert_status 200
    adm GET "/users/$USER_ID" -H "X-Request-Id: $r3"
    assert_status 200

    adm GET "/audit?user_id=$USER_ID"
    assert_status 200
    assert_json_response
    assert_no_store
    assert_audit_items
    assert_json "all(.items[]; .actor_id == \"$USER_ID\" or .subject_id == \"$USER_ID\")" \
        "user_id should select rows where the user is actor or subject"
    # Newest first.
    assert_equal "$(json -c --arg a "$r1" --arg b "$r2" --arg c "$r3" \
        '[.items[] | .request_id | select(. == $a or . == $b or . == $c)]')" "[\"$r3\",\"$r2\",\"$r1\"]"
    local row
    row=$(json -c --arg r "$r2" 'first(.items[] | select(.request_id == $r))')
    jq -e --arg a "$ADMIN_ID" --arg s "$USER_ID" '.type == "user_updated" and .actor_id == $a and .subject_id == $s
        and (.ip | type == "string" and length > 0) and (.user_agent | type == "string")' <<<"$row" >/dev/null ||
        _af_fail "the user_updated row is wrong: $row"
    # The register and login rows of the user are there too, oldest last.
    assert_json '[.items[].type] | index("register") != null and index("login") != null'
    assert_json '.items[-1].type == "register"' "the oldest row of a new user should be its register row"

    # The actor's side.
    adm GET "/audit?user_id=$ADMIN_ID&limit=200"
    assert_status 200
    assert_json "all(.items[]; .actor_id == \"$ADMIN_ID\" or .subject_id == \"$ADMIN_ID\")"
    assert_json "[.items[].request_id] | index(\"$r1\") != null and index(\"$r2\") != null" \
        "the rows where the admin is the actor should be listed"

    # type.
    adm GET "/audit?user_id=$USER_ID&type=admin_user_read"
    assert_status 200
    assert_json 'all(.items[]; .type == "admin_user_read")'
    assert_equal "$(json -c '[.items[].request_id]')" "[\"$r3\",\"$r1\"]"
    adm GET "/audit?type=user_updated&limit=200"
    assert_status 200
    assert_json 'all(.items[]; .type == "user_updated")'
    assert_json "[.items[].request_id] | index(\"$r2\") != null"
}

@test "GET /admin/audit: limit and cursor walk the rows once each; a bad limit or cursor is 400 validation_failed" {
    new_admin
    new_user
    local i
    for i in 1 2 3 4 5 6; do
        adm GET "/users/$USER_ID"
        assert_status 200
    done
    adm GET "/audit?user_id=$USER_ID&limit=200"
    assert_status 200
    local all
    all=$(json -c '[.items[].id]')
    (($(jq length <<<"$all") >= 8)) || fail "expected at least 8 rows about the user, got $all"
    local cursor='' got='[]' pages=0 q
    while :; do
        pages=$((pages + 1))
        ((pages <= 20)) || fail "the walk does not end"
        q="user_id=$USER_ID&limit=3"
        [[ -z $cursor ]] || q+="&cursor=$(uri "$cursor")"
        adm GET "/audit?$q"
        assert_status 200
        assert_audit_items
        assert_json '.items | length <= 3'
        got=$(jq -c --argjson p "$(json -c '[.items[].id]')" '. + $p' <<<"$got")
        cursor=$(json '.next_cursor // empty')
        [[ -n $cursor ]] || break
    done
    assert_equal "$got" "$all"
    adm GET "/audit?limit=1"
    assert_status 200
    assert_json '.items | length == 1'
    local l
    for l in 0 201 -3 x; do
        adm GET "/audit?limit=$l"
        assert_problem 400 validation_failed
    done
    adm GET "/audit?cursor=garbage"
    assert_problem 400 validation_failed
}

@test "GET /users/me/activity: the caller's own events only, newest first, with type, at, ip, user_agent, detail" {
    new_admin
    local tag
    tag=$(unique_tag)
    # A's requests carry a user agent of their own: it must not show in
    # anyone else's activity.
    local ua_a="agent-a-$tag"
    EMAIL=$(unique_email) PASSWORD=$(unique_password)
    register "$EMAIL" "$PASSWORD" "Person A"
    assert_status 201
    local a_id a_email=$EMAIL a_pw=$PASSWORD
    a_id=$(json .id)
    sql "UPDATE users SET email_verified = true WHERE id = :'id'" id="$a_id" >/dev/null
    login "$a_email" "$a_pw" -A "$ua_a"
    assert_status 200
    local a_token=$ACCESS
    login "$a_email" "$(unique_password)" -A "$ua_a"
    assert_problem 401 invalid_credentials
    adm GET "/users/$a_id"
    assert_status 200
    new_user "Person B"
    local b_token=$ACCESS

    api GET "$API/users/me/activity" -H "Authorization: Bearer $a_token" -A "$ua_a"
    assert_status 200
    assert_no_store
    assert_json 'type == "object" and (.items | type == "array") and has("next_cursor")'
    assert_json "all(.items[]; (.type | type == \"string\") and (.at | test(\"$TIME_RE\")) and has(\"ip\")
        and has(\"user_agent\") and (.detail | type == \"object\"))"
    # Newest first: the admin's read, the failed login, the login, the registration.
    assert_equal "$(json -c '[.items[].type]')" '["admin_user_read","login_failure","login","register"]'
    assert_json ".items[2].user_agent == \"$ua_a\""
    [[ $body != *'$argon2'* ]] || _af_fail "A's activity carries a hash"

    api GET "$API/users/me/activity" -H "Authorization: Bearer $b_token"
    assert_status 200
    assert_equal "$(json -c '[.items[].type]')" '["login","register"]'
    [[ $body != *"$ua_a"* ]] || _af_fail "B's activity shows A's events"
    # The admin acted on A, but A's events are not the admin's.
    api GET "$API/users/me/activity" -H "Authorization: Bearer $ADMIN"
    assert_status 200
    assert_equal "$(json -c '[.items[].type]')" '["login","register"]'
    [[ $body != *"$ua_a"* ]] || _af_fail "the admin's activity shows A's events"
    # A page at a time.
    api GET "$API/users/me/activity?limit=1" -H "Authorization: Bearer $a_token" -A "$ua_a"
    assert_status 200
    assert_json '.items | length == 1 and .[0].type == "admin_user_read"'
    local c
    c=$(json .next_cursor)
    api GET "$API/users/me/activity?limit=1&cursor=$(uri "$c")" -H "Authorization: Bearer $a_token" -A "$ua_a"
    assert_status 200
    assert_json '.items | length == 1 and .[0].type == "login_failure"'
    api GET "$API/users/me/activity"
    assert_problem 401 unauthorized
}

# ===========================================================================
# One audit row per event, with the right actor and subject, seen through
# both endpoints

@test "audit: register" {
    new_admin
    local r email pw
    r=$(rid) email=$(unique_email) pw=$(unique_password)
    remember_secret "$pw"
    api_json POST "$API/auth/register" "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p}')" \
        -H "X-Request-Id: $r"
    assert_status 201
    local id
    id=$(json .id)
    assert_event "$r" register "$id" "$id"
    jq -e '.ip | type == "string" and length > 0' <<<"$AUDIT_ROW" >/dev/null || fail "no ip on the register row: $AUDIT_ROW"
    sql "UPDATE users SET email_verified = true WHERE id = :'id'" id="$id" >/dev/null
    login "$email" "$pw"
    assert_status 200
    assert_activity "$ACCESS" register
}

@test "audit: email_verified" {
    new_admin
    local email pw
    email=$(unique_email) pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    local id r
    id=$(json .id)
    mail_wait_kind "$email" verify_email
    mail_code "$MAIL_FILE"
    r=$(rid)
    api_json POST "$API/auth/verify-email" "$(jq -cn --arg e "$email" --arg c "$CODE" '{email: $e, code: $c}')" \
        -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" email_verified "$id" "$id"
    login "$email" "$pw"
    assert_status 200
    assert_activity "$ACCESS" email_verified
}

@test "audit: login" {
    new_admin
    new_user
    local r
    r=$(rid)
    login "$EMAIL" "$PASSWORD" -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" login "$USER_ID" "$USER_ID"
    jq -e --arg s "$SESSION_ID" '.session_id == $s' <<<"$AUDIT_ROW" >/dev/null ||
        fail "the login row should name the new session $SESSION_ID: $AUDIT_ROW"
    # new_user logged in once before.
    assert_activity "$ACCESS" login 2
}

@test "audit: login_failure (wrong_password)" {
    new_admin
    new_user
    local r token=$ACCESS
    r=$(rid)
    login "$EMAIL" "$(unique_password)" -H "X-Request-Id: $r"
    assert_problem 401 invalid_credentials
    assert_event "$r" login_failure "$USER_ID" "$USER_ID"
    jq -e '.detail.reason == "wrong_password"' <<<"$AUDIT_ROW" >/dev/null || fail "detail.reason should be wrong_password: $AUDIT_ROW"
    assert_activity "$token" login_failure
    jq -e '.detail.reason == "wrong_password"' <<<"$ACT_ROW" >/dev/null || fail "activity: detail.reason should be wrong_password: $ACT_ROW"
}

@test "audit: login_failure (unknown_email)" {
    new_admin
    local r email
    r=$(rid) email=$(unique_email)
    login "$email" "$(unique_password)" -H "X-Request-Id: $r"
    assert_problem 401 invalid_credentials
    assert_event "$r" login_failure "" ""
    jq -e '.detail.reason == "unknown_email"' <<<"$AUDIT_ROW" >/dev/null || fail "detail.reason should be unknown_email: $AUDIT_ROW"
}

@test "audit: login_failure (account_disabled)" {
    new_admin
    new_user
    adm_json PATCH "/users/$USER_ID" '{"disabled": true}'
    assert_status 200
    local r
    r=$(rid)
    login "$EMAIL" "$PASSWORD" -H "X-Request-Id: $r"
    assert_problem 403 account_disabled
    assert_event "$r" login_failure "$USER_ID" "$USER_ID"
    jq -e '.detail.reason == "account_disabled"' <<<"$AUDIT_ROW" >/dev/null || fail "detail.reason should be account_disabled: $AUDIT_ROW"
    adm_json PATCH "/users/$USER_ID" '{"disabled": false}'
    assert_status 200
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" login_failure
    jq -e '.detail.reason == "account_disabled"' <<<"$ACT_ROW" >/dev/null || fail "activity: detail.reason should be account_disabled: $ACT_ROW"
}

@test "audit: login_failure (email_not_verified)" {
    new_admin
    local email pw
    email=$(unique_email) pw=$(unique_password)
    register "$email" "$pw"
    assert_status 201
    local id r
    id=$(json .id)
    r=$(rid)
    login "$email" "$pw" -H "X-Request-Id: $r"
    assert_problem 403 email_not_verified
    assert_event "$r" login_failure "$id" "$id"
    jq -e '.detail.reason == "email_not_verified"' <<<"$AUDIT_ROW" >/dev/null || fail "detail.reason should be email_not_verified: $AUDIT_ROW"
    # Verified by an admin, the user logs in and sees the failure.
    adm_json PATCH "/users/$id" '{"email_verified": true}'
    assert_status 200
    login "$email" "$pw"
    assert_status 200
    assert_activity "$ACCESS" login_failure
    jq -e '.detail.reason == "email_not_verified"' <<<"$ACT_ROW" >/dev/null || fail "activity: detail.reason should be email_not_verified: $ACT_ROW"
}

@test "audit: logout" {
    new_admin
    new_user
    local r sid=$SESSION_ID
    r=$(rid)
    logout "$ACCESS" -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" logout "$USER_ID" "$USER_ID"
    jq -e --arg s "$sid" '.session_id == $s' <<<"$AUDIT_ROW" >/dev/null || fail "the logout row should name session $sid: $AUDIT_ROW"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" logout
}

@test "audit: logout_all" {
    new_admin
    new_user
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    local r
    r=$(rid)
    api POST "$API/auth/logout-all" -H "Authorization: Bearer $ACCESS" -H 'Content-Length: 0' -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" logout_all "$USER_ID" "$USER_ID"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" logout_all
    assert_activity "$ACCESS" logout 0
}

@test "audit: refresh" {
    new_admin
    new_user
    local r sid=$SESSION_ID
    r=$(rid)
    refresh "$REFRESH" -H "X-Request-Id: $r"
    assert_status 200
    local access
    access=$(json .access_token)
    assert_event "$r" refresh "$USER_ID" "$USER_ID"
    jq -e --arg s "$sid" '.session_id == $s' <<<"$AUDIT_ROW" >/dev/null || fail "the refresh row should name session $sid: $AUDIT_ROW"
    assert_activity "$access" refresh
}

@test "audit: refresh_token_reuse" {
    new_admin
    new_user
    local r0=$REFRESH
    refresh "$r0"
    assert_status 200
    # The rotated token again, from another device: theft.
    local r
    r=$(rid)
    refresh "$r0" -A "another device" -H "X-Request-Id: $r"
    assert_problem 401 token_reused
    assert_event "$r" refresh_token_reuse "$USER_ID" "$USER_ID"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" refresh_token_reuse
}

@test "audit: password_change" {
    new_admin
    new_user
    local r newpw
    r=$(rid) newpw=$(unique_password)
    remember_secret "$newpw"
    api_json POST "$API/auth/password/change" \
        "$(jq -cn --arg c "$PASSWORD" --arg n "$newpw" '{current_password: $c, new_password: $n}')" \
        -H "Authorization: Bearer $ACCESS" -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" password_change "$USER_ID" "$USER_ID"
    assert_activity "$ACCESS" password_change
}

@test "audit: password_reset" {
    new_admin
    new_user
    api_json POST "$API/auth/password/forgot" "$(jq -cn --arg e "$EMAIL" '{email: $e}')"
    assert_status 202
    mail_wait_kind "$EMAIL" password_reset
    mail_reset_link "$MAIL_FILE"
    local r newpw
    r=$(rid) newpw=$(unique_password)
    remember_secret "$newpw"
    api_json POST "$API/auth/password/reset" "$(jq -cn --arg t "$RESET_TOKEN" --arg p "$newpw" '{token: $t, new_password: $p}')" \
        -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" password_reset "$USER_ID" "$USER_ID"
    login "$EMAIL" "$newpw"
    assert_status 200
    assert_activity "$ACCESS" password_reset
}

@test "audit: session_revoked" {
    new_admin
    new_user
    local a1=$ACCESS
    login "$EMAIL" "$PASSWORD" -A "second device"
    local s2=$SESSION_ID r
    r=$(rid)
    api DELETE "$API/users/me/sessions/$s2" -H "Authorization: Bearer $a1" -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" session_revoked "$USER_ID" "$USER_ID"
    assert_activity "$a1" session_revoked
}

@test "audit: roles_changed" {
    new_admin
    new_user
    local r
    r=$(rid)
    adm_json PATCH "/users/$USER_ID" '{"roles": ["user", "admin"]}' -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" roles_changed "$ADMIN_ID" "$USER_ID"
    jq -e '(.detail.from | sort) == ["user"] and (.detail.to | sort) == ["admin", "user"]' <<<"$AUDIT_ROW" >/dev/null ||
        fail "roles_changed should carry detail.from [user] and detail.to [admin, user]: $AUDIT_ROW"
    # Setting the same roles again changes nothing and writes nothing.
    r=$(rid)
    adm_json PATCH "/users/$USER_ID" '{"roles": ["admin", "user"]}' -H "X-Request-Id: $r"
    assert_status 200
    assert_equal "$(sql "SELECT count(*) FROM audit_log WHERE request_id = :'r' AND type = 'roles_changed'" r="$r")" 0
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" roles_changed
    jq -e '(.detail.to | sort) == ["admin", "user"]' <<<"$ACT_ROW" >/dev/null || fail "activity: roles_changed detail.to: $ACT_ROW"
}

@test "audit: user_disabled" {
    new_admin
    new_user
    local r
    r=$(rid)
    adm_json PATCH "/users/$USER_ID" '{"disabled": true}' -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" user_disabled "$ADMIN_ID" "$USER_ID"
    adm_json PATCH "/users/$USER_ID" '{"disabled": false}'
    assert_status 200
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" user_disabled
}

@test "audit: user_enabled" {
    new_admin
    new_user
    adm_json PATCH "/users/$USER_ID" '{"disabled": true}'
    assert_status 200
    local r
    r=$(rid)
    adm_json PATCH "/users/$USER_ID" '{"disabled": false}' -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" user_enabled "$ADMIN_ID" "$USER_ID"
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    assert_activity "$ACCESS" user_enabled
}

@test "audit: user_deleted (by an admin)" {
    new_admin
    new_user
    local r
    r=$(rid)
    adm DELETE "/users/$USER_ID" -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" user_deleted "$ADMIN_ID" "$USER_ID"
    # The user's older rows keep the id.
    adm GET "/audit?user_id=$USER_ID&type=register"
    assert_status 200
    assert_json '.items | length == 1'
}

@test "audit: user_deleted (by the user)" {
    new_admin
    new_user
    local r
    r=$(rid)
    api_json DELETE "$API/users/me" "$(jq -cn --arg p "$PASSWORD" '{password: $p}')" \
        -H "Authorization: Bearer $ACCESS" -H "X-Request-Id: $r"
    assert_status 204
    assert_event "$r" user_deleted "$USER_ID" "$USER_ID"
}

@test "audit: user_created" {
    new_admin
    local r email pw
    r=$(rid) email=$(unique_email) pw=$(unique_password)
    create_user "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p, email_verified: true}')" \
        -H "X-Request-Id: $r"
    assert_status 201
    local id
    id=$(json .id)
    assert_event "$r" user_created "$ADMIN_ID" "$id"
    login "$email" "$pw"
    assert_status 200
    assert_activity "$ACCESS" user_created
}

@test "audit: user_updated" {
    new_admin
    new_user "Old Name"
    local r
    r=$(rid)
    adm_json PATCH "/users/$USER_ID" '{"full_name": "New Name"}' -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" user_updated "$ADMIN_ID" "$USER_ID"
    jq -e '.detail.fields == ["full_name"]' <<<"$AUDIT_ROW" >/dev/null ||
        fail "user_updated should carry detail.fields [full_name]: $AUDIT_ROW"
    r=$(rid)
    adm_json PATCH "/users/$USER_ID" '{"email_verified": false}' -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" user_updated "$ADMIN_ID" "$USER_ID"
    jq -e '.detail.fields == ["email_verified"]' <<<"$AUDIT_ROW" >/dev/null ||
        fail "user_updated should carry detail.fields [email_verified]: $AUDIT_ROW"
    assert_activity "$ACCESS" user_updated 2
}

@test "audit: admin_user_read" {
    new_admin
    new_user
    local r
    r=$(rid)
    adm GET "/users/$USER_ID" -H "X-Request-Id: $r"
    assert_status 200
    assert_event "$r" admin_user_read "$ADMIN_ID" "$USER_ID"
    assert_activity "$ACCESS" admin_user_read
    # Every read is one row.
    adm GET "/users/$USER_ID"
    adm GET "/users/$USER_ID"
    assert_activity "$ACCESS" admin_user_read 3
}

# ===========================================================================
# Caches

@test "no stale reads: full_name changed by the user, then by an admin, shows in the next GET /users/me" {
    new_admin
    new_user "First Name"
    me "$ACCESS"
    assert_equal "$(json .full_name)" "First Name"
    adm GET "/users/$USER_ID"
    assert_equal "$(json .full_name)" "First Name"
    local i
    for i in 1 2 3; do
        api_json PATCH "$API/users/me" "{\"full_name\": \"Self $i\"}" -H "Authorization: Bearer $ACCESS"
        assert_status 200
        me "$ACCESS"
        assert_equal "$(json .full_name)" "Self $i"
        adm GET "/users/$USER_ID"
        assert_equal "$(json .full_name)" "Self $i"
        adm_json PATCH "/users/$USER_ID" "{\"full_name\": \"Admin $i\"}"
        assert_status 200
        assert_equal "$(json .full_name)" "Admin $i"
        me "$ACCESS"
        assert_equal "$(json .full_name)" "Admin $i"
        adm GET "/users/$USER_ID"
        assert_equal "$(json .full_name)" "Admin $i"
        adm GET "/users?q=$(uri "$EMAIL")"
        assert_equal "$(json '.items[0].full_name')" "Admin $i"
    done
    # The other fields an admin changes show at once too.
    adm_json PATCH "/users/$USER_ID" '{"email_verified": false}'
    assert_status 200
    me "$ACCESS"
    assert_equal "$(json .email_verified)" false
    adm_json PATCH "/users/$USER_ID" '{"email_verified": true, "roles": ["user", "admin"]}'
    assert_status 200
    me "$ACCESS"
    assert_equal "$(json .email_verified)" true
    assert_equal "$(json -c '.roles | sort')" '["admin","user"]'
    adm_json PATCH "/users/$USER_ID" '{"roles": ["user"]}'
    assert_status 200
    me "$ACCESS"
    assert_equal "$(json -c .roles)" '["user"]'
}

@test "Redis down: every admin endpoint answers correctly from PostgreSQL; Redis is restarted at the end" {
    new_admin
    new_user
    local plain=$ACCESS
    new_user "Before Outage"
    local uid=$USER_ID u1=$ACCESS
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    local u2=$ACCESS
    # Warm whatever is cached.
    me "$u1"
    assert_status 200
    adm GET "/users/$uid"
    assert_status 200
    # A second admin, to be demoted during the outage.
    local a_token=$ADMIN a_id=$ADMIN_ID
    new_admin
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $a_token"
    assert_status 200

    redis_kill

    adm GET "/users?q=$(uri "$EMAIL")"
    assert_status 200
    assert_user_items
    assert_json ".items | length == 1 and .[0].id == \"$uid\" and .[0].full_name == \"Before Outage\""
    adm GET "/users/$uid"
    assert_status 200
    assert_user_object
    assert_equal "$(json .session_count)" 2
    adm_json PATCH "/users/$uid" '{"full_name": "During Outage"}'
    assert_status 200
    assert_equal "$(json .full_name)" "During Outage"
    adm GET "/users/$uid"
    assert_equal "$(json .full_name)" "During Outage"
    me "$u1"
    assert_status 200
    assert_equal "$(json .full_name)" "During Outage"
    adm GET "/users/$uid/sessions"
    assert_status 200
    assert_json 'type == "array" and length == 2'
    adm DELETE "/users/$uid/sessions"
    assert_status 204
    me "$u1"
    assert_problem 401
    me "$u2"
    assert_problem 401
    local email pw cid
    email=$(unique_email) pw=$(unique_password)
    create_user "$(jq -cn --arg e "$email" --arg p "$pw" '{email: $e, password: $p, email_verified: true}')"
    assert_status 201
    cid=$(json .id)
    adm GET "/audit?user_id=$uid"
    assert_status 200
    assert_audit_items
    assert_json '[.items[].type] | index("user_updated") != null'
    adm DELETE "/users/$cid"
    assert_status 204
    adm GET "/users/$cid"
    assert_problem 404 not_found
    # The access check holds without Redis.
    api GET "$API/admin/users" -H "Authorization: Bearer $plain"
    assert_problem 403 forbidden
    api GET "$API/admin/users"
    assert_problem 401 unauthorized
    # A demotion during the outage counts at once.
    adm_json PATCH "/users/$a_id" '{"roles": ["user"]}'
    assert_status 200
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $a_token"
    assert_problem 403 forbidden

    redis_start

    # Back: still right, no stale state resurfacing.
    adm GET "/users/$uid"
    assert_status 200
    assert_equal "$(json .full_name)" "During Outage"
    assert_equal "$(json .session_count)" 0
    me "$u1"
    assert_problem 401
    api GET "$API/admin/users?limit=1" -H "Authorization: Bearer $a_token"
    assert_problem 403 forbidden
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    me "$ACCESS"
    assert_equal "$(json .full_name)" "During Outage"
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
