#!/usr/bin/env bash
# The project's test command (see README): builds authflow and runs the unit
# and end-to-end tests
#   1. under AddressSanitizer and UndefinedBehaviorSanitizer, out of tree in
#      _build-asan/, then the libFuzzer harnesses of tests/fuzz/ for
#      AUTHFLOW_FUZZ_SECONDS each (default 60) from their seed corpora, each
#      harness one test (skipped with --quick);
#      The end-to-end files run with AUTHFLOW_PG=replica (tests/stack.sh):
#      the responders reach PostgreSQL through pgbouncer in transaction
#      pooling mode and read from a streaming standby (files that need a
#      single PostgreSQL, such as outage.bats, pin it);
#   2. in the source tree, with -Werror, the unit tests (every end-to-end
#      file ran in pass 1, whose build has -Werror too; with --quick this
#      pass runs them all, against a single PostgreSQL);
#   3. the packages (make check-packages, as root): packaging/build makes
#      the .deb and the RPM, the .deb is installed on a debootstrapped
#      Debian 12 root and used through Apache and lighttpd, then purged
#      (skipped with --quick);
#   4. through make distcheck: a build from the tarball in a read-only tree,
#      with the unit tests and the end-to-end files of E2E_DIST_TESTS
#      (skipped with --quick).
# The sanitizer build comes first because automake refuses an out-of-tree
# configure while the source tree itself is configured; the tree is left
# built, ready for tests/stack.sh up.
#
# Ends with one line, "N passed, M failed" (", K skipped" when K > 0), the
# sum over every test-suite run; a build step that fails counts as one
# failed test. Exits non-zero when anything failed or no test passed.
#
# As root it first installs missing packages (tests/stack.sh deps).
# AUTHFLOW_CHECK_TIMEOUT bounds each test-suite run (seconds, default 1800).
set -euo pipefail

quick=0
for arg in "$@"; do
	case $arg in
	--quick) quick=1 ;;
	*)
		echo "usage: tests/run.sh [--quick]" >&2
		exit 2
		;;
	esac
done

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

jobs=2
check_timeout=${AUTHFLOW_CHECK_TIMEOUT:-1800}
# The summary is parsed below; colour codes would get in the way.
export AM_COLOR_TESTS=no
passed=0 failed=0 skipped=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

banner() { printf '\n==> %s\n' "$*"; }

# step LABEL COMMAND...: a build step; its failure counts as one failed test.
step() {
	local label=$1
	shift
	banner "$label"
	"$@" && return 0
	echo "FAILED: $label"
	failed=$((failed + 1))
	return 1
}

in_dir() { (cd "$1" && shift && "$@"); }

# check LABEL COMMAND...: a make invocation that runs the test suite. Adds
# the counts of automake's console summary to the totals. Only lines inside a
# "Testsuite summary" block count: with VERBOSE set, test-suite.log (which
# repeats them) is printed before it.
check() {
	local label=$1 rc=0 p f s
	shift
	banner "$label"
	timeout -k 60 "$check_timeout" "$@" 2>&1 | tee "$out" || rc=$?
	read -r p f s < <(awk '
		/Testsuite summary/ { in_block = 1; next }
		!in_block { next }
		/^# (PASS|XFAIL):/ { p += $3 }
		/^# (FAIL|XPASS|ERROR):/ { f += $3 }
		/^# SKIP:/ { s += $3 }
		/^# ERROR:/ { in_block = 0 }
		END { print p + 0, f + 0, s + 0 }' "$out")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		# Failed outside the tests: a build error, a timeout (124).
		echo "FAILED: $label (exit status $rc)"
		f=1
	fi
	echo "$label: $p passed, $f failed, $s skipped"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

# fuzz LABEL SECONDS: tests/fuzz/run.sh, SECONDS a harness; each harness's
# PASS or FAIL line is one test.
fuzz() {
	local label=$1 seconds=$2 rc=0 p f n
	n=$(ls tests/fuzz/fuzz_*.c | wc -l)
	banner "$label"
	if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
		echo "FAILED: $label (AUTHFLOW_FUZZ_SECONDS='$seconds' is not a number of seconds)"
		failed=$((failed + 1))
		return 1
	fi
	timeout -k 60 "$((check_timeout + n * seconds))" env AUTHFLOW_FUZZ_DIR="$top/_build-asan/_fuzz" \
		bash tests/fuzz/run.sh --fresh --seconds "$seconds" --jobs "$jobs" 2>&1 | tee "$out" || rc=$?
	read -r p f < <(awk '
		/^fuzz_[a-z0-9_]+: PASS/ { p++ }
		/^fuzz_[a-z0-9_]+: FAIL/ { f++ }
		END { print p + 0, f + 0 }' "$out")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "FAILED: $label (exit status $rc)"
		f=1
	fi
	echo "$label: $p passed, $f failed"
	passed=$((passed + p)) failed=$((failed + f))
}

if [ "$(id -u)" -eq 0 ]; then
	bash tests/stack.sh deps
else
	bash tests/stack.sh deps || echo "(not root: carrying on without them)"
fi

step "autoreconf" autoreconf -fi || true

if [ "$quick" -eq 0 ]; then
	if [ -f config.status ]; then
		step "make distclean (the source tree was configured)" make distclean || true
	fi
	mkdir -p _build-asan
	# A leak fails a unit test or authflowctl outright. The responders write
	# their reports to their logs; tests/stack.sh down shows them and fails,
	# and so does the test file that stops the stack.
	step "configure (sanitizers)" in_dir _build-asan ../configure --enable-werror --enable-sanitizers &&
		step "make (sanitizers)" make -C _build-asan -j"$jobs" &&
		check "make check (sanitizers; PostgreSQL through pgbouncer and a standby)" env \
			AUTHFLOW_PG=replica ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
			UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			make -C _build-asan -j"$jobs" check VERBOSE=1 || true
	fuzz "fuzzing (libFuzzer, ASan+UBSan)" "${AUTHFLOW_FUZZ_SECONDS:-60}" || true
fi

step "configure" ./configure --enable-werror &&
	step "make" make -j"$jobs" &&
	if [ "$quick" -eq 0 ]; then
		check "make check (unit tests)" make -j"$jobs" check 'TESTS=$(UNIT_TESTS)' VERBOSE=1 || true
	else
		check "make check" make -j"$jobs" check VERBOSE=1 || true
	fi

# The packages: the .deb installed on a clean Debian 12 root and used
# through Apache and lighttpd, the RPM's file list, lintian (root only).
if [ "$quick" -eq 0 ] && [ -f Makefile ]; then
	if [ "$(id -u)" -eq 0 ]; then
		check "packages (packaging/build; a debootstrapped Debian 12 root)" \
			make check-packages VERBOSE=1 || true
	else
		echo "(not root: the packages' test is skipped)"
	fi
fi

# Every test ran above; the tarball's run proves the tarball builds and
# holds what a stack needs (Makefile.am's E2E_DIST_TESTS), to stay within
# the time budget.
if [ "$quick" -eq 0 ] && [ -f Makefile ]; then
	check "make distcheck" make -j"$jobs" distcheck 'TESTS=$(UNIT_TESTS) $(E2E_DIST_TESTS)' \
		DISTCHECK_CONFIGURE_FLAGS=--enable-werror VERBOSE=1
fi

echo
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
