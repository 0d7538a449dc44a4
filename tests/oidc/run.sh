#!/usr/bin/env bash
# Start/stop the test-only OpenID provider (tests/oidc/provider.mjs).
#
#   tests/oidc/run.sh start DIR   install node modules if needed (npm ci), write
#                                 example DIR/clients.json and DIR/accounts.json
#                                 if absent, start the provider in the background
#                                 and print OIDC_ISSUER=http://127.0.0.1:PORT
#                                 (also written to DIR/env)
#   tests/oidc/run.sh stop DIR    stop it (SIGTERM, then SIGKILL after 5 s)
#   tests/oidc/run.sh status DIR  exit 0 when it is running
#
# Files in DIR: provider.pid, provider.log (stdout+stderr of the provider),
# env, clients.json, accounts.json, jwks.json (the private signing key, made on
# first start and reused afterwards).
# Environment: OIDC_PORT (default 0: the kernel picks a free port when the
# provider binds, so there is no race between choosing and binding),
# OIDC_START_TIMEOUT (seconds to wait for "ready", default 30),
# OIDC_TEST_ENDPOINTS=0 to turn the /test/* endpoints off.
# Only stdout carries the OIDC_ISSUER line; progress and errors go to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	echo "usage: $0 start|stop|status DIR" >&2
	exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

msg() { echo "oidc/run.sh: $*" >&2; }

# alive PID: the process exists and is not a zombie (kill -0 is true for zombies)
alive() {
	local st
	st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid from DIR/provider.pid if that process is alive and is our provider
running_pid() {
	local pid
	[ -f "$dir/provider.pid" ] || return 1
	pid=$(cat "$dir/provider.pid" 2>/dev/null) || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'provider\.mjs' || return 1
	echo "$pid"
}

install_modules() {
	local want have
	want=$(jq -r '.dependencies["oidc-provider"]' "$HERE/package.json")
	have=$(jq -r '.version // empty' "$HERE/node_modules/oidc-provider/package.json" 2>/dev/null || true)
	[ "$have" = "$want" ] && return 0
	command -v npm >/dev/null || { msg "npm not found (need node >= 18 and npm)"; return 1; }
	msg "installing node modules (npm ci) in $HERE"
	(
		cd "$HERE"
		# serialise concurrent installs from parallel test runs
		if command -v flock >/dev/null; then
			exec 9>"$HERE/.install.lock"
			flock 9
			have=$(jq -r '.version // empty' node_modules/oidc-provider/package.json 2>/dev/null || true)
			[ "$have" = "$want" ] && exit 0
		fi
		npm ci --no-audit --no-fund --loglevel=error >&2
	)
}

write_examples() {
	if [ ! -f "$dir/clients.json" ]; then
		cat >"$dir/clients.json" <<'EOF'
[
  {
    "client_id": "authflow-test",
    "client_secret": "authflow-test-secret-0123456789abcdef",
    "redirect_uris": ["http://127.0.0.1:9/oauth/callback"],
    "token_endpoint_auth_method": "client_secret_basic"
  },
  {
    "client_id": "authflow-test-post",
    "client_secret": "authflow-test-post-secret-0123456789",
    "redirect_uris": ["http://127.0.0.1:9/oauth/callback"],
    "token_endpoint_auth_method": "client_secret_post"
  }
]
EOF
	fi
	if [ ! -f "$dir/accounts.json" ]; then
		cat >"$dir/accounts.json" <<'EOF'
[
  {
    "sub": "248289761001",
    "email": "alice@example.test",
    "email_verified": true,
    "name": "Alice Example",
    "password": "alice-password"
  },
  {
    "sub": "248289761002",
    "email": "bob@example.test",
    "email_verified": false,
    "name": "Bob Unverified",
    "password": "bob-password"
  }
]
EOF
	fi
}

start() {
	local pid port issuer timeout i
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if pid=$(running_pid); then
		msg "already running (pid $pid) for $dir"
		exit 1
	fi
	rm -f "$dir/provider.pid" "$dir/env"
	command -v node >/dev/null || { msg "node not found"; exit 1; }
	install_modules
	write_examples

	port=${OIDC_PORT:-0}
	timeout=${OIDC_START_TIMEOUT:-30}
	: >"$dir/provider.log"
	# 3>&- : do not hand bats' fd 3 to the long-running child
	node "$HERE/provider.mjs" --port "$port" \
		--clients "$dir/clients.json" --accounts "$dir/accounts.json" \
		--jwks "$dir/jwks.json" \
		</dev/null >>"$dir/provider.log" 2>&1 3>&- &
	pid=$!
	echo "$pid" >"$dir/provider.pid"

	issuer=
	for ((i = 0; i < timeout * 10; i++)); do
		issuer=$(sed -n 's/^ready \(http:\/\/127\.0\.0\.1:[0-9][0-9]*\)$/\1/p' "$dir/provider.log" | head -n1)
		[ -n "$issuer" ] && break
		if ! alive "$pid"; then
			msg "provider exited before it was ready; log:"
			tail -n 30 "$dir/provider.log" >&2
			rm -f "$dir/provider.pid"
			exit 1
		fi
		sleep 0.1
	done
	if [ -z "$issuer" ]; then
		msg "provider not ready after ${timeout}s; log:"
		tail -n 30 "$dir/provider.log" >&2
		stop
		exit 1
	fi
	echo "OIDC_ISSUER=$issuer" >"$dir/env"
	echo "OIDC_ISSUER=$issuer"
}

stop() {
	local pid i
	rm -f "$dir/env"
	if ! pid=$(running_pid); then
		rm -f "$dir/provider.pid"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		msg "pid $pid ignored SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/provider.pid"
}

case $cmd in
start) start ;;
stop) stop ;;
status)
	if pid=$(running_pid); then
		echo "running pid $pid $(cat "$dir/env" 2>/dev/null || true)"
	else
		echo "not running"
		exit 1
	fi
	;;
*) usage ;;
esac
