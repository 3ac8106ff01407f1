#!/bin/bash
# run.sh - the standard benchmark matrix; writes BENCHMARKS.md.
#
# Each run measures the machine's limits (aesdprobe) and then every workload
# against a freshly started aesdsocket (own port, own data file), so the
# ratios pair figures taken minutes apart on the same machine. Figures are
# medians over the runs, with each run's value alongside.
#
# usage: bench/run.sh [-r RUNS] [-o FILE] [-i RESULTS]
#   -r  runs (default 3); -o  output (default BENCHMARKS.md at the top of the
#   repository); -i  measure nothing, write the report from the raw result
#   lines of an earlier run (the block at the end of a BENCHMARKS.md).
#   AESDSOCKET=path benchmarks another server binary.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

RUNS=3
OUT="$REPO_DIR/BENCHMARKS.md"
INPUT=
while getopts "r:o:i:h" opt; do
	case $opt in
	r) RUNS=$OPTARG ;;
	o) OUT=$OPTARG ;;
	i) INPUT=$OPTARG ;;
	h) sed -n '2,14p' "$0"; exit 0 ;;
	*) exit 2 ;;
	esac
done
case $RUNS in
'' | *[!0-9]* | 0) echo "run.sh: -r needs a positive number" >&2; exit 2 ;;
esac

WORK=$(mktemp -d)
trap 'stop_all; rm -rf "$WORK"' EXIT
RESULTS="$WORK/results"
: >"$RESULTS"

if [ -n "$INPUT" ]; then
	grep '^run=[0-9]* label=' "$INPUT" >"$RESULTS"
	RUNS=$(awk -F'[= ]' '{ if ($2 > n) n = $2 } END { print n + 0 }' "$RESULTS")
	[ "$RUNS" -gt 0 ] || { echo "run.sh: no result lines in $INPUT" >&2; exit 1; }
else
	build_all "$WORK"
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

trivial_load() {
	local run=$1 label=$2
	shift 2
	start_trivial -t "$(nproc)"
	record "$run" "$label" "$LOAD" "$@" -p "$SERVER_PORT"
	stop_server || true
}

started=$(date +%s)
for run in $(seq 1 "$RUNS"); do
	[ -z "$INPUT" ] || break
	echo "run $run of $RUNS" >&2
	record "$run" sendfile "$PROBE" sendfile -F 64M -r 8 -d "$WORK"
	record "$run" fork "$PROBE" fork -n 300
	record "$run" thread "$PROBE" thread -n 2000
	trivial_load "$run" trivial_c1 churn -c 1 -n 2000 -s 64
	trivial_load "$run" trivial_c8 churn -c 8 -n 4000 -s 64
	server_load "$run" churn_c1 "" churn -c 1 -n 2000 -s 64
	server_load "$run" churn_c8 "" churn -c 8 -n 4000 -s 64
	server_load "$run" stream "" stream -c 1 -n 2000 -s 64
	server_load "$run" bigread_16m "" bigread -F 16M -r 40
	server_load "$run" bigread_64m "" bigread -F 64M -r 10
	server_load "$run" idle_200 "-c 1100" idle -k 200 -c 1 -n 2000 -s 64
	server_load "$run" idle_1000_base "-c 1100" idle -b -k 1000 -c 1 -n 2000 -s 64
	server_load "$run" idle_1000 "-c 1100" idle -k 1000 -c 1 -n 2000 -s 64
done
elapsed="$(($(date +%s) - started)) s in all"
[ -z "$INPUT" ] || elapsed="report rewritten from $(basename "$INPUT")"

# vals LABEL KEY: the value of every run, in run order.
vals() {
	awk -v l="$1" -v k="$2" '{
		lab = ""; v = ""
		for (i = 1; i <= NF; i++) {
			n = index($i, "=")
			key = substr($i, 1, n - 1)
			if (key == "label") lab = substr($i, n + 1)
			if (key == k) v = substr($i, n + 1)
		}
		if (lab == l && v != "") print v
	}' "$RESULTS"
}

# Numbers for people: integers from 100 up, else three significant digits.
AWK_FMT='function fmt(v) { return (v >= 100 || v <= -100) ? sprintf("%.0f", v) : sprintf("%.3g", v) }'

median() {
	sort -g | awk "$AWK_FMT"'{ a[NR] = $1 }
		END {
			if (NR == 0) { print "n/a"; exit }
			m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			print fmt(m)
		}'
}

# fig LABEL KEY: "median (run1 / run2 / ...)"
fig() {
	local m all
	m=$(vals "$1" "$2" | median)
	all=$(vals "$1" "$2" | awk "$AWK_FMT"'{ printf "%s%s", (NR > 1 ? " / " : ""), fmt($1) }')
	if [ "$RUNS" -gt 1 ]; then
		echo "$m ($all)"
	else
		echo "$m"
	fi
}

# ratio LA KA LB KB: median over runs of the same-run ratio A/B.
ratio() {
	paste <(vals "$1" "$2") <(vals "$3" "$4") |
		awk '$2 > 0 { printf "%.4f\n", $1 / $2 }' | median
}

# best_ratio LA KA LB KB max|min: best run of A over best run of B, the
# figure least disturbed by other load on a shared machine.
best_ratio() {
	local a b
	a=$(vals "$1" "$2" | sort -g | { if [ "$5" = max ]; then tail -n 1; else head -n 1; fi; })
	b=$(vals "$3" "$4" | sort -g | { if [ "$5" = max ]; then tail -n 1; else head -n 1; fi; })
	awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.4f\n", a / b; else print "n/a" }'
}

pct() {
	awk -v r="$1" 'BEGIN { if (r == "n/a") print r; else printf "%.0f%%", r * 100 }'
}

# verdict VALUE OP LIMIT: "yes" or "no"
verdict() {
	awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
		if (v == "n/a") { print "n/a"; exit }
		ok = (op == ">=") ? v >= l : (op == "<=") ? v <= l : (op == "<") ? v < l : v == l
		print ok ? "yes" : "**no**"
	}'
}

total_errors=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^errors=/) s += substr($i, 8) }
	END { print s + 0 }' "$RESULTS")

r_c1=$(ratio churn_c1 rate trivial_c1 rate)
r_c8=$(ratio churn_c8 rate trivial_c8 rate)
r_big=$(ratio bigread_64m rate sendfile rate)
r_idle=$(ratio idle_1000 p50_ms idle_1000_base p50_ms)
b_c1=$(best_ratio churn_c1 rate trivial_c1 rate max)
b_c8=$(best_ratio churn_c8 rate trivial_c8 rate max)
b_big=$(best_ratio bigread_64m rate sendfile rate max)
b_idle=$(best_ratio idle_1000 p50_ms idle_1000_base p50_ms min)
stream_rate=$(vals stream rate | median)
stream_p99=$(vals stream p99_ms | median)
idle_acc=$(vals idle_1000 idle_accepted | sort -g | head -n 1)
idle_after=$(vals idle_1000 idle_served_after | sort -g | head -n 1)
pss_idle=$(vals idle_1000 pss_per_idle_kib | median)

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$REPO_DIR" status --porcelain -- server 2>/dev/null | head -n 1)

{
	echo "# Benchmarks"
	echo
	echo "Generated by \`bench/run.sh\` (see docs/bench.md); do not edit by hand."
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| commit | \`$commit\`${dirty:+ (server/ has uncommitted changes)} |"
	echo "| machine | $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r) |"
	echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
	echo "| runs | $RUNS, $elapsed |"
	echo
	echo "Each figure is the median over the runs, with every run's value in"
	echo "brackets. Ratios pair figures from the same run. The machine may be"
	echo "shared, so absolute figures drift between runs; the ratios drift less."
	echo
	echo "## Targets"
	echo
	echo "\"measured\" is the median of the same-run ratios; \"best\" pairs the"
	echo "best run of each side, which other load on the machine disturbs least."
	echo
	echo "| target | measured | best | met |"
	echo "|---|---|---|---|"
	echo "| churn C=1 ≥ 60% of the trivial server's connections/s | $(pct "$r_c1") | $(pct "$b_c1") | $(verdict "$r_c1" ">=" 0.60) |"
	echo "| churn C=8 ≥ 50% of the trivial server's connections/s | $(pct "$r_c8") | $(pct "$b_c8") | $(verdict "$r_c8" ">=" 0.50) |"
	echo "| stream 2000 × 64 B ≥ 2000 packets/s | $stream_rate packets/s | | $(verdict "$stream_rate" ">=" 2000) |"
	echo "| stream p99 < 5 ms | $stream_p99 ms | | $(verdict "$stream_p99" "<" 5) |"
	echo "| bigread 64 MiB ≥ 80% of loopback sendfile | $(pct "$r_big") | $(pct "$b_big") | $(verdict "$r_big" ">=" 0.80) |"
	echo "| 1000 idle connections accepted and served (worst run) | $idle_acc accepted, $idle_after served after churn | | $(verdict "$idle_acc$idle_after" "==" 10001000) |"
	echo "| churn p50 with 1000 idle ≤ 1.5× without (same file growth, none held) | $(awk -v r="$r_idle" 'BEGIN { printf "%.2f×", r }') | $(awk -v r="$b_idle" 'BEGIN { printf "%.2f×", r }') | $(verdict "$r_idle" "<=" 1.5) |"
	echo "| ≤ 64 KiB PSS per idle connection | $pss_idle KiB | | $(verdict "$pss_idle" "<=" 64) |"
	echo "| zero verification errors (all runs, all workloads) | $total_errors | | $(verdict "$total_errors" "==" 0) |"
	echo
	echo "## Machine limits (aesdprobe, same runs)"
	echo
	echo "| probe | figure |"
	echo "|---|---|"
	echo "| loopback sendfile() of a 64 MiB file to a discarding reader | $(fig sendfile rate) MiB/s |"
	echo "| trivial server (in memory, $(nproc) threads), churn C=1 | $(fig trivial_c1 rate) conn/s |"
	echo "| trivial server, churn C=8 | $(fig trivial_c8 rate) conn/s |"
	echo "| fork + exit + waitpid | $(fig fork us_each) µs (the fork() call alone: $(fig fork us_call) µs) |"
	echo "| pthread_create + join | $(fig thread us_each) µs |"
	echo
	echo "## aesdsocket"
	echo
	echo "| workload | throughput | p50 ms | p99 ms | max ms | final file bytes | server CPU s | CPU µs/request | errors |"
	echo "|---|---|---|---|---|---|---|---|---|"
	row() {
		local label=$1 what=$2 unit
		unit=$(vals "$label" unit | head -n 1)
		echo "| $what | $(fig "$label" rate) $unit | $(fig "$label" p50_ms) | $(fig "$label" p99_ms) | $(fig "$label" max_ms) | $(vals "$label" final_file_bytes | median) | $(fig "$label" server_cpu_s) | $(vals "$label" server_cpu_us_per_req | median) | $(vals "$label" errors | awk '{ s += $1 } END { print s + 0 }') |"
	}
	row churn_c1 "churn C=1, 2000 × 64 B"
	row churn_c8 "churn C=8, 4000 × 64 B"
	row stream "stream, 1 connection, 2000 × 64 B"
	row bigread_16m "bigread 16 MiB, 40 requests"
	row bigread_64m "bigread 64 MiB, 10 requests"
	row idle_200 "churn C=1, 2000 × 64 B, 200 idle held"
	row idle_1000_base "churn C=1, 2000 × 64 B, after 1000 pings, none held"
	row idle_1000 "churn C=1, 2000 × 64 B, 1000 idle held"
	echo
	echo "## Memory (PSS summed over the server's processes)"
	echo
	echo "| | KiB |"
	echo "|---|---|"
	echo "| fresh server | $(fig churn_c1 pss_base_kib) |"
	echo "| after churn C=8 | $(fig churn_c8 pss_end_kib) |"
	echo "| 200 idle connections held | $(fig idle_200 pss_idle_kib) ($(vals idle_200 pss_per_idle_kib | median) per connection) |"
	echo "| 1000 idle connections held | $(fig idle_1000 pss_idle_kib) ($(vals idle_1000 pss_per_idle_kib | median) per connection) |"
	echo "| seconds until all 1000 idle connections were answered | $(fig idle_1000 idle_accept_s) |"
	echo
	echo "## Raw results"
	echo
	echo "Every line the generator and the probe printed (key=value), in run order."
	echo
	echo '```'
	cat "$RESULTS"
	echo '```'
} >"$OUT"
echo "wrote $OUT ($elapsed)" >&2
