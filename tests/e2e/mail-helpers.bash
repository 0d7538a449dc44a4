# shellcheck shell=bash disable=SC2034 # globals set here are read by the .bats files
# mail-helpers.bash — what the mail tests share: the outbox (psql), the
# messages the stack's SMTP sink caught, and the mailers and sinks a test
# starts itself. Load it after helpers.bash:
#
#   load helpers
#   load mail-helpers
#
# The sink (tests/smtp-sink.py) stores each message as
# $AUTHFLOW_MAIL_DIR/<seq>.eml and appends "<seq>.eml TAB rcpt TAB
# Message-ID" to $AUTHFLOW_MAIL_DIR/index.tsv. An outbox row's message_id is
# the left part of its Message-ID: <message_id@domain-of-from>.
#
# Every wait here is bounded (wait_until).

# Debian's interpreter: the sink and the message parsing need its modules.
AF_PY=/usr/bin/python3
# As root, tests/stack.sh runs the services as this user; so do the tests.
AF_SVC_USER=authflow

# ---------------------------------------------------------------------------
# Generic

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it
# succeeds; after SECONDS fails the test naming WHAT.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${secs}s waiting for: $what"
            return 1
        fi
        sleep 0.2
    done
}

# sql QUERY [NAME=VALUE...]: QUERY through psql (the stack's PG* variables);
# the values are psql variables, written :'NAME' (a quoted literal) or :NAME
# in the query. Unaligned, tuples only, '|' between columns.
sql() {
    local q=$1 kv
    shift
    local vars=()
    for kv in "$@"; do vars+=(-v "$kv"); done
    psql -qAtX -v ON_ERROR_STOP=1 "${vars[@]}" <<<"$q"
}

# proc_alive PID: the process exists and is not a zombie (PID 1 here does
# not reap orphans, so kill -0 is not enough).
proc_alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}
proc_gone() { ! proc_alive "$1"; }

# svc_prefix [USER]: sets SVC_PREFIX to the words that run a program as USER
# (default: the service user) when we are root, and to nothing otherwise.
# setpriv execs the program (no parent left behind, unlike runuser), so $!
# of a background "${SVC_PREFIX[@]}" prog & is the program's own pid.
svc_prefix() {
    local user=${1:-$AF_SVC_USER}
    SVC_PREFIX=()
    if [[ $(id -u) == 0 && $user != root ]]; then
        SVC_PREFIX=(setpriv --reuid="$user" --regid="$user" --init-groups --)
    fi
}

# as_svc COMMAND...: runs COMMAND in the foreground as the service user.
as_svc() {
    local SVC_PREFIX
    svc_prefix
    "${SVC_PREFIX[@]}" "$@"
}

# unique_tag: a short lowercase label for the rows and recipients of a test.
unique_tag() { printf 't%sx%04x%04x\n' "${BATS_TEST_NUMBER:-0}" "$RANDOM" "$RANDOM"; }

# ---------------------------------------------------------------------------
# Log lines (JSON, one event per line). The spec names the field "msg";
# authflow's other programs call it "event": either is accepted.

# log_events FILE EVENT: the lines of FILE for EVENT, compact JSON.
log_events() {
    [[ -f $1 ]] || return 0
    jq -cR --arg e "$2" 'fromjson? | select(type == "object" and (.msg == $e or .event == $e))' "$1"
}

# log_event_count FILE EVENT [MESSAGE_ID]: how many EVENT lines (naming
# MESSAGE_ID, with or without <...@domain> around it).
log_event_count() {
    log_events "$1" "$2" | jq -s --arg m "${3:-}" \
        '[.[] | select($m == "" or ((.message_id // "") | tostring | ltrimstr("<") | split("@")[0]) == $m)] | length'
}

# ---------------------------------------------------------------------------
# The sink's catch

mail_index() { printf '%s/index.tsv' "$AUTHFLOW_MAIL_DIR"; }

# mail_count RCPT: messages the sink holds for RCPT.
mail_count() {
    local idx
    idx=$(mail_index)
    [[ -f $idx ]] || { echo 0; return 0; }
    awk -F'\t' -v r="${1,,}" 'tolower($2) == r { n++ } END { print n + 0 }' "$idx"
}

_mail_count_at_least() { (($(mail_count "$1") >= $2)); }

# mail_wait_rcpt RCPT [N] [SECONDS]: waits until the sink holds N (default 1)
# messages for RCPT; sets MAIL_FILE to the path of the Nth.
mail_wait_rcpt() {
    local rcpt=$1 n=${2:-1} secs=${3:-30}
    MAIL_FILE=
    wait_until "$secs" "message #$n for $rcpt in the SMTP sink ($(mail_index))" \
        _mail_count_at_least "$rcpt" "$n" || return 1
    MAIL_FILE=$AUTHFLOW_MAIL_DIR/$(awk -F'\t' -v r="${rcpt,,}" -v n="$n" \
        'tolower($2) == r && ++k == n { print $1; exit }' "$(mail_index)")
}

# mid_of MESSAGE-ID-HEADER: the left part, without <> and @domain.
mid_of() {
    local m=${1#<}
    m=${m%>}
    printf '%s' "${m%@*}"
}

# mail_deliveries MID: how many times the sink got a message with that
# Message-ID (<MID@...>).
mail_deliveries() {
    local idx
    idx=$(mail_index)
    [[ -f $idx ]] || { echo 0; return 0; }
    awk -F'\t' -v m="<$1@" 'index($3, m) == 1 { n++ } END { print n + 0 }' "$idx"
}

# mail_file_by_mid MID: the path of the first message with that Message-ID.
mail_file_by_mid() {
    local f
    f=$(awk -F'\t' -v m="<$1@" 'index($3, m) == 1 { print $1; exit }' "$(mail_index)" 2>/dev/null)
    [[ -n $f ]] && printf '%s/%s' "$AUTHFLOW_MAIL_DIR" "$f"
}

# outbox_mid RCPT KIND: the message_id of the newest outbox row of KIND for RCPT.
outbox_mid() {
    sql "SELECT message_id FROM mail_outbox WHERE lower(recipient) = lower(:'r') AND kind = :'k'
         ORDER BY id DESC LIMIT 1" r="$1" k="$2"
}

_outbox_has() { [[ -n $(outbox_mid "$1" "$2") ]]; }
_mail_delivered() { (($(mail_deliveries "$1") > 0)); }

# mail_wait_kind RCPT KIND [SECONDS]: waits for the newest outbox row of
# KIND for RCPT and for its message in the sink (found by Message-ID).
# Sets MAIL_FILE and MAIL_MID.
mail_wait_kind() {
    local rcpt=$1 kind=$2 secs=${3:-30}
    MAIL_FILE='' MAIL_MID=''
    wait_until "$secs" "a $kind row for $rcpt in mail_outbox" _outbox_has "$rcpt" "$kind" || return 1
    MAIL_MID=$(outbox_mid "$rcpt" "$kind")
    wait_until "$secs" "the $kind message for $rcpt (Message-ID <$MAIL_MID@...>) in the SMTP sink" \
        _mail_delivered "$MAIL_MID" || return 1
    MAIL_FILE=$(mail_file_by_mid "$MAIL_MID")
}

# mail_get FILE WHAT [ARG]: a part of a stored message, parsed by Python's
# email package (policy default, so headers come decoded):
#   header NAME     each value of header NAME (decoded), one a line
#   header-count NAME
#   raw-headers     the header block as received (CRs removed)
#   nonascii-headers  header lines holding bytes outside printable ASCII
#   text            the decoded text/plain part
#   html            the decoded text/html part
#   to              "display name<TAB>address" per address of To
#   structure       "content-type charset transfer-encoding" per part
#   date-age        seconds between the Date header and now (absolute)
#   codes           the distinct 6-digit numbers of the text part
#   links           the reset links of the text part ("link<TAB>token")
mail_get() {
    "$AF_PY" - "$@" <<'PY'
import email, email.policy, email.utils, re, sys, time
path, what = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None
raw = open(path, "rb").read()
m = email.message_from_bytes(raw, policy=email.policy.default)
out = []
def part(kind):
    b = m.get_body(preferencelist=(kind,))
    return b.get_content() if b is not None else ""
head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
if what == "header":
    out = [str(v) for v in m.get_all(arg, [])]
elif what == "header-count":
    out = [str(len(m.get_all(arg, [])))]
elif what == "raw-headers":
    out = [head.decode("latin-1").replace("\r", "")]
elif what == "nonascii-headers":
    out = [l.decode("latin-1") for l in head.split(b"\n")
           if any(c > 126 or (c < 32 and c not in (9, 13)) for c in l)]
elif what == "text":
    out = [part("plain")]
elif what == "html":
    out = [part("html")]
elif what == "to":
    h = m["To"]
    out = ["%s\t%s" % (a.display_name, a.addr_spec) for a in (h.addresses if h else ())]
elif what == "structure":
    for p in m.walk():
        out.append("%s %s %s" % (p.get_content_type(), p.get_content_charset() or "-",
                                 (p.get("Content-Transfer-Encoding") or "-").lower()))
elif what == "date-age":
    d = email.utils.parsedate_to_datetime(str(m["Date"]))
    out = ["%d" % abs(time.time() - d.timestamp())]
elif what == "codes":
    seen = []
    for c in re.findall(r"\b(\d{6})\b", part("plain")):
        if c not in seen:
            seen.append(c)
    out = seen
elif what == "links":
    out = ["%s\t%s" % (mo.group(0), mo.group(1))
           for mo in re.finditer(r"https?://\S+token=([A-Za-z0-9_-]{43})", part("plain"))]
else:
    sys.exit("mail_get: unknown request " + what)
if out:
    sys.stdout.write("\n".join(out) + "\n")
PY
}

# mail_code FILE: the verification code of a verify_email message (exactly
# one 6-digit number in its text, else the test fails). Sets CODE.
mail_code() {
    local codes
    CODE=''
    codes=$(mail_get "$1" codes) || return 1
    [[ $(grep -c . <<<"$codes") == 1 ]] ||
        fail "expected exactly one 6-digit code in the text of $1, found: '${codes//$'\n'/ }'" || return 1
    CODE=$codes
    remember_secret "$CODE"
}

# mail_reset_link FILE: the reset link of a password_reset message. Sets
# RESET_LINK and RESET_TOKEN.
mail_reset_link() {
    local links
    RESET_LINK='' RESET_TOKEN=''
    links=$(mail_get "$1" links) || return 1
    [[ $(grep -c . <<<"$links") == 1 ]] ||
        fail "expected exactly one reset link in the text of $1, found: '${links//$'\n'/ }'" || return 1
    RESET_LINK=${links%%$'\t'*}
    RESET_TOKEN=${links##*$'\t'}
    remember_secret "$RESET_TOKEN" "$RESET_LINK"
}

# ---------------------------------------------------------------------------
# Outbox

# queue_test_mail TAG N: N 'test' rows for TAG-1@example.test ... TAG-N@.
queue_test_mail() {
    sql "INSERT INTO mail_outbox (kind, recipient, params)
         SELECT 'test', :'tag' || '-' || g || '@example.test', '{}' FROM generate_series(1, :n) g" \
        tag="$1" n="$2"
}

# tag_where TAG: the SQL condition selecting the rows of TAG.
tag_where() { printf "recipient LIKE '%s-%%@example.test'" "$1"; }

# outbox_count TAG [STATUS]: rows of TAG (in STATUS).
outbox_count() {
    if [[ -n ${2:-} ]]; then
        sql "SELECT count(*) FROM mail_outbox WHERE $(tag_where "$1") AND status = :'s'" s="$2"
    else
        sql "SELECT count(*) FROM mail_outbox WHERE $(tag_where "$1")"
    fi
}

_outbox_all() { [[ $(outbox_count "$1" "$2") == "$3" ]]; }

# outbox_states TAG: "status count, ..." of the rows of TAG.
outbox_states() {
    sql "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) n FROM mail_outbox WHERE $(tag_where "$1") GROUP BY status) s"
}

# outbox_wait_all TAG STATUS N [SECONDS]: waits until N rows of TAG are in STATUS.
outbox_wait_all() {
    wait_until "${4:-60}" "$3 rows of $1 with status $2" _outbox_all "$1" "$2" "$3" || {
        echo "# the rows of $1 by status: $(outbox_states "$1")" >&2
        return 1
    }
}

# delivery_counts TAG: for every row of TAG, "message_id count" where count
# is how often the sink got it (0 included).
delivery_counts() {
    local ids
    ids=$(sql "SELECT message_id FROM mail_outbox WHERE $(tag_where "$1") ORDER BY id")
    local idx
    idx=$(mail_index)
    [[ -f $idx ]] || idx=/dev/null
    awk -F'\t' '
        NR == FNR { if ($0 != "") { want[$0] = 0; order[++n] = $0 } next }
        { m = $3; sub(/^</, "", m); sub(/@.*$/, "", m); if (m in want) want[m]++ }
        END { for (i = 1; i <= n; i++) print order[i], want[order[i]] }' <(printf '%s\n' "$ids") "$idx"
}

# delivery_summary TAG: sets ROWS (rows of TAG), DISTINCT (rows delivered at
# least once), TOTAL (deliveries of the rows' Message-IDs in all), DUPS
# (message_ids delivered more than once, space separated) and BY_RCPT (the
# sink's messages to TAG-N@example.test, whatever their Message-ID: equal to
# TOTAL unless a message went out under another Message-ID).
delivery_summary() {
    local counts
    counts=$(delivery_counts "$1")
    BY_RCPT=$(awk -F'\t' -v p="^$1-[0-9]+@example[.]test\$" '$2 ~ p { n++ } END { print n + 0 }' \
        "$(mail_index)" 2>/dev/null || echo 0)
    ROWS=$(awk 'NF { n++ } END { print n + 0 }' <<<"$counts")
    DISTINCT=$(awk '$2 > 0 { n++ } END { print n + 0 }' <<<"$counts")
    TOTAL=$(awk '{ t += $2 } END { print t + 0 }' <<<"$counts")
    DUPS=$(awk '$2 > 1 { printf "%s%s", sep, $1; sep = " " }' <<<"$counts")
}

# ---------------------------------------------------------------------------
# Mailers started by a test (the stack's own runs only without AUTHFLOW_MAILER=0)

# Fast timings for the mailers the tests start (the values given to
# af_stack_up reach the stack's programs, not these).
MAILER_ENV=(AUTHFLOW_MAIL_LEASE_SECONDS=5 AUTHFLOW_MAIL_RETRY_BASE_SECONDS=1
    AUTHFLOW_MAIL_RETRY_MAX_SECONDS=4 AUTHFLOW_MAIL_POLL_SECONDS=1)

# mailer_bin: the authflow-mailer the service user can run (a build under a
# directory it cannot enter is copied into the run directory, as
# tests/stack.sh does for the responders).
mailer_bin() {
    local b=$AUTHFLOW_BUILDDIR/authflow-mailer
    if as_svc test -x "$b"; then
        printf '%s' "$b"
        return 0
    fi
    local d=$AUTHFLOW_RUN_DIR/e2e-bin
    if [[ ! -x $d/authflow-mailer ]]; then
        install -d -m 0755 "$d"
        install -m 0755 "$b" "$d/"
    fi
    printf '%s' "$d/authflow-mailer"
}

# mailer_log NAME: the log file of the mailer NAME of this test.
mailer_log() { printf '%s/log/mailer-%s-%s.log' "$AUTHFLOW_RUN_DIR" "${BATS_TEST_NUMBER:-0}" "$1"; }

# assert_no_sanitizer_reports: the mailers of this test wrote no
# AddressSanitizer/UBSan report (tests/run.sh runs the suite on a sanitizer
# build; tests/stack.sh only looks at the stack's own mailer.log).
assert_no_sanitizer_reports() {
    local f bad=''
    for f in "$AUTHFLOW_RUN_DIR/log/mailer-${BATS_TEST_NUMBER:-0}-"*.log; do
        [[ -f $f ]] || continue
        if grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$f"; then
            bad+=$(printf '\n--- %s:\n%s' "${f##*/}" "$(grep -E -A 15 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$f" | head -n 40)")
        fi
    done
    [[ -z $bad ]] || fail "sanitizer reports in the mailers' logs:$bad"
}

# mailer_start NAME [VAR=VALUE...] [ARGS...]: starts authflow-mailer in the
# background as the service user, with MAILER_ENV and the assignments in
# its environment, its JSON log in $(mailer_log NAME). Sets MAILER_PID and
# waits (up to 10 s) for it to log mailer_started.
mailer_start() {
    local name=$1
    shift
    local envs=()
    while (($#)) && [[ $1 == AUTHFLOW_*=* ]]; do
        envs+=("$1")
        shift
    done
    local log bin SVC_PREFIX
    log=$(mailer_log "$name")
    bin=$(mailer_bin)
    svc_prefix
    : >>"$log"
    # A plain command in the background: $! is the mailer itself (setpriv and
    # env exec). fd 3 closed: bats would wait for it.
    "${SVC_PREFIX[@]}" env "${MAILER_ENV[@]}" "${envs[@]}" "$bin" -c "$AUTHFLOW_CONFIG" "$@" \
        </dev/null >>"$log" 2>&1 3>&- &
    MAILER_PID=$!
    printf '%s %s\n' "$MAILER_PID" "$name" >>"$BATS_FILE_TMPDIR/mailers"
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if ! proc_alive "$MAILER_PID"; then
            fail "$(printf 'authflow-mailer %s exited at start; its log:\n%s' "$name" "$(tail -n 20 "$log")")"
            return 1
        fi
        [[ $(log_event_count "$log" mailer_started) -gt 0 ]] && return 0
        sleep 0.1
    done
    # No start line (renamed?): carry on as long as it runs.
    proc_alive "$MAILER_PID" || fail "authflow-mailer $name is not running"
}

# mailer_stop PID [SIGNAL] [SECONDS]: signals the mailer (default TERM) and
# waits up to SECONDS (default 10) for it to go; sets MAILER_STATUS to its
# exit status (from wait; 128+N when killed by signal N).
mailer_stop() {
    local pid=$1 sig=${2:-TERM} secs=${3:-10}
    MAILER_STATUS=''
    kill -s "$sig" "$pid" 2>/dev/null || true
    wait_until "$secs" "authflow-mailer (pid $pid) to exit after SIG$sig" proc_gone "$pid" || return 1
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    MAILER_STATUS=$rc
}

# mailers_kill_all: kills every mailer this file started (teardown).
mailers_kill_all() {
    local f=$BATS_FILE_TMPDIR/mailers pid name
    [[ -f $f ]] || return 0
    while read -r pid name; do
        [[ -n $pid ]] || continue
        if proc_alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$f"
    while read -r pid name; do
        [[ -n $pid ]] || continue
        local i
        for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
        wait "$pid" 2>/dev/null || true
    done <"$f"
    : >"$f"
}

# ---------------------------------------------------------------------------
# The stack's SMTP sink, stopped and restarted by tests

sink_pid() { head -n 1 "$AUTHFLOW_PIDFILE_SMTP_SINK" 2>/dev/null; }

# sink_save: records the running sink's command line and user (setup_file),
# so that sink_start can start it again exactly so.
sink_save() {
    local pid
    pid=$(sink_pid)
    if [[ -z $pid ]] || ! proc_alive "$pid"; then
        echo "# no SMTP sink runs (pid file $AUTHFLOW_PIDFILE_SMTP_SINK)" >&2
        return 1
    fi
    cp "/proc/$pid/cmdline" "$BATS_FILE_TMPDIR/sink.cmdline"
    stat -c %U "/proc/$pid" >"$BATS_FILE_TMPDIR/sink.user"
    [[ -s $BATS_FILE_TMPDIR/sink.cmdline ]]
}

_sink_port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$AUTHFLOW_SMTP_PORT") 2>/dev/null; }
_sink_running() {
    local pid
    pid=$(sink_pid)
    [[ -n $pid ]] && proc_alive "$pid" && _sink_port_open
}
_sink_down() {
    local pid
    pid=$(sink_pid)
    { [[ -z $pid ]] || ! proc_alive "$pid"; } && ! _sink_port_open
}

# sink_stop: stops the sink through its pid file (SIGTERM, up to 10 s).
sink_stop() {
    local pid
    pid=$(sink_pid)
    if [[ -n $pid ]] && proc_alive "$pid"; then
        kill -TERM "$pid"
        wait_until 10 "the SMTP sink (pid $pid) to exit" proc_gone "$pid" || return 1
    fi
    wait_until 10 "the SMTP port $AUTHFLOW_SMTP_PORT to close" _sink_down
}

# sink_start [ARGS...]: starts the sink with the saved command line plus
# ARGS (a repeated option overrides the saved one) as the saved user, and
# waits until it listens.
sink_start() {
    local argv=() user SVC_PREFIX
    mapfile -d '' -t argv <"$BATS_FILE_TMPDIR/sink.cmdline"
    user=$(<"$BATS_FILE_TMPDIR/sink.user")
    svc_prefix "$user"
    rm -f "$AUTHFLOW_PIDFILE_SMTP_SINK"
    "${SVC_PREFIX[@]}" "${argv[@]}" "$@" </dev/null >>"$AUTHFLOW_RUN_DIR/log/smtp-sink.log" 2>&1 3>&- &
    printf '%s\n' "$*" >"$BATS_FILE_TMPDIR/sink.extra"
    wait_until 10 "the SMTP sink to listen on port $AUTHFLOW_SMTP_PORT (see $AUTHFLOW_RUN_DIR/log/smtp-sink.log)" \
        _sink_running
}

# sink_restart [ARGS...]: sink_stop, then sink_start ARGS.
sink_restart() {
    sink_stop || return 1
    sink_start "$@"
}

# sink_restore: the sink runs as the stack started it (teardown).
sink_restore() {
    [[ -f $BATS_FILE_TMPDIR/sink.cmdline ]] || return 0
    if [[ -n $(cat "$BATS_FILE_TMPDIR/sink.extra" 2>/dev/null) ]] || ! _sink_running; then
        sink_restart
        : >"$BATS_FILE_TMPDIR/sink.extra"
    fi
}
