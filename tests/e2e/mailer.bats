#!/usr/bin/env bats
# authflow-mailer against failure: killed mid-batch, the SMTP server away,
# two mailers on one queue, refusals, SIGTERM, the sendmail transport, and
# `authflowctl mail`.
#
# The stack runs no mailer (AUTHFLOW_MAILER=0): each test starts its own
# (mailer_start, as the service user, MAILER_ENV's fast timings: lease 5 s,
# retry after 1 s doubling up to 4 s, poll every second) and teardown kills
# them. Each test queues its own rows, recipients TAG-N@example.test, and
# counts deliveries by Message-ID in the sink's index.tsv. The sink is the
# stack's; tests that restart it with other options get it back as it was
# in teardown.
#
# Runs a minute or two, half of it the 30 s SMTP outage.

load helpers
load mail-helpers

setup_file() {
    af_stack_up AUTHFLOW_MAILER=0 "${MAILER_ENV[@]}" || return 1
    sink_save
}

teardown_file() {
    mailers_kill_all
    af_stack_down
}

setup() {
    # No mailer of an earlier test is left; the queue starts empty.
    sql 'DELETE FROM mail_outbox'
    TAG=$(unique_tag)
}

teardown() {
    mailers_kill_all
    # A test that failed half-way must not leave its trap behind.
    sql 'DROP TRIGGER IF EXISTS e2e_fail_register ON audit_log;
         DROP TRIGGER IF EXISTS e2e_fail_outbox ON mail_outbox' || true
    sink_restore
    assert_no_sanitizer_reports
}

# --- crash and outage ----------------------------------------------------------

@test "kill -9 mid-batch, restart: all 200 delivered, at most the one in flight twice (logged mail_unknown_outcome)" {
    # Slow enough to be caught mid-batch, whatever the machine.
    sink_restart --delay-ms 25
    queue_test_mail "$TAG" 200
    mailer_start first
    local first=$MAILER_PID

    local t0=$SECONDS
    _some_delivered() { delivery_summary "$TAG"; ((DISTINCT >= 20)); }
    wait_until 60 "20 of the 200 messages delivered" _some_delivered
    mailer_stop "$first" KILL
    delivery_summary "$TAG"
    local at_kill=$DISTINCT
    ((at_kill < 200)) || fail "all 200 were delivered before the kill ($((SECONDS - t0)) s): the test proved nothing"
    echo "# delivered at the kill: $at_kill" >&3

    mailer_start second
    local second=$MAILER_PID
    outbox_wait_all "$TAG" sent 200 90
    mailer_stop "$second" TERM
    assert_equal "$MAILER_STATUS" 0

    delivery_summary "$TAG"
    assert_equal "$ROWS" 200
    assert_equal "$DISTINCT" 200
    # Every delivery carries its row's Message-ID (a retry keeps it).
    assert_equal "$BY_RCPT" "$TOTAL"
    if ((TOTAL > 200)); then
        # Only the message the first mailer had in hand may come twice, and
        # only if the second one knew it was taking an unknown outcome over.
        assert_equal "$TOTAL" 201
        local dup=$DUPS
        [[ $dup != *' '* ]] || fail "several messages delivered twice: $dup"
        (($(log_event_count "$(mailer_log second)" mail_unknown_outcome "$dup") >= 1)) ||
            fail "message $dup was delivered twice, and the restarted mailer logged no mail_unknown_outcome for it"
    fi
    assert_equal "$(outbox_count "$TAG" sent)" 200
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE $(tag_where "$TAG") AND (params IS NOT NULL OR sent_at IS NULL)")" 0
}

@test "SMTP server away for 30 s: nothing is lost, attempts and last_error are recorded, all delivered once it is back" {
    sink_stop
    queue_test_mail "$TAG" 20
    # max_attempts up: the outage must not use up the default 10 attempts
    # (1+2+4+4+... s) before the server returns.
    mailer_start outage AUTHFLOW_MAIL_MAX_ATTEMPTS=50
    local pid=$MAILER_PID
    sleep 30

    proc_alive "$pid" || fail "the mailer died during the outage: $(tail -n 20 "$(mailer_log outage)")"
    delivery_summary "$TAG"
    assert_equal "$TOTAL" 0
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE $(tag_where "$TAG") AND status IN ('sent', 'dead')")" 0
    (($(sql "SELECT count(*) FROM mail_outbox WHERE $(tag_where "$TAG") AND attempts > 0 AND coalesce(last_error, '') <> ''") > 0)) ||
        fail "no row records a failed attempt: $(sql "SELECT id, status, attempts, last_error FROM mail_outbox WHERE $(tag_where "$TAG") ORDER BY id LIMIT 3")"

    sink_start
    outbox_wait_all "$TAG" sent 20 40
    delivery_summary "$TAG"
    assert_equal "$DISTINCT" 20
    assert_equal "$TOTAL" 20
    assert_equal "$BY_RCPT" 20
    (($(sql "SELECT max(attempts) FROM mail_outbox WHERE $(tag_where "$TAG")") > 1)) ||
        fail "no row was attempted more than once during a 30 s outage"
    mailer_stop "$pid"
    assert_equal "$MAILER_STATUS" 0
}

# --- the outbox and its transaction ------------------------------------------

@test "a registration whose transaction fails leaves no user and no outbox row" {
    sql "CREATE OR REPLACE FUNCTION e2e_fail_register() RETURNS trigger LANGUAGE plpgsql AS \$\$
         BEGIN
             IF NEW.type = 'register' THEN
                 RAISE EXCEPTION 'e2e: registration made to fail';
             END IF;
             RETURN NEW;
         END \$\$;
         DROP TRIGGER IF EXISTS e2e_fail_register ON audit_log;
         CREATE TRIGGER e2e_fail_register BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION e2e_fail_register();"
    local email
    email=$(unique_email)
    register "$email" "$(unique_password)"
    local st=$status_code
    sql 'DROP TRIGGER e2e_fail_register ON audit_log'
    [[ $st =~ ^5[0-9][0-9]$ ]] ||
        _af_fail "registration should fail (5xx) when its audit row cannot be written (is the audit event not called 'register'?)"
    assert_problem "$st"
    [[ $body != *e2e:* ]] || _af_fail "the database's error message reached the client"
    assert_equal "$(sql "SELECT count(*) FROM users WHERE lower(email) = lower(:'e')" e="$email")" 0
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE lower(recipient) = lower(:'e')" e="$email")" 0
    # The trigger gone, the same registration works.
    register "$email" "$(unique_password)"
    assert_status 201
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE lower(recipient) = lower(:'e') AND kind = 'verify_email'" e="$email")" 1
}

@test "a registration whose outbox row cannot be written leaves no user" {
    sql "CREATE OR REPLACE FUNCTION e2e_fail_outbox() RETURNS trigger LANGUAGE plpgsql AS \$\$
         BEGIN
             IF NEW.recipient LIKE 'e2e-no-outbox-%' THEN
                 RAISE EXCEPTION 'e2e: outbox made to fail';
             END IF;
             RETURN NEW;
         END \$\$;
         DROP TRIGGER IF EXISTS e2e_fail_outbox ON mail_outbox;
         CREATE TRIGGER e2e_fail_outbox BEFORE INSERT ON mail_outbox
             FOR EACH ROW EXECUTE FUNCTION e2e_fail_outbox();"
    local email="e2e-no-outbox-$TAG@example.test"
    register "$email" "$(unique_password)"
    local st=$status_code
    sql 'DROP TRIGGER e2e_fail_outbox ON mail_outbox'
    [[ $st =~ ^5[0-9][0-9]$ ]] || _af_fail "registration should fail (5xx) when its mail cannot be queued"
    assert_problem "$st"
    assert_equal "$(sql "SELECT count(*) FROM users WHERE lower(email) = lower(:'e')" e="$email")" 0
}

# --- several mailers, refusals, signals ----------------------------------------

@test "two mailers on one queue of 500: each message delivered exactly once, both did some" {
    sink_restart --delay-ms 5
    mailer_start one
    local one=$MAILER_PID
    mailer_start two
    local two=$MAILER_PID
    queue_test_mail "$TAG" 500
    outbox_wait_all "$TAG" sent 500 120
    mailer_stop "$one"
    assert_equal "$MAILER_STATUS" 0
    mailer_stop "$two"
    assert_equal "$MAILER_STATUS" 0

    delivery_summary "$TAG"
    assert_equal "$ROWS" 500
    assert_equal "$DISTINCT" 500
    assert_equal "$TOTAL" 500
    assert_equal "$BY_RCPT" 500

    # Both took part: by their logs, or by claimed_by.
    local n1 n2 claimers
    n1=$(log_event_count "$(mailer_log one)" mail_sent)
    n2=$(log_event_count "$(mailer_log two)" mail_sent)
    claimers=$(sql "SELECT count(DISTINCT claimed_by) FROM mail_outbox WHERE $(tag_where "$TAG")")
    if ! ((n1 > 0 && n2 > 0)) && ! ((claimers >= 2)); then
        fail "one mailer did all the work (mail_sent lines: $n1 and $n2; distinct claimed_by: $claimers)"
    fi
    if ((n1 + n2 > 0)); then
        assert_equal "$((n1 + n2))" 500
    fi
}

@test "a permanent refusal (550) makes the row dead after 1 attempt; others are delivered" {
    local bad="$TAG-1@example.test"
    sink_restart --reject-rcpt "^${bad//./\\.}\$"
    queue_test_mail "$TAG" 3
    local rc=0
    as_svc env "${MAILER_ENV[@]}" timeout 60 "$(mailer_bin)" -c "$AUTHFLOW_CONFIG" --once \
        2>>"$(mailer_log once)" || rc=$?
    assert_equal "$rc" 0
    assert_equal "$(sql "SELECT status || ' ' || attempts FROM mail_outbox WHERE recipient = :'r'" r="$bad")" 'dead 1'
    [[ -n $(sql "SELECT last_error FROM mail_outbox WHERE recipient = :'r'" r="$bad") ]] || fail "the dead row has no last_error"
    assert_equal "$(outbox_count "$TAG" sent)" 2
    assert_equal "$(mail_count "$bad")" 0
    local mid
    mid=$(sql "SELECT message_id FROM mail_outbox WHERE recipient = :'r'" r="$bad")
    assert_equal "$(log_event_count "$(mailer_log once)" mail_dead "$mid")" 1
}

@test "a temporary refusal (451) is retried, then dead after max_attempts" {
    local later="$TAG-1@example.test"
    sink_restart --tempfail-rcpt "^${later//./\\.}\$"
    queue_test_mail "$TAG" 1
    mailer_start tempfail AUTHFLOW_MAIL_MAX_ATTEMPTS=3
    local pid=$MAILER_PID
    outbox_wait_all "$TAG" dead 1 40
    assert_equal "$(sql "SELECT attempts FROM mail_outbox WHERE recipient = :'r'" r="$later")" 3
    [[ -n $(sql "SELECT last_error FROM mail_outbox WHERE recipient = :'r'" r="$later") ]] || fail "the dead row has no last_error"
    assert_equal "$(mail_count "$later")" 0
    local mid
    mid=$(sql "SELECT message_id FROM mail_outbox WHERE recipient = :'r'" r="$later")
    assert_equal "$(log_event_count "$(mailer_log tempfail)" mail_retry "$mid")" 2
    assert_equal "$(log_event_count "$(mailer_log tempfail)" mail_dead "$mid")" 1
    mailer_stop "$pid"
    assert_equal "$MAILER_STATUS" 0
}

@test "SIGTERM: a busy mailer finishes the message in hand, exits 0 within seconds, leaves no row sending" {
    sink_restart --delay-ms 50
    queue_test_mail "$TAG" 200
    mailer_start sigterm
    local pid=$MAILER_PID
    _a_few_delivered() { delivery_summary "$TAG"; ((DISTINCT >= 5)); }
    wait_until 30 "5 messages delivered" _a_few_delivered
    mailer_stop "$pid" TERM 5
    assert_equal "$MAILER_STATUS" 0

    assert_equal "$(outbox_count "$TAG" sending)" 0
    (($(outbox_count "$TAG" pending) > 0)) || fail "the whole queue went out after SIGTERM"
    # What reached the server is recorded as sent, and nothing else is.
    delivery_summary "$TAG"
    assert_equal "$TOTAL" "$DISTINCT"
    assert_equal "$BY_RCPT" "$TOTAL"
    assert_equal "$(outbox_count "$TAG" sent)" "$DISTINCT"
}

# --- the sendmail transport ------------------------------------------------------

# sendmail_setup: a stand-in sendmail in $SM, which records its arguments
# (one a line) in argv.N and its input in input.N, and exits with the status
# in $SM/exit-status (0 if absent). $SM is in BATS_FILE_TMPDIR when the
# service user can enter it; as root it cannot (bats makes its run
# directory 0700), so then it is in the stack's run directory.
sendmail_setup() {
    SM=$BATS_FILE_TMPDIR/sendmail
    as_svc test -x "$BATS_FILE_TMPDIR" || SM=$AUTHFLOW_RUN_DIR/e2e-sendmail
    rm -rf "$SM"
    install -d -m 0755 "$SM"
    cat >"$SM/sendmail" <<'EOF'
#!/bin/sh
# Stand-in sendmail for mailer.bats.
d=$(dirname "$0")
n=$(($(cat "$d/calls" 2>/dev/null || echo 0) + 1))
echo "$n" >"$d/calls"
for a in "$@"; do printf '%s\n' "$a"; done >"$d/argv.$n"
cat >"$d/input.$n"
exit "$(cat "$d/exit-status" 2>/dev/null || echo 0)"
EOF
    chmod 0755 "$SM/sendmail"
    [[ $(id -u) != 0 ]] || chown -R "$AF_SVC_USER:" "$SM"
    as_svc test -x "$SM/sendmail" || fail "the service user cannot run $SM/sendmail"
}

# mailer_once_sendmail: one `authflow-mailer --once` with the sendmail
# transport (retries far off, so --once does not meet them again).
mailer_once_sendmail() {
    local rc=0
    as_svc env "${MAILER_ENV[@]}" AUTHFLOW_MAIL_RETRY_BASE_SECONDS=300 AUTHFLOW_MAIL_RETRY_MAX_SECONDS=600 \
        AUTHFLOW_MAIL_TRANSPORT=sendmail AUTHFLOW_MAIL_SENDMAIL_PATH="$SM/sendmail" \
        timeout 60 "$(mailer_bin)" -c "$AUTHFLOW_CONFIG" --once 2>>"$(mailer_log sendmail)" || rc=$?
    assert_equal "$rc" 0
}

@test "sendmail transport: runs sendmail -t -i with the message (LF line ends) on stdin; exit 75 retries, 69 is final" {
    sendmail_setup
    local rcpt="$TAG-1@example.test"
    queue_test_mail "$TAG" 1
    mailer_once_sendmail
    assert_equal "$(cat "$SM/calls")" 1
    assert_equal "$(sql "SELECT status || ' ' || attempts FROM mail_outbox WHERE recipient = :'r'" r="$rcpt")" 'sent 1'

    # Arguments: -t and -i; besides them at most an envelope sender (-f),
    # never the recipient (-t takes it from the headers).
    grep -qx -- -t "$SM/argv.1" || fail "sendmail was run without -t: $(tr '\n' ' ' <"$SM/argv.1")"
    grep -qx -- -i "$SM/argv.1" || fail "sendmail was run without -i: $(tr '\n' ' ' <"$SM/argv.1")"
    local extra
    extra=$(grep -vx -e -t -e -i "$SM/argv.1" | grep -vE '^-f' || true)
    if [[ -n $extra ]] && ! { grep -qx -- -f "$SM/argv.1" && [[ $(grep -c . <<<"$extra") == 1 ]]; }; then
        fail "unexpected sendmail arguments: $(tr '\n' ' ' <"$SM/argv.1")"
    fi
    if grep -qF -- "$rcpt" "$SM/argv.1"; then
        fail "the recipient is on sendmail's command line: $(tr '\n' ' ' <"$SM/argv.1")"
    fi

    # The message: headers for -t, LF line ends only.
    local in=$SM/input.1 mid
    mid=$(sql "SELECT message_id FROM mail_outbox WHERE recipient = :'r'" r="$rcpt")
    grep -qiE "^To:.*$rcpt" "$in" || fail "no To: $rcpt in the input: $(head -n 20 "$in")"
    grep -qiE '^Subject: .+' "$in" || fail "no Subject in the input"
    grep -qiE "^Message-ID: <$mid@[^>]+>" "$in" || fail "no Message-ID <$mid@...> in the input"
    if grep -q $'\r' "$in"; then fail "the input has CR characters: line ends must be LF"; fi
    (($(wc -l <"$in") > 5)) || fail "the input is too short: $(cat "$in")"

    # 75 (EX_TEMPFAIL): try again later.
    echo 75 >"$SM/exit-status"
    local rcpt2="$TAG-2@example.test"
    sql "INSERT INTO mail_outbox (kind, recipient, params) VALUES ('test', :'r', '{}')" r="$rcpt2"
    mailer_once_sendmail
    assert_equal "$(cat "$SM/calls")" 2
    assert_equal "$(sql "SELECT status || ' ' || attempts FROM mail_outbox WHERE recipient = :'r'" r="$rcpt2")" 'pending 1'
    [[ -n $(sql "SELECT last_error FROM mail_outbox WHERE recipient = :'r'" r="$rcpt2") ]] || fail "no last_error after exit 75"

    # 69 (EX_UNAVAILABLE), one of the other 64..78: refused for good.
    echo 69 >"$SM/exit-status"
    local rcpt3="$TAG-3@example.test"
    sql "INSERT INTO mail_outbox (kind, recipient, params) VALUES ('test', :'r', '{}')" r="$rcpt3"
    mailer_once_sendmail
    assert_equal "$(sql "SELECT status || ' ' || attempts FROM mail_outbox WHERE recipient = :'r'" r="$rcpt3")" 'dead 1'
    # The row that is waiting for its retry was not tried again.
    assert_equal "$(sql "SELECT status || ' ' || attempts FROM mail_outbox WHERE recipient = :'r'" r="$rcpt2")" 'pending 1'
}

# --- authflowctl mail ------------------------------------------------------------

@test "authflowctl mail test ADDRESS: one message reaches the sink, and it prints sent <id>" {
    local addr="$TAG-ctl@example.test"
    run "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" mail test "$addr"
    assert_success
    assert_line --regexp '^sent [^[:space:]]+$'
    local id
    id=$(grep -E '^sent ' <<<"$output" | head -n 1 | cut -d' ' -f2)
    id=$(mid_of "$id")
    [[ -n $id ]] || fail "no id in: $output"
    # Sent directly: it is there already, once, with that Message-ID.
    assert_equal "$(mail_count "$addr")" 1
    assert_equal "$(mail_deliveries "$id")" 1
    assert_equal "$(awk -F'\t' -v m="<$id@" 'index($3, m) == 1 { print $2 }' "$(mail_index)")" "$addr"
    # Not through the outbox.
    assert_equal "$(sql "SELECT count(*) FROM mail_outbox WHERE recipient = :'r'" r="$addr")" 0

    # A refused address: exit 1 with a reason.
    sink_restart --reject-rcpt '^refused-'
    run "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" mail test "refused-$TAG@example.test"
    assert_failure 1
    [[ -n $output ]] || fail "no reason given"
    refute_line --regexp '^sent '
}

@test "authflowctl mail status prints the pending, sending, sent and dead counts" {
    sql "INSERT INTO mail_outbox (kind, recipient, params, status, attempts, lease_until, claimed_by, sent_at)
         SELECT 'test', :'tag' || '-' || g || '@example.test', NULL, s,
                CASE WHEN s = 'pending' THEN 0 ELSE 1 END,
                CASE WHEN s = 'sending' THEN now() + interval '1 hour' END,
                CASE WHEN s = 'sending' THEN 'e2e:0' END,
                CASE WHEN s = 'sent' THEN now() END
           FROM (VALUES (1, 'pending'), (2, 'pending'), (3, 'sending'), (4, 'sent'), (5, 'sent'),
                        (6, 'sent'), (7, 'dead'), (8, 'dead'), (9, 'dead'), (10, 'dead')) v (g, s)" tag="$TAG"
    run "$AUTHFLOW_BUILDDIR/authflowctl" -c "$AUTHFLOW_CONFIG" mail status
    assert_success
    assert_line --regexp '^pending[[:space:]]+2$'
    assert_line --regexp '^sending[[:space:]]+1$'
    assert_line --regexp '^sent[[:space:]]+3$'
    assert_line --regexp '^dead[[:space:]]+4$'
}

# Keep this last: it checks everything the file sent.
@test "logs: no password or token used in this file appears in the logs" {
    assert_logs_free_of_secrets
}
