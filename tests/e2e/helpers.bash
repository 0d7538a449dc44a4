# helpers.bash — shared by the end-to-end tests.
#
# Each .bats file starts its own private stack (PostgreSQL, Redis, the
# FastCGI responders and lighttpd) in setup_file with af_stack_up and stops
# it in teardown_file with af_stack_down, so files never share state. The
# tests talk HTTP to lighttpd only, as a client would.
#
# Every password and token a helper handles is recorded in
# $BATS_FILE_TMPDIR/secrets; assert_logs_free_of_secrets greps the run's logs
# for them.

bats_load_library bats-support
bats_load_library bats-assert

# make check exports both; a bare `bats tests/e2e` runs against the tree.
: "${AUTHFLOW_SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${AUTHFLOW_BUILDDIR:=$AUTHFLOW_SRCDIR}"
export AUTHFLOW_SRCDIR AUTHFLOW_BUILDDIR

API=/api/v1
UUID_RE='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
# RFC 3339 in UTC.
TIME_RE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|\\+00:00)$'
# 256 random bits as base64url (43 characters, padding optional).
OPAQUE_TOKEN_RE='^[A-Za-z0-9_-]{43}=?$'

# ---------------------------------------------------------------------------
# The stack

# af_stack_up [NAME=VALUE...]: starts a private stack; the assignments are
# passed in the environment of `stack.sh up` (and so reach the responders).
# The test files send far more requests from 127.0.0.1 than the default rate
# limits allow; they run with limits that never bite unless they pass their
# own (ratelimit.bats does).
AF_TEST_LIMITS=(AUTHFLOW_RATELIMIT_AUTH_PER_IP=1000000 AUTHFLOW_RATELIMIT_USERS_PER_IP=1000000
    AUTHFLOW_RATELIMIT_ADMIN_PER_IP=1000000 AUTHFLOW_RATELIMIT_PER_ACCOUNT=1000000
    AUTHFLOW_RATELIMIT_LOGIN_FAILURES=1000 AUTHFLOW_RATELIMIT_LOGIN_FAILURES_PER_IP=1000000)
af_stack_up() {
    AUTHFLOW_RUN_DIR=$(mktemp -d /tmp/af-e2e.XXXXXX)
    export AUTHFLOW_RUN_DIR
    local log="$BATS_FILE_TMPDIR/stack-up.log"
    # fd 3 closed: daemons that inherit bats' output pipe would keep bats
    # waiting after the last test.
    if ! env AUTHFLOW_NO_DEPS=1 "${AF_TEST_LIMITS[@]}" "$@" "$AUTHFLOW_SRCDIR/tests/stack.sh" up >"$log" 2>&1 3>&-; then
        echo "# tests/stack.sh up failed; its output:" >&2
        sed 's/^/#   /' "$log" >&2
        af_stack_down
        return 1
    fi
    if [[ ! -r $AUTHFLOW_RUN_DIR/env ]]; then
        echo "# tests/stack.sh up wrote no $AUTHFLOW_RUN_DIR/env" >&2
        af_stack_down
        return 1
    fi
    set -a
    # shellcheck disable=SC1091
    source "$AUTHFLOW_RUN_DIR/env"
    set +a
    : "${AUTHFLOW_CONFIG:=$AUTHFLOW_RUN_DIR/authflow.conf}"
    export AUTHFLOW_BASE_URL AUTHFLOW_CONFIG AUTHFLOW_RUN_DIR
    if [[ -z ${AUTHFLOW_BASE_URL:-} ]]; then
        echo "# $AUTHFLOW_RUN_DIR/env sets no AUTHFLOW_BASE_URL" >&2
        af_stack_down
        return 1
    fi
    : >"$BATS_FILE_TMPDIR/secrets"
}

af_stack_down() {
    [[ -n ${AUTHFLOW_RUN_DIR:-} && -d $AUTHFLOW_RUN_DIR ]] || return 0
    # Keep the logs for a post-mortem (bats --no-tempdir-cleanup keeps them).
    if [[ -n ${BATS_FILE_TMPDIR:-} && -d $AUTHFLOW_RUN_DIR/log ]]; then
        cp -r "$AUTHFLOW_RUN_DIR/log" "$BATS_FILE_TMPDIR/stack-log" 2>/dev/null || true
    fi
    AUTHFLOW_NO_DEPS=1 "$AUTHFLOW_SRCDIR/tests/stack.sh" down \
        >"${BATS_FILE_TMPDIR:-/tmp}/stack-down.log" 2>&1 3>&- || {
        echo "# tests/stack.sh down failed:" >&2
        sed 's/^/#   /' "${BATS_FILE_TMPDIR:-/tmp}/stack-down.log" >&2
        return 1
    }
}

# conf_get SECTION KEY: a value from the stack's authflow.conf (empty if
# unset there).
conf_get() {
    awk -v sec="$1" -v key="$2" '
        /^[ \t]*[#;]/ { next }
        /^[ \t]*\[/ { gsub(/[][ \t]/, ""); cur = $0; next }
        cur == sec {
            line = $0
            if (match(line, /^[ \t]*[A-Za-z0-9_]+[ \t]*=/)) {
                k = substr(line, 1, RLENGTH - 1); gsub(/[ \t]/, "", k)
                if (k == key) {
                    v = substr(line, RLENGTH + 1)
                    sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
                    val = v
                }
            }
        }
        END { print val }' "$AUTHFLOW_CONFIG"
}

# ---------------------------------------------------------------------------
# HTTP

# api_raw PREFIX METHOD PATH [curl args...]: one request; writes PREFIX.body,
# PREFIX.headers and PREFIX.code. Safe to run in the background.
api_raw() {
    local f=$1 method=$2 path=$3
    shift 3
    local url=$path
    [[ $url == http://* || $url == https://* ]] || url=$AUTHFLOW_BASE_URL$path
    local rc=0
    curl -sS --max-time 60 -X "$method" -o "$f.body" -D "$f.headers" -w '%{http_code}' \
        "$@" "$url" >"$f.code" 2>"$f.err" || rc=$?
    [[ -e $f.body ]] || : >"$f.body"
    [[ -e $f.headers ]] || : >"$f.headers"
    # A server may answer (413) and close before curl finished sending: the
    # answer counts, curl's complaint about the connection does not.
    if [[ $(<"$f.code") =~ ^[1-5][0-9][0-9]$ && $(<"$f.code") != 000 ]]; then
        return 0
    fi
    echo "curl failed (rc=$rc) for $method $url: $(<"$f.err")" >&2
    return 1
}

# api METHOD PATH [curl args...]: sets $status_code, $body, $headers (CR
# stripped, last response only) and $last_request.
api() {
    local method=$1 path=$2
    AF_API_N=$((${AF_API_N:-0} + 1))
    local f="$BATS_FILE_TMPDIR/api.${BATS_TEST_NUMBER:-0}.$$.$AF_API_N"
    last_request="$method $path"
    status_code=000 body='' headers=''
    api_raw "$f" "$@" || return 1
    status_code=$(<"$f.code")
    printf '%s %s\n' "$status_code" "$last_request" >>"$BATS_FILE_TMPDIR/statuses"
    body=$(<"$f.body")
    headers=$(tr -d '\r' <"$f.headers" | awk '/^HTTP\//{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}')
}

# api_json METHOD PATH JSON [curl args...]
api_json() {
    local method=$1 path=$2 json=$3
    shift 3
    api "$method" "$path" -H 'Content-Type: application/json' --data-binary "$json" "$@"
}

# header NAME: the value of the last NAME header of the last response.
header() {
    awk -v n="${1,,}" '{ i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); out = v } }
        END { printf "%s", out }' <<<"$headers"
}

# set_cookie NAME: the whole Set-Cookie value for cookie NAME (last one).
set_cookie() {
    awk -v n="$1" '{ i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == "set-cookie") { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); if (index(v, n "=") == 1) out = v } }
        END { printf "%s", out }' <<<"$headers"
}

# cookie_value NAME: the value a Set-Cookie of the last response gives NAME.
cookie_value() {
    local c
    c=$(set_cookie "$1")
    c=${c#"$1="}
    printf '%s' "${c%%;*}"
}

# cookie_attr SETCOOKIE ATTR: the value of attribute ATTR (case-insensitive),
# "present" for a flag; fails when absent.
cookie_attr() {
    local sc=$1 want=${2,,} part name
    local IFS=';'
    local -a parts
    read -ra parts <<<"$sc"
    for part in "${parts[@]:1}"; do
        part=${part#"${part%%[![:space:]]*}"}
        name=${part%%=*}
        if [[ ${name,,} == "$want" ]]; then
            if [[ $part == *=* ]]; then printf '%s' "${part#*=}"; else printf present; fi
            return 0
        fi
    done
    return 1
}

# base64url without padding, both ways.
b64url_encode() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
b64url_decode() {
    local s=${1//-/+}
    s=${s//_//}
    while ((${#s} % 4)); do s+='='; done
    base64 -d <<<"$s"
}

# jwt_header TOKEN, jwt_claims TOKEN: the decoded JSON parts, unverified.
jwt_header() { b64url_decode "${1%%.*}"; }
jwt_claims() {
    local p=${1#*.}
    b64url_decode "${p%%.*}"
}

# json FILTER: jq -r FILTER over the last body.
json() { jq -r "$@" <<<"$body"; }

# ---------------------------------------------------------------------------
# Assertions

_af_fail() {
    fail "$(printf '%s\n--- request: %s\n--- status: %s\n--- headers:\n%s\n--- body:\n%s' \
        "$1" "$last_request" "$status_code" "$headers" "$body")"
}

# assert_status CODE...: the last status is one of CODEs.
assert_status() {
    local s
    for s in "$@"; do [[ $status_code == "$s" ]] && return 0; done
    _af_fail "expected HTTP status $*, got $status_code"
}

assert_header_present() {
    [[ -n $(header "$1") ]] || _af_fail "response has no $1 header"
}

assert_no_store() {
    [[ $(header cache-control) == *no-store* ]] ||
        _af_fail "Cache-Control should contain no-store, is '$(header cache-control)'"
}

assert_json_response() {
    [[ $(header content-type) =~ ^application/([a-z.+-]+\+)?json([[:space:]]*;.*)?$ ]] ||
        _af_fail "Content-Type should be JSON, is '$(header content-type)'"
    jq -e . >/dev/null 2>&1 <<<"$body" || _af_fail "body is not JSON"
}

# assert_json EXPR [MESSAGE]: jq -e EXPR holds on the last body.
assert_json() {
    jq -e "$1" >/dev/null 2>&1 <<<"$body" || _af_fail "${2:-expected body to satisfy jq: $1}"
}

# Nothing in an answer may look like an internal error leaking out.
refute_internals() {
    local pat='Traceback|SQLSTATE|syntax error at|PQexec|libpq|hiredis|json_tokener|\.c:[0-9]+|segmentation|backtrace|/src/|ERROR:  '
    if grep -qE "$pat" <<<"$body"; then _af_fail "body leaks internals (matched /$pat/)"; fi
}

# assert_problem STATUS [CODE...]: an RFC 9457 problem with that status and
# one of the codes (any code when none given).
assert_problem() {
    local want=$1
    shift
    assert_status "$want"
    local ct
    ct=$(header content-type)
    [[ ${ct,,} =~ ^application/problem\+json([[:space:]]*;.*)?$ ]] ||
        _af_fail "Content-Type should be application/problem+json, is '$ct'"
    jq -e 'type == "object"' >/dev/null 2>&1 <<<"$body" || _af_fail "problem body is not a JSON object"
    local code st type
    code=$(json '.code // empty')
    st=$(json '.status // empty')
    type=$(json '.type // empty')
    [[ $st == "$want" ]] || _af_fail "problem status should be $want, is '$st'"
    [[ $code =~ ^[a-z][a-z0-9_]*$ ]] || _af_fail "problem code '$code' is not a snake_case name"
    [[ $type == "urn:authflow:problem:$code" ]] || _af_fail "problem type should be urn:authflow:problem:$code, is '$type'"
    assert_json '.title | type == "string" and length > 0' "problem has no title"
    refute_internals
    if (($#)); then
        local c
        for c in "$@"; do [[ $code == "$c" ]] && return 0; done
        _af_fail "problem code should be one of: $*; is '$code'"
    fi
}

# assert_field_error FIELD: the problem's errors array names FIELD.
assert_field_error() {
    jq -e --arg f "$1" '.errors | type == "array" and any(.[]; .field == $f and (.message | type == "string"))' \
        >/dev/null 2>&1 <<<"$body" || _af_fail "errors[] should name field '$1'"
}

# A 4xx answer that is a clean problem (the bad-input rule).
assert_clean_4xx() {
    [[ $status_code =~ ^4[0-9][0-9]$ ]] || _af_fail "expected a 4xx answer, got $status_code"
    assert_problem "$status_code"
}

# The user object of API.md, and nothing secret in it.
assert_user_object() {
    assert_json_response
    assert_json "(.id | type == \"string\" and test(\"$UUID_RE\"))" "user.id should be a UUID"
    assert_json '.email | type == "string" and length > 0' "user.email should be a string"
    assert_json '.email_verified | type == "boolean"' "user.email_verified should be a boolean"
    assert_json '.full_name | type == "string" or type == "null"' "user.full_name should be a string or null"
    assert_json '.roles | type == "array" and all(.[]; type == "string")' "user.roles should be an array of strings"
    assert_json '.mfa_enabled | type == "boolean"' "user.mfa_enabled should be a boolean"
    assert_json '.disabled | type == "boolean"' "user.disabled should be a boolean"
    assert_json "(.created_at | type == \"string\" and test(\"$TIME_RE\"))" "user.created_at should be RFC 3339 UTC"
    assert_json "(.updated_at | type == \"string\" and test(\"$TIME_RE\"))" "user.updated_at should be RFC 3339 UTC"
    assert_json "(.last_login_at | type == \"null\" or (type == \"string\" and test(\"$TIME_RE\")))" \
        "user.last_login_at should be null or RFC 3339 UTC"
    assert_json 'has("last_login_at")' "user object lacks last_login_at"
    local bad
    bad=$(jq -r '[paths | map(tostring) | join(".")] | .[]' <<<"$body" |
        grep -iE 'pass|hash|secret|salt|code|totp|otp|recovery|token' || true)
    [[ -z $bad ]] || _af_fail "user object carries secret-looking fields: $bad"
    # shellcheck disable=SC2016 # a literal $
    [[ $body != *'$argon2'* ]] || _af_fail "user object carries a password hash"
}

# The token pair of API.md.
assert_token_pair() {
    assert_json_response
    assert_json '.access_token | type == "string" and test("^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")' \
        "access_token should be a JWT"
    assert_json '.token_type == "Bearer"' 'token_type should be "Bearer"'
    assert_json '.expires_in == 900' "expires_in should be 900"
    assert_json ".refresh_token | type == \"string\" and test(\"$OPAQUE_TOKEN_RE\")" \
        "refresh_token should be 256 bits of base64url"
    assert_json '.refresh_expires_in | type == "number" and . > 0' "refresh_expires_in should be a positive number"
    assert_json "(.session_id | type == \"string\" and test(\"$UUID_RE\"))" "session_id should be a UUID"
    assert_no_store
}

# ---------------------------------------------------------------------------
# Accounts and secrets

unique_email() { printf 'u%s%st%s@example.test\n' "$RANDOM" "$RANDOM" "${BATS_TEST_NUMBER:-0}"; }

# 12+ characters, no composition rules, not in any common list.
unique_password() { printf 'vivid lantern %s river %04x\n' "$RANDOM" "$RANDOM"; }

# remember_secret VALUE...: record values that must never reach a log. Of a
# JWT its signature is recorded too, of an opaque token its first 16
# characters, so a truncated copy in a log is caught as well.
remember_secret() {
    local s
    for s in "$@"; do
        [[ -n $s && $s != null ]] || continue
        printf '%s\n' "$s" >>"$BATS_FILE_TMPDIR/secrets"
        if [[ $s =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.([A-Za-z0-9_-]{16,})$ ]]; then
            printf '%s\n' "${BASH_REMATCH[1]}" >>"$BATS_FILE_TMPDIR/secrets"
        elif [[ $s =~ ^[A-Za-z0-9_-]{32,}=?$ ]]; then
            printf '%s\n' "${s:0:16}" >>"$BATS_FILE_TMPDIR/secrets"
        fi
    done
}

# forget_secret VALUE: take a value (and its recorded fragments) off the
# list, for a test that puts it where logging it is the client's doing.
forget_secret() {
    [[ -n $1 ]] || return 0
    local f="$BATS_FILE_TMPDIR/secrets" frag=${1##*.}
    grep -vxF -e "$1" -e "$frag" -e "${1:0:16}" -e "${frag:0:16}" "$f" >"$f.new" || true
    mv "$f.new" "$f"
}

# remember_pair: record the tokens of a token-pair body.
remember_pair() {
    remember_secret "$(json '.access_token // empty')" "$(json '.refresh_token // empty')"
}

# register EMAIL PASSWORD [FULL_NAME]: POST /auth/register (JSON).
register() {
    local j
    remember_secret "$2"
    if (($# >= 3)); then
        j=$(jq -cn --arg e "$1" --arg p "$2" --arg n "$3" '{email: $e, password: $p, full_name: $n}')
    else
        j=$(jq -cn --arg e "$1" --arg p "$2" '{email: $e, password: $p}')
    fi
    api_json POST "$API/auth/register" "$j"
}

# login EMAIL PASSWORD [curl args...]: POST /auth/login (JSON). On 200
# exports ACCESS, REFRESH and SESSION_ID; otherwise empties them.
login() {
    local j
    remember_secret "$2"
    j=$(jq -cn --arg e "$1" --arg p "$2" '{email: $e, password: $p}')
    api_json POST "$API/auth/login" "$j" "${@:3}" || return 1
    take_pair
}

# take_pair: export ACCESS, REFRESH, SESSION_ID from a 200 token-pair answer.
take_pair() {
    ACCESS='' REFRESH='' SESSION_ID=''
    if [[ $status_code == 200 ]]; then
        ACCESS=$(json .access_token)
        REFRESH=$(json .refresh_token)
        SESSION_ID=$(json .session_id)
        remember_pair
    fi
    export ACCESS REFRESH SESSION_ID
}

# refresh TOKEN [curl args...]: POST /auth/refresh with the token in a JSON body.
refresh() {
    local j
    j=$(jq -cn --arg r "$1" '{refresh_token: $r}')
    api_json POST "$API/auth/refresh" "$j" "${@:2}" || return 1
    remember_pair
}

# me TOKEN [curl args...]: GET /users/me with a Bearer token.
me() { api GET "$API/users/me" -H "Authorization: Bearer $1" "${@:2}"; }

# new_account [FULL_NAME]: a fresh registered and logged-in user. Sets EMAIL,
# PASSWORD, USER_ID, ACCESS, REFRESH, SESSION_ID.
new_account() {
    EMAIL=$(unique_email)
    PASSWORD=$(unique_password)
    register "$EMAIL" "$PASSWORD" "$@" || return 1
    assert_status 201 || return 1
    USER_ID=$(json .id)
    login "$EMAIL" "$PASSWORD" || return 1
    assert_status 200 || return 1
    export EMAIL PASSWORD USER_ID
}

# No recorded password or token appears in any log of the run.
assert_logs_free_of_secrets() {
    local logdir="$AUTHFLOW_RUN_DIR/log"
    [[ -d $logdir ]] || fail "no log directory $logdir"
    local n
    n=$(grep -v '^$' "$BATS_FILE_TMPDIR/secrets" | sort -u | grep -c . || true)
    ((n > 0)) || fail "no secrets were recorded: the test file used none?"
    # Make sure the logs are not empty (the check would pass vacuously).
    [[ -n $(find "$logdir" -type f -size +0) ]] || fail "the logs in $logdir are empty"
    # All-digit secrets (emailed codes) count as whole words only: log lines
    # hold digit runs of their own (timestamps, durations, file names).
    local words others hits=
    words=$(grep -E '^[0-9]+$' "$BATS_FILE_TMPDIR/secrets" | sort -u || true)
    others=$(grep -vE '^$|^[0-9]+$' "$BATS_FILE_TMPDIR/secrets" | sort -u || true)
    [[ -n $others ]] && hits=$(grep -rnoF -f - "$logdir" <<<"$others" | head -20 || true)
    [[ -n $words ]] && hits+=$(grep -rnowF -f - "$logdir" <<<"$words" | head -20 || true)
    if [[ -n $hits ]]; then
        fail "$(printf 'secrets found in logs (%s recorded values checked):\n%s' "$n" "$hits")"
    fi
}
