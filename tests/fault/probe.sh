#!/usr/bin/env bash
# One request to URL every PROBE_INTERVAL_MS (default 100) until STOPFILE
# exists or PROBE_SECONDS (default 120) have passed; for each, one line on
# OUT:
#   <ms sent> <ms answered> <status> <status field of the body or ->
# (ms: wall clock, CLOCK_REALTIME as `date +%s%3N` reads it; status 000:
# no answer within PROBE_MAX_TIME seconds, default 2). The body's
# "status" string is /health's verdict (ok, degraded, fail). Used by
# tests/e2e/outage.bats to time how soon the service answers again after
# a dependency came back.
#
#   probe.sh OUT STOPFILE URL [curl options...]
set -u

out=$1 stop=$2 url=$3
shift 3
interval=${PROBE_INTERVAL_MS:-100}
max_time=${PROBE_MAX_TIME:-2}
body=$(mktemp)
trap 'rm -f "$body"' EXIT

# $EPOCHREALTIME costs no process; its decimal separator follows the locale.
now_ms() {
    local t=${EPOCHREALTIME//[!0-9]/}
    printf '%s' $((t / 1000))
}

sleep_s=$(printf '0.%03d' "$interval")
((interval >= 1000)) && sleep_s=$((interval / 1000))
deadline=$(($(now_ms) + ${PROBE_SECONDS:-120} * 1000))
: >"$out"
while [[ ! -e $stop ]] && (($(now_ms) < deadline)); do
    sent=$(now_ms)
    code=$(curl -s -o "$body" -w '%{http_code}' --max-time "$max_time" "$@" "$url" 2>/dev/null) || true
    answered=$(now_ms)
    field=-
    [[ $(<"$body") =~ \"status\":\"([a-z_]+)\" ]] && field=${BASH_REMATCH[1]}
    printf '%s %s %s %s\n' "$sent" "$answered" "${code:-000}" "$field" >>"$out"
    : >"$body"
    sleep "$sleep_s"
done
