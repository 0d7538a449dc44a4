#!/usr/bin/env bash
# tests/fuzz/run.sh [--seconds N] [--jobs J] [--fresh] [name...]
#
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_<name>.c) with clang under
# AddressSanitizer and UndefinedBehaviorSanitizer, together with src/lib
# compiled the same way (so the library is instrumented, not the gcc-built
# libauthflow.a), and runs each for N seconds (default 60), J at a time
# (default 2). Names are harness names (body, cookie, ...; default: all).
#
# Output goes to $AUTHFLOW_FUZZ_DIR, else $AUTHFLOW_BUILDDIR/_fuzz, else
# _fuzz/ at the top of the tree: objects, programs, logs, crash artefacts
# and each harness's working corpus (corpus/<name>/). The working corpus
# starts as a copy of tests/fuzz/corpus/<name>/ and keeps what earlier runs
# found, so long runs carry on where the last one stopped; --fresh starts
# again from the seeds. Nothing is ever written under tests/fuzz/.
#
# Prints one line per harness (with libFuzzer's count of the inputs it
# uses and of the edges covered), e.g.
#   fuzz_body: PASS 60 s, 2307548 execs (37828/s), corpus 64 -> 542 files (401 in use, cov 309)
#   fuzz_token: FAIL undefined behaviour (UBSan) after 40 execs, artefact .../fuzz_token-crash-..., log ...
# followed for a failure by the sanitizer's first line and the command that
# reproduces it; exits non-zero when a harness failed to build, crashed, leaked, hit
# undefined behaviour, timed out or ran out of memory.
# FUZZ_CC picks the compiler (default clang, else clang-14).
set -uo pipefail

usage() {
	echo "usage: tests/fuzz/run.sh [--seconds N] [--jobs J] [--fresh] [name...]" >&2
	exit 2
}

seconds=60 jobs=2 fresh=0 names=()
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) [ $# -ge 2 ] || usage; seconds=$2; shift 2 ;;
	--jobs) [ $# -ge 2 ] || usage; jobs=$2; shift 2 ;;
	--fresh) fresh=1; shift ;;
	-h | --help) usage ;;
	-*) usage ;;
	*) names+=("${1#fuzz_}"); shift ;;
	esac
done
[[ $seconds =~ ^[1-9][0-9]*$ && $jobs =~ ^[1-9][0-9]*$ ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${AUTHFLOW_FUZZ_DIR:-${AUTHFLOW_BUILDDIR:-$top}/_fuzz}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ ${#names[@]} -eq 0 ]; then
	for f in "$here"/fuzz_*.c; do
		n=${f##*/fuzz_}
		names+=("${n%.c}")
	done
fi
for n in "${names[@]}"; do
	[ -f "$here/fuzz_$n.c" ] || { echo "tests/fuzz/run.sh: no harness fuzz_$n.c" >&2; exit 2; }
done

# The longest input each harness is given: past what the parser bounds
# (a 4096-byte config line, 4096-byte tokens, an id_token's 8192-character
# header and, signed, its 16384 characters), short enough to stay fast.
max_len() {
	case $1 in
	body) echo 16384 ;;
	config) echo 12288 ;;
	jwks) echo 12288 ;;
	token) echo 6144 ;;
	validate) echo 1024 ;;
	*) echo 4096 ;;
	esac
}

cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
	for c in clang clang-14; do
		command -v "$c" >/dev/null && { cc=$c; break; }
	done
fi
if [ -z "$cc" ] || ! "$cc" --version 2>/dev/null | grep -q clang; then
	echo "tests/fuzz/run.sh: needs clang with libFuzzer (Debian: clang libclang-rt-14-dev)" >&2
	for n in "${names[@]}"; do echo "fuzz_$n: FAIL build (no clang)"; done
	exit 1
fi

pkgs="fcgi libpq hiredis libsodium libjwt json-c libcrypto pwquality"
sanitize="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
cflags="$sanitize -g -O1 -fno-omit-frame-pointer -Wall -Wno-unused-parameter \
	-I$top/src/lib -I$here $(pkg-config --cflags $pkgs)" || exit 1
libs=$(pkg-config --libs $pkgs) || exit 1

# An object is rebuilt when its source or any header is newer.
newest_header=$(ls -t "$top"/src/lib/*.h "$here"/*.h | head -n 1)
stale() { [ ! -e "$1" ] || [ "$2" -nt "$1" ] || [ "$newest_header" -nt "$1" ]; }

build() {
	mkdir -p "$out/obj" "$out/bin"
	local src obj todo=() objs=()
	for src in "$top"/src/lib/*.c; do
		obj=$out/obj/$(basename "${src%.c}").o
		objs+=("$obj")
		stale "$obj" "$src" && todo+=("$src")
	done
	if [ ${#todo[@]} -gt 0 ]; then
		echo "compiling ${#todo[@]} src/lib files with $cc" >&2
		# shellcheck disable=SC2016
		printf '%s\n' "${todo[@]}" | FUZZ_CC=$cc FUZZ_CFLAGS=$cflags xargs -P "$jobs" -I{} sh -c \
			'o="$1/obj/$(basename "$2" .c).o"; $FUZZ_CC $FUZZ_CFLAGS -c "$2" -o "$o.tmp" && mv "$o.tmp" "$o"' \
			sh "$out" {} || return 1
		rm -f "$out/libauthflow-fuzz.a"
	fi
	if [ ! -e "$out/libauthflow-fuzz.a" ]; then
		ar rcs "$out/libauthflow-fuzz.a" "${objs[@]}" || return 1
	fi
	local n
	for n in "${names[@]}"; do
		if stale "$out/bin/fuzz_$n" "$here/fuzz_$n.c" || [ "$out/libauthflow-fuzz.a" -nt "$out/bin/fuzz_$n" ]; then
			echo "linking fuzz_$n" >&2
			# shellcheck disable=SC2086
			$cc $cflags "$here/fuzz_$n.c" "$out/libauthflow-fuzz.a" $libs -o "$out/bin/fuzz_$n" || return 1
		fi
	done
}

if ! build; then
	for n in "${names[@]}"; do echo "fuzz_$n: FAIL build"; done
	exit 1
fi

count() { find "$1" -maxdepth 1 -type f | wc -l; }

# run NAME: one harness; writes its summary line to $out/logs/NAME.result.
run() {
	local n=$1 name=fuzz_$1
	local corpus=$out/corpus/$n log=$out/logs/$name.log res=$out/logs/$name.result
	[ "$fresh" -eq 1 ] && rm -rf "$corpus"
	mkdir -p "$corpus" "$out/artifacts"
	[ -d "$here/corpus/$n" ] && cp -n "$here/corpus/$n"/* "$corpus"/ 2>/dev/null
	local before rc=0 dict=()
	before=$(count "$corpus")
	echo "$name: running $seconds s from $before files" >&2
	[ -f "$here/$n.dict" ] && dict=("-dict=$here/$n.dict")
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		"$out/bin/$name" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 \
		-max_len="$(max_len "$n")" -print_final_stats=1 "${dict[@]}" \
		-artifact_prefix="$out/artifacts/$name-" "$corpus" >"$log" 2>&1 || rc=$?
	local after execs rate units cov
	after=$(count "$corpus")
	execs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log")
	rate=$(awk '/^stat::average_exec_per_sec:/ { print $2 }' "$log")
	# libFuzzer's own count of the inputs it keeps, and the edges covered.
	read -r units cov < <(awk '/^#[0-9]+\t(DONE|INITED|NEW|REDUCE|pulse)/ {
			for (i = 1; i < NF; i++) { if ($i == "corp:") u = $(i + 1); if ($i == "cov:") c = $(i + 1) }
		} END { sub(/\/.*/, "", u); print u + 0, c + 0 }' "$log")
	if [ "$rc" -eq 0 ] && [ -n "$execs" ]; then
		echo "$name: PASS $seconds s, $execs execs (${rate:-?}/s), corpus $before -> $after files ($units in use, cov $cov)" >"$res"
		return
	fi
	local kind artefact
	if grep -q 'ERROR: LeakSanitizer' "$log"; then kind="leak (LeakSanitizer)"
	elif grep -q 'runtime error:' "$log"; then kind="undefined behaviour (UBSan)"
	elif grep -q 'ERROR: AddressSanitizer' "$log"; then kind="crash (AddressSanitizer)"
	elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then kind="timeout"
	elif grep -q 'ERROR: libFuzzer: out-of-memory' "$log"; then kind="out of memory"
	elif grep -q 'property violated' "$log"; then kind="property violated"
	else kind="crash (exit status $rc)"
	fi
	artefact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
	{
		echo "$name: FAIL $kind after ${execs:-?} execs, artefact ${artefact:-none}, log $log"
		grep -m 1 -E 'ERROR: |runtime error:|property violated' "$log" | sed 's/^/  | /'
		[ -n "$artefact" ] && echo "  | reproduce: $out/bin/$name $artefact"
	} >"$res"
}

mkdir -p "$out/logs"
failed=0 running=0
for n in "${names[@]}"; do
	rm -f "$out/logs/fuzz_$n.result"
done
for n in "${names[@]}"; do
	if [ "$running" -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
	run "$n" &
	running=$((running + 1))
done
wait
for n in "${names[@]}"; do
	res=$out/logs/fuzz_$n.result
	if [ -s "$res" ]; then
		cat "$res"
		grep -q "^fuzz_$n: PASS" "$res" || failed=1
	else
		echo "fuzz_$n: FAIL no result, log $out/logs/fuzz_$n.log"
		failed=1
	fi
done
exit "$failed"
