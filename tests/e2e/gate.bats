#!/usr/bin/env bats
# authflow-gate, the verification gateway, end to end: requests to locations
# the web server protects with the gate (etc/lighttpd/authflow-gate.conf in
# the stack's lighttpd), all through the web server as a client sends them.
#
#   /app/...        the gate (authorizer), then the echo backend
#                   (tests/backend/echo-backend.c), which answers the identity
#                   it was given and logs each REQUEST_URI it gets to
#                   $AUTHFLOW_RUN_DIR/log/echo-requests.log
#   /app/admin/...  the same, role "admin" required
#   /files/page.txt a static file served by the web server once the gate said yes
#   GET /api/v1/auth/verify  the gate as a plain responder
#
# Every refusal is checked three ways: the status, a problem+json body with
# the expected code, and the backend never having seen the request (each
# request goes to a path of its own, looked for in the echo log).
#
# Forged tokens are built with Debian's python3-jwt (PyJWT) from the claims
# of a real token, so that only the attribute under test is wrong; the ones
# signed "correctly" use the service's own private key from the stack's keys
# directory.
#
# Tests marked `skip "BUG: ..."` show a real defect; run them anyway with
# AUTHFLOW_E2E_KNOWN_BUGS=1.

load helpers
load redis-helpers

# The web server in front of the gate: the one place to choose it. With
# another server the identity may reach the backend differently: see
# assert_backend_identity and refute_client_identity_passed.
# gate-apache.bats and gate-nginx.bats are this file under other names: the
# same scenarios through Apache and nginx.
case ${BATS_TEST_FILENAME:-} in
*-apache.bats) AUTHFLOW_WEB=apache ;;
*-nginx.bats) AUTHFLOW_WEB=nginx ;;
*) AUTHFLOW_WEB=${AUTHFLOW_WEB:-lighttpd} ;;
esac

PY=/usr/bin/python3
# [gate] login_url of this file's stack (browser requests without a session
# are redirected there).
LOGIN_URL=/login

setup_file() {
    af_stack_up AUTHFLOW_WEB="$AUTHFLOW_WEB" AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false \
        AUTHFLOW_GATE_LOGIN_URL="$LOGIN_URL"
    KEYS_DIR=$(conf_get tokens keys_dir)
    KEYS_DIR=${KEYS_DIR:-$AUTHFLOW_RUN_DIR/keys}
    ECHO_LOG=$AUTHFLOW_RUN_DIR/log/echo-requests.log
    if [[ $(conf_get cookies secure) == true ]]; then
        ACCESS_COOKIE=__Host-af_access
    else
        ACCESS_COOKIE=af_access
    fi
    export KEYS_DIR ECHO_LOG ACCESS_COOKIE
}

teardown_file() { af_stack_down; }

# A Redis test that failed half-way leaves Redis as it found it.
teardown() {
    if [[ -f $BATS_FILE_TMPDIR/redis-stopped ]]; then
        kill -CONT "$(<"$BATS_FILE_TMPDIR/redis-stopped")" 2>/dev/null || true
        rm -f "$BATS_FILE_TMPDIR/redis-stopped"
    fi
    if [[ -f $BATS_FILE_TMPDIR/redis-down ]]; then
        redis_start || true
    fi
    rm -f "$AUTHFLOW_RUN_DIR/redis/dump.rdb"
}

# ---------------------------------------------------------------------------
# Requests to protected locations

# upath PREFIX: a path under PREFIX that no other request of the run uses.
upath() { printf '%s-%s-%s%s\n' "$1" "${BATS_TEST_NUMBER:-0}" "$RANDOM" "$RANDOM"; }

backend_reached() { grep -qxF -- "$1" "$ECHO_LOG"; }

assert_backend_reached() {
    backend_reached "$1" || _af_fail "the backend never got $1"
}

refute_backend_reached() {
    if backend_reached "$1"; then
        _af_fail "the backend got $1 although the gate refused it"
    fi
}

# claim TOKEN NAME: a claim of TOKEN (unverified); token_roles TOKEN: its
# roles, comma separated, in token order.
claim() { jwt_claims "$1" | jq -r --arg n "$2" '.[$n]'; }
token_roles() { jwt_claims "$1" | jq -r '.roles | join(",")'; }

# assert_backend_identity USER_ID EMAIL ROLES SESSION_ID: the last answer is
# the echo backend's, and the identity the gate passed it is this one (ROLES
# comma separated). With lighttpd the gate's Variable- headers reach a
# FastCGI backend as the variables X_AUTH_* (no HTTP_ prefix: a client cannot
# set those). Adapt here for a web server that passes them otherwise.
assert_backend_identity() {
    assert_status 200
    assert_json_response
    local prefix
    case $AUTHFLOW_WEB in
    lighttpd) prefix=X_AUTH_ ;;
    # Apache passes the gate's variables to a FastCGI application the same
    # way, and as X-Auth-* request headers (HTTP_X_AUTH_*) besides.
    apache) prefix=X_AUTH_ ;;
    # nginx: the parameters authflow-gate-identity.conf sets from the gate's
    # X-Auth-* answer headers (auth_request_set), HTTP_X_AUTH_* overwritten.
    nginx) prefix=X_AUTH_ ;;
    esac
    local -a names=(USER_ID EMAIL ROLES SESSION_ID) want=("$@")
    local i got
    for i in 0 1 2 3; do
        got=$(json ".${prefix}${names[i]} // empty")
        [[ $got == "${want[i]}" ]] ||
            _af_fail "the backend got ${prefix}${names[i]}='$got', expected '${want[i]}'"
    done
}

# The identity a client claims for itself in X-Auth-* request headers.
SPOOF_HEADERS=(
    -H 'X-Auth-User-Id: 00000000-0000-4000-8000-000000000000'
    -H 'X-Auth-Email: mallory@example.test'
    -H 'X-Auth-Roles: admin'
    -H 'X-Auth-Session-Id: 00000000-0000-4000-8000-000000000001'
)

# refute_client_identity_passed: in the last echo answer, no X-Auth-* request
# header (HTTP_X_AUTH_*) holds what SPOOF_HEADERS sent: they are absent or
# the gate's values.
refute_client_identity_passed() {
    local n v
    for n in USER_ID EMAIL ROLES SESSION_ID; do
        v=$(json ".HTTP_X_AUTH_$n // empty")
        case $v in
        00000000-0000-4000-8000-00000000000[01] | mallory@example.test | *admin*)
            _af_fail "the client's X-Auth header reached the backend: HTTP_X_AUTH_$n='$v'"
            ;;
        esac
    done
}

# gate_ok TOKEN [curl args...]: a protected path with TOKEN reaches the
# backend, with the identity the token names.
gate_ok() {
    local t=$1 p
    shift
    p=$(upath /app/t)
    api GET "$p" -H "Authorization: Bearer $t" "$@"
    assert_backend_identity "$(claim "$t" sub)" "$(claim "$t" email)" "$(token_roles "$t")" \
        "$(claim "$t" sid)"
    assert_backend_reached "$p"
}

# assert_refused PATH STATUS CODE [curl args...]: GET PATH is refused with a
# problem STATUS / CODE and never reaches the backend.
assert_refused() {
    local path=$1 st=$2 code=$3
    shift 3
    api GET "$path" "$@"
    assert_problem "$st" "$code"
    refute_backend_reached "$path"
}

# bearer_refused TOKEN CODE [WHAT]: a protected path with TOKEN is 401 CODE.
bearer_refused() {
    local p
    p=$(upath /app/t)
    api GET "$p" -H "Authorization: Bearer $1"
    last_request="GET $p with ${3:-a token}: $1"
    assert_problem 401 "$2"
    refute_backend_reached "$p"
}

# tamper TOKEN: TOKEN with one character of its signature changed (one in the
# middle: all of its bits are signature bits, unlike the last one's).
tamper() {
    local h p s c
    IFS=. read -r h p s <<<"$1"
    c=${s:10:1}
    if [[ $c == A ]]; then c=B; else c=A; fi
    printf '%s.%s.%s%s%s\n' "$h" "$p" "${s:0:10}" "$c" "${s:11}"
}

logout() {
    api POST "$API/auth/logout" -H "Authorization: Bearer $1" -H 'Content-Length: 0'
    assert_status 204
}

# ---------------------------------------------------------------------------
# Forged tokens

# forge MODE TOKEN: tokens made from TOKEN's header and claims, one a line,
# with only what MODE names changed:
#   valid          re-signed with the service's key, nothing changed (control)
#   expired        exp an hour ago (iat, nbf before it)
#   not-yet-valid  nbf ten minutes ahead (well beyond the 60 s skew)
#   wrong-iss, wrong-aud, unknown-kid   signed with the service's key
#   alg-none       alg none/None, without and with the original signature
#   hs256-pem      HS256 keyed with the public key's PEM (algorithm confusion)
#   foreign-key    a freshly generated key of the same type, the real kid
forge() {
    "$PY" - "$1" "$2" "$KEYS_DIR" <<'PY'
import base64, hashlib, hmac, json, os, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

mode, token, keys_dir = sys.argv[1:4]
header = jwt.get_unverified_header(token)
claims = jwt.decode(token, options={"verify_signature": False})
kid, alg = header["kid"], header["alg"]
head64, body64, sig64 = token.split(".")
now = int(time.time())


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def real_key():
    """The service's private key: the one whose public half verifies token."""
    try:
        names = [kid + ".pem"] + sorted(os.listdir(keys_dir))
    except OSError as e:
        sys.exit(f"keys dir: {e}")
    for name in names:
        try:
            with open(os.path.join(keys_dir, name), "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
            jwt.decode(token, key.public_key(), algorithms=[alg],
                       options={"verify_aud": False, "verify_iss": False, "verify_exp": False,
                                "verify_nbf": False, "verify_iat": False})
        except Exception:
            continue
        return key
    sys.exit(f"no private key in {keys_dir} verifies the token")


def sign(c, key=None, kid_=kid):
    return jwt.encode(c, key or real_key(), algorithm=alg, headers={"kid": kid_, "typ": "JWT"})


out = []
if mode == "valid":
    out.append(sign(claims))
elif mode == "expired":
    out.append(sign(dict(claims, iat=now - 4500, nbf=now - 4500, exp=now - 3600)))
elif mode == "not-yet-valid":
    out.append(sign(dict(claims, iat=now + 600, nbf=now + 600, exp=now + 1500)))
elif mode == "wrong-iss":
    out.append(sign(dict(claims, iss="https://evil.example")))
    out.append(sign(dict(claims, iss=claims["iss"] + "/")))
elif mode == "wrong-aud":
    out.append(sign(dict(claims, aud="someone-else")))
    out.append(sign(dict(claims, aud=["someone-else"])))
elif mode == "unknown-kid":
    out.append(sign(claims, kid_="no-such-kid"))
elif mode == "alg-none":
    for a in ("none", "None", "NONE"):
        h = b64(json.dumps({"alg": a, "typ": "JWT", "kid": kid}).encode())
        out += [f"{h}.{body64}.", f"{h}.{body64}.{sig64}"]
elif mode == "hs256-pem":
    public = real_key().public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    secrets = [pem, pem.rstrip(b"\n")]
    if isinstance(public, rsa.RSAPublicKey):
        pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        secrets += [pkcs1, pkcs1.rstrip(b"\n")]
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    for s in secrets:
        sig = hmac.new(s, f"{h}.{body64}".encode(), hashlib.sha256).digest()
        out.append(f"{h}.{body64}.{b64(sig)}")
elif mode == "foreign-key":
    if alg.startswith("RS"):
        mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        mine = ec.generate_private_key({"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(),
                                        "ES512": ec.SECP521R1()}[alg])
    out.append(sign(claims, key=mine))
else:
    sys.exit(f"unknown mode {mode}")
print("\n".join(out))
PY
}

# forged_refused MODE CODE: every token `forge MODE` makes from $ACCESS is
# 401 CODE at a protected location and never reaches the backend.
forged_refused() {
    local mode=$1 code=$2 tokens t n=0
    tokens=$(forge "$mode" "$ACCESS") || fail "forging ($mode) failed"
    while IFS= read -r t; do
        [[ -n $t ]] || continue
        n=$((n + 1))
        remember_secret "$t"
        bearer_refused "$t" "$code" "a forged token ($mode #$n)"
    done <<<"$tokens"
    ((n > 0)) || fail "no token forged for $mode"
}

# ---------------------------------------------------------------------------
# Passing requests

@test "a valid token passes: the backend gets the caller's identity, whatever X-Auth-* the client sends" {
    new_account "Ada Gate"
    local p
    p=$(upath /app/t)
    api GET "$p" -H "Authorization: Bearer $ACCESS"
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$ACCESS")" "$SESSION_ID"
    assert_equal "$(json .REQUEST_URI)" "$p"
    assert_equal "$(json .REQUEST_METHOD)" GET
    assert_backend_reached "$p"
    [[ -n $(token_roles "$ACCESS") ]] || fail "the token names no roles"

    # Identity headers of the client's own change nothing the gate passes.
    p=$(upath /app/t)
    api GET "$p" -H "Authorization: Bearer $ACCESS" "${SPOOF_HEADERS[@]}"
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$ACCESS")" "$SESSION_ID"
    assert_backend_reached "$p"
}

@test "the application gets the request id the gate logged the request under" {
    new_account
    local p got logged
    p=$(upath /app/rid)
    api GET "$p" -H "Authorization: Bearer $ACCESS"
    assert_status 200
    # X_REQUEST_ID: a variable; a proxied application gets X-Request-Id.
    got=$(json '.X_REQUEST_ID // .HTTP_X_REQUEST_ID // empty')
    [[ -n $got ]] || fail "the backend got no request id: $body"
    logged=$(cat "$AUTHFLOW_RUN_DIR"/log/gate*.log |
        jq -r --arg p "$p" 'select(.event == "request" and .path == $p) | .request_id' | tail -n 1)
    [[ $got == "$logged" ]] || fail "the backend got $got, the gate logged '$logged'"
    # A client's own sane id is kept all the way.
    api GET "$(upath /app/rid)" -H "Authorization: Bearer $ACCESS" -H 'X-Request-Id: trace-4711-abc'
    assert_status 200
    got=$(json '.X_REQUEST_ID // .HTTP_X_REQUEST_ID // empty')
    [[ $got == trace-4711-abc ]] || fail "the backend got '$got' for the client's trace-4711-abc"
}

@test "client-sent X-Auth-* request headers never reach the backend (API.md: removed or overwritten)" {
    new_account
    local p
    p=$(upath /app/t)
    api GET "$p" -H "Authorization: Bearer $ACCESS" "${SPOOF_HEADERS[@]}"
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$ACCESS")" "$SESSION_ID"
    refute_client_identity_passed
    # Not even on the admin location, where a backend might trust a role header.
    p=$(upath /app/admin/t)
    api GET "$p" -H "Authorization: Bearer $ACCESS" -H 'X-Auth-Roles: admin'
    assert_problem 403 forbidden
    refute_backend_reached "$p"
}

@test "/files/page.txt, a static file behind the gate: served with a token, 401 without" {
    new_account
    local t
    api GET /files/page.txt -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_equal "$body" "secret page"

    api GET /files/page.txt
    assert_problem 401 unauthorized
    [[ $body != *"secret page"* ]] || _af_fail "the file's content came with the refusal"

    t=$(tamper "$ACCESS")
    remember_secret "$t"
    api GET /files/page.txt -H "Authorization: Bearer $t"
    assert_problem 401 invalid_token
    [[ $body != *"secret page"* ]] || _af_fail "the file's content came with the refusal"
}

@test "a protected path a regular-expression location could claim (.php) is still gated" {
    # The nginx stack has such a location, as a PHP set-up would.
    local p
    p=$(upath /app/x).php
    api GET "$p"
    assert_problem 401 unauthorized
    refute_backend_reached "$p"
    new_account
    p=$(upath /app/x).php
    api GET "$p" -H "Authorization: Bearer $ACCESS"
    assert_backend_reached "$p"
}

@test "a POST with a body above max_body_bytes to a protected location: the gate still decides" {
    new_account
    local p max
    max=$(conf_get server max_body_bytes)
    p=$(upath /app/post)
    head -c $((${max:-65536} + 1000)) /dev/zero | tr '\0' x >"$BATS_TEST_TMPDIR/big"
    api POST "$p" -H "Authorization: Bearer $ACCESS" -H 'Content-Type: text/plain' \
        --data-binary "@$BATS_TEST_TMPDIR/big"
    assert_backend_reached "$p"
    api POST "$p" -H 'Content-Type: text/plain' --data-binary "@$BATS_TEST_TMPDIR/big"
    assert_problem 401 unauthorized
}

@test "GET /api/v1/auth/verify: 200 with the identity as JSON and X-Auth-* headers; 401 without a token" {
    new_account
    api GET "$API/auth/verify" -H "Authorization: Bearer $ACCESS"
    assert_status 200
    assert_json_response
    assert_no_store
    assert_equal "$(json .user_id)" "$USER_ID"
    assert_equal "$(json .email)" "$EMAIL"
    assert_equal "$(json .session_id)" "$SESSION_ID"
    assert_equal "$(json -c .roles)" "$(jwt_claims "$ACCESS" | jq -c .roles)"
    assert_equal "$(header x-auth-user-id)" "$USER_ID"
    assert_equal "$(header x-auth-email)" "$EMAIL"
    assert_equal "$(header x-auth-roles)" "$(token_roles "$ACCESS")"
    assert_equal "$(header x-auth-session-id)" "$SESSION_ID"

    api GET "$API/auth/verify"
    assert_problem 401 unauthorized
    [[ -z $(header x-auth-user-id) ]] || _af_fail "a refusal carries X-Auth-User-Id"

    local t
    t=$(tamper "$ACCESS")
    remember_secret "$t"
    api GET "$API/auth/verify" -H "Authorization: Bearer $t"
    assert_problem 401 invalid_token
}

@test "the gate's /api/v1/auth/verify route leaves /api/v1/auth/verify-email to authflow-auth" {
    api_json POST "$API/auth/verify-email/resend" "$(jq -cn --arg e "$(unique_email)" '{email: $e}')"
    assert_status 202
    # An unknown email: the same 400 invalid_code as a wrong code.
    api_json POST "$API/auth/verify-email" "$(jq -cn --arg e "$(unique_email)" '{email: $e, code: "123456"}')"
    assert_problem 400 invalid_code
}

@test "a copy of a real token re-signed with the service's key passes (control for the forged tokens)" {
    new_account
    local t
    t=$(forge valid "$ACCESS") || fail "forging failed"
    remember_secret "$t"
    assert_equal "$(claim "$t" sub)" "$USER_ID"
    assert_equal "$(claim "$t" sid)" "$SESSION_ID"
    gate_ok "$t"
}

# ---------------------------------------------------------------------------
# Refused tokens

@test "no token: 401 unauthorized (also for Basic credentials and a token in the URL)" {
    assert_refused "$(upath /app/t)" 401 unauthorized
    assert_refused "$(upath /app/admin/t)" 401 unauthorized
    new_account
    assert_refused "$(upath /app/t)" 401 unauthorized -u "$EMAIL:$PASSWORD"
    # Tokens are never accepted in URLs.
    assert_refused "$(upath /app/t)?access_token=$ACCESS" 401 unauthorized
    # An empty Bearer.
    assert_refused "$(upath /app/t)" 401 unauthorized -H 'Authorization: Bearer '
}

@test "an expired token: 401 token_expired" {
    new_account
    forged_refused expired token_expired
}

@test "a token not valid before a time beyond the 60 s skew: 401 invalid_token" {
    new_account
    forged_refused not-yet-valid invalid_token
}

@test "a tampered signature: 401 invalid_token" {
    new_account
    local h p s t
    t=$(tamper "$ACCESS")
    remember_secret "$t"
    bearer_refused "$t" invalid_token "a token with a changed signature"
    IFS=. read -r h p s <<<"$ACCESS"
    # And a changed payload under the original signature.
    t="$h.$(jwt_claims "$ACCESS" | jq -c '.roles = ["admin"]' | b64url_encode).$s"
    remember_secret "$t"
    bearer_refused "$t" invalid_token "a token with a changed payload"
}

@test "a wrong iss: 401 invalid_token" {
    new_account
    forged_refused wrong-iss invalid_token
}

@test "a wrong aud: 401 invalid_token" {
    new_account
    forged_refused wrong-aud invalid_token
}

@test "alg none: 401 invalid_token" {
    new_account
    forged_refused alg-none invalid_token
}

@test "HS256 keyed with the public key's PEM (algorithm confusion): 401 invalid_token" {
    new_account
    forged_refused hs256-pem invalid_token
}

@test "an unknown kid: 401 invalid_token" {
    new_account
    forged_refused unknown-kid invalid_token
}

@test "a token signed by a freshly generated key under the real kid: 401 invalid_token" {
    new_account
    forged_refused foreign-key invalid_token
}

@test "a token of a logged-out session is refused at once: 401 session_revoked" {
    new_account
    gate_ok "$ACCESS"
    logout "$ACCESS"
    # No sleep: the logout's 204 is the moment the token stops working.
    bearer_refused "$ACCESS" session_revoked "the token of a logged-out session"
    api GET "$API/auth/verify" -H "Authorization: Bearer $ACCESS"
    assert_problem 401 session_revoked
}

@test "device binding: the token replayed with another User-Agent is 401 invalid_token" {
    new_account
    # Control: the client that logged in (curl's own User-Agent) passes.
    gate_ok "$ACCESS"
    assert_refused "$(upath /app/t)" 401 invalid_token -H "Authorization: Bearer $ACCESS" \
        -A 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'
    assert_refused "$(upath /app/t)" 401 invalid_token -H "Authorization: Bearer $ACCESS" -A ''
}

@test "/app/admin/: 403 forbidden for a user, 200 for an admin" {
    new_account
    assert_refused "$(upath /app/admin/t)" 403 forbidden -H "Authorization: Bearer $ACCESS"
    assert_refused "/app/admin" 403 forbidden -H "Authorization: Bearer $ACCESS"
    # The location is matched on the decoded, normalised path.
    local p
    for p in "/app//admin/$(upath t)" "/app/./admin/$(upath t)" "/app/%61dmin/$(upath t)" \
        "/app/x/../admin/$(upath t)"; do
        assert_refused "$p" 403 forbidden -H "Authorization: Bearer $ACCESS" --path-as-is
    done
    # An encoded slash: 403, or 404 where the server refuses encoded slashes
    # outright (Apache's default); never the backend.
    local tag
    tag=$(upath t)
    api GET "/app/admin%2f$tag" -H "Authorization: Bearer $ACCESS" --path-as-is
    [[ $status_code == 403 || $status_code == 404 ]] ||
        _af_fail "/app/admin%2f... answered $status_code, not 403 or 404"
    if grep -qF -- "$tag" "$ECHO_LOG"; then
        _af_fail "the backend got /app/admin%2f..."
    fi
    # Paths are case-sensitive: /app/ADMIN/ is another location, open to users.
    p=$(upath /app/ADMIN/t)
    api GET "$p" -H "Authorization: Bearer $ACCESS"
    assert_status 200

    psql -qAtX -c "INSERT INTO user_roles (user_id, role) VALUES ('$USER_ID', 'admin')"
    # Roles are in the token: log in again.
    login "$EMAIL" "$PASSWORD"
    assert_status 200
    [[ ,$(token_roles "$ACCESS"), == *,admin,* ]] || fail "the new token has no admin role"
    p=$(upath /app/admin/t)
    api GET "$p" -H "Authorization: Bearer $ACCESS"
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$ACCESS")" "$SESSION_ID"
    assert_backend_reached "$p"
}

@test "cookie mode: the access cookie passes a GET; an unsafe request without X-CSRF-Token is 403 csrf_failed" {
    new_account
    local c csrf jar p
    c=$(cookie_value "$ACCESS_COOKIE")
    csrf=$(cookie_value csrf)
    [[ -n $c && -n $csrf ]] || _af_fail "login set no $ACCESS_COOKIE or csrf cookie"
    remember_secret "$c" "$csrf"
    jar="$ACCESS_COOKIE=$c; csrf=$csrf"

    p=$(upath /app/c)
    api GET "$p" -b "$jar"
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$c")" "$SESSION_ID"
    assert_backend_reached "$p"

    p=$(upath /app/x)
    api POST "$p" -b "$jar" -H 'Content-Type: application/json' --data-binary '{"a": 1}'
    assert_problem 403 csrf_failed
    refute_backend_reached "$p"

    p=$(upath /app/x)
    api DELETE "$p" -b "$jar" -H "X-CSRF-Token: x$csrf"
    assert_problem 403 csrf_failed
    refute_backend_reached "$p"

    # The right X-CSRF-Token, from an Origin outside the allow-list.
    p=$(upath /app/x)
    api POST "$p" -b "$jar" -H "X-CSRF-Token: $csrf" -H 'Origin: https://evil.example' \
        -H 'Content-Type: application/json' --data-binary '{"a": 1}'
    assert_problem 403 csrf_failed
    refute_backend_reached "$p"

    # Controls: the double submit done right passes, and so does a Bearer
    # token, which needs none.
    p=$(upath /app/x)
    api POST "$p" -b "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
        --data-binary '{"a": 1}'
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$c")" "$SESSION_ID"
    assert_equal "$(json .REQUEST_METHOD)" POST
    assert_backend_reached "$p"
    p=$(upath /app/x)
    api POST "$p" -H "Authorization: Bearer $ACCESS" -H 'Content-Type: application/json' \
        --data-binary '{"a": 1}'
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$ACCESS")" "$SESSION_ID"
}

@test "login redirect: a browser GET without a session gets 302 to login_url with a safe return_to; API requests still 401" {
    local html='Accept: text/html,application/xhtml+xml,*/*;q=0.8' p
    p=$(upath /app/page)
    api GET "$p" -H "$html"
    assert_status 302
    assert_equal "$(header location)" "$LOGIN_URL?return_to=$p"
    refute_backend_reached "$p"

    # The query goes along, percent-encoded ('/' stays as it is).
    p=$(upath /app/page)
    api GET "$p?q=1&r=%2F" -H "$html"
    assert_status 302
    assert_equal "$(header location)" "$LOGIN_URL?return_to=$p%3Fq%3D1%26r%3D%252F"

    # A request URI that is not a plain path on this site comes back as "/".
    local u
    for u in "//evil.example/../app/$(upath x)" "//app/$(upath x)" "/app/$(upath x)\\evil"; do
        api GET "$u" -H "$html" --path-as-is
        assert_status 302
        assert_equal "$(header location)" "$LOGIN_URL?return_to=/"
        refute_backend_reached "$u"
    done

    # An expired session in a browser is sent to log in too.
    new_account
    local t
    t=$(forge expired "$ACCESS") || fail "forging failed"
    remember_secret "$t"
    p=$(upath /app/page)
    api GET "$p" -H "$html" -H "Authorization: Bearer $t"
    assert_status 302
    assert_equal "$(header location)" "$LOGIN_URL?return_to=$p"

    # API clients, and unsafe methods, get the problem.
    assert_refused "$(upath /app/page)" 401 unauthorized -H 'Accept: application/json'
    p=$(upath /app/page)
    api POST "$p" -H "$html" -H 'Content-Length: 0'
    assert_problem 401 unauthorized
    refute_backend_reached "$p"
    # A role refusal is no login matter.
    assert_refused "$(upath /app/admin/page)" 403 forbidden -H "$html" -H "Authorization: Bearer $ACCESS"
    # And a browser with a session passes.
    p=$(upath /app/page)
    api GET "$p" -H "$html" -H "Authorization: Bearer $ACCESS"
    assert_backend_identity "$USER_ID" "$EMAIL" "$(token_roles "$ACCESS")" "$SESSION_ID"
}

# evalsha_calls: how many session checks Redis has run (EVALSHA calls).
evalsha_calls() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats |
        sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}

# burst TOKEN N PATH: N requests with TOKEN over one connection (PATH?1 to
# PATH?N); prints their statuses, one a line.
burst() {
    curl -s -H "Authorization: Bearer $1" -o /dev/null -w '%{http_code}\n' "$AUTHFLOW_BASE_URL$3?[1-$2]"
}

@test "under load the gate remembers live sessions, and still refuses a logged-out one on the very next request" {
    new_account
    local tok=$ACCESS before after pids=() i n
    burst "$tok" 5 /app/burst-warm >/dev/null
    before=$(evalsha_calls)
    # Several connections at once, so that every gate process is busy.
    for i in 1 2 3; do
        burst "$tok" 300 /app/burst >"$BATS_TEST_TMPDIR/burst.$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    after=$(evalsha_calls)
    n=$(cat "$BATS_TEST_TMPDIR"/burst.* | grep -c '^200$' || true)
    [[ $n == 900 ]] || fail "900 requests with a live token: $n answered 200 ($(sort "$BATS_TEST_TMPDIR"/burst.* | uniq -c | tr '\n' ' '))"
    # Each gate process asks Redis about the session about once every
    # session_memory_ms; far fewer checks than requests shows the memory works.
    ((after - before < 450)) || fail "900 gate requests ran $((after - before)) session checks in Redis"

    # Again under load, until the checks are done: the logout lands while
    # the gate processes remember the session.
    # (Each curl keeps its connection busy: a new curl would leave gaps in
    # which a gate process stops trusting its memory.)
    local mark=burst-late-$RANDOM$RANDOM
    for i in 1 2 3; do burst "$tok" 20000 "/app/$mark" >/dev/null & done
    for ((i = 0; i < 100; i++)); do
        (($(grep -c "/app/$mark" "$ECHO_LOG" || true) > 300)) && break
        sleep 0.1
    done
    burst "$tok" 50 /app/burst-fg >"$BATS_TEST_TMPDIR/fg"
    n=$(grep -c '^200$' "$BATS_TEST_TMPDIR/fg" || true)
    logout "$tok"
    local rc=0
    for ((i = 0; i < 20 && rc == 0; i++)); do
        bearer_refused "$tok" session_revoked "a token logged out while the gate remembered its session (#$i)" ||
            rc=1
    done
    pkill -f -- "/app/$mark" || true
    wait 2>/dev/null || true
    ((rc == 0)) || return 1
    [[ $n == 50 ]] || fail "50 requests with a live token under load: $n answered 200"
}

# ---------------------------------------------------------------------------
# Redis trouble. These disturb the stack: keep them last (before the logs).

# redis_stop_process / redis_cont_process: SIGSTOP and SIGCONT the stack's
# Redis: it hangs with every connection open, as a stuck host would.
redis_stop_process() {
    local pid
    pid=$(redis_pid)
    printf '%s\n' "$pid" >"$BATS_FILE_TMPDIR/redis-stopped"
    kill -STOP "$pid"
}
redis_cont_process() {
    local i
    kill -CONT "$(<"$BATS_FILE_TMPDIR/redis-stopped")"
    rm -f "$BATS_FILE_TMPDIR/redis-stopped"
    for ((i = 0; i < 50; i++)); do redis_answers && break; sleep 0.1; done
    redis_answers || fail "Redis did not answer after SIGCONT"
}

# refused_from_now_on TOKEN WHAT: eight gate requests over two seconds, the
# first at once, every one refused.
refused_from_now_on() {
    local i
    for ((i = 0; i < 8; i++)); do
        bearer_refused "$1" session_revoked "$2 (#$i)"
        sleep 0.25
    done
}

@test "Redis stalled during a logout: the session stays refused once Redis answers again" {
    new_account
    # The gate has seen the session live (and remembers that in Redis).
    gate_ok "$ACCESS"
    gate_ok "$ACCESS"
    redis_stop_process
    # The revocation is in PostgreSQL: the logout works while Redis hangs.
    logout "$ACCESS"
    bearer_refused "$ACCESS" session_revoked "a token logged out while Redis hung"
    redis_cont_process
    refused_from_now_on "$ACCESS" "a token logged out while Redis hung, after it resumed"
}

@test "Redis stalled during a logout, no gate request while it hung: refused at once when it answers again" {
    new_account
    gate_ok "$ACCESS"
    gate_ok "$ACCESS"
    redis_stop_process
    # No gate process talks to Redis while it hangs: their connections stay
    # open and they learn nothing of the stall.
    logout "$ACCESS"
    redis_cont_process
    refused_from_now_on "$ACCESS" "a token logged out while Redis hung (the gate idle)"
}

@test "Redis restarted from a snapshot taken before a logout: the session stays refused" {
    new_account
    gate_ok "$ACCESS"
    gate_ok "$ACCESS"
    # The snapshot holds the gate's memory of the live session.
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" SAVE) == OK ]] || fail "SAVE failed"
    redis_kill
    logout "$ACCESS"
    redis_start
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" DBSIZE) -gt 0 ]] || fail "Redis did not load its snapshot"
    rm -f "$AUTHFLOW_RUN_DIR/redis/dump.rdb"
    refused_from_now_on "$ACCESS" "a token logged out while Redis was down, after it loaded an older snapshot"
}

@test "Redis down: the gate falls back to PostgreSQL, and uses Redis again once it is back (no responder restarted)" {
    new_account
    local a_live=$ACCESS sid_live=$SESSION_ID
    new_account
    local a_during=$ACCESS
    new_account
    local a_before=$ACCESS
    logout "$a_before"
    gate_ok "$a_live"
    gate_ok "$a_during"
    bearer_refused "$a_before" session_revoked "a token logged out before Redis went down"
    local gate_pids
    gate_pids=$(sort "$AUTHFLOW_PIDFILE_GATE")

    redis_kill
    gate_ok "$a_live"
    api GET "$API/auth/verify" -H "Authorization: Bearer $a_live"
    assert_status 200
    bearer_refused "$a_before" session_revoked "a token logged out before Redis went down"
    # Revocation is in PostgreSQL: logout works without Redis, and holds.
    logout "$a_during"
    bearer_refused "$a_during" session_revoked "a token logged out while Redis was down"

    redis_start
    # The responders reconnect by themselves. Every answer must be right
    # meanwhile; the gate writing its session cache to Redis again shows it
    # uses Redis again.
    local i used=0
    for ((i = 0; i < 30; i++)); do
        gate_ok "$a_live"
        bearer_refused "$a_during" session_revoked "a token logged out while Redis was down"
        bearer_refused "$a_before" session_revoked "a token logged out before Redis went down"
        if [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" EXISTS "af:sess:$sid_live") == 1 ]]; then
            used=1
            break
        fi
        sleep 0.2
    done
    ((used)) || fail "the gate did not use Redis again within 6 s of its restart"
    # The same gate processes as before.
    assert_equal "$(sort "$AUTHFLOW_PIDFILE_GATE")" "$gate_pids"
    local p
    for p in $gate_pids; do pid_alive "$p" || fail "gate process $p is gone"; done
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
