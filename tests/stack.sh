#!/usr/bin/env bash
# A throw-away authflow stack on the loopback interface: PostgreSQL, Redis,
# the FastCGI responders under spawn-fcgi and lighttpd in front of them, an
# SMTP sink keeping every message in the run directory, and authflow-mailer.
# Used by the README, the end-to-end tests and the benchmarks.
#
#   tests/stack.sh deps    install missing Debian packages (as root)
#   tests/stack.sh build   autoreconf/configure/make in $AUTHFLOW_BUILDDIR
#   tests/stack.sh up      start a stack in $AUTHFLOW_RUN_DIR (stops an old one first)
#   tests/stack.sh down    stop it and wipe the run directory
#   tests/stack.sh env     print the path of the stack's sourceable env file
#   tests/stack.sh mail [ADDRESS]
#                          print the text of the newest message caught by the
#                          sink (for ADDRESS, if given)
#
# Environment:
#   AUTHFLOW_SRCDIR     source tree (default: this script's parent directory)
#   AUTHFLOW_BUILDDIR   where the programs are built (default: the source tree)
#   AUTHFLOW_RUN_DIR    state, sockets and logs (default: $AUTHFLOW_BUILDDIR/run/local)
#   AUTHFLOW_NO_DEPS=1  `up` neither installs nor builds; the programs must exist
#   AUTHFLOW_CHILDREN   processes per responder (default: the number of cores)
#   AUTHFLOW_LIGHTTPD_EXTRA  a file the generated lighttpd.conf includes last
#   AUTHFLOW_CONFIG_EXTRA    a file appended to the generated authflow.conf
#                       (sections the example lacks, such as [oauth.NAME];
#                       @BASE_URL@ in it becomes the stack's web server URL)
#   AUTHFLOW_MAILER=0   start no authflow-mailer (the sink still runs)
#   AUTHFLOW_WEB        lighttpd (default), apache or nginx: the web server in
#                       front, configured with etc/lighttpd/*.conf,
#                       etc/apache2/*.conf or etc/nginx/*.conf
#   AUTHFLOW_PG         single (default): one PostgreSQL cluster, reached
#                       directly; replica: a streaming standby of it as well
#                       and pgbouncer (transaction pooling) in front of both,
#                       database.dsn its database authflow (the primary) and
#                       database.read_dsn its authflow_ro (the standby);
#                       database.listen_dsn (the mailer's LISTEN) the primary
#   AUTHFLOW_PG_REPLICATION  with a replica: sync (default), commits wait
#                       until the standby has applied them, so a read on it
#                       sees every committed change (as the end-to-end files,
#                       written against one database, expect); async, plain
#                       streaming: the standby may lag, and stalls no commit
#                       when it is stopped or its replay is paused
# Any AUTHFLOW_<SECTION>_<KEY> set when calling `up` reaches the responders and
# overrides their configuration file.
#
# As root the services run as the system user `authflow`, never as root.
# Every service listens on 127.0.0.1 only, on ports chosen at start.
set -euo pipefail

PACKAGES=(
	build-essential autoconf automake libtool pkg-config
	libfcgi-dev libpq-dev libhiredis-dev libsodium-dev libjwt-dev
	libjson-c-dev libssl-dev libcurl4-openssl-dev libpwquality-dev cracklib-runtime
	liboath-dev libqrencode-dev
	clang libclang-rt-14-dev
	postgresql pgbouncer redis-server lighttpd apache2 nginx spawn-fcgi python3-aiosmtpd
	bats bats-assert bats-support bats-file wrk curl jq
	python3-jwt python3-cryptography procps
	nodejs
	dpkg-dev debhelper dh-autoreconf fakeroot lintian rpm debootstrap
)
SVC_USER=authflow

die() { printf 'stack.sh: %s\n' "$*" >&2; exit 1; }
say() { printf 'stack.sh: %s\n' "$*" >&2; }

SRCDIR=$(cd "${AUTHFLOW_SRCDIR:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)
BUILDDIR=$(realpath -m "${AUTHFLOW_BUILDDIR:-$SRCDIR}")
# -s: a run directory that is our symlink (see make_run_dir) must stay one.
RUN=$(realpath -ms "${AUTHFLOW_RUN_DIR:-$BUILDDIR/run/local}")
# One single-threaded process per core serves best: more only adds context
# switches (measured with tests/bench/bench.sh).
CHILDREN=${AUTHFLOW_CHILDREN:-$(nproc)}
PG_MODE=${AUTHFLOW_PG:-single}
PG_REPLICATION=${AUTHFLOW_PG_REPLICATION:-sync}
IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# The directory the services really use: $RUN itself, or what $RUN links to.
real_run_dir() {
	if [ -L "$RUN" ]; then readlink -f "$RUN"; else printf '%s\n' "$RUN"; fi
}

# Run a command as the unprivileged service user (or as ourselves when we
# are not root: then we are the unprivileged user).
as_svc() {
	if [ "$IS_ROOT" -eq 1 ]; then runuser -u "$SVC_USER" -- "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- deps

missing_packages() {
	local p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed ||
			printf '%s\n' "$p"
	done
	# The OpenID provider of the social-login tests (tests/oidc) is npm's;
	# a Node.js from elsewhere (NodeSource) brings its own npm.
	command -v npm >/dev/null || printf 'npm\n'
}

cmd_deps() {
	local missing
	mapfile -t missing < <(missing_packages)
	[ "${#missing[@]}" -eq 0 ] && return 0
	if [ "$IS_ROOT" -ne 1 ]; then
		say "missing packages: ${missing[*]} (run 'tests/stack.sh deps' as root)"
		return 1
	fi
	say "installing: ${missing[*]}"
	# The stack runs its own instances on free ports; keep the packages from
	# starting system-wide PostgreSQL, Redis and lighttpd services.
	local policy=/usr/sbin/policy-rc.d own_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -q &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends "${missing[@]}"
	} </dev/null || rc=$?
	[ "$own_policy" -eq 1 ] && rm -f "$policy"
	[ "$rc" -eq 0 ] || die "apt-get failed ($rc)"
}

# ---------------------------------------------------------------- build

cmd_build() {
	[ -x "$SRCDIR/configure" ] || (cd "$SRCDIR" && autoreconf -fi)
	mkdir -p "$BUILDDIR"
	[ -f "$BUILDDIR/Makefile" ] || (cd "$BUILDDIR" && "$SRCDIR/configure")
	# make itself decides what is out of date.
	make -C "$BUILDDIR" -j"$(nproc)"
}

# ---------------------------------------------------------------- processes

# A process that has exited but was not reaped still answers kill -0 (PID 1
# here does not reap orphans), so look at its state instead.
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $st != Z* ]]
}

# Guards against stale pid files naming a pid that now belongs to another
# program. The executable's name counts as well as the process name: a
# program that re-executes itself through /proc/self/exe is named "exe", and
# one rebuilt while it runs is "NAME (deleted)".
runs() {
	local exe
	[ "$(ps -o comm= -p "$1" 2>/dev/null)" = "$2" ] && return 0
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
	exe=${exe##*/}
	[ "${exe% (deleted)}" = "$2" ]
}

# stop SIGNAL PROGRAM PID...: signal those PIDs still running PROGRAM and wait
# up to 10 s for them to go, then kill what is left.
stop() {
	local sig=$1 prog=$2 p i
	shift 2
	local live=()
	for p in "$@"; do
		alive "$p" && runs "$p" "$prog" && live+=("$p")
	done
	[ "${#live[@]}" -gt 0 ] || return 0
	kill -s "$sig" "${live[@]}" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		local left=()
		for p in "${live[@]}"; do alive "$p" && left+=("$p"); done
		[ "${#left[@]}" -gt 0 ] || return 0
		live=("${left[@]}")
		sleep 0.1
	done
	say "$prog (${live[*]}) ignored SIG$sig for 10 s; killing it"
	kill -s KILL "${live[@]}" 2>/dev/null || true
}

# pids_in FILE [COUNT]: the pids a pid file names (the first COUNT lines), in PIDS.
pids_in() {
	PIDS=()
	if [ -f "$1" ]; then mapfile -t -n "${2:-0}" PIDS <"$1"; fi
}

stop_services() {
	local r=$1
	# Front to back, so no request reaches a dependency that is gone.
	pids_in "$r/lighttpd.pid" && stop TERM lighttpd "${PIDS[@]}"
	pids_in "$r/apache.pid" && stop TERM apache2 "${PIDS[@]}"
	pids_in "$r/nginx.pid" && stop TERM nginx "${PIDS[@]}"
	pids_in "$r/gate-tcp.pid" && stop TERM authflow-gate "${PIDS[@]}"
	pids_in "$r/mailer.pid" && stop TERM authflow-mailer "${PIDS[@]}"
	pids_in "$r/smtp-sink.pid" && stop TERM python3 "${PIDS[@]}"
	pids_in "$r/auth.pid" && stop TERM authflow-auth "${PIDS[@]}"
	pids_in "$r/users.pid" && stop TERM authflow-users "${PIDS[@]}"
	pids_in "$r/admin.pid" && stop TERM authflow-admin "${PIDS[@]}"
	pids_in "$r/oauth.pid" && stop TERM authflow-oauth "${PIDS[@]}"
	pids_in "$r/gate.pid" && stop TERM authflow-gate "${PIDS[@]}"
	pids_in "$r/echo.pid" && stop TERM echo-backend "${PIDS[@]}"
	pids_in "$r/redis.pid" && stop TERM redis-server "${PIDS[@]}"
	# AUTHFLOW_PG=replica: pgbouncer, then the standby (SIGTERM is
	# pgbouncer's immediate shutdown, SIGINT would wait for its clients).
	pids_in "$r/pgbouncer.pid" && stop TERM pgbouncer "${PIDS[@]}"
	# SIGINT is PostgreSQL's fast shutdown; its pid file holds more than the pid.
	pids_in "$r/pgdata-replica/postmaster.pid" 1 && stop INT postgres "${PIDS[@]}"
	pids_in "$r/pgdata/postmaster.pid" 1 && stop INT postgres "${PIDS[@]}"
}

# Sanitizer builds write the responders' reports (memory errors, leaks at
# exit) to their logs, where no test looks: show them, and fail `down`, so
# that the test tearing the stack down fails too.
check_sanitizer_reports() {
	local f bad=0
	for f in "$1"/log/auth.log "$1"/log/users.log "$1"/log/admin.log "$1"/log/gate.log \
		"$1"/log/oauth.log "$1"/log/mailer.log; do
		[ -f "$f" ] || continue
		grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$f" || continue
		say "sanitizer report in $(basename "$f"):"
		grep -E -A 15 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$f" | head -n 80 >&2
		bad=1
	done
	return "$bad"
}

cmd_down() {
	local r rc=0
	r=$(real_run_dir)
	if [ -d "$r" ]; then
		# Never wipe a directory this script did not make.
		[ -f "$r/.authflow-stack" ] || [ -z "$(ls -A "$r")" ] ||
			die "$r is not a stack run directory; not touching it"
		stop_services "$r"
		check_sanitizer_reports "$r" || rc=1
		rm -rf "$r"
	fi
	[ -L "$RUN" ] && rm -f "$RUN"
	return "$rc"
}

# ---------------------------------------------------------------- up

# Close descriptors inherited from the caller (bats keeps its TAP stream on
# fd 3, the test driver a pipe): a daemon holding one open keeps the caller
# waiting for end of file long after the test is done. Bash's own script
# descriptor (255) is close-on-exec already.
close_inherited_fds() {
	local fd
	for fd in "/proc/$$/fd/"*; do
		fd=${fd##*/}
		if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then
			eval "exec $fd>&-" 2>/dev/null || true
		fi
	done
}

ensure_user() {
	local i
	# Parallel test files may race to create the user: the loser's useradd
	# fails, but the user then exists.
	for ((i = 0; i < 5; i++)); do
		getent passwd "$SVC_USER" >/dev/null && return 0
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$SVC_USER" 2>/dev/null || sleep 1
	done
	getent passwd "$SVC_USER" >/dev/null || die "cannot create user $SVC_USER"
}

# Unix socket paths are limited to 107 bytes, and as root every directory
# above the run directory must be searchable by the service user. When $RUN
# fails either, the state goes to a fresh directory under /tmp and $RUN
# becomes a symlink to it (callers keep using $RUN).
make_run_dir() {
	mkdir -p "$(dirname "$RUN")"
	mkdir -m 0755 "$RUN"
	R=$RUN
	if [ "${#R}" -gt 80 ] ||
		{ [ "$IS_ROOT" -eq 1 ] && ! runuser -u "$SVC_USER" -- test -x "$R"; }; then
		rmdir "$RUN"
		R=$(mktemp -d /tmp/authflow-run.XXXXXX)
		chmod 0755 "$R"
		ln -s "$R" "$RUN"
	fi
	touch "$R/.authflow-stack"
	mkdir -p "$R/log" "$R/www" "$R/tmp" "$R/redis" "$R/keys" "$R/mail"
	chmod 0700 "$R/keys"
	printf 'ok\n' >"$R/www/static.txt"
	mkdir -p "$R/private/files"
	printf 'secret page\n' >"$R/private/files/page.txt"
}

# Ports below the kernel's ephemeral range (32768 and up), so an outgoing
# connection cannot take one between this check and the server's bind.
free_ports() {
	local py=/usr/bin/python3
	[ -x "$py" ] || py=python3
	"$py" - "$1" <<'PY'
import random, socket, sys
held = []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randint(15000, 32000)))
    except OSError:
        s.close()
        continue
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# wait_for WHAT LOG SECONDS COMMAND...: retry COMMAND until it succeeds.
wait_for() {
	local what=$1 log=$2 secs=$3 i
	shift 3
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	say "$what did not answer within $secs s; end of $log:"
	tail -n 30 "$log" >&2 2>/dev/null || true
	return 1
}

http_code_is() {
	[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$2")" = "$1" ]
}

redis_pong() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_postgres() {
	local pgbin
	pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	[ -x "$pgbin/initdb" ] || die "PostgreSQL server programs not found (package postgresql)"
	as_svc "$pgbin/initdb" -D "$R/pgdata" -U authflow -A trust -E UTF8 \
		--locale=C.UTF-8 --no-sync >"$R/log/initdb.log" 2>&1 ||
		{ tail -n 20 "$R/log/initdb.log" >&2; die "initdb failed"; }
	cat >>"$R/pgdata/postgresql.conf" <<-EOF
		# authflow test stack. A throw-away cluster: fsync and friends are off
		# because nothing here must survive a crash; never copy this to a real one.
		listen_addresses = '127.0.0.1'
		port = $PGPORT
		unix_socket_directories = '$R'
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		shared_buffers = 32MB
		max_connections = 200
	EOF
	# AUTHFLOW_PG=replica: a standby follows this cluster (start_replica).
	if [ "$PG_MODE" = replica ]; then configure_primary_for_replica; fi
	as_svc "$pgbin/pg_ctl" -D "$R/pgdata" -l "$R/log/postgres.log" -w -t 30 -s start \
		</dev/null || { tail -n 20 "$R/log/postgres.log" >&2; die "PostgreSQL did not start"; }
	wait_for PostgreSQL "$R/log/postgres.log" 20 \
		"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U authflow -d postgres
	"$pgbin/createdb" -h 127.0.0.1 -p "$PGPORT" -U authflow authflow
}

# ---------------------------------------------------------------- AUTHFLOW_PG=replica

pg_bindir() { printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }

# pg_query PORT DATABASE SQL...: each SQL as its own statement (ALTER SYSTEM
# refuses to run in the implicit transaction of a multi-statement string);
# unaligned output, no header.
pg_query() {
	local port=$1 db=$2 sql args=()
	shift 2
	for sql in "$@"; do args+=(-c "$sql"); done
	"$(pg_bindir)/psql" -h 127.0.0.1 -p "$port" -U authflow -d "$db" -qAtX -v ON_ERROR_STOP=1 \
		"${args[@]}" </dev/null
}

# The primary's share: WAL enough for a hot standby, WAL senders and a slot
# for it, and a replication connection from the loopback address (initdb -A
# trust writes such a line already; the standby depends on it, so it is
# spelled out).
configure_primary_for_replica() {
	cat >>"$R/pgdata/postgresql.conf" <<-EOF
		# AUTHFLOW_PG=replica: a hot standby streams from this cluster.
		wal_level = replica
		max_wal_senders = 5
		max_replication_slots = 5
		# A WAL sender sends only flushed WAL, and with synchronous_commit off
		# the WAL writer flushes it every wal_writer_delay (default 200 ms):
		# flush often, so that an asynchronous standby lags by milliseconds.
		wal_writer_delay = 10ms
	EOF
	printf '%s\n' "# AUTHFLOW_PG=replica: the standby's base backup and WAL stream." \
		'host replication authflow 127.0.0.1/32 trust' >>"$R/pgdata/pg_hba.conf"
}

replica_streams() {
	[ "$(pg_query "$PGPORT" postgres \
		"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" = 1 ]
}

# A hot standby of the primary in $R/pgdata-replica on $REPLICA_PGPORT.
# pg_basebackup -R writes standby.signal and primary_conninfo; the base
# backup's postgresql.conf is the primary's, so the lines appended to it
# win. It streams through a replication slot: the primary keeps the WAL the
# standby has not received while a test has it stopped, and it catches up
# when started again.
start_replica() {
	local pgbin
	pgbin=$(pg_bindir)
	as_svc "$pgbin/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U authflow -D "$R/pgdata-replica" \
		-R -X stream -C -S authflow_replica -c fast --no-sync \
		</dev/null >"$R/log/basebackup.log" 2>&1 ||
		{ tail -n 20 "$R/log/basebackup.log" >&2; die "pg_basebackup failed"; }
	cat >>"$R/pgdata-replica/postgresql.conf" <<-EOF
		# AUTHFLOW_PG=replica: this is the standby (the lines above are the
		# primary's).
		port = $REPLICA_PGPORT
		hot_standby = on
		# Report the replay position every second (default 10 s), and tell
		# the primary which rows the standby's queries still need, so that
		# its VACUUM does not get them cancelled.
		wal_receiver_status_interval = 1s
		hot_standby_feedback = on
	EOF
	as_svc "$pgbin/pg_ctl" -D "$R/pgdata-replica" -l "$R/log/postgres-replica.log" -w -t 30 -s start \
		</dev/null || { tail -n 20 "$R/log/postgres-replica.log" >&2; die "the PostgreSQL standby did not start"; }
	wait_for "the PostgreSQL standby" "$R/log/postgres-replica.log" 20 \
		"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$REPLICA_PGPORT" -U authflow -d authflow
	wait_for "the standby's WAL stream" "$R/log/postgres-replica.log" 20 replica_streams
	if [ "$PG_REPLICATION" = sync ]; then
		# Each commit returns once the standby has applied it. Set only now:
		# with no standby connected, a commit would wait for one.
		pg_query "$PGPORT" postgres "ALTER SYSTEM SET synchronous_standby_names = '*'" \
			"ALTER SYSTEM SET synchronous_commit = remote_apply" "SELECT pg_reload_conf()" >/dev/null
	fi
}

# bouncer_answers: pgbouncer's console answers, and its two databases lead
# to a primary and a standby.
bouncer_answers() {
	pg_query "$PGBOUNCER_PORT" pgbouncer 'SHOW VERSION' &&
		[ "$(pg_query "$PGBOUNCER_PORT" authflow 'SELECT pg_is_in_recovery()')" = f ] &&
		[ "$(pg_query "$PGBOUNCER_PORT" authflow_ro 'SELECT pg_is_in_recovery()')" = t ]
}

# pgbouncer in front of both clusters, as the service user: database
# authflow is the primary, authflow_ro the standby (the responders' dsn and
# read_dsn). Transaction pooling with the settings of the platform notes.
start_pgbouncer() {
	local bouncer=/usr/sbin/pgbouncer clients
	[ -x "$bouncer" ] || bouncer=$(command -v pgbouncer) || die "pgbouncer not found (package pgbouncer)"
	# Each responder process (four programs and Apache's TCP gate) may hold a
	# connection to both databases; then the mailers, authflowctl and the
	# tests' own.
	clients=$((5 * CHILDREN * 2 + 100))
	[ "$clients" -ge 400 ] || clients=400
	# Throw-away and on loopback only: no passwords (auth_type trust still
	# wants the user in the auth file).
	printf '"authflow" ""\n' >"$R/pgbouncer-users.txt"
	cat >"$R/pgbouncer.ini" <<-EOF
		; authflow test stack, generated by tests/stack.sh.
		[databases]
		authflow = host=$R port=$PGPORT dbname=authflow
		authflow_ro = host=$R port=$REPLICA_PGPORT dbname=authflow

		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $PGBOUNCER_PORT
		unix_socket_dir = $R
		auth_type = trust
		auth_file = $R/pgbouncer-users.txt
		admin_users = authflow
		stats_users = authflow
		pool_mode = transaction
		server_reset_query =
		ignore_startup_parameters = extra_float_digits
		max_client_conn = $clients
		default_pool_size = 40
		; After a failed connection to a server (a standby a test stopped),
		; try again after a second rather than 15.
		server_login_retry = 1
		logfile = $R/log/pgbouncer.log
		pidfile = $R/pgbouncer.pid
	EOF
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$R/pgbouncer.ini" "$R/pgbouncer-users.txt"
	as_svc "$bouncer" -d -q "$R/pgbouncer.ini" </dev/null >>"$R/log/pgbouncer-start.log" 2>&1 ||
		{ tail -n 20 "$R/log/pgbouncer-start.log" "$R/log/pgbouncer.log" >&2; die "pgbouncer did not start"; }
	wait_for pgbouncer "$R/log/pgbouncer.log" 10 bouncer_answers
}

start_redis() {
	# The responders use the unix socket (cheaper than TCP on one host);
	# the TCP port is there for redis-cli and the tests.
	as_svc redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
		--unixsocket "$R/redis.sock" --unixsocketperm 700 \
		--appendonly no --dir "$R/redis" --daemonize yes \
		--pidfile "$R/redis.pid" --logfile "$R/log/redis.log" </dev/null >/dev/null
	wait_for Redis "$R/log/redis.log" 10 redis_pong
}

# The example configuration with the values of this stack. Fails when a key
# is not in the example, so the two cannot drift apart silently.
write_config() {
	awk '
		NR == FNR { i = index($0, "="); want[substr($0, 1, i - 1)] = substr($0, i + 1); next }
		/^\[/ { section = substr($0, 2, index($0, "]") - 2) }
		/^[ \t]*[a-z_]+[ \t]*=/ {
			key = $0; sub(/[ \t]*=.*/, "", key); sub(/^[ \t]+/, "", key)
			id = section "." key
			if (id in want) { print key " = " want[id]; done[id] = 1; next }
		}
		{ print }
		END {
			for (id in want) if (!(id in done)) {
				print "stack.sh: " id " is not in etc/authflow.conf" > "/dev/stderr"; bad = 1
			}
			exit bad
		}
	' - "$SRCDIR/etc/authflow.conf" >"$R/authflow.conf" < <(config_values)
	if [ -n "${AUTHFLOW_CONFIG_EXTRA:-}" ]; then
		sed "s|@BASE_URL@|$BASE_URL|g" "$AUTHFLOW_CONFIG_EXTRA" >>"$R/authflow.conf"
	fi
}

# The stack's values for write_config, SECTION.KEY=VALUE a line.
config_values() {
	# AUTHFLOW_PG=replica: both databases through pgbouncer, but for
	# authflow-mailer's LISTEN, which pgbouncer in transaction pooling cannot
	# carry (the LISTEN lands on whichever server connection the pool lends
	# for that one statement: no notification reaches the mailer, which then
	# only notices new mail when it polls; mail.bats took four times as long).
	if [ "$PG_MODE" = replica ]; then
		printf '%s\n' "database.dsn=host=$R port=$PGBOUNCER_PORT dbname=authflow user=authflow" \
			"database.read_dsn=host=$R port=$PGBOUNCER_PORT dbname=authflow_ro user=authflow" \
			"database.listen_dsn=host=$R port=$PGPORT dbname=authflow user=authflow"
	else
		printf '%s\n' "database.dsn=host=$R port=$PGPORT dbname=authflow user=authflow"
	fi
	cat <<-EOF
		server.public_url=$BASE_URL
		server.allowed_origins=$BASE_URL
		redis.host=127.0.0.1
		redis.port=$REDIS_PORT
		redis.socket=$R/redis.sock
		mail.smtp_host=127.0.0.1
		mail.smtp_port=$SMTP_PORT
		mail.templates_dir=$SRCDIR/etc/templates
		passwords.common_list=$SRCDIR/etc/common-passwords.txt
		tokens.keys_dir=$R/keys
		tokens.issuer=$BASE_URL
		cookies.secure=false
		metrics.file=$R/metrics
	EOF
}

# The application behind the gate in the example configuration
# (etc/lighttpd/authflow-gate.conf): it echoes the identity it receives and
# logs each request it gets to $R/log/echo-requests.log.
start_echo_backend() {
	local ids=()
	[ "$IS_ROOT" -eq 1 ] && ids=(-u "$SVC_USER" -g "$SVC_USER" -U "$SVC_USER" -G "$SVC_USER")
	: >"$R/log/echo-requests.log"
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$R/log/echo-requests.log"
	local exe=$BIN/echo-backend
	[ -x "$exe" ] || exe=$BUILDDIR/tests/backend/echo-backend
	ECHO_BACKEND_LOG=$R/log/echo-requests.log spawn-fcgi -s "$R/echo.sock" -M 0660 "${ids[@]}" \
		-F 1 -P "$R/echo.pid" -d "$R" -- "$exe" \
		</dev/null >>"$R/log/spawn-fcgi.log" 2>&1 || die "spawn-fcgi echo-backend failed"
}

# The SMTP sink: every message it accepts becomes a file in $R/mail.
start_smtp_sink() {
	as_svc setsid /usr/bin/python3 "$SRCDIR/tests/smtp-sink.py" --host 127.0.0.1 \
		--port "$SMTP_PORT" --dir "$R/mail" --pid-file "$R/smtp-sink.pid" \
		</dev/null >>"$R/log/smtp-sink.log" 2>&1 &
	wait_for "the SMTP sink" "$R/log/smtp-sink.log" 10 port_open "$SMTP_PORT"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# authflow-mailer as a daemon; a shell in front writes its pid file, then
# execs it with stderr (the JSON log) going to the log file.
start_mailer() {
	local log=$R/log/mailer.log
	: >"$log"
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$log"
	# shellcheck disable=SC2016 # $0, $1 and $2 are the inner shell's
	as_svc setsid /bin/sh -c 'echo $$ >"$2"; exec "$0" 2>>"$1"' "$BIN/authflow-mailer" "$log" \
		"$R/mailer.pid" </dev/null >/dev/null 2>&1 &
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q mailer_started "$log" 2>/dev/null && return 0
		sleep 0.1
	done
	say "authflow-mailer did not start; end of $log:"
	tail -n 30 "$log" >&2
	return 1
}

# spawn-fcgi points the children's stdout and stderr at /dev/null; a shell
# in front of each child sends stderr (the JSON log) to the log file instead,
# then execs the responder so the pid file still names it. spawn-fcgi's own
# chatter goes elsewhere: the responders' logs hold JSON lines only.
start_responder() {
	local name=$1 log=$R/log/$1.log p prog=$1
	local ids=() listen=(-s "$R/$1.sock" -M 0660)
	# mod_authnz_fcgi reaches an authorizer over TCP only.
	[ "$name" = gate-tcp ] && prog=gate listen=(-a 127.0.0.1 -p "$GATE_PORT")
	[ "$IS_ROOT" -eq 1 ] && ids=(-u "$SVC_USER" -g "$SVC_USER" -U "$SVC_USER" -G "$SVC_USER")
	: >"$log"
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$log"
	# shellcheck disable=SC2016 # $0 and $1 are the inner shell's
	AUTHFLOW_CONFIG=$R/authflow.conf spawn-fcgi "${listen[@]}" "${ids[@]}" \
		-F "$CHILDREN" -P "$R/$name.pid" -d "$R" \
		-- /bin/sh -c 'exec "$0" 2>>"$1"' "$BIN/authflow-$prog" "$log" \
		</dev/null >>"$R/log/spawn-fcgi.log" 2>&1 ||
		{ tail -n 20 "$R/log/spawn-fcgi.log" "$log" >&2; die "spawn-fcgi $name failed"; }
	# A responder that cannot start (configuration, keys, database) exits at
	# once; spawn-fcgi does not notice, nor restart it.
	sleep 1
	pids_in "$R/$name.pid"
	for p in "${PIDS[@]}"; do
		alive "$p" && runs "$p" "authflow-$prog" && continue
		say "authflow-$prog (pid $p) exited right after start; end of $log:"
		tail -n 30 "$log" >&2
		return 1
	done
}

start_lighttpd() {
	local user_conf=
	# Started as root, lighttpd reads its configuration and binds, then
	# drops to the service user.
	[ "$IS_ROOT" -eq 1 ] &&
		user_conf="server.username = \"$SVC_USER\""$'\n'"server.groupname = \"$SVC_USER\""
	cat >"$R/lighttpd.conf" <<-EOF
		# authflow test stack, generated by tests/stack.sh.
		server.modules = ( "mod_fastcgi" )
		server.port = $HTTP_PORT
		server.bind = "127.0.0.1"
		server.document-root = "$R/www"
		server.errorlog = "$R/log/lighttpd.log"
		server.pid-file = "$R/lighttpd.pid"
		server.upload-dirs = ( "$R/tmp" )
		$user_conf
		# KiB. Above the responders' own limit (max_body_bytes), so that they,
		# not lighttpd, answer an oversized body with a problem+json 413.
		server.max-request-size = 2048
		mimetype.assign = ( ".txt" => "text/plain", ".html" => "text/html" )

		var.authflow_socket_dir = "$R"
		include "$SRCDIR/etc/lighttpd/authflow.conf"
		var.authflow_app_socket = "$R/echo.sock"
		var.authflow_files_root = "$R/private"
		include "$SRCDIR/etc/lighttpd/authflow-gate.conf"
	EOF
	if [ -n "${AUTHFLOW_LIGHTTPD_EXTRA:-}" ]; then
		printf 'include "%s"\n' "$(realpath "$AUTHFLOW_LIGHTTPD_EXTRA")" >>"$R/lighttpd.conf"
	fi
	lighttpd -tt -f "$R/lighttpd.conf" >"$R/log/lighttpd.log" 2>&1 ||
		{ cat "$R/log/lighttpd.log" >&2; die "lighttpd rejects its configuration"; }
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$R/log/lighttpd.log"
	lighttpd -f "$R/lighttpd.conf" </dev/null >>"$R/log/lighttpd.log" 2>&1 ||
		{ tail -n 20 "$R/log/lighttpd.log" >&2; die "lighttpd did not start"; }
	wait_for lighttpd "$R/log/lighttpd.log" 10 http_code_is 200 "$BASE_URL/static.txt"
}

start_nginx() {
	local user_conf=
	# Started as root, nginx reads its configuration and binds, then runs
	# its worker as the service user.
	[ "$IS_ROOT" -eq 1 ] && user_conf="user $SVC_USER;"
	# The snippets' includes are relative to the configuration directory,
	# as in /etc/nginx: snippets/authflow/ is etc/nginx of the source tree.
	mkdir -p "$R/nginx/snippets" "$R/nginx-tmp"
	ln -sfn "$SRCDIR/etc/nginx" "$R/nginx/snippets/authflow"
	ln -sfn /etc/nginx/fastcgi_params "$R/nginx/fastcgi_params"
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$R/nginx-tmp"
	cat >"$R/nginx/nginx.conf" <<-EOF
		# authflow test stack, generated by tests/stack.sh.
		$user_conf
		worker_processes 1;
		pid $R/nginx.pid;
		error_log $R/log/nginx-error.log warn;
		events { worker_connections 1024; }
		http {
			access_log off;
			client_body_temp_path $R/nginx-tmp/body;
			fastcgi_temp_path $R/nginx-tmp/fastcgi;
			proxy_temp_path $R/nginx-tmp/proxy;
			uwsgi_temp_path $R/nginx-tmp/uwsgi;
			scgi_temp_path $R/nginx-tmp/scgi;
			types { text/plain txt; text/html html; }
			default_type application/octet-stream;
			server {
				listen 127.0.0.1:$HTTP_PORT;
				server_name 127.0.0.1;
				root $R/www;
				set \$authflow_sockets $R;
				include snippets/authflow/authflow.conf;
				set \$authflow_app_socket $R/echo.sock;
				set \$authflow_files_root $R/private;
				include snippets/authflow/authflow-gate.conf;
				# A regular-expression location, as a PHP set-up has: the
				# gate's locations must keep their paths from it.
				location ~ \.php\$ { return 200 "not gated\\n"; }
			}
		}
	EOF
	local ng=(nginx -e "$R/log/nginx-error.log" -p "$R/nginx" -c "$R/nginx/nginx.conf")
	"${ng[@]}" -t >"$R/log/nginx-error.log" 2>&1 ||
		{ cat "$R/log/nginx-error.log" >&2; die "nginx rejects its configuration"; }
	"${ng[@]}" </dev/null >>"$R/log/nginx-error.log" 2>&1 ||
		{ tail -n 20 "$R/log/nginx-error.log" >&2; die "nginx did not start"; }
	wait_for nginx "$R/log/nginx-error.log" 10 http_code_is 200 "$BASE_URL/static.txt"
}

start_apache() {
	local user_conf= m mods=(mpm_event authn_core authz_core proxy proxy_fcgi authnz_fcgi
		headers setenvif alias mime dir)
	[ "$IS_ROOT" -eq 1 ] && user_conf="User $SVC_USER"$'\n'"Group $SVC_USER"
	mkdir -p "$R/apache-run"
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$R/apache-run"
	{
		echo "# authflow test stack, generated by tests/stack.sh."
		for m in "${mods[@]}"; do
			echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_$m.so"
		done
		cat <<-EOF
			ServerName 127.0.0.1
			Listen 127.0.0.1:$HTTP_PORT
			PidFile $R/apache.pid
			DefaultRuntimeDir $R/apache-run
			Mutex file:$R/apache-run default
			ErrorLog $R/log/apache-error.log
			LogLevel warn
			$user_conf
			TypesConfig /etc/mime.types
			DocumentRoot $R/www
			<Directory "$R">
				Require all granted
			</Directory>
			Define AUTHFLOW_SOCKET_DIR $R
			Define AUTHFLOW_GATE_ADDR 127.0.0.1:$GATE_PORT
			Define AUTHFLOW_CONF_DIR $SRCDIR/etc/apache2
			Include $SRCDIR/etc/apache2/authflow.conf
			Define AUTHFLOW_APP_SOCKET $R/echo.sock
			Define AUTHFLOW_FILES_ROOT $R/private
			Include $SRCDIR/etc/apache2/authflow-gate.conf
		EOF
	} >"$R/apache.conf"
	apache2 -t -f "$R/apache.conf" >"$R/log/apache-error.log" 2>&1 ||
		{ cat "$R/log/apache-error.log" >&2; die "apache2 rejects its configuration"; }
	[ "$IS_ROOT" -eq 1 ] && chown "$SVC_USER:" "$R/log/apache-error.log"
	apache2 -f "$R/apache.conf" -k start </dev/null >>"$R/log/apache-error.log" 2>&1 ||
		{ tail -n 20 "$R/log/apache-error.log" >&2; die "apache2 did not start"; }
	wait_for apache2 "$R/log/apache-error.log" 10 http_code_is 200 "$BASE_URL/static.txt"
}

write_env() {
	local v
	{
		echo "# authflow test stack: source this file."
		for v in "AUTHFLOW_BASE_URL=$BASE_URL" "AUTHFLOW_RUN_DIR=$RUN" \
			"AUTHFLOW_CONFIG=$RUN/authflow.conf" "AUTHFLOW_BUILDDIR=$BUILDDIR" \
			"AUTHFLOW_SRCDIR=$SRCDIR" "AUTHFLOW_HTTP_PORT=$HTTP_PORT" \
			PGHOST=127.0.0.1 "PGPORT=$PGPORT" PGUSER=authflow PGDATABASE=authflow \
			"REDIS_PORT=$REDIS_PORT" \
			"AUTHFLOW_PIDFILE_POSTGRES=$RUN/pgdata/postmaster.pid" \
			"AUTHFLOW_PIDFILE_REDIS=$RUN/redis.pid" \
			"AUTHFLOW_PIDFILE_AUTH=$RUN/auth.pid" \
			"AUTHFLOW_PIDFILE_USERS=$RUN/users.pid" \
			"AUTHFLOW_PIDFILE_ADMIN=$RUN/admin.pid" \
			"AUTHFLOW_PIDFILE_OAUTH=$RUN/oauth.pid" \
			"AUTHFLOW_PIDFILE_GATE=$RUN/gate.pid" \
			"AUTHFLOW_PIDFILE_LIGHTTPD=$RUN/lighttpd.pid" \
			"AUTHFLOW_PIDFILE_APACHE=$RUN/apache.pid" \
			"AUTHFLOW_PIDFILE_NGINX=$RUN/nginx.pid" \
			"AUTHFLOW_WEB=${AUTHFLOW_WEB:-lighttpd}" \
			"AUTHFLOW_PIDFILE_MAILER=$RUN/mailer.pid" \
			"AUTHFLOW_PIDFILE_SMTP_SINK=$RUN/smtp-sink.pid" \
			"AUTHFLOW_SMTP_PORT=$SMTP_PORT" "AUTHFLOW_MAIL_DIR=$RUN/mail"; do
			printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
		done
		# PGPORT above stays the primary's, reached directly.
		if [ "$PG_MODE" = replica ]; then
			for v in "AUTHFLOW_PG=$PG_MODE" "AUTHFLOW_PG_REPLICATION=$PG_REPLICATION" \
				"REPLICA_PGPORT=$REPLICA_PGPORT" "PGBOUNCER_PORT=$PGBOUNCER_PORT" \
				"AUTHFLOW_PIDFILE_REPLICA=$RUN/pgdata-replica/postmaster.pid" \
				"AUTHFLOW_PIDFILE_PGBOUNCER=$RUN/pgbouncer.pid"; do
				printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
			done
		fi
	} >"$R/env"
}

print_session() {
	cat <<-EOF
		authflow is up at $BASE_URL  (logs: $RUN/log, stop: tests/stack.sh down)
		A session (bash; needs curl and jq):

		  . $RUN/env; B=\$AUTHFLOW_BASE_URL
		  curl -s \$B/api/v1/auth/register -H 'Content-Type: application/json' \\
		    -d '{"email":"alice@example.com","password":"lilac otter harbour 42"}' | jq .
		  sleep 1; tests/stack.sh mail alice@example.com      # the mailed code
		  code=\$(tests/stack.sh mail alice@example.com | grep -oE '\\b[0-9]{6}\\b' | head -n 1)
		  curl -s \$B/api/v1/auth/verify-email -H 'Content-Type: application/json' \\
		    -d "{\\"email\\":\\"alice@example.com\\",\\"code\\":\\"\$code\\"}" | jq .
		  pair=\$(curl -s \$B/api/v1/auth/login -H 'Content-Type: application/json' \\
		    -d '{"email":"alice@example.com","password":"lilac otter harbour 42"}')
		  access=\$(jq -r .access_token <<<"\$pair"); refresh=\$(jq -r .refresh_token <<<"\$pair")
		  curl -s \$B/api/v1/users/me -H "Authorization: Bearer \$access" | jq .
		  pair=\$(curl -s \$B/api/v1/auth/refresh -H 'Content-Type: application/json' \\
		    -d "{\\"refresh_token\\":\\"\$refresh\\"}")
		  access=\$(jq -r .access_token <<<"\$pair")
		  curl -s -o /dev/null -w '%{http_code}\\n' -X POST \$B/api/v1/auth/logout \\
		    -H "Authorization: Bearer \$access" -H 'Content-Length: 0'  # 204
		  curl -s -o /dev/null -w '%{http_code}\\n' \$B/api/v1/users/me \\
		    -H "Authorization: Bearer \$access"                         # 401
		(lighttpd answers a POST without Content-Length with 411: hence the header.)
	EOF
	if [ "$PG_MODE" = replica ]; then
		cat <<-EOF
			AUTHFLOW_PG=replica: pgbouncer on port $PGBOUNCER_PORT (databases authflow, the
			primary, and authflow_ro, the standby on port $REPLICA_PGPORT); PGPORT in the env
			file is the primary's. Query counts per database:
			  psql -h 127.0.0.1 -p $PGBOUNCER_PORT -U authflow pgbouncer -c 'SHOW STATS'
		EOF
	fi
}

# A failed `up` stops what it started but keeps the logs; the next `up` or
# `down` wipes them.
up_failed() {
	local rc=$?
	[ "$rc" -eq 0 ] && return
	say "up failed; logs kept in ${R:-$RUN}/log"
	[ -n "${R:-}" ] && stop_services "$R"
	exit "$rc"
}

cmd_up() {
	close_inherited_fds
	case $PG_MODE in
	single) ;;
	replica)
		case $PG_REPLICATION in
		sync | async) ;;
		*) die "AUTHFLOW_PG_REPLICATION=$PG_REPLICATION: sync or async" ;;
		esac
		;;
	*) die "AUTHFLOW_PG=$PG_MODE: single or replica" ;;
	esac
	if [ "${AUTHFLOW_NO_DEPS:-0}" = 1 ]; then
		local f
		for f in authflow-auth authflow-users authflow-admin authflow-gate authflow-oauth authflowctl authflow-mailer \
			tests/backend/echo-backend; do
			[ -x "$BUILDDIR/$f" ] || die "$BUILDDIR/$f is missing (AUTHFLOW_NO_DEPS=1 skips the build)"
		done
	else
		cmd_deps || [ "$IS_ROOT" -eq 0 ]
		cmd_build
	fi
	# A report left by the previous stack has been shown; it does not stop this one.
	if [ -e "$RUN" ]; then cmd_down || true; fi
	[ "$IS_ROOT" -eq 1 ] && ensure_user

	R=
	trap up_failed EXIT
	make_run_dir
	cd "$R"
	# AUTHFLOW_PG=replica: two more, the standby's and pgbouncer's.
	local nports=5
	[ "$PG_MODE" = replica ] && nports=7
	read -r PGPORT REDIS_PORT HTTP_PORT SMTP_PORT GATE_PORT REPLICA_PGPORT PGBOUNCER_PORT \
		< <(free_ports "$nports")
	BASE_URL=http://127.0.0.1:$HTTP_PORT
	[ "$IS_ROOT" -eq 1 ] && chown -R "$SVC_USER:" "$R"

	start_postgres
	if [ "$PG_MODE" = replica ]; then
		start_replica
		start_pgbouncer
	fi
	start_redis
	start_smtp_sink
	write_config
	"$BUILDDIR/authflowctl" -c "$R/authflow.conf" migrate --sql-dir "$SRCDIR/sql" \
		>>"$R/log/authflowctl.log"
	"$BUILDDIR/authflowctl" -c "$R/authflow.conf" keys generate >>"$R/log/authflowctl.log"
	# The responders run as the service user: they must reach their programs
	# (a build under /root is out of its reach) and read the keys written above.
	BIN=$BUILDDIR
	if [ "$IS_ROOT" -eq 1 ]; then
		chown -R "$SVC_USER:" "$R/keys" "$R/authflow.conf"
		if ! runuser -u "$SVC_USER" -- test -x "$BIN/authflow-auth"; then
			BIN=$R/bin
			install -d "$BIN"
			install -m 0755 "$BUILDDIR/authflow-auth" "$BUILDDIR/authflow-users" \
				"$BUILDDIR/authflow-admin" "$BUILDDIR/authflow-gate" "$BUILDDIR/authflow-oauth" \
				"$BUILDDIR/authflow-mailer" \
				"$BUILDDIR/tests/backend/echo-backend" "$BIN"
		fi
	fi
	export AUTHFLOW_CONFIG=$R/authflow.conf
	start_responder auth
	start_responder users
	start_responder admin
	start_responder oauth
	start_responder gate
	start_echo_backend
	[ "${AUTHFLOW_MAILER:-1}" = 0 ] || start_mailer
	case ${AUTHFLOW_WEB:-lighttpd} in
	apache)
		start_responder gate-tcp
		start_apache
		;;
	nginx) start_nginx ;;
	lighttpd) start_lighttpd ;;
	*) die "AUTHFLOW_WEB=$AUTHFLOW_WEB: lighttpd, apache or nginx" ;;
	esac
	wait_for "authflow-auth /health" "$R/log/auth.log" 15 http_code_is 200 "$BASE_URL/health"
	write_env
	trap - EXIT
	print_session
}

cmd_env() {
	printf '%s\n' "$RUN/env"
	[ -f "$RUN/env" ] || { say "no stack is up in $RUN"; return 1; }
}

# The text part of the newest message in the sink (for an address).
cmd_mail() {
	[ -f "$RUN/env" ] || { say "no stack is up in $RUN"; return 1; }
	/usr/bin/python3 - "$RUN/mail" "${1:-}" <<-'EOF'
		import email, email.policy, os, sys
		d, want = sys.argv[1], sys.argv[2].lower()
		for f in sorted((f for f in os.listdir(d) if f.endswith(".eml")), reverse=True):
		    with open(os.path.join(d, f), "rb") as fh:
		        m = email.message_from_binary_file(fh, policy=email.policy.default)
		    if want and want not in str(m["To"]).lower():
		        continue
		    print("To:", m["To"]); print("Subject:", m["Subject"]); print()
		    print(m.get_body(preferencelist=("plain",)).get_content())
		    sys.exit(0)
		sys.exit("stack.sh: no message" + (" for " + want if want else ""))
	EOF
}

case "${1:-}" in
deps) cmd_deps ;;
mail) shift; cmd_mail "$@" ;;
build) cmd_build ;;
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
*)
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
	;;
esac
