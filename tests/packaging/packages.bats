#!/usr/bin/env bats
# packages.bats — authflow's Debian package, built by packaging/build,
# installed with apt-get on a clean Debian 12 root (debootstrap) and set up
# as authflow(7) tells a sysadmin to: the database by the documented
# commands, the responders by their systemd units' own ExecStart lines
# (there is no systemd in the root), then register -> verify -> login ->
# me -> a gate-protected location (and the social-login providers' list)
# through Apache (a2enconf authflow) and
# through lighttpd (lighty-enable-mod authflow); apt-get purge then leaves
# nothing of the package. Also: the RPM (rpmbuild -bb) holds the same files,
# and lintian has nothing to say.
#
# Needs root (debootstrap, chroot, mount) and Debian's mirror (the host's
# apt sources). The tests run in order and build on each other. Every
# server in the root listens on a free port of 127.0.0.1.

bats_require_minimum_version 1.5.0
load root

setup_file() {
	[ "$(id -u)" -eq 0 ] || skip "needs root: debootstrap, chroot"
	root_stop
	rm -rf "$PKG_WORK"
	mkdir -p "$PKG_OUT" "$PKG_LOGS"
	bash "$AUTHFLOW_SRCDIR/packaging/build" all "$PKG_OUT" >"$PKG_LOGS/build.log" 2>&1 ||
		{ tail -n 30 "$PKG_LOGS/build.log"; return 1; }
	root_create
	root_snapshot "$PKG_WORK/before-install.txt"
	local deb
	deb=$(ls "$PKG_OUT"/authflow_*_"$(dpkg --print-architecture)".deb)
	cp "$deb" "$ROOT/tmp/"
	echo "DEB=/tmp/$(basename "$deb")" >"$PKG_WORK/env"
	{
		echo "PGPORT=$(free_port)"
		echo "REDIS_PORT=$(free_port)"
		echo "APACHE_PORT=$(free_port)"
		echo "LIGHTTPD_PORT=$(free_port)"
		echo "GATE_TCP_PORT=$(free_port)"
	} >>"$PKG_WORK/env"
}

teardown_file() {
	root_stop
	# The root is big; the logs and the package stay for a look.
	[ -n "${AUTHFLOW_PKG_KEEP_ROOT:-}" ] || rm -rf "$ROOT"
}

setup() {
	. "$PKG_WORK/env"
	ARCH=$(dpkg --print-architecture)
	PG_ENV=(PGPORT="$PGPORT")
}

# psql_root SQL: one value from the authflow database, as postgres.
psql_root() {
	in_root runuser -u postgres -- psql -X -Atq -d authflow -c "$1"
}

@test "lintian: no error, no warning, each override justified" {
	local changes
	changes=$(ls "$PKG_OUT"/authflow_*.changes)
	lintian -I --pedantic --display-info "$changes" >"$PKG_LOGS/lintian.txt" 2>&1 || true
	grep -v 'running with root privileges' "$PKG_LOGS/lintian.txt" | sed 's/^/# lintian: /' >&3 || true
	run grep -E '^[EW]: ' "$PKG_LOGS/lintian.txt"
	[ "$status" -eq 1 ] || { echo "$output"; false; }
	# Every override carries a comment saying why.
	run awk '/^#/ { why = 1; next } !NF { why = 0; next } !why' \
		"$AUTHFLOW_SRCDIR/packaging/debian/authflow.lintian-overrides"
	[ -z "$output" ] || { echo "override without a reason: $output"; false; }
}

@test "rpmbuild -bb: the RPM holds the same files as the .deb" {
	local deb rpm
	deb=$(ls "$PKG_OUT"/authflow_*_"$ARCH".deb)
	rpm=$(ls "$PKG_OUT"/authflow-[0-9]*.rpm)
	# The places that differ by design: units (/lib vs /usr/lib on
	# bookworm), the units' settings (/etc/default vs /etc/sysconfig), the
	# web servers' configuration directories, compressed manual pages;
	# documentation and lintian's files are left out.
	normalise() {
		sed -e 's|^/lib/systemd/system/|/usr/lib/systemd/system/|' \
			-e 's|^/etc/sysconfig/authflow$|/etc/default/authflow|' \
			-e 's|^/etc/httpd/conf.d/authflow.conf$|/etc/apache2/conf-available/authflow.conf|' \
			-e 's|^/etc/lighttpd/conf.d/authflow.conf$|/etc/lighttpd/conf-available/50-authflow.conf|' \
			-e 's|\(/usr/share/man/.*\)\.gz$|\1|' |
			grep -v -E '^/usr/share/(doc|licenses|lintian)/' | sort -u
	}
	# dpkg lists every directory; the RPM owns only its own (named authflow).
	dpkg-deb -c "$deb" | awk '{ print $6 }' | sed -e 's|^\./|/|' -e 's|/$||' |
		awk '$0 != "" && !(/\/$/) { print }' >"$PKG_WORK/deb-raw.txt"
	dpkg-deb -c "$deb" | awk '$1 ~ /^d/ { print $6 }' | sed -e 's|^\./|/|' -e 's|/$||' \
		>"$PKG_WORK/deb-dirs.txt"
	grep -v -x -F -f "$PKG_WORK/deb-dirs.txt" "$PKG_WORK/deb-raw.txt" >"$PKG_WORK/deb-files.txt" || true
	grep authflow "$PKG_WORK/deb-dirs.txt" >>"$PKG_WORK/deb-files.txt" || true
	normalise <"$PKG_WORK/deb-files.txt" >"$PKG_WORK/deb-list.txt"
	rpm -qlp "$rpm" 2>/dev/null | normalise >"$PKG_WORK/rpm-list.txt"
	echo "# $(wc -l <"$PKG_WORK/deb-list.txt") paths in each" >&3
	run diff -u "$PKG_WORK/deb-list.txt" "$PKG_WORK/rpm-list.txt"
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	[ "$(wc -l <"$PKG_WORK/deb-list.txt")" -gt 40 ]
	# The configuration is 0640 root:authflow in both.
	rpm -qlvp "$rpm" 2>/dev/null | grep -E '^-rw-r----- .* root +authflow .* /etc/authflow/authflow.conf$'
	dpkg-deb -c "$deb" | grep -E '^-rw-r----- .*\./etc/authflow/authflow.conf$'
}

@test "apt-get install ./authflow_*.deb: user, configuration, signing key; no database touched" {
	run in_root apt-get install -y "$DEB"
	echo "$output" >"$PKG_LOGS/install.log"
	[ "$status" -eq 0 ] || { echo "$output" | tail -n 30; false; }
	# The next steps are printed.
	[[ $output == *"runuser -u authflow -- authflowctl migrate"* ]]
	in_root getent passwd authflow | grep -q ':/var/lib/authflow:/usr/sbin/nologin$'
	[ "$(in_root stat -c '%a %U %G' /etc/authflow/authflow.conf)" = "640 root authflow" ]
	[ "$(in_root stat -c '%a %U %G' /var/lib/authflow/keys)" = "750 authflow authflow" ]
	# Sockets in a directory only root writes to; the shared metrics file
	# in the responders' own.
	[ "$(in_root stat -c '%a %U %G' /run/authflow)" = "755 root root" ]
	[ "$(in_root stat -c '%a %U %G' /run/authflow/metrics)" = "750 authflow authflow" ]
	# One private key, readable by the group authflow only, made here.
	run in_root sh -c 'ls /var/lib/authflow/keys/*.pem'
	[ "${#lines[@]}" -eq 1 ]
	[ "$(in_root stat -c '%a %G' "${lines[0]}")" = "640 authflow" ]
	grep -q 'PRIVATE KEY' "$ROOT${lines[0]}"
	# The key that seals TOTP secrets, made here too.
	[ "$(in_root stat -c '%a %G %s' /var/lib/authflow/keys/totp.key)" = "640 authflow 45" ]
	! dpkg-deb -c "$(ls "$PKG_OUT"/authflow_*_"$ARCH".deb)" | grep -q '\.pem$'
	# An upgrade does not stop the services before unpacking (they are
	# restarted after it instead).
	! dpkg-deb --info "$(ls "$PKG_OUT"/authflow_*_"$ARCH".deb)" preinst 2>/dev/null | grep -q 'stop'
	dpkg-deb --info "$(ls "$PKG_OUT"/authflow_*_"$ARCH".deb)" postinst | grep -q 'try-restart'
	in_root dpkg-query -W -f '${Conffiles}\n' authflow | grep -q ' /etc/authflow/authflow.conf '
	# The units as systemd reads them (the host's systemd-analyze on the
	# root, which has no systemd of its own: hence no sysinit.target).
	if command -v systemd-analyze >/dev/null; then
		run systemd-analyze verify --root="$ROOT" --man=no authflow@auth.service \
			authflow-gate-tcp.service authflow-mailer.service authflow-cleanup.service \
			authflow-cleanup.timer authflow.target
		! grep -v 'Unit sysinit.target not found' <<<"$output" || false
	fi
	# Nothing runs and no database was touched.
	[ -z "$(root_pids)" ]
	in_root pg_conftool 15 main set port "$PGPORT"
	in_root pg_ctlcluster 15 main start
	[ "$(in_root runuser -u postgres -- psql -X -Atq -c \
		"SELECT count(*) FROM pg_roles WHERE rolname = 'authflow'")" = 0 ]
	[ "$(in_root runuser -u postgres -- psql -X -Atq -c \
		"SELECT count(*) FROM pg_database WHERE datname = 'authflow'")" = 0 ]
}

@test "the documented commands create the database" {
	# The sysadmin's own settings: where PostgreSQL and Redis listen, the
	# public URL, plain-HTTP cookies on loopback, mail through a sendmail
	# that keeps each message in /var/tmp/mail.
	local conf=$ROOT/etc/authflow/authflow.conf
	sed -i -e "s|^dsn = dbname=authflow\$|dsn = dbname=authflow port=$PGPORT|" \
		-e "/^\[redis\]/,/^\[/ s|^port = 6379\$|port = $REDIS_PORT|" \
		-e "s|^public_url = .*|public_url = http://127.0.0.1:$APACHE_PORT|" \
		-e "/^\[cookies\]/,/^\[/ s|^secure = true\$|secure = false|" \
		-e 's|^transport = smtp$|transport = sendmail|' \
		-e 's|^sendmail_path = .*|sendmail_path = /usr/local/sbin/keep-mail|' "$conf"
	grep -q "^dsn = dbname=authflow port=$PGPORT\$" "$conf"
	grep -q "^port = $REDIS_PORT\$" "$conf"
	grep -q '^transport = sendmail$' "$conf"
	printf '#!/bin/sh\ncat >"/var/tmp/mail/$(date +%%s%%N).eml"\n' >"$ROOT/usr/local/sbin/keep-mail"
	chmod 755 "$ROOT/usr/local/sbin/keep-mail"
	install -d -m 1777 "$ROOT/var/tmp/mail"
	in_root redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
		--dir /var/lib/redis --logfile /var/log/redis/redis-server.log
	# authflow(7), INSTALLATION, word for word (PGPORT in the environment
	# is this root's PostgreSQL port).
	in_root runuser -u postgres -- createuser authflow
	in_root runuser -u postgres -- createdb -O authflow authflow
	run in_root runuser -u authflow -- authflowctl migrate
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	[[ $output == *"applied  001_init.sql"* ]]
	[ "$(psql_root "SELECT count(*) FROM schema_migrations")" -ge 4 ]
	[ "$(psql_root "SELECT tableowner FROM pg_tables WHERE tablename = 'users'")" = authflow ]
}

@test "the units' ExecStart lines start the responders and the mailer" {
	local u
	echo "AUTHFLOW_GATE_TCP_PORT=$GATE_TCP_PORT" >"$ROOT/etc/default/authflow-gate-tcp"
	for u in authflow@auth authflow@users authflow@admin authflow@oauth authflow@gate; do
		unit_start "$u.service"
	done
	unit_start authflow-gate-tcp.service
	unit_start authflow-mailer.service
	for u in auth users admin oauth gate; do
		wait_socket "/run/authflow/$u.sock"
		# Owned so that the web server (www-data) can connect.
		[ "$(in_root stat -c '%a %U %G' "/run/authflow/$u.sock")" = "660 authflow www-data" ]
	done
	wait_tcp "$GATE_TCP_PORT"
	# multiwatch keeps 4 processes of each responder, all as authflow.
	run in_root sh -c 'ps -o user=,comm= -C authflow-auth,authflow-users,authflow-admin,authflow-oauth,authflow-gate'
	echo "$output"
	[ "$(grep -c 'authflow-auth$' <<<"$output")" -eq 4 ]
	[ "$(grep -c 'authflow-oauth$' <<<"$output")" -eq 4 ]
	[ "$(grep -c 'authflow-gate$' <<<"$output")" -eq 8 ]
	! grep -v '^authflow ' <<<"$output"
	grep -q mailer_started "$PKG_LOGS/authflow-mailer.service.log"
}

# flow BASE EMAIL GATED_URL: register -> mailed code -> verify -> login ->
# me -> the gate-protected URL without and with the token.
flow() {
	local b=$1 email=$2 gated=$3 code pair access i
	run curl -s -w '\n%{http_code}' "$b/api/v1/auth/register" -H 'Content-Type: application/json' \
		-d "{\"email\":\"$email\",\"password\":\"lilac otter harbour 42\"}"
	[ "${lines[-1]}" = 201 ] || { echo "register: $output"; false; }
	for ((i = 0; i < 50; i++)); do
		code=$(grep -l -r "To: $email" "$ROOT/var/tmp/mail" 2>/dev/null | head -n 1 |
			xargs -r grep -oE '\b[0-9]{6}\b' | head -n 1)
		[ -n "$code" ] && break
		sleep 0.2
	done
	[ -n "$code" ] || { echo "no mail to $email"; false; }
	run curl -s -o /dev/null -w '%{http_code}' "$b/api/v1/auth/verify-email" -d "email=$email" -d "code=$code"
	[ "$output" = 200 ]
	pair=$(curl -s "$b/api/v1/auth/login" -d "email=$email" -d 'password=lilac otter harbour 42')
	access=$(jq -r .access_token <<<"$pair")
	[ -n "$access" ] && [ "$access" != null ] || { echo "login: $pair"; false; }
	run curl -s "$b/api/v1/users/me" -H "Authorization: Bearer $access"
	[ "$(jq -r .email <<<"$output")" = "$email" ]
	[ "$(jq -r .email_verified <<<"$output")" = true ]
	run curl -s -o /dev/null -w '%{http_code}' "$gated"
	[ "$output" = 401 ]
	run curl -s -w '\n%{http_code}' "$gated" -H "Authorization: Bearer $access"
	[ "${lines[-1]}" = 200 ] && [ "${lines[0]}" = "behind the gate" ] || { echo "gate: $output"; false; }
	run curl -s -o /dev/null -w '%{http_code}' "$b/.well-known/jwks.json"
	[ "$output" = 200 ]
	# authflow-oauth is mounted too (no provider is configured here).
	run curl -s -w '\n%{http_code}' "$b/api/v1/oauth/providers"
	[ "${lines[-1]}" = 200 ] && [ "$(jq length <<<"${lines[0]}")" = 0 ] || { echo "oauth: $output"; false; }
}

@test "Apache: a2enconf authflow, then the whole flow and a gate-protected location" {
	# The sysadmin's Apache: a loopback port, and a location of theirs
	# behind the gate (authflow(7), WEB SERVERS).
	sed -i "s/^Listen 80\$/Listen 127.0.0.1:$APACHE_PORT/" "$ROOT/etc/apache2/ports.conf"
	sed -i "s/<VirtualHost \*:80>/<VirtualHost 127.0.0.1:$APACHE_PORT>/" \
		"$ROOT/etc/apache2/sites-available/000-default.conf"
	sed -i "s/127.0.0.1:9301/127.0.0.1:$GATE_TCP_PORT/" "$ROOT/etc/apache2/conf-available/authflow.conf"
	echo 'ServerName 127.0.0.1' >"$ROOT/etc/apache2/conf-available/servername.conf"
	mkdir -p "$ROOT/srv/private/files"
	echo "behind the gate" >"$ROOT/srv/private/files/hello.txt"
	cat >"$ROOT/etc/apache2/conf-available/private.conf" <<-'EOF'
		Alias /files/ /srv/private/files/
		<Directory /srv/private>
			Require all granted
		</Directory>
		<Location "/files/">
			Include /etc/authflow/apache2/authflow-gate-location.conf
		</Location>
	EOF
	in_root a2enmod -q proxy_fcgi authnz_fcgi headers setenvif
	in_root a2enconf -q authflow
	in_root a2enconf -q servername private
	run in_root apache2ctl configtest
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	in_root apache2ctl start
	wait_http "http://127.0.0.1:$APACHE_PORT/health"
	flow "http://127.0.0.1:$APACHE_PORT" apache@example.com "http://127.0.0.1:$APACHE_PORT/files/hello.txt"
	in_root apache2ctl stop
}

@test "apt-get install --reinstall: the same key, the admin's configuration, responders still up" {
	local before
	before=$(in_root sh -c 'ls /var/lib/authflow/keys/*.pem; sha256sum /var/lib/authflow/keys/totp.key')
	run in_root apt-get install -y --reinstall "$DEB"
	[ "$status" -eq 0 ] || { echo "$output" | tail -n 30; false; }
	[ "$(in_root sh -c 'ls /var/lib/authflow/keys/*.pem; sha256sum /var/lib/authflow/keys/totp.key')" = "$before" ]
	grep -q "^dsn = dbname=authflow port=$PGPORT\$" "$ROOT/etc/authflow/authflow.conf"
	[ "$(in_root stat -c '%a %U %G' /etc/authflow/authflow.conf)" = "640 root authflow" ]
	wait_socket /run/authflow/auth.sock
}

@test "lighttpd: lighty-enable-mod authflow, then the same" {
	local conf=$ROOT/etc/lighttpd/lighttpd.conf
	sed -i -e "s/^server.port\s*=.*/server.port = $LIGHTTPD_PORT\nserver.bind = \"127.0.0.1\"/" \
		-e 's|^include_shell "/usr/share/lighttpd/use-ipv6.pl.*|# (IPv4 loopback only)|' "$conf"
	cat >"$ROOT/etc/lighttpd/conf-available/60-private.conf" <<-'EOF'
		var.authflow_app_socket = "/run/myapp/app.sock"
		var.authflow_files_root = "/srv/private"
		include "/etc/authflow/lighttpd/authflow-gate.conf"
	EOF
	in_root lighty-enable-mod authflow
	in_root lighty-enable-mod private
	run in_root lighttpd -tt -f /etc/lighttpd/lighttpd.conf
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	in_root lighttpd -f /etc/lighttpd/lighttpd.conf
	wait_http "http://127.0.0.1:$LIGHTTPD_PORT/health"
	flow "http://127.0.0.1:$LIGHTTPD_PORT" lighttpd@example.com "http://127.0.0.1:$LIGHTTPD_PORT/files/hello.txt"
	kill "$(cat "$ROOT/run/lighttpd.pid")"
}

@test "apt-get purge: processes stopped, nothing of the package left but the documented" {
	local pkgfiles=$PKG_WORK/package-files.txt
	in_root dpkg -L authflow >"$pkgfiles"
	run in_root apt-get purge -y authflow
	echo "$output" >"$PKG_LOGS/purge.log"
	[ "$status" -eq 0 ] || { echo "$output" | tail -n 30; false; }
	# The prerm stopped the responders and the mailer.
	sleep 1
	# (Zombies do not count: PID 1 here may not reap what it inherits.)
	run in_root sh -c 'ps -o pid=,stat=,comm= -C multiwatch,spawn-fcgi,authflow-auth,authflow-users,authflow-admin,authflow-oauth,authflow-gate,authflow-mailer | awk "\$2 !~ /^Z/"'
	[ -z "$output" ] || { echo "still running: $output"; false; }
	# Every file the package installed is gone; directories only remain
	# where other packages own them too.
	local p left=()
	while IFS= read -r p; do
		[ -e "$ROOT$p" ] || continue
		[ -d "$ROOT$p" ] && [[ $p != *authflow* ]] && continue
		left+=("$p")
	done <"$pkgfiles"
	[ "${#left[@]}" -eq 0 ] || { printf 'left: %s\n' "${left[@]}"; false; }
	# Nothing named authflow anywhere, and nothing else new that no package
	# owns, outside what the documentation says stays: the database
	# (/var/lib/postgresql), logs, apt's and dpkg's records, caches that
	# dependencies' triggers rebuild (/usr/share/mime), and what this test
	# made itself (mail, the protected files, the web servers' extra
	# configuration and modules, Redis's dump).
	root_snapshot "$PKG_WORK/after-purge.txt"
	cat "$ROOT"/var/lib/dpkg/info/*.list | sort -u >"$PKG_WORK/owned.txt"
	comm -13 "$PKG_WORK/before-install.txt" "$PKG_WORK/after-purge.txt" |
		comm -23 - "$PKG_WORK/owned.txt" >"$PKG_WORK/new-unowned.txt"
	run grep authflow "$PKG_WORK/after-purge.txt"
	[ "$status" -eq 1 ] || { echo "$output"; false; }
	run grep -v -E '^/(var/lib/postgresql|var/log|var/lib/dpkg|var/lib/apt|var/cache|var/lib/redis|usr/share/mime|var/tmp/mail|srv|run|var/lib/apache2/(module|conf)|etc/apache2/(mods|conf)-(available|enabled)|etc/lighttpd/conf-(available|enabled)|var/lib/systemd/deb-systemd-helper-(enabled|masked)|etc/systemd/system|usr/local/sbin/keep-mail|etc/(passwd|group|shadow|gshadow|subuid|subgid)-?)(/|$)' \
		"$PKG_WORK/new-unowned.txt"
	[ -z "$output" ] || { echo "new files no package owns: $output"; false; }
	# The system user stays (documented), as Debian's services do.
	in_root getent passwd authflow >/dev/null
	# So does the database, with its data.
	[ "$(psql_root "SELECT count(*) FROM users")" -eq 2 ]
}
