# root.bash — a clean Debian 12 root file system for packages.bats:
# debootstrap into a directory of the build tree, then chroot. The chroot
# shares the host's network, so its servers listen on free loopback ports
# of the host; nothing in it runs as PID 1, so the units' ExecStart lines
# are run by hand (unit-argv.py) and no service starts on its own
# (policy-rc.d says no).

: "${AUTHFLOW_SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${AUTHFLOW_BUILDDIR:=$AUTHFLOW_SRCDIR}"
export AUTHFLOW_SRCDIR AUTHFLOW_BUILDDIR
# Everything of a run: packages, the root, logs.
# (Resolved: root_pids compares it with /proc/PID/root.)
PKG_WORK=$(realpath -m "${AUTHFLOW_PKG_WORK:-$AUTHFLOW_BUILDDIR/_packages/test}")
ROOT=$PKG_WORK/root
PKG_OUT=$PKG_WORK/out
PKG_LOGS=$PKG_WORK/log
MIRROR=${AUTHFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What a sysadmin has before installing authflow: the servers it runs
# behind and beside, and curl.
BASE_PACKAGES=(postgresql redis-server apache2 lighttpd curl ca-certificates)

# in_root CMD...: runs CMD in the root, with a plain environment.
in_root() {
	chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "${PG_ENV[@]}" "$@"
}
PG_ENV=()

# root_pids: the processes whose root directory is $ROOT.
root_pids() {
	local p r
	for p in /proc/[0-9]*; do
		r=$(readlink "$p/root" 2>/dev/null) || continue
		[ "$r" = "$ROOT" ] && echo "${p#/proc/}"
	done
	return 0
}

# root_stop: stops every process of the root and unmounts what root_mount
# mounted (safe to call at any time, and twice).
root_stop() {
	local pids i
	pids=$(root_pids)
	[ -n "$pids" ] && kill -TERM $pids 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		pids=$(root_pids)
		[ -z "$pids" ] && break
		sleep 0.2
	done
	pids=$(root_pids)
	[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
	sleep 0.2
	local m
	for m in dev/shm proc; do
		mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
	done
	return 0
}

root_mount() {
	mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
	mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
}

# root_create: debootstrap (minbase) and the base packages. With
# AUTHFLOW_PKG_ROOT_CACHE naming a tarball, it is used when present and
# written when not (to save the download when iterating).
root_create() {
	local cache=${AUTHFLOW_PKG_ROOT_CACHE:-}
	rm -rf "$ROOT"
	mkdir -p "$ROOT"
	if [ -n "$cache" ] && [ -f "$cache" ]; then
		tar -C "$ROOT" -xpf "$cache"
		root_mount
		return 0
	fi
	debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$PKG_LOGS/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$PKG_LOGS/debootstrap.log"; return 1; }
	printf '#!/bin/sh\n# No service starts by itself in this root.\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
	chmod 755 "$ROOT/usr/sbin/policy-rc.d"
	# The host's sources and apt settings (its mirror, proxy, snapshot): the
	# root is as up to date as the host and reaches the same mirror.
	rm -f "$ROOT/etc/apt/sources.list"
	cp /etc/apt/sources.list.d/*.sources "$ROOT/etc/apt/sources.list.d/" 2>/dev/null || true
	[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$ROOT/etc/apt/"
	cp /etc/apt/apt.conf.d/99* "$ROOT/etc/apt/apt.conf.d/" 2>/dev/null || true
	root_mount
	in_root apt-get update -qq >"$PKG_LOGS/base-apt.log" 2>&1 &&
		in_root apt-get install -y -q --no-install-recommends "${BASE_PACKAGES[@]}" \
			>>"$PKG_LOGS/base-apt.log" 2>&1 ||
		{ tail -n 20 "$PKG_LOGS/base-apt.log"; return 1; }
	if [ -n "$cache" ]; then
		root_stop
		tar -C "$ROOT" -cpf "$cache" .
		root_mount
	fi
}

# root_snapshot FILE: every path of the root's own file system, sorted
# (not the mounts, not /tmp).
root_snapshot() {
	(cd "$ROOT" && find . -xdev \( -path ./tmp -o -path ./proc -o -path ./dev \) -prune -o -print |
		sed 's|^\.||' | sort) >"$1"
}

# free_port: a TCP port nothing listens on.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# unit_start UNIT: runs the unit's ExecStart line in the root, in the
# background, as systemd would (unit-argv.py), with stdout and stderr in
# $PKG_LOGS/UNIT.log; its pid goes to /run/authflow/UNIT.pid, where the
# spawn-fcgi recipe of authflow(7) keeps pids (the prerm stops those).
unit_start() {
	local unit=$1 cmd
	mapfile -d '' -t cmd < <(python3 "$AUTHFLOW_SRCDIR/tests/packaging/unit-argv.py" "$ROOT" "$unit")
	[ "${#cmd[@]}" -gt 0 ] || return 1
	echo "unit $unit: ${cmd[*]}" >>"$PKG_LOGS/units.log"
	setsid chroot "$ROOT" "${cmd[@]}" </dev/null >>"$PKG_LOGS/$unit.log" 2>&1 &
	echo $! >"$ROOT/run/authflow/${unit%.*}.pid"
}

# wait_until WHAT CMD...: runs CMD every 0.1 s until it succeeds, for up to
# 10 s; then says what it waited for and fails.
wait_until() {
	local what=$1 i
	shift
	for ((i = 0; i < 100; i++)); do
		"$@" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "waited in vain for $what" >&2
	return 1
}

# wait_socket PATH: until a unix socket in the root accepts connections.
wait_socket() {
	wait_until "a listener on $1" python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$ROOT$1"
}

# wait_tcp PORT: until something accepts connections on 127.0.0.1:PORT.
wait_tcp() {
	wait_until "a listener on 127.0.0.1:$1" python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"
}

# wait_http URL: until URL answers at all.
wait_http() {
	wait_until "an answer at $1" curl -s -o /dev/null --max-time 2 "$1"
}
