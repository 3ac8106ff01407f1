#!/bin/bash
# Bounded fuzz smoke for CI: builds every libFuzzer target and runs each one
# for FUZZ_SECONDS (default 25) from the committed seed corpus.  Fails on any
# crash, sanitizer report, invariant failure, leak or timeout.  New inputs
# go to a scratch directory, never into the committed corpus.
#
#   fuzz/smoke.sh               all targets
#   fuzz/smoke.sh fuzz_framing  only the targets named
#   FUZZ_SECONDS=5 fuzz/smoke.sh
set -e

here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-25}
make -s -C "$here"

if [ $# -gt 0 ]; then
	targets=("$@")
else
	targets=()
	for dir in "$here"/corpus/*/; do
		targets+=("$(basename "$dir")")
	done
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
artifacts="$here/build/artifacts"
mkdir -p "$artifacts"

passed=0
failed=0
for target in "${targets[@]}"; do
	mkdir -p "$scratch/$target"
	log="$here/build/smoke-$target.log"
	status=0
	# -timeout: one input taking this long is a failure, not a stall.
	# -max_len 16384: longer than the framing target's largest max_packet.
	"$here/build/$target" -max_total_time="$seconds" -timeout=10 \
		-max_len=16384 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$artifacts/$target-" \
		"$scratch/$target" "$here/corpus/$target" >"$log" 2>&1 ||
		status=$?
	stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
	if [ "$status" -eq 0 ] && [ -n "$stats" ]; then
		passed=$((passed + 1))
		echo "PASS $target: $stats"
	else
		failed=$((failed + 1))
		echo "FAIL $target (exit status $status); last lines of $log:"
		tail -n 40 "$log"
	fi
done

echo "fuzz-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
