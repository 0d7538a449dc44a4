#!/usr/bin/env bats
# Access tokens checked by an independent JWT library (Debian's python3-jwt,
# PyJWT) using only the published JWKS, and forged tokens refused by the
# service.

load helpers

PY=/usr/bin/python3

setup_file() {
    af_stack_up AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false
    AUD=$(conf_get tokens audience)
    ISS=$(conf_get tokens issuer)
    KEYS_DIR=$(conf_get tokens keys_dir)
    # Defaults of etc/authflow.conf when the stack's file leaves them out.
    export AUD=${AUD:-authflow} ISS=${ISS:-$AUTHFLOW_BASE_URL} KEYS_DIR
}
teardown_file() { af_stack_down; }

# jwt_tool verify JWKS_FILE TOKEN AUD ISS: prints {"header", "claims", "jwk"}
#   of a token PyJWT verified, or fails.
# jwt_tool forge MODE JWKS_FILE TOKEN [KEYS_DIR]: prints forged tokens, one a
#   line, built from TOKEN's claims.
jwt_tool() {
    "$PY" - "$@" <<'PY'
import base64, hashlib, hmac, json, os, sys, time, uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_for(jwks, kid):
    for k in jwks["keys"]:
        if k.get("kid") == kid:
            return k
    sys.exit(f"no key with kid {kid!r} in the JWKS")


def unverified_claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def real_private_key(keys_dir, public):
    """The private key in keys_dir whose public half is `public`."""
    for root, _, files in os.walk(keys_dir or "/nonexistent"):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
                key = serialization.load_pem_private_key(data, password=None)
            except Exception:
                continue
            if key.public_key().public_numbers() == public.public_numbers():
                return key
    return None


def verify(jwks_file, token, aud, iss):
    jwks = json.load(open(jwks_file))
    header = jwt.get_unverified_header(token)
    jwk = jwk_for(jwks, header.get("kid"))
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience=aud, issuer=iss,
                        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
    print(json.dumps({"header": header, "claims": claims, "jwk": jwk}))


def forge(mode, jwks_file, token, keys_dir=""):
    jwks = json.load(open(jwks_file))
    header = jwt.get_unverified_header(token)
    kid = header["kid"]
    jwk = jwk_for(jwks, kid)
    public = jwt.PyJWK(jwk).key
    claims = unverified_claims(token)
    head64, body64, _ = token.split(".")
    out = []
    if mode == "none":
        h = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        out += [f"{h}.{body64}.", f"{h}.{body64}.{token.split('.')[2]}"]
        h = b64(json.dumps({"alg": "None", "typ": "JWT", "kid": kid}).encode())
        out.append(f"{h}.{body64}.")
    elif mode == "hs256-pem":
        # Algorithm confusion: HMAC keyed with the public key's PEM text.
        secrets = []
        pem = public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        secrets += [pem, pem.rstrip(b"\n")]
        if jwk["kty"] == "RSA":
            pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            secrets += [pkcs1, pkcs1.rstrip(b"\n")]
        for root, _, files in os.walk(keys_dir or "/nonexistent"):
            for name in files:
                try:
                    data = open(os.path.join(root, name), "rb").read()
                except OSError:
                    continue
                if b"PUBLIC KEY" in data:
                    secrets.append(data)
        for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)):
            h = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
            for s in secrets:
                sig = hmac.new(s, f"{h}.{body64}".encode(), digest).digest()
                out.append(f"{h}.{body64}.{b64(sig)}")
    elif mode == "foreign-key":
        mine = ec.generate_private_key(ec.SECP256R1())
        alg = "ES256"
        out.append(jwt.encode(claims, mine, algorithm=alg, headers={"kid": kid}))
        # The attacker's key offered in the token itself, or by URL.
        pub = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(mine.public_key()))
        out.append(jwt.encode(claims, mine, algorithm=alg, headers={"kid": kid, "jwk": pub}))
        out.append(jwt.encode(claims, mine, algorithm=alg, headers={"jwk": pub}))
        out.append(jwt.encode(claims, mine, algorithm=alg,
                              headers={"kid": "attacker", "jku": "http://127.0.0.1:9/jwks.json"}))
        out.append(jwt.encode(claims, mine, algorithm=alg,
                              headers={"kid": kid, "x5u": "http://127.0.0.1:9/cert.pem"}))
    elif mode.startswith("real:"):
        # Signed with the service's own key: only the claims are wrong.
        key = real_private_key(keys_dir, public)
        if key is None:
            sys.exit(3)
        now = int(time.time())
        c = dict(claims)
        h = {"kid": kid}
        what = mode[5:]
        if what == "valid":
            pass
        elif what == "expired":
            c.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
        elif what == "not-yet-valid":
            c.update(iat=now + 3600, nbf=now + 3600, exp=now + 4500)
        elif what == "wrong-aud":
            c["aud"] = "someone-else"
        elif what == "wrong-iss":
            c["iss"] = "https://evil.example"
        elif what == "unknown-kid":
            h["kid"] = "no-such-kid"
        elif what == "unknown-session":
            c["sid"] = str(uuid.uuid4())
        elif what == "no-exp":
            del c["exp"]
        else:
            sys.exit(f"unknown mode {mode}")
        out.append(jwt.encode(c, key, algorithm=header["alg"], headers=h))
    else:
        sys.exit(f"unknown mode {mode}")
    print("\n".join(out))


cmd, args = sys.argv[1], sys.argv[2:]
try:
    if cmd == "verify":
        verify(*args)
    elif cmd == "forge":
        forge(*args)
    else:
        sys.exit(f"unknown command {cmd}")
except jwt.PyJWTError as e:
    sys.exit(f"PyJWT: {type(e).__name__}: {e}")
PY
}

# fetch_jwks: the JWKS into $JWKS_FILE.
fetch_jwks() {
    JWKS_FILE="$BATS_TEST_TMPDIR/jwks.json"
    curl -sS --fail "$AUTHFLOW_BASE_URL/.well-known/jwks.json" -o "$JWKS_FILE"
}

@test "python3-jwt is available" {
    "$PY" -c 'import jwt, cryptography' || fail "install python3-jwt (and python3-cryptography)"
}

@test "an access token verifies with PyJWT using only the published JWKS" {
    new_account "Jay Walker"
    fetch_jwks
    local out
    out=$(jwt_tool verify "$JWKS_FILE" "$ACCESS" "$AUD" "$ISS") || fail "PyJWT did not verify the token: $out"
    body=$out
    last_request="PyJWT verification"

    # Header: typ JWT (libjwt accepts nothing else), kid of a published key,
    # and the algorithm that key is for.
    assert_json '.header.typ == "JWT"' 'header typ should be "JWT"'
    assert_json '.header.kid | type == "string" and length > 0' "header needs a kid"
    assert_json '.header.alg == .jwk.alg' "header alg differs from the key's alg"
    assert_json '.header.alg == "ES256" or .header.alg == "RS256"' "unexpected alg"

    local now
    now=$(date +%s)
    assert_json ".claims.sub == \"$USER_ID\"" "sub should be the user id"
    assert_json ".claims.sid == \"$SESSION_ID\"" "sid should be the session id"
    assert_json ".claims.email == \"$EMAIL\"" "email claim should be the user's"
    assert_json '.claims.email_verified == false' "email_verified should be false for a new account"
    assert_json '.claims.jti | type == "string" and length > 0' "jti missing"
    assert_json '.claims.iat | type == "number"' "iat missing"
    assert_json '.claims.nbf | type == "number"' "nbf missing"
    assert_json '.claims.exp - .claims.iat == 900' "exp should be iat + 900 s"
    assert_json ".claims.iat >= $now - 120 and .claims.iat <= $now + 60" "iat is not now"
    assert_json ".claims.nbf <= $now + 60" "nbf is in the future"
    assert_json '.claims.roles | type == "array"' "roles should be an array"
    assert_json '.claims.amr | type == "array" and index("pwd") != null' 'amr should contain "pwd"'
    assert_json '.claims.dfp | type == "string" and length > 0' "dfp missing"
    assert_json ".claims.aud == \"$AUD\" or (.claims.aud | type == \"array\" and index(\"$AUD\") != null)" "aud"
    assert_json ".claims.iss == \"$ISS\"" "iss"
    # An access token carries no secrets.
    assert_json '[.claims | paths | map(tostring) | join(".")] | map(select(test("pass|hash|secret"; "i"))) | length == 0' \
        "the token carries secret-looking claims"
}

@test "each token has its own jti; a refreshed token verifies too" {
    new_account
    fetch_jwks
    local a1=$ACCESS j1 j2
    refresh "$REFRESH"
    assert_status 200
    take_pair
    j1=$(jwt_tool verify "$JWKS_FILE" "$a1" "$AUD" "$ISS" | jq -r .claims.jti)
    j2=$(jwt_tool verify "$JWKS_FILE" "$ACCESS" "$AUD" "$ISS" | jq -r .claims.jti)
    [[ -n $j1 && -n $j2 && $j1 != "$j2" ]] || fail "jti values should differ: '$j1' '$j2'"
}

@test "the verifier is real: PyJWT refuses a wrong audience, a wrong issuer and a changed payload" {
    new_account
    fetch_jwks
    run jwt_tool verify "$JWKS_FILE" "$ACCESS" not-authflow "$ISS"
    assert_failure
    run jwt_tool verify "$JWKS_FILE" "$ACCESS" "$AUD" https://evil.example
    assert_failure
    local h p s forged
    IFS=. read -r h p s <<<"$ACCESS"
    forged=$(jwt_claims "$ACCESS" | jq -c '.roles = ["admin"]' | b64url_encode)
    run jwt_tool verify "$JWKS_FILE" "$h.$forged.$s" "$AUD" "$ISS"
    assert_failure
}

# forged_refused MODE CODE...: every token MODE forges is 401 with one of CODEs.
forged_refused() {
    local mode=$1 t n=0
    shift
    local tokens
    tokens=$(jwt_tool forge "$mode" "$JWKS_FILE" "$ACCESS" "$KEYS_DIR") || fail "forging ($mode) failed"
    while IFS= read -r t; do
        [[ -n $t ]] || continue
        n=$((n + 1))
        me "$t"
        last_request="GET /users/me with a forged token ($mode #$n): $t"
        assert_problem 401 "$@"
    done <<<"$tokens"
    ((n > 0)) || fail "no tokens forged for $mode"
}

@test "unsigned tokens (alg none) are 401 invalid_token" {
    new_account
    fetch_jwks
    forged_refused none invalid_token
}

@test "HMAC tokens keyed with the public key (algorithm confusion) are 401 invalid_token" {
    new_account
    fetch_jwks
    forged_refused hs256-pem invalid_token
}

@test "tokens signed by another key, or offering their own key (jwk, jku, x5u), are 401 invalid_token" {
    new_account
    fetch_jwks
    forged_refused foreign-key invalid_token
}

# real_key_or_skip: skip when the test cannot read the service's signing key.
real_key_or_skip() {
    local rc=0
    jwt_tool forge real:valid "$JWKS_FILE" "$ACCESS" "$KEYS_DIR" >/dev/null || rc=$?
    ((rc != 3)) || skip "no readable private key in keys_dir '$KEYS_DIR'"
    ((rc == 0)) || fail "forging with the real key failed"
}

@test "tokens signed with the real key but with wrong claims are refused" {
    new_account
    fetch_jwks
    real_key_or_skip
    # Control: the same claims re-signed are accepted, so each refusal below is
    # about the claim changed.
    me "$(jwt_tool forge real:valid "$JWKS_FILE" "$ACCESS" "$KEYS_DIR")"
    assert_status 200

    forged_refused real:expired token_expired
    forged_refused real:not-yet-valid invalid_token token_expired
    forged_refused real:wrong-aud invalid_token
    forged_refused real:wrong-iss invalid_token
    forged_refused real:unknown-kid invalid_token
    forged_refused real:no-exp invalid_token
    # API.md names no code for a session that does not exist.
    forged_refused real:unknown-session
}

@test "a token of a logged-out session is refused although its signature is valid" {
    new_account
    fetch_jwks
    jwt_tool verify "$JWKS_FILE" "$ACCESS" "$AUD" "$ISS" >/dev/null
    api POST "$API/auth/logout" -H "Authorization: Bearer $ACCESS" -H 'Content-Length: 0'
    assert_status 204
    me "$ACCESS"
    assert_problem 401
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
