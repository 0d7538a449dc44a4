#!/usr/bin/env bash
# The authflow benchmark: starts a private stack, then measures with wrk on
# the loopback interface, in one run:
#   static    lighttpd serving a small static file
#   trivial   a FastCGI program answering a fixed 100-byte JSON through the
#             same lighttpd (tests/bench/trivial-responder.c): the ceiling
#             of the architecture
#   me        GET /api/v1/users/me, Bearer tokens of many distinct users
#   login     POST /api/v1/auth/login, the same users in turn
#   refresh   POST /api/v1/auth/refresh, every refresh token used once
#   static64  the static file again, at the gate's connection count: the
#             web server's own latency tail, beside which to read the next two
#   authz     a static file behind the trivial program as lighttpd's
#             FastCGI authorizer (it always says 200): the ceiling of a gate;
#             it gets the gate's requests (the same users' bearer tokens), so
#             that the client and the web server do the same work in both
#   gate      the same file behind authflow-gate as the authorizer, with the
#             access tokens of many users
# and the Argon2id verification rate of the machine at the configured cost,
# which bounds the login rate: the ceiling is measured with one verifier per
# core running at once (memory bandwidth keeps it below cores / one
# verification's time, which is printed too, with the login rate as a
# fraction of both). Prints
# requests/s, p50 and p99 of each, the rates as ratios to the trivial
# responder's, the login rate as a fraction of the Argon2id ceiling and the
# RSS of every responder process, then one machine-readable `bench` line per
# target. Stops its stack when it ends.
#
#   tests/bench/bench.sh
#
# Environment:
#   BENCH_SECONDS       duration of each wrk run (default 10)
#   BENCH_THREADS       wrk threads (default 2)
#   BENCH_CONNECTIONS   wrk connections (default 32: enough to keep both
#                       cores busy; more connections only add queueing
#                       delay, p99 >= connections / rate by Little's law)
#   BENCH_GATE_CONNECTIONS  wrk connections for authz and gate (default 64)
#   BENCH_GATE_ROUNDS   rounds of static64, authz and gate (default 1); each
#                       further round prints a `bench round=` line
#   BENCH_USERS         distinct users created (default 200)
#   AUTHFLOW_CHILDREN   processes per responder, the trivial one included
#                       (default: the number of cores)
#   AUTHFLOW_NO_DEPS=1  and the rest of tests/stack.sh's settings apply
#   BENCH_KEEP=1        keep the work directory (wrk output, token files)
# Exits non-zero when a step fails or a request got an error answer; the
# targets below are reported, not enforced.
set -euo pipefail

SECONDS_EACH=${BENCH_SECONDS:-10}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-32}
NUSERS=${BENCH_USERS:-200}
GATE_CONNS=${BENCH_GATE_CONNECTIONS:-64}
GATE_ROUNDS=${BENCH_GATE_ROUNDS:-1}
export AUTHFLOW_CHILDREN=${AUTHFLOW_CHILDREN:-$(nproc)}

# The device fingerprint of a session covers the User-Agent: every client
# here sends the same one.
UA=authflow-bench
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRCDIR=$(cd "${AUTHFLOW_SRCDIR:-$BENCH_DIR/../..}" && pwd)
BUILDDIR=$(realpath -m "${AUTHFLOW_BUILDDIR:-$SRCDIR}")
export AUTHFLOW_SRCDIR=$SRCDIR AUTHFLOW_BUILDDIR=$BUILDDIR
STACK=$SRCDIR/tests/stack.sh
API=/api/v1
CORES=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
SVC_USER=authflow

die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench.sh: %s\n' "$*" >&2; }

for tool in wrk spawn-fcgi curl jq cc pkg-config; do
	command -v "$tool" >/dev/null || die "$tool is missing (tests/stack.sh deps installs it)"
done

# ---------------------------------------------------------------- clean-up

WORK=$(mktemp -d /tmp/authflow-bench.XXXXXX)
chmod 0755 "$WORK"
AUTHFLOW_RUN_DIR=$(mktemp -d /tmp/authflow-bench-run.XXXXXX)
export AUTHFLOW_RUN_DIR
RUN=$AUTHFLOW_RUN_DIR
TRIVIAL_PIDS=()
STACK_UP=0

cleanup() {
	local rc=$? p
	for p in "${TRIVIAL_PIDS[@]}"; do
		[ "$(ps -o comm= -p "$p" 2>/dev/null)" = trivial-respond ] && kill "$p" 2>/dev/null
	done
	# A failed run keeps the stack's logs for a look, as BENCH_KEEP=1 does.
	if { [ "$rc" -ne 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; } && [ -d "$RUN/log" ]; then
		cp -r "$RUN/log" "$WORK/log" 2>/dev/null || true
		BENCH_KEEP=1
	fi
	if [ "$STACK_UP" -eq 1 ] || [ -e "$RUN" ]; then
		"$STACK" down >"$WORK/stack-down.log" 2>&1 || cat "$WORK/stack-down.log" >&2
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- programs

# The trivial responder is an EXTRA_PROGRAM: built on demand only.
if [ ! -x "$BUILDDIR/tests/bench/trivial-responder" ]; then
	say "building tests/bench/trivial-responder"
	make -C "$BUILDDIR" tests/bench/trivial-responder >"$WORK/make.log" 2>&1 ||
		{ cat "$WORK/make.log" >&2; die "cannot build the trivial responder"; }
fi
# Copied next to its socket: as root it runs as the service user, who may
# not reach the build tree.
install -m 0755 "$BUILDDIR/tests/bench/trivial-responder" "$WORK/trivial-responder"

# shellcheck disable=SC2046 # pkg-config prints several words
cc -O2 -o "$WORK/argon2-time" "$BENCH_DIR/argon2-time.c" \
	$(pkg-config --cflags --libs libsodium) || die "cannot build argon2-time"

# ---------------------------------------------------------------- stack

# The same small file behind each authorizer: lighttpd serves it from the
# authorizer's docroot once the authorizer answered 200.
mkdir -p "$WORK/gate-root/bench-authz" "$WORK/gate-root/bench-gate"
head -c 100 /dev/zero | tr '\0' x >"$WORK/gate-root/bench-authz/file.txt"
cp "$WORK/gate-root/bench-authz/file.txt" "$WORK/gate-root/bench-gate/file.txt"
cat >"$WORK/lighttpd-bench.conf" <<EOF
# The trivial FastCGI responder of the benchmark, and the two authorizers.
fastcgi.server += (
	"/bench/trivial" => ((
		"socket" => "$WORK/trivial.sock",
		"check-local" => "disable",
	)),
	"/bench-authz/" => ((
		"socket" => "$WORK/trivial.sock",
		"mode" => "authorizer",
		"check-local" => "disable",
		"docroot" => "$WORK/gate-root",
	)),
	"/bench-gate/" => ((
		"socket" => var.authflow_socket_dir + "/gate.sock",
		"mode" => "authorizer",
		"check-local" => "disable",
		"docroot" => "$WORK/gate-root",
	)),
)
EOF

say "starting the stack ($AUTHFLOW_CHILDREN processes per responder)"
STACK_UP=1
# The benchmark's users log in without confirming their address, and no
# mailer competes for the CPU. The rate limits are kept (their cost is part
# of every answer) but set past what one address sends here.
AUTHFLOW_RATELIMIT_AUTH_PER_IP=1000000 AUTHFLOW_RATELIMIT_USERS_PER_IP=1000000 \
	AUTHFLOW_RATELIMIT_ADMIN_PER_IP=1000000 AUTHFLOW_RATELIMIT_PER_ACCOUNT=1000000 \
	AUTHFLOW_AUTH_REQUIRE_VERIFIED_EMAIL=false AUTHFLOW_MAILER=0 \
	AUTHFLOW_LIGHTTPD_EXTRA=$WORK/lighttpd-bench.conf "$STACK" up >"$WORK/stack-up.log" 2>&1 ||
	{ cat "$WORK/stack-up.log" >&2; die "tests/stack.sh up failed"; }
# shellcheck disable=SC1091
. "$RUN/env"
BASE=$AUTHFLOW_BASE_URL

ids=()
[ "$(id -u)" -eq 0 ] && ids=(-u "$SVC_USER" -g "$SVC_USER" -U "$SVC_USER" -G "$SVC_USER")
spawn-fcgi -s "$WORK/trivial.sock" -M 0660 "${ids[@]}" -F "$AUTHFLOW_CHILDREN" \
	-P "$WORK/trivial.pid" -d "$WORK" -- "$WORK/trivial-responder" \
	</dev/null >"$WORK/spawn-fcgi.log" 2>&1 ||
	{ cat "$WORK/spawn-fcgi.log" >&2; die "spawn-fcgi failed for the trivial responder"; }
mapfile -t TRIVIAL_PIDS <"$WORK/trivial.pid"

# lighttpd keeps a backend it could not reach disabled for a moment.
for ((i = 0; i < 50; i++)); do
	code=$(curl -s -A "$UA" -o /dev/null -w '%{http_code}' "$BASE/bench/trivial") || true
	[ "$code" = 200 ] && break
	sleep 0.2
done
[ "$code" = 200 ] || die "the trivial responder does not answer through lighttpd ($code)"

# pids NAME: the responder processes of a stack service, one a line.
responder_pids() { cat "$RUN/$1.pid"; }

# mem PID: "rss_kib pss_kib" of a process. PSS shares the pages of the
# libraries all the responders map among them.
mem() {
	printf '%s %s\n' "$(ps -o rss= -p "$1" | tr -d ' ')" \
		"$(awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0)"
}

# rss_snapshot FILE: "name pid rss_kib pss_kib" of every responder process.
rss_snapshot() {
	local name p
	for name in auth users gate; do
		for p in $(responder_pids "$name"); do
			printf 'authflow-%s %s %s\n' "$name" "$p" "$(mem "$p")"
		done
	done >"$1"
	for p in "${TRIVIAL_PIDS[@]}"; do
		printf 'trivial-responder %s %s\n' "$p" "$(mem "$p")"
	done >>"$1"
}
rss_snapshot "$WORK/rss-idle"

# ---------------------------------------------------------------- Argon2id

conf_get() {
	awk -v sec="$1" -v key="$2" '
		/^\[/ { s = substr($0, 2, index($0, "]") - 2); next }
		s == sec && $1 == key { sub(/^[^=]*=[ \t]*/, ""); print; exit }
	' "$AUTHFLOW_CONFIG"
}
A2_T=${AUTHFLOW_PASSWORDS_ARGON2_ITERATIONS:-$(conf_get passwords argon2_iterations)}
A2_M=${AUTHFLOW_PASSWORDS_ARGON2_MEMORY_KIB:-$(conf_get passwords argon2_memory_kib)}
say "timing one Argon2id verification (t=$A2_T, m=$A2_M KiB)"
a2=$("$WORK/argon2-time" "$A2_T" "$A2_M" 15) || die "argon2-time failed"
A2_MS=$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' <<<"$a2")
# The naive bound, cores / one verification's time, for comparison.
A2_NAIVE=$(awk -v c="$CORES" -v ms="$A2_MS" 'BEGIN { printf "%.1f", c * 1000 / ms }')
# The ceiling: one verifier per core at once, as a login burst runs them.
for ((i = 0; i < CORES; i++)); do
	"$WORK/argon2-time" "$A2_T" "$A2_M" 15 >"$WORK/argon2-par.$i" &
done
wait
A2_CEIL=$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$WORK"/argon2-par.* |
	awk '{ r += 1000 / $1 } END { printf "%.1f", r }')

# ---------------------------------------------------------------- users

# make_user N: registers and logs in one user; prints
# "email<TAB>password<TAB>access token<TAB>refresh token".
make_user() {
	local email="bench-$1-$TAG@example.com" password="lilac otter harbour $1 $TAG"
	local body pair code
	body=$(jq -cn --arg e "$email" --arg p "$password" '{email: $e, password: $p}')
	code=$(curl -s -A "$UA" -o /dev/null -w '%{http_code}' "$BASE$API/auth/register" \
		-H 'Content-Type: application/json' -d "$body")
	[ "$code" = 201 ] || { echo "register $email: $code" >&2; return 1; }
	pair=$(curl -sf -A "$UA" "$BASE$API/auth/login" -H 'Content-Type: application/json' -d "$body") ||
		{ echo "login $email failed" >&2; return 1; }
	jq -r --arg e "$email" --arg p "$password" \
		'[$e, $p, .access_token, .refresh_token] | @tsv' <<<"$pair"
}
export -f make_user
export BASE API UA TAG=$RANDOM$RANDOM

say "creating $NUSERS users"
seq 1 "$NUSERS" | xargs -P 8 -I{} bash -c 'make_user {}' >"$WORK/users.tsv" ||
	die "creating the users failed"
[ "$(wc -l <"$WORK/users.tsv")" -eq "$NUSERS" ] || die "not all users were created"
cut -f1,2 "$WORK/users.tsv" >"$WORK/credentials"
cut -f3 "$WORK/users.tsv" >"$WORK/access"
cut -f4 "$WORK/users.tsv" >"$WORK/refresh"
[ "$(sort -u "$WORK/refresh" | wc -l)" -eq "$NUSERS" ] || die "refresh tokens are not distinct"
[ "$((NUSERS / THREADS))" -gt "$((CONNS / THREADS + 1))" ] ||
	die "BENCH_USERS=$NUSERS is too few for $CONNS connections: refresh needs more sessions than connections"
rss_snapshot "$WORK/rss-ready"

# ---------------------------------------------------------------- wrk

# ticks PID...: CPU time (user + system, clock ticks) the processes used.
ticks() {
	local p t=0 v
	for p in "$@"; do
		# Fields after the parenthesised name: utime and stime are 12th and 13th.
		v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || continue
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# cpu_snapshot FILE: CPU ticks used so far by each kind of process, and by
# the whole machine ("busy") out of "all".
# shellcheck disable=SC2046 # pid lists are meant to split into words
cpu_snapshot() {
	local pm pg=()
	pm=$(head -n 1 "$RUN/pgdata/postmaster.pid")
	mapfile -t pg < <(ps -o pid= --ppid "$pm" | tr -d " ")
	{
		echo "lighttpd $(ticks $(cat "$RUN/lighttpd.pid"))"
		echo "auth $(ticks $(responder_pids auth))"
		echo "users $(ticks $(responder_pids users))"
		echo "gate $(ticks $(responder_pids gate))"
		echo "trivial $(ticks "${TRIVIAL_PIDS[@]}")"
		echo "redis $(ticks $(cat "$RUN/redis.pid"))"
		echo "postgres $(ticks "$pm" "${pg[@]}")"
		awk '$1 == "cpu" { print "busy", $2 + $3 + $4 + $7 + $8 + $9; print "all", $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
	} >"$1"
}

# drain: waits until the responders have worked off what a run left queued
# (wrk stops with requests in flight; lighttpd still passes them on), so
# that it does not slow down the next run.
drain() {
	local token
	token=$(head -n 1 "$WORK/access")
	curl -s -o /dev/null --max-time 60 -A "$UA" "$BASE/health" || true
	curl -s -o /dev/null --max-time 60 -A "$UA" -H "Authorization: Bearer $token" \
		"$BASE$API/users/me" || true
	curl -s -o /dev/null --max-time 60 -A "$UA" "$BASE/bench/trivial" || true
	sleep 1
}

# run_wrk NAME URL SCRIPT [SCRIPT ARGS...]
run_wrk() {
	local name=$1 url=$2 script=$3
	shift 3
	say "wrk: $name (${SECONDS_EACH} s)"
	cpu_snapshot "$WORK/cpu-$name.0"
	wrk -t"$THREADS" -c"${RUN_CONNS:-$CONNS}" -d"${SECONDS_EACH}s" --timeout 5s --latency \
		-H "User-Agent: $UA" \
		-s "$BENCH_DIR/$script" "$url" -- "$@" >"$WORK/wrk-$name.out" 2>&1 ||
		{ cat "$WORK/wrk-$name.out" >&2; die "wrk failed on $name"; }
	cpu_snapshot "$WORK/cpu-$name.1"
	grep -q '^WRKSTAT ' "$WORK/wrk-$name.out" ||
		{ cat "$WORK/wrk-$name.out" >&2; die "no summary from wrk on $name"; }
	drain
}

# warm NAME URL SCRIPT [ARGS...]: an unrecorded run, so that each process
# has verified the tokens once and the caches are filled, as on a server
# that has been up for a while.
warm() {
	local name=$1 url=$2 script=$3
	shift 3
	say "warming up: $name"
	wrk -t"$THREADS" -c"${RUN_CONNS:-$CONNS}" -d3s --timeout 5s -H "User-Agent: $UA" \
		-s "$BENCH_DIR/$script" "$url" -- "$@" >/dev/null 2>&1 || true
	drain
}

drain
warm trivial "$BASE/bench/trivial" plain.lua
warm me "$BASE$API/users/me" me.lua "$WORK/access"
run_wrk static "$BASE/static.txt" plain.lua
run_wrk trivial "$BASE/bench/trivial" plain.lua
run_wrk me "$BASE$API/users/me" me.lua "$WORK/access"
run_wrk login "$BASE$API/auth/login" login.lua "$WORK/credentials"
RUN_CONNS=$GATE_CONNS warm gate "$BASE/bench-gate/file.txt" me.lua "$WORK/access"
RUN_CONNS=$GATE_CONNS run_wrk static64 "$BASE/static.txt" plain.lua
RUN_CONNS=$GATE_CONNS run_wrk authz "$BASE/bench-authz/file.txt" me.lua "$WORK/access"
RUN_CONNS=$GATE_CONNS run_wrk gate "$BASE/bench-gate/file.txt" me.lua "$WORK/access"
# More rounds of the three 64-connection runs, for the spread of their
# tails on a machine whose neighbours come and go.
for ((round = 2; round <= GATE_ROUNDS; round++)); do
	RUN_CONNS=$GATE_CONNS run_wrk "static64.$round" "$BASE/static.txt" plain.lua
	RUN_CONNS=$GATE_CONNS run_wrk "authz.$round" "$BASE/bench-authz/file.txt" me.lua "$WORK/access"
	RUN_CONNS=$GATE_CONNS run_wrk "gate.$round" "$BASE/bench-gate/file.txt" me.lua "$WORK/access"
done
run_wrk refresh "$BASE$API/auth/refresh" refresh.lua "$WORK/refresh" "$THREADS"
rss_snapshot "$WORK/rss-after"

# ---------------------------------------------------------------- report

# stat TARGET KEY: a value from the WRKSTAT line of a run.
stat() { sed -n "/^WRKSTAT /s/.* $2=\([^ ]*\).*/\1/p" "$WORK/wrk-$1.out"; }
TRIVIAL_RPS=$(stat trivial rps)

printf '\nauthflow benchmark: %s cores, wrk -t%s -c%s, %s s each, %s users, %s processes per responder\n' \
	"$CORES" "$THREADS" "$CONNS" "$SECONDS_EACH" "$NUSERS" "$AUTHFLOW_CHILDREN"
printf 'load average before the run: %s; after: %s\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'Argon2id verification (t=%s, m=%s KiB): %s ms alone (median of 15; %s)\n' \
	"$A2_T" "$A2_M" "$A2_MS" "$a2"
printf '  ceiling (%s verifiers at once): %s verifications/s; naive bound (%s / one alone): %s/s\n\n' \
	"$CORES" "$A2_CEIL" "$CORES" "$A2_NAIVE"
printf '%-9s %10s %9s %9s %8s %11s  %s\n' target 'req/s' 'p50 ms' 'p99 ms' non-2xx 'x trivial' notes
BAD=0
SUMMARY=()
for t in static trivial me login refresh static64 authz gate; do
	rps=$(stat "$t" rps)
	p50=$(awk -v u="$(stat "$t" p50_us)" 'BEGIN { printf "%.2f", u / 1000 }')
	p99=$(awk -v u="$(stat "$t" p99_us)" 'BEGIN { printf "%.2f", u / 1000 }')
	non2xx=$(stat "$t" non2xx)
	sockerr=$(($(stat "$t" connect) + $(stat "$t" read) + $(stat "$t" write) + $(stat "$t" timeout)))
	codes=$(stat "$t" codes)
	starved=$(stat "$t" starved)
	ratio=$(awk -v a="$rps" -v b="$TRIVIAL_RPS" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
	notes=
	extra=
	if [ "$t" = login ]; then
		frac=$(awk -v a="$rps" -v c="$A2_CEIL" 'BEGIN { printf "%.2f", a / c }')
		naive=$(awk -v a="$rps" -v c="$A2_NAIVE" 'BEGIN { printf "%.2f", a / c }')
		notes="$frac of the Argon2id ceiling ($naive of the naive bound)"
		extra=" argon2_ceiling=$A2_CEIL ceiling_fraction=$frac naive_bound=$A2_NAIVE naive_fraction=$naive"
	fi
	if [ "$t" = static64 ]; then
		notes="the static file at $GATE_CONNS connections: the web server's own tail"
		extra=" connections=$GATE_CONNS"
	fi
	if [ "$t" = authz ] || [ "$t" = gate ]; then
		frac=$(awk -v a="$rps" -v c="$(stat authz rps)" 'BEGIN { printf "%.2f", a / c }')
		notes="$frac x the trivial authorizer, $GATE_CONNS connections"
		extra=" ratio_authz=$frac connections=$GATE_CONNS"
	fi
	[ "$codes" != - ] && notes="${notes:+$notes; }statuses $codes"
	[ "$sockerr" -gt 0 ] && notes="${notes:+$notes; }socket errors $sockerr"
	[ "$starved" -gt 0 ] && notes="${notes:+$notes; }starved $starved"
	{ [ "$non2xx" -gt 0 ] || [ "$sockerr" -gt 0 ]; } && BAD=1
	printf '%-9s %10s %9s %9s %8s %11s  %s\n' "$t" "$rps" "$p50" "$p99" "$non2xx" "$ratio" "$notes"
	SUMMARY+=("bench target=$t rps=$rps p50_ms=$p50 p99_ms=$p99 non2xx=$non2xx socket_errors=$sockerr ratio_trivial=$ratio$extra")
done

printf '\nCPU time per request (µs), by kind of process; "rest" is wrk and anything\n'
printf 'else on the machine; "busy" is the share of all %s cores used during the run.\n' "$CORES"
printf '%-9s %9s %9s %9s %9s %9s %9s %9s %9s %6s\n' target lighttpd auth users gate trivial redis postgres rest busy
HZ=$(getconf CLK_TCK)
for t in static trivial me login refresh static64 authz gate; do
	awk -v n="$(stat "$t" requests)" -v hz="$HZ" -v t="$t" '
		NR == FNR { before[$1] = $2; next }
		{ d[$1] = $2 - before[$1] }
		END {
			us = 1e6 / hz / (n > 0 ? n : 1)
			known = d["lighttpd"] + d["auth"] + d["users"] + d["gate"] + d["trivial"] + d["redis"] + d["postgres"]
			printf "%-9s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %5.0f%%\n", t,
				d["lighttpd"] * us, d["auth"] * us, d["users"] * us, d["gate"] * us, d["trivial"] * us,
				d["redis"] * us, d["postgres"] * us, (d["busy"] - known) * us,
				(d["all"] > 0 ? 100 * d["busy"] / d["all"] : 0)
		}' "$WORK/cpu-$t.0" "$WORK/cpu-$t.1"
done

printf '\nRSS (MiB): idle = before any request but the stack'"'"'s own health check,\n'
printf 'ready = after creating the users, after = after the runs; PSS idle for comparison.\n'
printf '%-18s %7s %9s %9s %9s %9s\n' process pid 'idle' 'ready' 'after' 'PSS idle'
join -j 2 <(sort -k2,2 "$WORK/rss-idle") <(sort -k2,2 "$WORK/rss-ready") |
	join -1 1 -2 2 - <(sort -k2,2 "$WORK/rss-after") |
	awk '{ printf "%-18s %7s %9.1f %9.1f %9.1f %9.1f\n", $2, $1, $3 / 1024, $6 / 1024, $9 / 1024, $4 / 1024 }' |
	sort -k1,1 -k2n
MAX_IDLE=$(awk '$1 ~ /^authflow-/ && $3 > m { m = $3 } END { printf "%.1f", m / 1024 }' "$WORK/rss-idle")

me_ratio=$(awk -v a="$(stat me rps)" -v b="$TRIVIAL_RPS" 'BEGIN { print a / b }')
me_p99=$(awk -v u="$(stat me p99_us)" 'BEGIN { print u / 1000 }')
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }
printf '\ntargets\n'
printf '  users/me >= 0.60 x trivial, p99 < 10 ms: %s (%.2f, %.2f ms)\n' \
	"$(verdict "$me_ratio >= 0.6 && $me_p99 < 10")" "$me_ratio" "$me_p99"
printf '  login >= 0.80 of the Argon2id ceiling:    %s (%s)\n' \
	"$(verdict "$(stat login rps) >= 0.8 * $A2_CEIL")" \
	"$(awk -v a="$(stat login rps)" -v c="$A2_CEIL" 'BEGIN { printf "%.2f", a / c }')"
printf '  refresh >= 1000/s:                        %s (%s)\n' \
	"$(verdict "$(stat refresh rps) >= 1000")" "$(stat refresh rps)"
printf '  idle RSS per responder < 10 MiB:          %s (largest %s MiB)\n' \
	"$(verdict "$MAX_IDLE < 10")" "$MAX_IDLE"
gate_ratio=$(awk -v a="$(stat gate rps)" -v b="$(stat authz rps)" 'BEGIN { print a / b }')
gate_p99=$(awk -v u="$(stat gate p99_us)" 'BEGIN { print u / 1000 }')
printf '  gate >= 0.80 x trivial authorizer, p99 < 10 ms at %s connections: %s (%.2f, %.2f ms;\n' \
	"$GATE_CONNS" "$(verdict "$gate_ratio >= 0.8 && $gate_p99 < 10")" "$gate_ratio" "$gate_p99"
printf '    p99 of the trivial authorizer %.2f ms, of the static file alone %.2f ms)\n\n' \
	"$(awk -v u="$(stat authz p99_us)" 'BEGIN { print u / 1000 }')" \
	"$(awk -v u="$(stat static64 p99_us)" 'BEGIN { print u / 1000 }')"

printf '%s\n' "${SUMMARY[@]}"
for ((round = 2; round <= GATE_ROUNDS; round++)); do
	printf 'bench round=%s static64_rps=%s static64_p99_ms=%s authz_rps=%s authz_p99_ms=%s gate_rps=%s gate_p99_ms=%s\n' \
		"$round" "$(stat "static64.$round" rps)" "$(awk -v u="$(stat "static64.$round" p99_us)" 'BEGIN { print u / 1000 }')" \
		"$(stat "authz.$round" rps)" "$(awk -v u="$(stat "authz.$round" p99_us)" 'BEGIN { print u / 1000 }')" \
		"$(stat "gate.$round" rps)" "$(awk -v u="$(stat "gate.$round" p99_us)" 'BEGIN { print u / 1000 }')"
done
printf 'bench rss_idle_max_mib=%s children=%s argon2_ms=%s argon2_parallel_per_s=%s cores=%s\n' \
	"$MAX_IDLE" "$AUTHFLOW_CHILDREN" "$A2_MS" "$A2_CEIL" "$CORES"

if [ "$BAD" -eq 1 ]; then
	say "some requests failed; error answers in the responders' logs (count prog method path status):"
	cat "$RUN"/log/auth.log "$RUN"/log/users.log "$RUN"/log/gate.log 2>/dev/null |
		jq -Rr 'fromjson? | select((.status // 0) >= 400) | "\(.prog) \(.method) \(.path) \(.status)"' |
		sort | uniq -c | sort -rn | head -n 20 >&2 || true
	say "warnings and errors logged (first 10):"
	cat "$RUN"/log/auth.log "$RUN"/log/users.log "$RUN"/log/gate.log 2>/dev/null |
		jq -Rc 'fromjson? | select(.level == "warn" or .level == "error")' | head -n 10 >&2 || true
	say "end of lighttpd.log:"
	tail -n 10 "$RUN/log/lighttpd.log" >&2 || true
	exit 1
fi
