#!/bin/bash
# Runs the specs in parallel: one busted per integration spec file, plus one
# for the unit specs, VMLUA_SPEC_JOBS at a time (default: the number of CPUs).
# Each file gets its own state and runtime directories, so instances and
# sockets of one never meet another's. A file's output is printed when it
# ends; the exit status is non-zero if any file failed.
#
#   scripts/run-specs.sh [FILE...]     (default: every spec under tests/)
#
# Environment: BUSTED (the busted command), BUILD (the build directory),
# VMLUA_SPEC_JOBS; the slowest files start first, by the durations of the
# last run kept in $BUILD/specs/times.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
busted=${BUSTED:-busted}
jobs=${VMLUA_SPEC_JOBS:-$(nproc)}
out=$build/specs
mkdir -p "$out"

if [ $# -eq 0 ]; then
	set -- tests/*_spec.lua tests/*/*_spec.lua
fi

# Longest first, for the best packing: by the last run's durations, else
# integration specs (guests) before the others.
order() {
	local item t guess
	for item in "$@"; do
		t=$(awk -v k="$item" -F'\t' '$1 == k { print $2 }' "$out/times" 2>/dev/null)
		case $item in tests/integration/*) guess=9999 ;; *) guess=1 ;; esac
		printf '%s\t%s\n' "${t:-$guess}" "$item"
	done | sort -t$'\t' -k1,1nr | cut -f2
}

run_one() {
	local item=$1 name start rc dir
	name=$(echo "$item" | sed 's|tests/||g; s|_spec\.lua||g; s|[/ ]|-|g')
	dir=$(mktemp -d /tmp/vmlua-spec-rt.XXXXXX) || return 1
	start=$(date +%s)
	# shellcheck disable=SC2086 # an item may be several paths
	XDG_STATE_HOME=$PWD/$out/state-$name VMLUA_RUNTIME_DIR=$dir \
		$busted $item >"$out/$name.log" 2>&1
	rc=$?
	rm -rf "$dir"
	printf '%s\t%s\n' "$item" "$(($(date +%s) - start))" >>"$out/times.new"
	{
		if [ $rc -eq 0 ]; then
			printf 'ok    %-28s %4ss  %s\n' "$name" "$(($(date +%s) - start))" \
				"$(grep -E '^[0-9]+ success' "$out/$name.log" | tail -1)"
		else
			printf 'FAIL  %s (%s)\n' "$name" "$out/$name.log"
			cat "$out/$name.log"
		fi
	} | flock "$out/print.lock" cat
	return $rc
}
export -f run_one
export out busted

rm -rf "$out/times.new" "$out"/*.log "$out"/state-*
start=$(date +%s)
order "$@" | tr '\n' '\0' | xargs -0 -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}
rc=$?
[ -s "$out/times.new" ] && mv "$out/times.new" "$out/times"
totals=$(cat "$out"/*.log | grep -E '^[0-9]+ success' |
	awk '{ s += $1; f += $4; e += $7; p += $10 } END { printf "%d successes / %d failures / %d errors / %d pending", s, f, e, p }')
echo "specs: $totals in $(($(date +%s) - start)) s, $jobs at a time"
[ $rc -eq 0 ] || { echo "specs: some files failed (logs in $out)" >&2; exit 1; }
