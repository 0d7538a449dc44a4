#!/usr/bin/env bats
# Social login end to end: GET /oauth/providers, /oauth/{p}/start and
# /oauth/{p}/callback, POST /oauth/{p}/id-token, through lighttpd, against a
# real OpenID provider on loopback (tests/oidc: node-oidc-provider with a
# login form curl fills in and test-only endpoints that mint odd tokens).
#
# setup_file starts the provider with this file's accounts, starts the
# stack with three providers ([oauth.test]: OpenID Connect with
# client_secret_basic; [oauth.post]: the same provider with
# client_secret_post; [oauth.plain]: plain OAuth 2.0 with the provider's
# GitHub-style /api/user), then restarts the provider on the same port with
# clients whose redirect_uris point at the stack (its URL is known only
# once it runs).
#
# Each flow is driven with curl and one cookie jar per "browser": start
# (302 to the provider), the provider's /auth, its login form, its /auth/UID
# (303 to our callback), then the callback. Tokens the provider should
# never have sent are injected with its POST /test/token-override before a
# real callback.

# shellcheck disable=SC2016,SC2030,SC2031,SC2153,SC2154 # jq programs in single quotes; bats subshells; helpers' globals

load helpers
load mail-helpers

OIDC_RUN=$AUTHFLOW_SRCDIR/tests/oidc/run.sh

# ---------------------------------------------------------------------------
# The provider's accounts (all "password" fields are recorded as secrets)

# The provider's login form takes the email or the sub; the flows here log
# in with the sub (mallory's email is the victim's).
ACCOUNTS='[
  {"sub": "sub-alice",   "email": "alice@example.test",   "email_verified": true,  "name": "Alice Example",  "password": "alice provider pass 1"},
  {"sub": "sub-bob",     "email": "bob@example.test",     "email_verified": false, "name": "Bob Unverified", "password": "bob provider pass 2"},
  {"sub": "sub-mallory", "email": "victim@example.test",  "email_verified": false, "name": "Mallory",        "password": "mallory provider pass 3"},
  {"sub": "sub-carol",   "email": "carol@example.test",   "email_verified": true,  "name": "Carol Linked",   "password": "carol provider pass 4"},
  {"sub": "sub-dave",    "email": "dave@example.test",    "email_verified": true,  "name": "Dave Plain",     "password": "dave provider pass 5"},
  {"sub": "sub-erin",    "email": "erin@example.test",    "email_verified": true,  "name": "Erin Post",      "password": "erin provider pass 6"},
  {"sub": "sub-frank",   "email": "frank@example.test",   "email_verified": true,  "name": "Frank Popup",    "password": "frank provider pass 7"},
  {"sub": "sub-gina",    "email": "gina@example.test",    "email_verified": true,  "name": "Gina Mfa",       "password": "gina provider pass 8"},
  {"sub": "sub-oscar",   "email": "oscar@example.test",   "email_verified": true,  "name": "Oscar Override", "password": "oscar provider pass 9"},
  {"sub": "sub-pete",    "email": "pete@example.test",    "email_verified": true,  "name": "Pete Outage",    "password": "pete provider pass 10"},
  {"sub": "sub-quinn",   "email": "quinn@example.test",   "email_verified": true,  "name": "Quinn Owner",    "password": "quinn provider pass 11"}
]'

# pw SUB: the provider password of account SUB.
pw() { jq -r --arg s "$1" '.[] | select(.sub == $s) | .password' <<<"$ACCOUNTS"; }

# write_clients BASE: DIR/clients.json, the three clients with redirect_uris
# on BASE.
write_clients() {
    jq -n --arg b "$1$API/oauth" --arg ts "$TEST_SECRET" --arg ps "$POST_SECRET" --arg ls "$PLAIN_SECRET" '[
        {client_id: "authflow-test", client_secret: $ts, redirect_uris: [$b + "/test/callback"],
         token_endpoint_auth_method: "client_secret_basic"},
        {client_id: "authflow-post", client_secret: $ps, redirect_uris: [$b + "/post/callback"],
         token_endpoint_auth_method: "client_secret_post"},
        {client_id: "authflow-plain", client_secret: $ls, redirect_uris: [$b + "/plain/callback"],
         token_endpoint_auth_method: "client_secret_basic"}
    ]' >"$OD/clients.json"
}

# oidc_start: starts the provider on $OIDC_PORT (0: any) with DIR $OD; sets
# OIDC_ISSUER.
oidc_start() {
    local out
    if ! out=$(OIDC_PORT=${OIDC_PORT:-0} "$OIDC_RUN" start "$OD" 3>&-); then
        echo "# tests/oidc/run.sh start failed; its log:" >&2
        sed 's/^/#   /' "$OD/provider.log" >&2 2>/dev/null || true
        return 1
    fi
    eval "$out"
    [[ -n ${OIDC_ISSUER:-} ]] || { echo "# run.sh printed no OIDC_ISSUER" >&2; return 1; }
    export OIDC_ISSUER
}

oidc_stop() { "$OIDC_RUN" stop "$OD" 3>&- || true; }

remember_file_secrets() {
    remember_secret "$TEST_SECRET" "$POST_SECRET" "$PLAIN_SECRET"
    local p
    while read -r p; do remember_secret "$p"; done < <(jq -r '.[].password' <<<"$ACCOUNTS")
}

setup_file() {
    export OD=$BATS_FILE_TMPDIR/oidc
    mkdir -p "$OD"
    local r
    r=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    export TEST_SECRET="authflow-test-secret-${r:0:16}" POST_SECRET="authflow-post-secret-${r:16:16}"
    export PLAIN_SECRET="authflow-plain-secret-${r:32:16}"
    jq . <<<"$ACCOUNTS" >"$OD/accounts.json"
    write_clients http://127.0.0.1:9
    OIDC_PORT=0
    oidc_start || return 1
    export OIDC_PORT=${OIDC_ISSUER##*:}

    local extra=$BATS_FILE_TMPDIR/oauth-providers.conf
    cat >"$extra" <<-EOF

		[oauth.test]
		display_name = Test OP
		issuer = $OIDC_ISSUER
		client_id = authflow-test
		client_secret = $TEST_SECRET
		token_auth = client_secret_basic
		extra_audiences = authflow-native

		[oauth.post]
		display_name = Test OP (post)
		issuer = $OIDC_ISSUER
		client_id = authflow-post
		client_secret = $POST_SECRET
		token_auth = client_secret_post

		[oauth.plain]
		display_name = Plain OAuth
		authorization_endpoint = $OIDC_ISSUER/auth
		token_endpoint = $OIDC_ISSUER/token
		userinfo_endpoint = $OIDC_ISSUER/api/user
		client_id = authflow-plain
		client_secret = $PLAIN_SECRET
		scopes = email
		userinfo_email_verified = email_verified
	EOF
    # Two processes per responder, whatever the number of cores: each one
    # fetches discovery and keys on its own.
    if ! af_stack_up AUTHFLOW_CONFIG_EXTRA="$extra" AUTHFLOW_COOKIES_SECURE=false \
        AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=true AUTHFLOW_CHILDREN=2; then
        oidc_stop
        return 1
    fi
    remember_file_secrets

    # The stack's URL is known now: the clients' redirect_uris, same port,
    # same signing key.
    oidc_stop
    write_clients "$AUTHFLOW_BASE_URL"
    oidc_start || { af_stack_down; return 1; }
    [[ $OIDC_ISSUER == "http://127.0.0.1:$OIDC_PORT" ]] || {
        echo "# the provider came back as $OIDC_ISSUER, not on port $OIDC_PORT" >&2
        return 1
    }
}

teardown_file() {
    oidc_stop
    af_stack_down
}

# Each test leaves the provider's override queue empty.
teardown() {
    [[ -n ${OIDC_ISSUER:-} ]] && curl -s --max-time 5 -X DELETE "$OIDC_ISSUER/test/token-override" >/dev/null 2>&1
    return 0
}

# ---------------------------------------------------------------------------
# URLs and pages

# url_json URL: {"base": scheme://host/path, "fragment": "...", "q": {name: value}}.
url_json() {
    "$AF_PY" -c '
import json, sys, urllib.parse as u
s = u.urlsplit(sys.argv[1])
q = u.parse_qs(s.query, keep_blank_values=True)
f = u.parse_qs(s.fragment, keep_blank_values=True)
print(json.dumps({"base": u.urlunsplit((s.scheme, s.netloc, s.path, "", "")), "fragment": s.fragment,
                  "q": {k: v[0] if len(v) == 1 else v for k, v in q.items()},
                  "f": {k: v[0] if len(v) == 1 else v for k, v in f.items()}}))' "$1"
}

# qparam URL NAME: the value of query parameter NAME (empty when absent).
qparam() { url_json "$1" | jq -r --arg n "$2" '.q[$n] // empty'; }

# assert_url URL JQ [MESSAGE]: jq -e JQ holds on url_json URL.
assert_url() {
    local j
    j=$(url_json "$1")
    jq -e "$2" >/dev/null <<<"$j" || fail "$(printf '%s\n--- url: %s\n--- parsed: %s' "${3:-URL should satisfy: $2}" "$1" "$j")"
}

# The popup page: exactly one inline script, allowed by the CSP hash; prints
# the script's argument array [message, target origin, redirect] as JSON.
POPUP_PY='
import base64, hashlib, json, re, sys
body, csp = sys.stdin.read(), sys.argv[1]
scripts = re.findall(r"<script[^>]*>(.*?)</script>", body, re.S)
if len(scripts) != 1 or "<script>" not in body:
    sys.exit("the page should hold exactly one inline <script>, holds %d" % len(scripts))
s = scripts[0]
h = base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
parts = [p.strip() for p in csp.split(";")]
if "default-src \x27none\x27" not in parts:
    sys.exit("CSP %r lacks default-src \x27none\x27" % csp)
if "script-src \x27sha256-%s\x27" % h not in parts:
    sys.exit("CSP %r does not allow the script by its hash sha256-%s" % (csp, h))
m = re.search(r"\}\)\((.*)\);\s*$", s, re.S)
if not m:
    sys.exit("no argument array at the end of the script: %r" % s)
print(json.dumps(json.loads(m.group(1))))
'

# popup_args: checks the last answer is the popup page; sets POPUP (the JSON
# array [message, origin, redirect]).
popup_args() {
    POPUP=''
    [[ $(header content-type) == text/html* ]] || _af_fail "the popup page should be text/html" || return 1
    local csp out
    csp=$(header content-security-policy)
    [[ -n $csp ]] || _af_fail "the popup page has no Content-Security-Policy" || return 1
    out=$("$AF_PY" -c "$POPUP_PY" "$csp" <<<"$body" 2>&1) || _af_fail "popup page: $out" || return 1
    POPUP=$out
}

assert_popup() {
    jq -e "$1" >/dev/null <<<"$POPUP" || _af_fail "popup arguments $POPUP should satisfy: $1"
}

# ---------------------------------------------------------------------------
# The flow

AF_JAR_N=0
# new_jar: JAR, a fresh cookie jar (a new browser).
new_jar() {
    AF_JAR_N=$((AF_JAR_N + 1))
    JAR=$BATS_TEST_TMPDIR/jar.$AF_JAR_N
    : >"$JAR"
}

# oauth_start PROVIDER [QUERY]: GET /oauth/PROVIDER/start?QUERY in $JAR (a
# new jar when unset); must be a 302 to the provider. Sets START_LOC, STATE
# and BIND (the af_oauth cookie).
oauth_start() {
    [[ -n ${JAR:-} ]] || new_jar
    START_LOC='' STATE='' BIND=''
    api GET "$API/oauth/$1/start?${2-redirect=/app}" -c "$JAR" -b "$JAR" || return 1
    assert_status 302 || return 1
    START_LOC=$(header location)
    [[ $START_LOC == "$OIDC_ISSUER/auth?"* ]] || _af_fail "start should send the browser to $OIDC_ISSUER/auth" || return 1
    STATE=$(qparam "$START_LOC" state)
    BIND=$(cookie_value af_oauth)
    [[ -n $BIND ]] || BIND=$(awk '$6 == "af_oauth" { v = $7 } END { print v }' "$JAR")
    remember_secret "$BIND"
}

# op_step URL [curl args...]: one request to the provider in $JAR; prints
# where it redirects to (empty: no redirect).
op_step() {
    local url=$1
    shift
    curl -sS --max-time 30 -c "$JAR" -b "$JAR" -o "$BATS_TEST_TMPDIR/op.body" -w '%{http_code} %{redirect_url}' "$@" "$url"
}

# op_login LOGIN PASSWORD: from $START_LOC through the provider's login
# form to the redirect back to us. Sets CB_URL and CB_CODE.
op_login() {
    local out loc uid
    CB_URL='' CB_CODE=''
    out=$(op_step "$START_LOC") || return 1
    loc=${out#* }
    [[ $out == 303\ * && $loc == "$OIDC_ISSUER/interaction/"* ]] ||
        fail "provider /auth: expected 303 to /interaction/UID, got '$out': $(head -c 500 "$BATS_TEST_TMPDIR/op.body")" || return 1
    uid=${loc##*/interaction/}
    out=$(op_step "$OIDC_ISSUER/interaction/$uid/login" --data-urlencode "login=$1" --data-urlencode "password=$2") || return 1
    loc=${out#* }
    [[ $out == 303\ * && $loc == "$OIDC_ISSUER/auth/$uid" ]] ||
        fail "provider login: expected 303 to /auth/$uid, got '$out': $(head -c 500 "$BATS_TEST_TMPDIR/op.body")" || return 1
    out=$(op_step "$loc") || return 1
    loc=${out#* }
    [[ $out == 303\ * && $loc == "$AUTHFLOW_BASE_URL$API/oauth/"*"/callback?"* ]] ||
        fail "provider /auth/UID: expected 303 to our callback, got '$out': $(head -c 500 "$BATS_TEST_TMPDIR/op.body")" || return 1
    CB_URL=$loc
    CB_CODE=$(qparam "$CB_URL" code)
    [[ -n $CB_CODE ]] || fail "the provider sent no code: $CB_URL" || return 1
    [[ $(qparam "$CB_URL" state) == "$STATE" ]] || fail "the provider did not echo the state" || return 1
    remember_secret "$CB_CODE"
}

# callback [URL]: GET the callback ($CB_URL) in $JAR. On a session, sets
# ACCESS (the af_access cookie) and REFRESH (af_refresh).
callback() {
    ACCESS='' REFRESH=''
    api GET "${1:-$CB_URL}" -c "$JAR" -b "$JAR" || return 1
    ACCESS=$(cookie_value af_access)
    REFRESH=$(cookie_value af_refresh)
    remember_secret "$ACCESS" "$REFRESH"
}

# oauth_login PROVIDER SUB [QUERY]: the whole flow in a new browser, for
# the provider account SUB; leaves the callback's answer in the api globals.
oauth_login() {
    new_jar
    oauth_start "$1" "${3:-redirect=/app}" || return 1
    op_login "$2" "$(pw "$2")" || return 1
    callback
}

# oauth_flow_to_callback PROVIDER SUB [QUERY]: as oauth_login, without
# calling the callback.
oauth_flow_to_callback() {
    new_jar
    oauth_start "$1" "${3:-redirect=/app}" || return 1
    op_login "$2" "$(pw "$2")"
}

# assert_session_cookies: the last answer set af_access, af_refresh, csrf.
assert_session_cookies() {
    [[ -n $(cookie_value af_access) ]] || _af_fail "no af_access cookie set" || return 1
    [[ -n $(cookie_value af_refresh) ]] || _af_fail "no af_refresh cookie set" || return 1
    [[ -n $(cookie_value csrf) ]] || _af_fail "no csrf cookie set" || return 1
    [[ $(cookie_attr "$(set_cookie af_access)" httponly) == present ]] || _af_fail "af_access should be HttpOnly"
}

refute_session_cookies() {
    local c
    for c in af_access af_refresh csrf; do
        [[ -z $(set_cookie "$c") ]] || _af_fail "a $c cookie was set: $(set_cookie "$c")" || return 1
    done
}

# override JSON: queues a change of the provider's next token response for
# client authflow-test.
override() {
    local out
    out=$(curl -sS --max-time 10 -H 'Content-Type: application/json' \
        --data-binary "$(jq -c '. + {client_id: (.client_id // "authflow-test")}' <<<"$1")" \
        "$OIDC_ISSUER/test/token-override") || fail "token-override failed" || return 1
    jq -e '.queued >= 1' >/dev/null <<<"$out" || fail "token-override answered $out"
}

override_queued() { curl -sS --max-time 10 "$OIDC_ISSUER/test/token-override" | jq -r .queued; }

# mint JSON: a JWT from the provider's POST /test/id-token; sets IDT.
mint() {
    IDT=$(curl -sS --max-time 10 --fail -H 'Content-Type: application/json' --data-binary "$1" \
        "$OIDC_ISSUER/test/id-token") || fail "POST /test/id-token failed for $1" || return 1
    remember_secret "$IDT"
}

user_id_of() { sql "SELECT id FROM users WHERE lower(email) = lower(:'e')" e="$1"; }
identity_count() { sql "SELECT count(*) FROM identities WHERE user_id = :'u' AND provider = :'p'" u="$1" p="$2"; }

# verify_local EMAIL: the verify_email code mailed to EMAIL, sent to
# POST /auth/verify-email (200).
verify_local() {
    mail_wait_kind "$1" verify_email || return 1
    mail_code "$MAIL_FILE" || return 1
    api_json POST "$API/auth/verify-email" "$(jq -cn --arg e "$1" --arg c "$CODE" '{email: $e, code: $c}')" || return 1
    assert_status 200 || return 1
    assert_json '.email_verified == true'
}

now() { date +%s; }

# ===========================================================================
# Providers and start

@test "GET /oauth/providers lists the three providers with their type" {
    api GET "$API/oauth/providers"
    assert_status 200
    assert_json_response
    assert_json 'type == "array" and length == 3'
    assert_json 'any(.[]; .name == "test" and .display_name == "Test OP" and .type == "oidc")'
    assert_json 'any(.[]; .name == "post" and .display_name == "Test OP (post)" and .type == "oidc")'
    assert_json 'any(.[]; .name == "plain" and .display_name == "Plain OAuth" and .type == "oauth2")'
    # No secret of any provider in the list.
    [[ $body != *"$TEST_SECRET"* && $body != *"$POST_SECRET"* && $body != *"$PLAIN_SECRET"* ]] ||
        _af_fail "the provider list shows a client secret"
    assert_json 'all(.[]; has("client_secret") | not)'
}

@test "start (OpenID Connect): 302 to the provider with state, nonce, PKCE S256 and a binding cookie" {
    new_jar
    oauth_start test 'redirect=/app/page?x=1'
    assert_url "$START_LOC" ".base == \"$OIDC_ISSUER/auth\""
    assert_url "$START_LOC" '.q.response_type == "code" and .q.client_id == "authflow-test"'
    assert_url "$START_LOC" ".q.redirect_uri == \"$AUTHFLOW_BASE_URL$API/oauth/test/callback\""
    assert_url "$START_LOC" '.q.scope == "openid email profile"'
    assert_url "$START_LOC" '.q.state | test("^[A-Za-z0-9_-]{43}$")'
    assert_url "$START_LOC" '.q.code_challenge | test("^[A-Za-z0-9_-]{43}$")'
    assert_url "$START_LOC" '.q.code_challenge_method == "S256"'
    assert_url "$START_LOC" '.q.nonce | test("^[A-Za-z0-9_-]{43}$")'
    assert_url "$START_LOC" '(.q | has("display")) | not' "redirect mode asks for no popup display"
    local sc
    sc=$(set_cookie af_oauth)
    [[ -n $sc ]] || _af_fail "start set no af_oauth cookie"
    [[ $(cookie_value af_oauth) =~ $OPAQUE_TOKEN_RE ]] || _af_fail "af_oauth should be 256 bits of base64url"
    [[ $(cookie_attr "$sc" httponly) == present ]] || _af_fail "af_oauth should be HttpOnly: $sc"
    [[ $(cookie_attr "$sc" samesite) == Lax ]] || _af_fail "af_oauth should be SameSite=Lax: $sc"
    [[ $(cookie_attr "$sc" path) == / ]] || _af_fail "af_oauth should have Path=/: $sc"
    # The nonce and the challenge are no copies of the state or the cookie.
    local nonce chal
    nonce=$(qparam "$START_LOC" nonce)
    chal=$(qparam "$START_LOC" code_challenge)
    [[ $nonce != "$STATE" && $chal != "$STATE" && $nonce != "$BIND" && $chal != "$BIND" && $nonce != "$chal" ]] ||
        fail "state, nonce, code_challenge and cookie should all differ"

    # A second start in the same browser (another tab): a new state and
    # nonce, the same binding cookie.
    local s1=$STATE n1=$nonce b1=$BIND
    oauth_start test 'redirect=/other'
    [[ $STATE != "$s1" ]] || fail "a second start reused the state"
    [[ $(qparam "$START_LOC" nonce) != "$n1" ]] || fail "a second start reused the nonce"
    [[ $BIND == "$b1" ]] || fail "a second start in the same browser changed the binding cookie"

    # Popup mode asks the provider for a popup display.
    oauth_start test 'redirect=/app&mode=popup'
    assert_url "$START_LOC" '.q.display == "popup"'
}

@test "start (plain OAuth 2.0): PKCE and state, no nonce" {
    new_jar
    oauth_start plain
    assert_url "$START_LOC" ".base == \"$OIDC_ISSUER/auth\""
    assert_url "$START_LOC" '.q.response_type == "code" and .q.client_id == "authflow-plain" and .q.scope == "email"'
    assert_url "$START_LOC" ".q.redirect_uri == \"$AUTHFLOW_BASE_URL$API/oauth/plain/callback\""
    assert_url "$START_LOC" '(.q.state | test("^[A-Za-z0-9_-]{43}$")) and (.q.code_challenge | test("^[A-Za-z0-9_-]{43}$"))'
    assert_url "$START_LOC" '.q.code_challenge_method == "S256"'
    assert_url "$START_LOC" '(.q | has("nonce")) | not' "a plain OAuth 2.0 start must send no nonce"
    [[ -n $(set_cookie af_oauth) ]] || _af_fail "start set no af_oauth cookie"
}

@test "start: an unknown provider is 404" {
    api GET "$API/oauth/nope/start?redirect=/app"
    assert_problem 404 not_found
    api GET "$API/oauth/nope/callback?code=x&state=y"
    assert_problem 404 not_found
    api_json POST "$API/oauth/nope/id-token" '{"id_token": "a.b.c"}'
    assert_problem 404 not_found
}

@test "start: a redirect that is not a relative path on this site is 400, and so is a bad mode" {
    local r
    for r in 'https%3A%2F%2Fevil.example%2Fx' 'https://evil.example/x' '%2F%2Fevil.example' '//evil.example' \
        '%2F%5Cevil.example' '%2F%5C%2Fevil.example' 'javascript%3Aalert(1)' 'javascript:alert(1)' 'app' \
        'evil.example%2Fapp' '%2Fapp%23frag' '%2Fapp%20x' '%2Fapp%22%3E%3Cscript%3E' \
        "%2F$(printf 'a%.0s' {1..1100})"; do
        api GET "$API/oauth/test/start?redirect=$r"
        assert_problem 400 validation_failed
        assert_field_error redirect
        [[ -z $(set_cookie af_oauth) ]] || _af_fail "a refused start set the af_oauth cookie"
        [[ -z $(header location) ]] || _af_fail "a refused start redirected"
    done
    # Control characters (CRLF: header injection): lighttpd itself refuses
    # them in a URL (server.http-parseopts url-ctrls-reject, on by default)
    # with its own 400 page, before authflow sees the request; a web server
    # that passes them on gets authflow's problem.
    for r in '%2Fapp%0D%0ASet-Cookie%3A%20x%3D1' '%2Fapp%0Ax' '%2Fapp%0Dx' '%2Fapp%00x' '%2Fapp%09x'; do
        api GET "$API/oauth/test/start?redirect=$r"
        if [[ $(header content-type) == application/problem+json* ]]; then
            assert_problem 400 validation_failed
            assert_field_error redirect
        else
            assert_status 400
        fi
        [[ -z $(set_cookie af_oauth) && -z $(set_cookie x) ]] || _af_fail "a refused start set a cookie"
        [[ -z $(header location) ]] || _af_fail "a refused start redirected"
    done
    api GET "$API/oauth/test/start?redirect=/app&mode=bogus"
    assert_problem 400 validation_failed
    assert_field_error mode
    [[ -z $(header location) ]] || _af_fail "a refused start redirected"
    # No redirect (or an empty one) is "/" (see the second-login test).
    new_jar
    oauth_start test ''
    oauth_start test 'redirect='
}

# ===========================================================================
# Logging in

@test "a new user: the first login creates the account, sets the cookies, 302 to the redirect" {
    [[ -z $(user_id_of alice@example.test) ]] || fail "alice exists before her first login"
    oauth_login test sub-alice 'redirect=/app/welcome?tab=1'
    assert_status 302
    assert_equal "$(header location)" "/app/welcome?tab=1"
    assert_session_cookies
    [[ $(cookie_attr "$(set_cookie af_refresh)" httponly) == present ]] || _af_fail "af_refresh should be HttpOnly"
    me "$ACCESS"
    assert_status 200
    assert_user_object
    assert_json '.email == "alice@example.test" and .email_verified == true'
    assert_json '.full_name == "Alice Example"'
    assert_json '.identities | length == 1 and .[0].provider == "test" and .[0].email == "alice@example.test"'
    assert_json '.identities[0].linked_at | type == "string"'
    local uid
    uid=$(json .id)
    assert_equal "$(user_id_of alice@example.test)" "$uid"
    assert_equal "$(identity_count "$uid" test)" 1
    assert_equal "$(sql "SELECT subject FROM identities WHERE user_id = :'u'" u="$uid")" sub-alice
    jwt_claims "$ACCESS" | jq -e --arg u "$uid" '.amr == ["oauth"] and .sub == $u and .email == "alice@example.test"' >/dev/null ||
        fail "access token claims: $(jwt_claims "$ACCESS")"
    # The refresh cookie works like any other session's.
    refresh "$REFRESH"
    assert_status 200
    assert_token_pair
    # A social-only account has no password: a password login fails.
    login alice@example.test "$(pw sub-alice)"
    assert_problem 401 invalid_credentials
}

@test "a second login reuses the identity: same user, one identity, no new account" {
    oauth_login test sub-alice
    assert_status 302
    assert_session_cookies
    me "$ACCESS"
    assert_status 200
    local uid
    uid=$(json .id)
    oauth_login test sub-alice mode=redirect
    assert_status 302
    assert_equal "$(header location)" /
    assert_session_cookies
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .id)" "$uid"
    assert_json '.identities | length == 1'
    assert_equal "$(identity_count "$uid" test)" 1
    assert_equal "$(sql "SELECT count(*) FROM users WHERE lower(email) = 'alice@example.test'")" 1
    assert_equal "$(sql "SELECT count(*) FROM identities WHERE provider = 'test' AND subject = 'sub-alice'")" 1
    # Two logins, two sessions.
    api GET "$API/users/me/sessions" -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_json 'length >= 2 and all(.[]; .amr == ["oauth"])'
}

# ===========================================================================
# The state and the code

@test "callback: a tampered, malformed or missing state is refused and spends nothing" {
    oauth_flow_to_callback test sub-alice
    local good=$CB_URL
    # One character changed (still 43 characters of base64url).
    local t=A
    [[ ${STATE:5:1} == A ]] && t=B
    callback "${good/state=$STATE/state=${STATE:0:5}$t${STATE:6}}"
    assert_problem 401 invalid_token
    refute_session_cookies
    # Malformed.
    callback "${good/state=$STATE/state=short}"
    assert_problem 401 invalid_token
    refute_session_cookies
    # Missing: a request without a required parameter (400).
    callback "$AUTHFLOW_BASE_URL$API/oauth/test/callback?code=$CB_CODE"
    assert_problem 400 validation_failed
    assert_field_error state
    refute_session_cookies
    # Missing code.
    callback "$AUTHFLOW_BASE_URL$API/oauth/test/callback?state=$STATE"
    assert_problem 400 validation_failed
    assert_field_error code
    refute_session_cookies
    # None of these spent the real state.
    callback "$good"
    assert_status 302
    assert_session_cookies
}

@test "callback: a state used on another provider's callback path is refused; it stays its own provider's" {
    oauth_flow_to_callback test sub-alice
    local good=$CB_URL
    callback "${good/\/oauth\/test\//\/oauth\/post\/}"
    assert_problem 401 invalid_token
    refute_session_cookies
    callback "$good"
    assert_status 302
    assert_session_cookies
}

@test "callback: the real state works once; replaying the callback URL is refused" {
    oauth_flow_to_callback test sub-alice
    local cb=$CB_URL
    # A tampered state first: it does not spend the real one.
    callback "${cb/state=$STATE/state=${STATE:0:42}$([[ ${STATE:42:1} == A ]] && echo B || echo A)}"
    assert_problem 401 invalid_token
    callback "$cb"
    assert_status 302
    assert_session_cookies
    callback "$cb"
    assert_problem 401 invalid_token
    refute_session_cookies
}

@test "callback: in another browser (another cookie jar, or none) it is refused" {
    oauth_flow_to_callback test sub-alice
    local cb=$CB_URL
    local jar1=$JAR
    new_jar
    callback "$cb"
    assert_problem 401 invalid_token
    refute_session_cookies
    # That attempt does not use the state up: the browser that started the
    # sign-in finishes it.
    JAR=$jar1
    callback "$cb"
    assert_status 302
    assert_session_cookies

    # With a forged binding cookie.
    oauth_flow_to_callback test sub-alice
    api GET "$CB_URL" -H "Cookie: af_oauth=$(printf 'A%.0s' {1..43})"
    assert_problem 401 invalid_token
    refute_session_cookies
    # Without any cookie.
    oauth_flow_to_callback test sub-alice
    api GET "$CB_URL"
    assert_problem 401 invalid_token
    refute_session_cookies
}

@test "callback: a used code replayed with a new flow's state is refused by the provider (invalid_code)" {
    oauth_login test sub-alice
    assert_status 302
    local old_code=$CB_CODE
    # A new flow in a new browser: new state and cookie; its callback is
    # called with the old code instead of the provider's new one.
    new_jar
    oauth_start test
    api GET "$AUTHFLOW_BASE_URL$API/oauth/test/callback?code=$old_code&state=$STATE&iss=$OIDC_ISSUER" -c "$JAR" -b "$JAR"
    assert_problem 401 invalid_code
    refute_session_cookies
    # A code the provider never issued.
    new_jar
    oauth_start test
    api GET "$AUTHFLOW_BASE_URL$API/oauth/test/callback?code=not-a-real-code&state=$STATE" -c "$JAR" -b "$JAR"
    assert_problem 401 invalid_code
    refute_session_cookies
}

@test "callback: the code of one flow with the state of another in the same browser fails PKCE" {
    # Two tabs: the code of flow 1 is bound (PKCE) to flow 1's verifier.
    new_jar
    oauth_start test
    local loc1=$START_LOC state1=$STATE
    oauth_start test
    local state2=$STATE
    START_LOC=$loc1 STATE=$state1
    op_login sub-alice "$(pw sub-alice)"
    api GET "$AUTHFLOW_BASE_URL$API/oauth/test/callback?code=$CB_CODE&state=$state2" -c "$JAR" -b "$JAR"
    assert_problem 401 invalid_code
    refute_session_cookies
}

@test "callback: an issuer parameter naming another provider is refused" {
    oauth_flow_to_callback test sub-alice
    local cb=${CB_URL/iss=/iss=x}
    [[ $cb != "$CB_URL" ]] || skip "the provider sent no iss parameter"
    callback "$cb"
    assert_problem 401 invalid_token
    refute_session_cookies
}

@test "callback: the provider's error (access denied) is a clean 401" {
    new_jar
    oauth_start test
    local out loc uid
    out=$(op_step "$START_LOC")
    loc=${out#* }
    uid=${loc##*/interaction/}
    out=$(op_step "$OIDC_ISSUER/interaction/$uid/abort")
    loc=${out#* }
    [[ $loc == "$OIDC_ISSUER/auth/"* ]] && { out=$(op_step "$loc"); loc=${out#* }; }
    [[ $loc == "$AUTHFLOW_BASE_URL$API/oauth/test/callback?"* ]] || fail "abort did not come back to us: $out"
    assert_url "$loc" '.q.error == "access_denied"'
    callback "$loc"
    assert_problem 401 unauthorized
    refute_session_cookies
}

# ===========================================================================
# id_token checks on a real code exchange (POST /test/token-override)

# bad_id_token OVERRIDE: oscar's flow with OVERRIDE queued before the
# callback; must be 401 invalid_token, no session, no account.
bad_id_token() {
    oauth_flow_to_callback test sub-oscar || return 1
    override "$1" || return 1
    callback || return 1
    assert_problem 401 invalid_token || return 1
    refute_session_cookies || return 1
    assert_equal "$(override_queued)" 0
    assert_equal "$(user_id_of oscar@example.test)" ""
}

@test "id_token: a wrong nonce is refused" {
    bad_id_token '{"id_token_claims": {"nonce": "wrong"}}'
}

@test "id_token: a missing nonce is refused" {
    bad_id_token '{"id_token_claims": {"nonce": null}}'
}

@test "id_token: an audience that is another client is refused" {
    bad_id_token '{"id_token_claims": {"aud": "someone-else"}}'
}

@test "id_token: an audience array with azp another party is refused" {
    bad_id_token '{"id_token_claims": {"aud": ["authflow-test", "someone-else"], "azp": "someone-else"}}'
}

@test "id_token: an audience array without azp is refused" {
    bad_id_token '{"id_token_claims": {"aud": ["authflow-test", "someone-else"]}}'
}

@test "id_token: an expired token is refused" {
    bad_id_token "{\"id_token_claims\": {\"exp\": $(($(now) - 600))}}"
}

@test "id_token: iat in the future is refused" {
    bad_id_token "{\"id_token_claims\": {\"iat\": $(($(now) + 3600)), \"exp\": $(($(now) + 7200))}}"
}

@test "id_token: a token issued long ago (iat older than the browser flow allows) is refused" {
    bad_id_token "{\"id_token_claims\": {\"iat\": $(($(now) - 7200))}}"
}

@test "id_token: a token signed by a foreign key is refused" {
    bad_id_token '{"sign": "foreign"}'
}

@test "id_token: a token signed by a foreign key under the provider's kid is refused" {
    local kid
    kid=$(curl -sS --max-time 10 "$OIDC_ISSUER/jwks" | jq -r '.keys[0].kid')
    bad_id_token "$(jq -cn --arg k "$kid" '{sign: "foreign", id_token_header: {kid: $k}}')"
}

@test "id_token: alg none is refused" {
    bad_id_token '{"sign": "none"}'
}

@test "id_token: HS256 with the client secret as key is refused" {
    bad_id_token "$(jq -cn --arg s "$TEST_SECRET" '{sign: "hs256", secret: $s}')"
}

@test "id_token: a wrong issuer is refused" {
    bad_id_token '{"id_token_claims": {"iss": "http://127.0.0.1:9/evil"}}'
}

@test "id_token: a token response without an id_token is refused" {
    bad_id_token '{"omit_id_token": true}'
}

@test "id_token: control: a re-signed token with only harmless changes is accepted" {
    # The refusals above come from the claim each one changes, not from the
    # override mechanism: the provider re-signs this one the same way.
    oauth_flow_to_callback test sub-oscar
    override '{"id_token_claims": {"sub": "sub-oscar-ctl", "email": "oscar.ctl@example.test", "name": "Oscar Control"}}'
    callback
    assert_status 302
    assert_session_cookies
    assert_equal "$(override_queued)" 0
    me "$ACCESS"
    assert_json '.email == "oscar.ctl@example.test" and .full_name == "Oscar Control" and .email_verified == true'
}

# ===========================================================================
# Linking and email verification

@test "a verified provider email lands in the existing local account (linked), the password still works" {
    local pass
    pass=$(unique_password)
    register carol@example.test "$pass" "Carol Local"
    assert_status 201
    local uid
    uid=$(json .id)
    verify_local carol@example.test
    login carol@example.test "$pass"
    assert_status 200

    oauth_login test sub-carol
    assert_status 302
    assert_equal "$(header location)" /app
    assert_session_cookies
    me "$ACCESS"
    assert_status 200
    assert_equal "$(json .id)" "$uid"
    assert_json '.identities | length == 1 and .[0].provider == "test"'
    jwt_claims "$ACCESS" | jq -e '.amr == ["oauth"]' >/dev/null || fail "amr should be [\"oauth\"]"
    assert_equal "$(sql "SELECT count(*) FROM users WHERE lower(email) = 'carol@example.test'")" 1
    login carol@example.test "$pass"
    assert_status 200
    # The audit names how it was linked.
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_json 'any(.items[]; .type == "identity_linked" and .detail.provider == "test" and .detail.via == "verified_email")'
}

@test "an unverified provider email does not take over the local account with that email (409)" {
    local pass
    pass=$(unique_password)
    register victim@example.test "$pass" "Victim"
    assert_status 201
    local uid
    uid=$(json .id)
    verify_local victim@example.test

    oauth_login test sub-mallory
    assert_problem 409 email_taken
    refute_session_cookies
    assert_equal "$(sql "SELECT count(*) FROM identities WHERE user_id = :'u'" u="$uid")" 0
    assert_equal "$(sql "SELECT count(*) FROM identities WHERE subject = 'sub-mallory'")" 0
    assert_equal "$(sql "SELECT count(*) FROM users WHERE lower(email) = 'victim@example.test'")" 1
    # Again, through the plain provider (userinfo says email_verified false).
    oauth_login plain sub-mallory
    assert_problem 409 email_taken
    refute_session_cookies
    assert_equal "$(sql "SELECT count(*) FROM identities WHERE user_id = :'u'" u="$uid")" 0

    login victim@example.test "$pass"
    assert_status 200
    me "$ACCESS"
    assert_json '.identities == []'
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_json 'any(.items[]; .type == "oauth_link_refused" and .detail.reason == "email_not_verified")'
    assert_json 'all(.items[]; .type != "identity_linked")'
}

@test "an unverified provider email without a local account: 403 email_not_verified, no account is made" {
    oauth_login test sub-bob
    assert_problem 403 email_not_verified
    refute_session_cookies
    assert_equal "$(user_id_of bob@example.test)" ""
    assert_equal "$(sql "SELECT count(*) FROM identities WHERE subject = 'sub-bob'")" 0
    # The address stays free for its owner.
    register bob@example.test "$(unique_password)" "Bob Owner"
    assert_status 201
}

@test "a verified provider email claims a local account that never verified its address: the squatter's password goes" {
    # Anyone may register any address; the provider vouches for its owner.
    local pass
    pass=$(unique_password)
    register quinn@example.test "$pass" "Squatter"
    assert_status 201
    local uid
    uid=$(json .id)
    oauth_login test sub-quinn
    assert_status 302
    assert_session_cookies
    me "$ACCESS"
    assert_equal "$(json .id)" "$uid"
    assert_json '.email_verified == true and (.identities | length == 1)'
    assert_equal "$(sql "SELECT password_hash IS NULL FROM users WHERE id = :'u'" u="$uid")" t
    local token=$ACCESS
    login quinn@example.test "$pass"
    assert_problem 401 invalid_credentials
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $token"
    assert_status 200
    assert_json 'any(.items[]; .type == "account_claimed" and .detail.provider == "test")'
}

# ===========================================================================
# The other providers

@test "plain OAuth 2.0 ([oauth.plain]): userinfo from /api/user, identity provider plain" {
    oauth_login plain sub-dave 'redirect=/plain/done'
    assert_status 302
    assert_equal "$(header location)" /plain/done
    assert_session_cookies
    me "$ACCESS"
    assert_status 200
    assert_json '.email == "dave@example.test" and .email_verified == true'
    assert_json '.full_name == "Dave Plain"'
    assert_json '.identities | length == 1 and .[0].provider == "plain"'
    local uid
    uid=$(json .id)
    assert_equal "$(sql "SELECT subject FROM identities WHERE user_id = :'u' AND provider = 'plain'" u="$uid")" sub-dave
    jwt_claims "$ACCESS" | jq -e '.amr == ["oauth"]' >/dev/null || fail "amr should be [\"oauth\"]"
    # Again: the same account.
    oauth_login plain sub-dave
    assert_status 302
    me "$ACCESS"
    assert_equal "$(json .id)" "$uid"
    # A state of the plain provider is not usable on the test provider's path.
    oauth_flow_to_callback plain sub-dave
    callback "${CB_URL/\/oauth\/plain\//\/oauth\/test\/}"
    assert_problem 401 invalid_token
}

@test "plain OAuth 2.0: a used code replayed is invalid_code" {
    oauth_login plain sub-dave
    assert_status 302
    local old=$CB_CODE
    new_jar
    oauth_start plain
    api GET "$AUTHFLOW_BASE_URL$API/oauth/plain/callback?code=$old&state=$STATE" -c "$JAR" -b "$JAR"
    assert_problem 401 invalid_code
    refute_session_cookies
}

@test "client_secret_post ([oauth.post]) works end to end" {
    oauth_login post sub-erin
    assert_status 302
    assert_session_cookies
    me "$ACCESS"
    assert_status 200
    assert_json '.email == "erin@example.test" and .email_verified == true'
    assert_json '.identities | length == 1 and .[0].provider == "post"'
    # The post provider's id_token checks are the same (aud is its client).
    oauth_flow_to_callback post sub-erin
    override '{"client_id": "authflow-post", "id_token_claims": {"aud": "authflow-test"}}'
    callback
    assert_problem 401 invalid_token
    refute_session_cookies
}

@test "the same person through two providers: a verified email links the second identity" {
    # alice exists (test); her first login through post finds her by the
    # verified email and links it.
    oauth_login test sub-alice
    me "$ACCESS"
    local uid
    uid=$(json .id)
    oauth_login post sub-alice
    assert_status 302
    me "$ACCESS"
    assert_equal "$(json .id)" "$uid"
    assert_json '[.identities[].provider] | sort == ["post", "test"]'
}

# ===========================================================================
# Popup mode

@test "popup mode: the page posts ok:true to the opener at our origin, cookies set, no tokens in the page" {
    oauth_login test sub-frank 'redirect=/app/popup&mode=popup'
    assert_status 200
    assert_no_store
    popup_args
    assert_popup '.[0].type == "authflow:oauth" and .[0].ok == true and .[0].redirect == "/app/popup"'
    assert_popup ".[1] == \"$AUTHFLOW_BASE_URL\""
    assert_popup '.[2] == "/app/popup"'
    assert_session_cookies
    [[ $body != *"$ACCESS"* && $body != *"$REFRESH"* ]] || _af_fail "the popup page carries a token"
    [[ $body != *access_token* && $body != *refresh_token* ]] || _af_fail "the popup page names a token"
    [[ $body == *window.opener.postMessage* ]] || _af_fail "the page does not post to its opener"
    me "$ACCESS"
    assert_status 200
    assert_json '.email == "frank@example.test"'
}

@test "popup mode: a failure is the same page with ok:false and the error, status 401" {
    oauth_flow_to_callback test sub-frank 'redirect=/app&mode=popup'
    override '{"id_token_claims": {"nonce": "wrong"}}'
    callback
    assert_status 401
    popup_args
    assert_popup '.[0].type == "authflow:oauth" and .[0].ok == false and .[0].error == "invalid_token"'
    assert_popup ".[1] == \"$AUTHFLOW_BASE_URL\""
    refute_session_cookies
    # A popup flow in another browser: the same page (the state knew it was
    # a popup).
    oauth_flow_to_callback test sub-frank 'redirect=/app&mode=popup'
    local cb=$CB_URL
    new_jar
    callback "$cb"
    assert_status 401
    popup_args
    assert_popup '.[0].ok == false and .[0].error == "invalid_token"'
    refute_session_cookies
}

# ===========================================================================
# POST /oauth/{provider}/id-token (native apps)

@test "id-token endpoint: a provider-signed token for authflow-native gives a token pair" {
    mint '{"claims": {"sub": "native-nina", "email": "nina@example.test", "email_verified": true, "name": "Nina Native", "aud": "authflow-native"}}'
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_status 200
    assert_token_pair
    remember_pair
    local access
    access=$(json .access_token)
    jwt_claims "$access" | jq -e '.amr == ["oauth"] and .email == "nina@example.test"' >/dev/null ||
        fail "access token claims: $(jwt_claims "$access")"
    me "$access"
    assert_status 200
    assert_json '.email_verified == true and (.identities | length == 1 and .[0].provider == "test")'
    # With the nonce the token carries, given in the body.
    mint '{"claims": {"sub": "native-nina", "email": "nina@example.test", "email_verified": true, "aud": "authflow-native", "nonce": "n-123"}}'
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t, nonce: "n-123"}')"
    assert_status 200
    remember_pair
    # Form-encoded works too.
    mint '{"claims": {"sub": "native-nina", "email": "nina@example.test", "email_verified": true, "aud": "authflow-test"}}'
    api POST "$API/oauth/test/id-token" --data-urlencode "id_token=$IDT"
    assert_status 200
    remember_pair
}

@test "id-token endpoint: wrong audience, expired, nonce mismatch, alg none, foreign key are 401" {
    local base='"sub": "native-ned", "email": "ned@example.test", "email_verified": true'
    mint "{\"claims\": {$base, \"aud\": \"someone-else\"}}"
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_problem 401 invalid_token

    mint "{\"claims\": {$base, \"aud\": \"authflow-native\", \"iat\": $(($(now) - 1200)), \"exp\": $(($(now) - 600))}}"
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_problem 401 token_expired

    mint "{\"claims\": {$base, \"aud\": \"authflow-native\", \"nonce\": \"the-real-one\"}}"
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t, nonce: "another-one"}')"
    assert_problem 401 invalid_token
    mint "{\"claims\": {$base, \"aud\": \"authflow-native\"}}"
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t, nonce: "expected"}')"
    assert_problem 401 invalid_token

    local s
    for s in none foreign; do
        mint "{\"claims\": {$base, \"aud\": \"authflow-native\"}, \"sign\": \"$s\"}"
        api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
        assert_problem 401 invalid_token
    done
    mint "$(jq -cn --arg s "$TEST_SECRET" '{claims: {sub: "native-ned", email: "ned@example.test", email_verified: true, aud: "authflow-test"}, sign: "hs256", secret: $s}')"
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_problem 401 invalid_token
    mint "{\"claims\": {$base, \"aud\": \"authflow-native\", \"iss\": \"http://127.0.0.1:9\"}}"
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_problem 401 invalid_token
    api_json POST "$API/oauth/test/id-token" '{"id_token": "not.a.jwt"}'
    assert_problem 401 invalid_token
    assert_equal "$(user_id_of ned@example.test)" ""
}

@test "id-token endpoint: no id_token, or a plain OAuth 2.0 provider, is 400" {
    api_json POST "$API/oauth/test/id-token" '{}'
    assert_problem 400 validation_failed
    assert_field_error id_token
    api_json POST "$API/oauth/test/id-token" '{"id_token": 5}'
    assert_clean_4xx
    mint '{"claims": {"sub": "native-pat", "email": "pat@example.test", "email_verified": true, "aud": "authflow-plain"}}'
    api_json POST "$API/oauth/plain/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_problem 400 validation_failed
    assert_field_error id_token
    api GET "$API/oauth/test/id-token"
    assert_clean_4xx
}

@test "id-token endpoint: a page of another origin cannot log its visitor in (403 csrf_failed)" {
    mint '{"claims": {"sub": "native-csrf", "email": "csrf@example.test", "email_verified": true, "aud": "authflow-native"}}'
    api POST "$API/oauth/test/id-token" --data-urlencode "id_token=$IDT" -H 'Origin: https://evil.example'
    assert_problem 403 csrf_failed
    refute_session_cookies
    assert_equal "$(user_id_of csrf@example.test)" ""
    # The site's own pages may.
    api POST "$API/oauth/test/id-token" --data-urlencode "id_token=$IDT" -H "Origin: $AUTHFLOW_BASE_URL"
    assert_status 200
    assert_token_pair
}

@test "id-token endpoint: an unverified email that matches a local account is 409, no link" {
    mint '{"claims": {"sub": "native-mal", "email": "victim@example.test", "email_verified": false, "aud": "authflow-native"}}'
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    if [[ -z $(user_id_of victim@example.test) ]]; then
        # The victim test did not run first: any clean answer.
        assert_clean_4xx
    else
        assert_problem 409 email_taken
        assert_equal "$(sql "SELECT count(*) FROM identities WHERE subject = 'native-mal'")" 0
    fi
}

# ===========================================================================
# MFA

TOTP_PY='
import base64, hmac, hashlib, struct, sys, time
def key(s):
    return base64.b32decode(s + "=" * (-len(s) % 8))
def code(k, c):
    h = hmac.new(k, struct.pack(">Q", c), hashlib.sha1).digest()
    o = h[-1] & 15
    return "%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7fffffff) % 1000000)
k, last = key(sys.argv[1]), int(sys.argv[2])
while True:
    t = time.time()
    now, frac = int(t) // 30, t % 30
    s = max(last + 1, now - 1)
    if s == now - 1 and frac > 20:
        s = now
    if s <= now + 1:
        break
    time.sleep((int(t) // 30 + 1) * 30 - t + 0.2)
print(s, code(k, s))
'

# fresh_totp SECRET: TOTP_CODE for the lowest usable step after TOTP_LAST.
fresh_totp() {
    local out
    out=$("$AF_PY" -c "$TOTP_PY" "$1" "${TOTP_LAST:-0}") || return 1
    TOTP_LAST=${out% *}
    TOTP_CODE=${out#* }
    remember_secret "$TOTP_CODE"
}

@test "MFA: a user with TOTP logging in through the provider gets the mfa_token in the fragment, then verifies" {
    oauth_login test sub-gina
    assert_status 302
    local first=$ACCESS
    api_json POST "$API/auth/mfa/totp/setup" '{}' -H "Authorization: Bearer $first"
    assert_status 200
    local secret
    secret=$(json .secret)
    remember_secret "$secret" "$(json '.otpauth_uri // empty')"
    TOTP_LAST=0
    fresh_totp "$secret"
    api_json POST "$API/auth/mfa/totp/enable" "$(jq -cn --arg c "$TOTP_CODE" '{code: $c}')" -H "Authorization: Bearer $first"
    assert_status 200
    local -a recovery
    mapfile -t recovery < <(json '.recovery_codes[]?')
    remember_secret "${recovery[@]}"

    oauth_login test sub-gina 'redirect=/app/mfa'
    assert_status 302
    refute_session_cookies
    local loc
    loc=$(header location)
    [[ $loc == "/app/mfa#mfa_required=1&mfa_token="*"&mfa_expires_in=300" ]] || _af_fail "Location should carry the mfa challenge in the fragment: $loc"
    local tok
    tok=$(url_json "http://x$loc" | jq -r '.f.mfa_token')
    [[ $tok =~ $OPAQUE_TOKEN_RE ]] || fail "mfa_token should be 43 characters of base64url: $tok"
    remember_secret "$tok"
    fresh_totp "$secret"
    api_json POST "$API/auth/mfa/verify" "$(jq -cn --arg t "$tok" --arg c "$TOTP_CODE" '{mfa_token: $t, code: $c}')"
    assert_status 200
    assert_token_pair
    remember_pair
    jwt_claims "$(json .access_token)" | jq -e '.amr == ["oauth", "otp"]' >/dev/null ||
        fail "amr should be [\"oauth\",\"otp\"]: $(jwt_claims "$(json .access_token)")"
    # The token is single use.
    api_json POST "$API/auth/mfa/verify" "$(jq -cn --arg t "$tok" --arg c "$TOTP_CODE" '{mfa_token: $t, code: $c}')"
    assert_clean_4xx

    # Popup mode: the page hands the challenge to the opener.
    oauth_login test sub-gina 'redirect=/app&mode=popup'
    assert_status 200
    refute_session_cookies
    popup_args
    assert_popup '.[0].ok == false and .[0].error == "mfa_required" and (.[0].mfa_token | test("^[A-Za-z0-9_-]{43}$")) and .[0].mfa_expires_in == 300'
    remember_secret "$(jq -r '.[0].mfa_token' <<<"$POPUP")"

    # The native id-token endpoint answers the challenge as a problem.
    mint '{"claims": {"sub": "sub-gina", "email": "gina@example.test", "email_verified": true, "aud": "authflow-native"}}'
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$IDT" '{id_token: $t}')"
    assert_problem 401 mfa_required
    remember_secret "$(json '.mfa_token // empty')"
}

# ===========================================================================
# Audit

@test "audit: alice's activity shows identity_linked (provider test) and logins with amr oauth" {
    oauth_login test sub-alice
    assert_status 302
    api GET "$API/users/me/activity?limit=200" -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_json 'any(.items[]; .type == "identity_linked" and .detail.provider == "test" and .detail.via == "new_account")'
    assert_json 'any(.items[]; .type == "login" and .detail.amr == ["oauth"])'
    assert_json 'all(.items[]; .type != "login" or .detail.amr == ["oauth"])'
    # Nothing of the flow's secrets in the audit details.
    [[ $body != *"$CB_CODE"* && $body != *"$BIND"* && $body != *"$ACCESS"* ]] || _af_fail "the activity carries a secret of the flow"
}

# ===========================================================================
# The provider down (last: it restarts the provider)

@test "provider down: the code exchange is 503 service_unavailable; start still works from cached discovery" {
    # Every process has the discovery document by now (many flows ran).
    oauth_flow_to_callback test sub-pete
    local cb=$CB_URL jar=$JAR
    mint '{"claims": {"sub": "native-pete", "email": "pete.native@example.test", "email_verified": true, "aud": "authflow-native"}}'
    local idt=$IDT
    oidc_stop
    if "$OIDC_RUN" status "$OD"; then fail "the provider still runs"; fi
    JAR=$jar
    callback "$cb"
    assert_problem 503 service_unavailable
    assert_header_present retry-after
    refute_session_cookies
    assert_equal "$(user_id_of pete@example.test)" ""
    # The plain provider (no discovery): the same.
    new_jar
    oauth_start plain
    api GET "$AUTHFLOW_BASE_URL$API/oauth/plain/callback?code=whatever&state=$STATE" -c "$JAR" -b "$JAR"
    assert_problem 503 service_unavailable
    # start needs no provider call once discovery is cached.
    local ok=0
    for _ in 1 2 3 4; do
        new_jar
        api GET "$API/oauth/test/start?redirect=/app" -c "$JAR" -b "$JAR"
        if [[ $status_code == 302 ]]; then
            ok=$((ok + 1))
            [[ $(header location) == "$OIDC_ISSUER/auth?"* ]] || _af_fail "start should still point at the provider"
        else
            assert_problem 503 service_unavailable
        fi
    done
    ((ok > 0)) || fail "no start answered 302 from the cached discovery document"
    # The id-token endpoint verifies with the cached keys (any process that
    # has none answers 503).
    api_json POST "$API/oauth/test/id-token" "$(jq -cn --arg t "$idt" '{id_token: $t}')"
    if [[ $status_code == 200 ]]; then
        assert_token_pair
        remember_pair
    else
        assert_problem 503 service_unavailable
    fi
    local log=$AUTHFLOW_RUN_DIR/log/oauth.log
    grep -q '"oauth_token_failed"' "$log" || fail "no oauth_token_failed line in $log"

    OIDC_PORT=$OIDC_PORT oidc_start
    # Back: a whole flow works again (same port, same key).
    oauth_login test sub-pete
    assert_status 302
    assert_session_cookies
}

@test "logs: no password, client secret, code or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
