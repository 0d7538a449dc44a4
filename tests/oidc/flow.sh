#!/usr/bin/env bash
# Demonstrates, with curl (plus jq and python3 for base64url/SHA-256/RSA), a
# full OpenID Connect authorization code flow with PKCE S256, state and nonce
# against the test provider started by tests/oidc/run.sh:
#
#   discovery -> JWKS -> /auth -> /interaction/UID (login form) -> POST login
#   (auto-consent) -> redirects until Location is the client's redirect_uri
#   (never requested: nothing listens there) -> token endpoint with
#   client_secret_basic -> id_token checks (signature against the JWKS, iss,
#   aud, azp, exp, iat, nonce) -> userinfo -> replaying the code fails.
#
# usage: tests/oidc/flow.sh DIR        (DIR as given to run.sh start)
# Defaults come from DIR/env (OIDC_ISSUER), the first client of
# DIR/clients.json and the first account of DIR/accounts.json; override with
# OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI,
# OIDC_LOGIN, OIDC_PASSWORD, OIDC_SCOPE, OIDC_TOKEN_AUTH (client_secret_basic,
# the default, or client_secret_post).
# Exit status 0 only when every check passed.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
for tool in curl jq python3; do
	command -v "$tool" >/dev/null || { echo "flow.sh: $tool not found" >&2; exit 2; }
done

if [ -z "${OIDC_ISSUER:-}" ] && [ -f "$dir/env" ]; then
	OIDC_ISSUER=$(sed -n 's/^OIDC_ISSUER=//p' "$dir/env")
fi
: "${OIDC_ISSUER:?no OIDC_ISSUER (start the provider with run.sh start DIR)}"
CLIENT_ID=${OIDC_CLIENT_ID:-$(jq -r '(if type == "array" then . else .clients end)[0].client_id' "$dir/clients.json")}
CLIENT_SECRET=${OIDC_CLIENT_SECRET:-$(jq -r --arg c "$CLIENT_ID" '(if type == "array" then . else .clients end)[] | select(.client_id == $c) | .client_secret' "$dir/clients.json")}
REDIRECT_URI=${OIDC_REDIRECT_URI:-$(jq -r --arg c "$CLIENT_ID" '(if type == "array" then . else .clients end)[] | select(.client_id == $c) | .redirect_uris[0]' "$dir/clients.json")}
LOGIN=${OIDC_LOGIN:-$(jq -r '(if type == "array" then . else .accounts end)[0].email' "$dir/accounts.json")}
PASSWORD=${OIDC_PASSWORD:-$(jq -r --arg l "$LOGIN" '(if type == "array" then . else .accounts end)[] | select(.email == $l or .sub == $l) | .password' "$dir/accounts.json")}
SCOPE=${OIDC_SCOPE:-openid email profile}
TOKEN_AUTH=${OIDC_TOKEN_AUTH:-client_secret_basic}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
jar=$work/cookies

passed=0
failed=0
check() { # check DESCRIPTION EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then
		passed=$((passed + 1))
		printf 'ok    %s\n' "$1"
	else
		failed=$((failed + 1))
		printf 'FAIL  %s: expected [%s], got [%s]\n' "$1" "$2" "$3"
	fi
}
show() { printf '      %-16s %s\n' "$1" "$2"; }
die() {
	echo "flow.sh: $*" >&2
	echo "flow: $passed passed, $((failed + 1)) failed"
	exit 1
}

rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
s256() { python3 -c 'import sys, hashlib, base64; print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).rstrip(b"=").decode())' "$1"; }
urlenc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
query_param() { python3 -c 'import sys, urllib.parse as u; q = u.parse_qs(u.urlsplit(sys.argv[1]).query); print(q.get(sys.argv[2], [""])[0])' "$1" "$2"; }
# one request, no redirect following; prints "STATUS LOCATION"
hop() { curl -sS -o "$work/body" -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}' "$@"; }

echo "== issuer $OIDC_ISSUER, client $CLIENT_ID ($TOKEN_AUTH), account $LOGIN"

# ---- 1. discovery
curl -sSf "$OIDC_ISSUER/.well-known/openid-configuration" >"$work/disco"
check "discovery issuer" "$OIDC_ISSUER" "$(jq -r .issuer "$work/disco")"
check "discovery S256 supported" true "$(jq '.code_challenge_methods_supported | index("S256") != null' "$work/disco")"
check "discovery client_secret_basic supported" true "$(jq '.token_endpoint_auth_methods_supported | index("client_secret_basic") != null' "$work/disco")"
AUTH_EP=$(jq -r .authorization_endpoint "$work/disco")
TOKEN_EP=$(jq -r .token_endpoint "$work/disco")
USERINFO_EP=$(jq -r .userinfo_endpoint "$work/disco")
JWKS_URI=$(jq -r .jwks_uri "$work/disco")
show authorization "$AUTH_EP"
show token "$TOKEN_EP"
show userinfo "$USERINFO_EP"
show jwks_uri "$JWKS_URI"

# ---- 2. JWKS
curl -sSf "$JWKS_URI" >"$work/jwks"
check "JWKS has keys without private parts" true "$(jq '(.keys | length > 0) and all(.keys[]; has("d") | not)' "$work/jwks")"
show keys "$(jq -c '[.keys[] | {kid, kty, alg, use}]' "$work/jwks")"

# ---- 3. authorization request
STATE=$(rand)
NONCE=$(rand)
VERIFIER=$(rand)$(rand) # 86 characters, within PKCE's 43..128
CHALLENGE=$(s256 "$VERIFIER")
r=$(hop -G "$AUTH_EP" \
	--data-urlencode "client_id=$CLIENT_ID" \
	--data-urlencode response_type=code \
	--data-urlencode "scope=$SCOPE" \
	--data-urlencode "redirect_uri=$REDIRECT_URI" \
	--data-urlencode "state=$STATE" \
	--data-urlencode "nonce=$NONCE" \
	--data-urlencode "code_challenge=$CHALLENGE" \
	--data-urlencode code_challenge_method=S256)
loc=${r#* }
check "/auth redirects (303)" 303 "${r%% *}"
case $loc in
"$OIDC_ISSUER"/interaction/*) check "/auth -> interaction" yes yes ;;
*) die "/auth did not redirect to an interaction: $r $(cat "$work/body")" ;;
esac
show interaction "$loc"

# ---- 4. login form
r=$(hop "$loc")
check "interaction page (200)" 200 "${r%% *}"
action=$(sed -n 's/.*<form id="login" method="post" action="\([^"]*\)".*/\1/p' "$work/body")
[ -n "$action" ] || die "no login form in the interaction page"
show form_action "$action"

# ---- 5. POST the login, then follow redirects by hand until the redirect_uri
r=$(hop --data-urlencode "login=$LOGIN" --data-urlencode "password=$PASSWORD" "$OIDC_ISSUER$action")
check "login accepted (303)" 303 "${r%% *}"
[ "${r%% *}" = 303 ] || die "login as $LOGIN failed: $(sed -n 's/.*<p id="error"[^>]*>\([^<]*\).*/\1/p' "$work/body")"
loc=${r#* }
hops=0
while [ "${loc#"$REDIRECT_URI"}" = "$loc" ]; do
	hops=$((hops + 1))
	[ $hops -le 10 ] || die "too many redirects"
	case $loc in
	"$OIDC_ISSUER"/*) ;;
	*) die "unexpected redirect to $loc" ;;
	esac
	show hop "$loc"
	r=$(hop "$loc")
	case ${r%% *} in
	302 | 303) loc=${r#* } ;;
	*) die "expected a redirect from $loc, got $r: $(head -c 300 "$work/body")" ;;
	esac
done
show callback "$loc"

# ---- 6. the code on the redirect URI (not requested: nothing listens there)
case $loc in
"$REDIRECT_URI?"*) check "Location is redirect_uri?..." yes yes ;;
*) check "Location is redirect_uri?..." "$REDIRECT_URI?..." "$loc" ;;
esac
CODE=$(query_param "$loc" code)
check "no error on the redirect" "" "$(query_param "$loc" error)"
check "code present" yes "$([ -n "$CODE" ] && echo yes || echo no)"
check "state echoed" "$STATE" "$(query_param "$loc" state)"
check "iss on the redirect (RFC 9207)" "$OIDC_ISSUER" "$(query_param "$loc" iss)"
[ -n "$CODE" ] || die "no code"

# ---- 7. token exchange, client_secret_basic (RFC 6749 2.3.1: id and secret
# form-urlencoded inside the Basic credentials) or, with
# OIDC_TOKEN_AUTH=client_secret_post, client_id/client_secret in the body
token_req() {
	local auth
	if [ "$TOKEN_AUTH" = client_secret_post ]; then
		auth=(--data-urlencode "client_id=$CLIENT_ID" --data-urlencode "client_secret=$CLIENT_SECRET")
	else
		auth=(-u "$(urlenc "$CLIENT_ID"):$(urlenc "$CLIENT_SECRET")")
	fi
	curl -sS -o "$work/$1" -w '%{http_code}' "${auth[@]}" \
		--data-urlencode grant_type=authorization_code \
		--data-urlencode "code=$CODE" \
		--data-urlencode "redirect_uri=$REDIRECT_URI" \
		--data-urlencode "code_verifier=$VERIFIER" \
		"$TOKEN_EP"
}
status=$(token_req token)
check "token endpoint (200)" 200 "$status"
[ "$status" = 200 ] || die "token response: $(cat "$work/token")"
check "token_type Bearer" Bearer "$(jq -r .token_type "$work/token")"
show scope "$(jq -r .scope "$work/token")"
show expires_in "$(jq -r .expires_in "$work/token")"
ID_TOKEN=$(jq -r '.id_token // empty' "$work/token")
ACCESS_TOKEN=$(jq -r '.access_token // empty' "$work/token")
[ -n "$ID_TOKEN" ] || die "no id_token in the token response"

# ---- 8. the id_token: decode, verify RS256 against the JWKS (pure python)
ID_TOKEN=$ID_TOKEN python3 - "$work/jwks" >"$work/idtoken" <<'PY'
import base64, hashlib, json, os, sys

def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

tok = os.environ["ID_TOKEN"]
h64, p64, s64 = tok.split(".")
header = json.loads(b64d(h64))
payload = json.loads(b64d(p64))
jwks = json.load(open(sys.argv[1]))
sig_ok = False
key = next((k for k in jwks["keys"] if k.get("kid") == header.get("kid") and k.get("kty") == "RSA"), None)
if header.get("alg") == "RS256" and key:
    n = int.from_bytes(b64d(key["n"]), "big")
    e = int.from_bytes(b64d(key["e"]), "big")
    k = (n.bit_length() + 7) // 8
    sig = int.from_bytes(b64d(s64), "big")
    em = pow(sig, e, n).to_bytes(k, "big")
    # EMSA-PKCS1-v1_5 with the SHA-256 DigestInfo prefix
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(f"{h64}.{p64}".encode()).digest()
    sig_ok = em == b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info)) + b"\x00" + digest_info
print(json.dumps({"header": header, "payload": payload, "sig_ok": sig_ok}))
PY
p() { jq -r ".payload.$1 | if type == \"array\" or type == \"object\" then tojson else tostring end" "$work/idtoken"; }
now=$(date +%s)
show header "$(jq -c .header "$work/idtoken")"
for c in iss aud azp sub exp iat auth_time nonce email email_verified name; do show "$c" "$(p "$c")"; done
check "id_token alg RS256" RS256 "$(jq -r .header.alg "$work/idtoken")"
check "id_token signature valid (JWKS kid $(jq -r .header.kid "$work/idtoken"))" true "$(jq -r .sig_ok "$work/idtoken")"
check "id_token iss" "$OIDC_ISSUER" "$(p iss)"
aud_ok=$(jq -r --arg c "$CLIENT_ID" '.payload | if (.aud | type) == "array" then ((.aud | index($c)) != null and (.azp == $c)) else .aud == $c and (.azp == null or .azp == $c) end' "$work/idtoken")
check "id_token aud is client_id (azp, if any, too)" true "$aud_ok"
check "id_token nonce matches" "$NONCE" "$(p nonce)"
check "id_token not expired" true "$(jq -r --argjson now "$now" '.payload.exp > $now' "$work/idtoken")"
check "id_token iat not in the future" true "$(jq -r --argjson now "$now" '.payload.iat <= $now + 5' "$work/idtoken")"
check "id_token email" "$LOGIN" "$(p email)"
check "id_token email_verified is boolean" true "$(jq -r '.payload.email_verified | type == "boolean"' "$work/idtoken")"

# ---- 9. userinfo with the access token
curl -sS -o "$work/userinfo" -w '%{http_code}' -H "Authorization: Bearer $ACCESS_TOKEN" "$USERINFO_EP" >"$work/ui_status"
check "userinfo (200)" 200 "$(cat "$work/ui_status")"
check "userinfo sub equals id_token sub" "$(p sub)" "$(jq -r .sub "$work/userinfo")"
show userinfo "$(jq -c . "$work/userinfo")"

# ---- 10. replaying the code fails
status=$(token_req replay)
check "code replay rejected (400)" 400 "$status"
check "code replay error invalid_grant" invalid_grant "$(jq -r .error "$work/replay")"
# the provider also revokes what the first exchange issued
check "access token revoked after replay (401)" 401 "$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ACCESS_TOKEN" "$USERINFO_EP")"

echo "flow: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
