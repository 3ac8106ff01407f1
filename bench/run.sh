#!/bin/bash
# run.sh - the standard benchmark matrix; writes BENCHMARKS.md and its raw
# result lines, BENCHMARKS.raw.
#
# Each run measures the machine's limits (aesdprobe) and then every workload
# against a freshly started aesdsocket (own port, own data file, default
# options), so the ratios pair figures taken minutes apart on the same
# machine. Figures are medians over the runs, with each run's value alongside.
#
# usage: bench/run.sh [-r RUNS] [-o FILE] [-i RAW] [-a SERVER] [-b OLD] [-F] [-A]
#                     [-l NAME] [-L NAME]
#   -r  runs (default 3); -o  the report (default BENCHMARKS.md at the top of
#   the repository); its raw result lines go beside it, .md replaced by .raw;
#   -i  measure nothing, write the report from the raw lines of an earlier
#   run (a .raw file, or an older BENCHMARKS.md that held them).
#   -a  the server to benchmark (default $AESDSOCKET, else server/aesdsocket)
#   -b  A/B: also run churn, stream and bigread on OLD (default $AESDSOCKET_B),
#       interleaved with the same workloads on the server, and report the
#       same-run ratios server/OLD; and the slow workloads on OLD in the first
#       run (about 3 minutes on issue 9's server); -F  also run churn, stream
#       and bigread on the server with --no-syscall-filter (U), next to each
#       of its own, and time the filter per call (aesdprobe seccomp): what
#       the workers' confinement costs; -A  only those workloads (with the
#       trivial server's churn, which a target compares with).
#   -l, -L  what the report calls the server and OLD, e.g. "issue 9's server
#       (3f2cd91)"; default: server/aesdsocket at the commit, else the file's
#       name (never its directory).
set -euo pipefail
export LC_ALL=C	# the same figures, sorted and printed the same, anywhere

# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

RUNS=3
OUT="$REPO_DIR/BENCHMARKS.md"
INPUT=
AB_ONLY=
UNCONFINED=
NAME_A=
NAME_B=
while getopts "r:o:i:a:b:FAl:L:h" opt; do
	case $opt in
	r) RUNS=$OPTARG ;;
	o) OUT=$OPTARG ;;
	i) INPUT=$OPTARG ;;
	a) SERVER=$OPTARG ;;
	b) SERVER_B=$OPTARG ;;
	F) UNCONFINED=--no-syscall-filter ;;
	A) AB_ONLY=1 ;;
	l) NAME_A=$OPTARG ;;
	L) NAME_B=$OPTARG ;;
	h) sed -n '2,27p' "$0"; exit 0 ;;
	*) exit 2 ;;
	esac
done
RAW="${OUT%.md}.raw"
case $RUNS in
'' | *[!0-9]* | 0) echo "run.sh: -r needs a positive number" >&2; exit 2 ;;
esac
if [ -n "$AB_ONLY" ] && [ -z "$SERVER_B$UNCONFINED" ]; then
	echo "run.sh: -A needs something to compare with (-b OLD, AESDSOCKET_B or -F)" >&2
	exit 2
fi

# The held-idle workload: K connections held, L new clients timed.
HELD_K=10000
HELD_L=500
# The slow workloads (issue 14): K tricklers (a byte every R ms, never a
# newline) and B clients holding a Z-byte partial packet, all held while L
# new clients, I ms apart, are timed. A new client gives up after T ms and
# counts as failed; none starts after D s: a server that stalls until its
# idle timeout (60 s) closes the slow clients then costs about 70 s.
SLOW=(-k 1000 -B 100 -z 900K -R 200 -L 500 -I 10 -T 5000 -D 75)
# With only tricklers (issue 14's 33 and 200): few new clients with a
# timeout past the idle timeout, so that a one-minute stall is measured.
SLOW_FEW=(-B 0 -R 200 -L 20 -I 10 -T 90000 -D 120)

WORK=$(mktemp -d)
trap 'stop_all; rm -rf "$WORK"' EXIT
RESULTS="$WORK/results"
: >"$RESULTS"

# Text in a result line: one word, "_" for each space.
word() {
	printf '%s' "${1// /_}"
}

# server_dirty: whether server/ has uncommitted changes (0 or 1).
server_dirty() {
	if [ -n "$(git -C "$REPO_DIR" status --porcelain -- server 2>/dev/null)" ]; then
		echo 1
	else
		echo 0
	fi
}

# identify LABEL PATH COPY NAME: which binary ran, as a result line of run
# 0: NAME, else the repository's server at its commit, else the file's
# name; never where it lay on this machine.
identify() {
	local sum name=$4 commit
	sum=$(sha256sum "$3" | cut -c1-16)
	if [ -z "$name" ] && [ "$(realpath "$2")" = "$(realpath "$REPO_DIR/server/aesdsocket")" ]; then
		commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
		name="server/aesdsocket at $commit"
		[ "$(server_dirty)" = 0 ] || name="$name with uncommitted changes in server/"
	fi
	[ -n "$name" ] || name=$(basename "$2")
	echo "run=0 label=$1 name=$(word "$name") sha256=$sum" >>"$RESULTS"
}

# meta SECONDS: where and when the runs took place, as a result line of run
# 0, so that -i renders the same page from the raw lines alone.
meta() {
	local cpu
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	echo "run=0 label=meta date=$(date -u '+%Y-%m-%d_%H:%M_UTC')" \
		"commit=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null || echo unknown)" \
		"server_dirty=$(server_dirty) cpus=$(nproc) cpu=$(word "${cpu:-unknown CPU}")" \
		"kernel=$(word "Linux $(uname -r)")" \
		"load_end=$(word "$(cut -d' ' -f1-3 /proc/loadavg)") elapsed_s=$1" >>"$RESULTS"
}

if [ -n "$INPUT" ]; then
	grep '^run=[0-9]* label=' "$INPUT" >"$RESULTS"
	RUNS=$(awk -F'[= ]' '{ if ($2 > n) n = $2 } END { print n + 0 }' "$RESULTS")
	[ "$RUNS" -gt 0 ] || { echo "run.sh: no result lines in $INPUT" >&2; exit 1; }
else
	src_a=$SERVER src_b=$SERVER_B
	build_all "$WORK"
	identify server_a "$src_a" "$SERVER" "$NAME_A"
	[ -z "$SERVER_B" ] || identify server_b "$src_b" "$SERVER_B" "$NAME_B"
fi

# record RUN LABEL COMMAND...: run a measurement, keep its line.
record() {
	local run=$1 label=$2 line
	shift 2
	if ! line=$(timeout 300 "$@"); then
		echo "run.sh: $label (run $run) reported errors: $line" >&2
	fi
	[ -n "$line" ] || line="failed=1 errors=1"
	echo "run=$run label=$label $line" >>"$RESULTS"
	echo "  $label: $line" | cut -c1-160 >&2
}

# server_load RUN LABEL "SERVER OPTIONS" LOAD ARGS...
server_load() {
	local run=$1 label=$2 sopts=$3
	shift 3
	# shellcheck disable=SC2086 # sopts is a word list on purpose
	if ! start_server "$WORK" $sopts; then
		echo "run=$run label=$label start_failed=1 failed=1 errors=1" >>"$RESULTS"
		stop_server || true
		return 0
	fi
	record "$run" "$label" "$LOAD" "$@" -p "$SERVER_PORT" -P "$SERVER_PID"
	stop_server || echo "run.sh: server exit status $? after $label" >&2
}

# slow_load RUN LABEL ARGS...: a slow workload on the server; in A/B mode
# also on SERVER_B in the first run (a minute or more there, and the
# targets are absolute: one run shows B's stall).
slow_load() {
	local run=$1 label=$2
	shift 2
	server_load "$run" "$label" "" slow "$@"
	if [ -n "$SERVER_B" ] && [ "$run" -eq 1 ]; then
		SERVER=$SERVER_B server_load "$run" "b_$label" "" slow "$@"
	fi
}

# ab_load RUN LABEL LOAD ARGS...: the workload on the server and, in A/B
# mode, on SERVER_B (label b_LABEL) right after or right before it: odd
# runs start with the server, even runs with B, so that a drift of the
# machine's speed during a run favours neither side.  With -F, the server
# with its filter off (label u_LABEL) runs between the two, so it is next
# to the server's own run on the same side as B.
ab_load() {
	local run=$1 label=$2
	shift 2
	if [ -n "$SERVER_B" ] && [ $((run % 2)) -eq 0 ]; then
		SERVER=$SERVER_B server_load "$run" "b_$label" "" "$@"
	fi
	if [ -n "$UNCONFINED" ] && [ $((run % 2)) -eq 0 ]; then
		server_load "$run" "u_$label" "$UNCONFINED" "$@"
	fi
	server_load "$run" "$label" "" "$@"
	if [ -n "$UNCONFINED" ] && [ $((run % 2)) -eq 1 ]; then
		server_load "$run" "u_$label" "$UNCONFINED" "$@"
	fi
	if [ -n "$SERVER_B" ] && [ $((run % 2)) -eq 1 ]; then
		SERVER=$SERVER_B server_load "$run" "b_$label" "" "$@"
	fi
}

# trivial_load RUN LABEL "TRIVIAL OPTIONS" LOAD ARGS...
trivial_load() {
	local run=$1 label=$2 topts=$3
	shift 3
	# shellcheck disable=SC2086 # topts is a word list on purpose
	start_trivial -t "$(nproc)" $topts
	record "$run" "$label" "$LOAD" "$@" -p "$SERVER_PORT"
	stop_server || true
}

started=$(date +%s)
for run in $(seq 1 "$RUNS"); do
	[ -z "$INPUT" ] || break
	echo "run $run of $RUNS" >&2
	if [ -n "$UNCONFINED" ]; then
		record "$run" seccomp "$PROBE" seccomp -n 1000000
	fi
	if [ -z "$AB_ONLY" ]; then
		record "$run" sendfile "$PROBE" sendfile -F 64M -r 8 -d "$WORK"
		record "$run" fork "$PROBE" fork -n 300
		record "$run" thread "$PROBE" thread -n 2000
	fi
	trivial_load "$run" trivial_c1 "" churn -c 1 -n 2000 -s 64
	trivial_load "$run" trivial_c8 "" churn -c 8 -n 4000 -s 64
	# The same server keeping each connection until the client closes it,
	# as aesdsocket must: the churn client waits for that close.
	trivial_load "$run" trivial_keep_c1 -k churn -c 1 -n 2000 -s 64
	ab_load "$run" churn_c1 churn -c 1 -n 2000 -s 64
	ab_load "$run" churn_c8 churn -c 8 -n 4000 -s 64
	ab_load "$run" stream stream -c 1 -n 2000 -s 64
	ab_load "$run" bigread_16m bigread -F 16M -r 40
	ab_load "$run" bigread_64m bigread -F 64M -r 10
	if [ -z "$AB_ONLY" ]; then
		server_load "$run" held_base "" held -b -k "$HELD_K" -L "$HELD_L" -c 1 -n 2000 -s 64
		server_load "$run" held "" held -k "$HELD_K" -L "$HELD_L" -c 1 -n 2000 -s 64
	fi
	slow_load "$run" slow "${SLOW[@]}"
	slow_load "$run" slow_33 -k 33 "${SLOW_FEW[@]}"
	slow_load "$run" slow_200 -k 200 "${SLOW_FEW[@]}"
done
[ -n "$INPUT" ] || meta "$(($(date +%s) - started))"

# shellcheck source-path=SCRIPTDIR source=report.sh disable=SC1091
. "$BENCH_DIR/report.sh"
report "$(basename "$RAW")" >"$OUT"
{
	echo "# The raw result lines of $(basename "$OUT") (bench/run.sh; docs/bench.md):"
	echo "# one line per measurement, key=value, in run order; run=0: what ran where."
	cat "$RESULTS"
} >"$RAW"
echo "wrote $OUT and $RAW" >&2
