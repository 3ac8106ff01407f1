# report.sh - BENCHMARKS.md from the result lines of bench/run.sh (sourced
# by run.sh, which sets RESULTS and RUNS). Everything on the page comes from
# those lines, the run=0 ones saying what ran where, so that the same lines
# render the same page anywhere; the page names no path of the machine.
# Every section and target appears only when its workloads ran (-A runs
# only the A/B workloads; -i may read an older report).
# shellcheck shell=bash

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

# has LABEL: whether that workload ran.
has() {
	grep -q "^run=[0-9]* label=$1 " "$RESULTS"
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

# num VALUE: a number for people, or n/a.
num() {
	awk -v v="$1" "$AWK_FMT"'BEGIN { print (v == "n/a" || v == "") ? "n/a" : fmt(v) }'
}

# Up to this many runs the page lists every run's value beside a median;
# beyond, the lowest and the highest (the raw lines keep them all), so
# that a long series keeps the page short.
LIST_RUNS=5

# in_brackets: what the page's brackets hold, in words.
in_brackets() {
	if [ "$RUNS" -gt "$LIST_RUNS" ]; then
		echo "the lowest and the highest run's value (every run's is in the raw lines)"
	else
		echo "every run's value"
	fi
}

# lowest_to_highest [SUFFIX]: "lo to hi" of the numbers on stdin.
lowest_to_highest() {
	sort -g | awk -v sfx="${1:-}" "$AWK_FMT"'NR == 1 { lo = $1 } { hi = $1 }
		END { if (NR) printf "%s%s to %s%s", fmt(lo), sfx, fmt(hi), sfx }'
}

# listing: "median (run1 / run2 / ...)" of the numbers on stdin, or
# "median (lowest to highest)" for a long series.
listing() {
	local all m
	all=$(grep . || true)
	m=$(printf '%s\n' "$all" | grep . | median)
	if [ -z "$all" ]; then
		echo "n/a"
	elif [ "$RUNS" -gt "$LIST_RUNS" ]; then
		echo "$m ($(printf '%s\n' "$all" | grep . | lowest_to_highest))"
	elif [ "$RUNS" -gt 1 ]; then
		echo "$m ($(printf '%s\n' "$all" | grep . |
			awk "$AWK_FMT"'{ printf "%s%s", (NR > 1 ? " / " : ""), fmt($1) }'))"
	else
		echo "$m"
	fi
}

# fig LABEL KEY: "median (run1 / run2 / ...)"
fig() {
	vals "$1" "$2" | listing
}

# worst LABEL KEY min|max: the worst run's value.
worst() {
	vals "$1" "$2" | sort -g | { if [ "$3" = max ]; then tail -n 1; else head -n 1; fi; }
}

# ratios LA KA LB KB: the ratio A/B of every run that has both, in run
# order (paired by run number, so a failed run on one side skips the run).
ratios() {
	awk -v la="$1" -v ka="$2" -v lb="$3" -v kb="$4" '{
		split("", kv)
		for (i = 1; i <= NF; i++) {
			n = index($i, "=")
			kv[substr($i, 1, n - 1)] = substr($i, n + 1)
		}
		if (kv["label"] == la && (ka in kv)) a[kv["run"]] = kv[ka]
		if (kv["label"] == lb && (kb in kv)) b[kv["run"]] = kv[kb]
	}
	END { for (r in a) if ((r in b) && b[r] > 0) printf "%d %.4f\n", r, a[r] / b[r] }' \
		"$RESULTS" | sort -n | cut -d' ' -f2
}

# ratio LA KA LB KB: median over runs of the same-run ratio A/B.
ratio() {
	ratios "$@" | median
}

# share_runs LA KA LB KB: every run's same-run ratio A/B as a percentage,
# "66% / 75% / ...".
share_runs() {
	if [ "$RUNS" -gt "$LIST_RUNS" ]; then
		ratios "$@" | awk '{ printf "%.0f\n", $1 * 100 }' | lowest_to_highest %
	else
		ratios "$@" | awk '{ printf "%s%.0f%%", (NR > 1 ? " / " : ""), $1 * 100 }'
	fi
}

# best_ratio LA KA LB KB max|min: best run of A over best run of B, the
# figure least disturbed by other load on a shared machine.
best_ratio() {
	local a b
	a=$(worst "$1" "$2" "$5")
	b=$(worst "$3" "$4" "$5")
	awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.4f\n", a / b; else print "n/a" }'
}

# mib KIB: MiB with one decimal, or n/a.
mib() {
	awk -v v="$1" 'BEGIN { if (v == "" || v == "n/a") print "n/a"; else printf "%.1f\n", v / 1024 }'
}

pct() {
	awk -v r="$1" 'BEGIN { if (r == "n/a") print r; else printf "%.0f%%", r * 100 }'
}

# verdict VALUE OP LIMIT: "yes" or "no"
verdict() {
	awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
		if (v == "n/a" || v == "") { print "n/a"; exit }
		ok = (op == ">=") ? v >= l : (op == "<=") ? v <= l : (op == "<") ? v < l : v == l
		print ok ? "yes" : "**no**"
	}'
}

# The workloads compared in A/B mode: label, then what the report calls it.
AB_WORKLOADS=(
	churn_c1 "churn C=1, 2000 × 64 B"
	churn_c8 "churn C=8, 4000 × 64 B"
	stream "stream, 1 connection, 2000 × 64 B"
	bigread_16m "bigread 16 MiB, 40 requests"
	bigread_64m "bigread 64 MiB, 10 requests"
)

# text LABEL KEY [DEFAULT]: a text field of a run=0 line ("_" for each
# space), or DEFAULT.
text() {
	local v
	v=$(vals "$1" "$2" | head -n 1)
	v=${v:-${3-unknown}}
	echo "${v//_/ }"
}

# binary LABEL: what a run=0 line says the binary was (older lines gave
# its path: only its file name is shown).
binary() {
	local name
	name=$(text "$1" name "")
	[ -n "$name" ] || name=$(basename "$(text "$1" path)")
	echo "$name, sha256 \`$(vals "$1" sha256)\`"
}

# header RAWFILE
header() {
	local elapsed dirty=""
	[ "$(vals meta server_dirty)" != 1 ] || dirty=" (server/ had uncommitted changes)"
	elapsed=$(vals meta elapsed_s)
	echo "# Benchmarks"
	echo
	echo "Generated by \`bench/run.sh\` (see docs/bench.md); do not edit by hand."
	echo "Every result line it read is in [$1]($1), from which"
	echo "\`bench/run.sh -i $1\` writes this page again."
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(text meta date) |"
	echo "| commit | \`$(text meta commit)\`$dirty |"
	if has server_a; then echo "| server (A) | $(binary server_a) |"; fi
	if has server_b; then echo "| compared with (B) | $(binary server_b) |"; fi
	if has meta; then
		echo "| machine | $(text meta cpus) CPUs, $(text meta cpu), $(text meta kernel) |"
	else
		echo "| machine | unknown |"
	fi
	if has u_churn_c1 || has u_stream; then
		echo "| and with itself unconfined (U) | the same binary with \`--no-syscall-filter\` |"
	fi
	echo "| load average at the end | $(text meta load_end) |"
	echo "| runs | $RUNS${elapsed:+, $elapsed s in all} |"
	echo
	echo "Each figure is the median over the runs, with $(in_brackets) in"
	echo "brackets. Ratios pair figures from the same run. The machine may be"
	echo "shared, so absolute figures drift between runs; the ratios drift less."
}

# ab_target LABEL WHAT MIN: the same-run ratio A/B of a throughput.
ab_target() {
	local r b
	has "b_$1" || return 0
	r=$(ratio "$1" rate "b_$1" rate)
	b=$(best_ratio "$1" rate "b_$1" rate max)
	echo "| $2 ≥ $3 × B (same-run ratio of throughput) | $(ratios "$1" rate "b_$1" rate | listing) | $(num "$b") | $(verdict "$r" ">=" "$3") |"
}

# served LABEL: "S of N served" for the worst run of a slow workload.
served() {
	local failed count
	failed=$(worst "$1" new_failed max)
	count=$(worst "$1" new_count max)
	[ -n "$count" ] || { echo "n/a"; return; }
	echo "$((count - failed)) of $count served"
}

# both VERDICT VERDICT: yes when both are.
both() {
	if [ "$1" = yes ] && [ "$2" = yes ]; then echo yes
	elif [ "$1" = n/a ] || [ "$2" = n/a ]; then echo n/a
	else echo "**no**"; fi
}

# b_slow_fig LABEL KEY UNIT: ", B: value" from B's run of a slow workload.
b_slow_fig() {
	has "b_$1" || return 0
	echo "; B: $(vals "b_$1" "$2" | median) $3, $(served "b_$1")"
}

# slow_what LABEL: what the slow clients of that workload were.
slow_what() {
	local k b z
	k=$(vals "$1" slow | head -n 1)
	b=$(vals "$1" big | head -n 1)
	z=$(vals "$1" big_bytes | head -n 1)
	echo -n "$k trickling a byte every $(vals "$1" trickle_ms | head -n 1) ms"
	[ "${b:-0}" -eq 0 ] || echo -n " + $b holding a $((z / 1024)) KiB partial packet"
	echo
}

slow_targets() {
	local l what v f
	if has slow; then
		v=$(vals slow new_p99_ms | median)
		f=$(worst slow new_failed max)
		what=$(slow_what slow)
		echo "| slow clients ($what): every new client served, first response p99 ≤ 50 ms (a failed one counts at its timeout) | $(fig slow new_p99_ms) ms, $(served slow)$(b_slow_fig slow new_p99_ms ms) | | $(both "$(verdict "$v" "<=" 50)" "$(verdict "$f" "==" 0)") |"
		v=$(worst slow pss_peak_kib max)
		echo "| slow clients: PSS of the server's whole process tree ≤ 64 MiB (peak, worst run) | $(mib "$v") MiB$(has b_slow && echo "; B: $(mib "$(worst b_slow pss_peak_kib max)") MiB") | | $(verdict "$v" "<=" 65536) |"
	fi
	for l in slow_33 slow_200; do
		has "$l" || continue
		v=$(worst "$l" new_max_ms max)
		f=$(worst "$l" new_failed max)
		echo "| $(vals "$l" slow | head -n 1) slow clients (issue 14's test, measured here too): every new client answered within 1 s (worst run) | $(num "$v") ms, $(served "$l")$(has "b_$l" && echo "; B: $(num "$(worst "b_$l" new_max_ms max)") ms, $(served "b_$l")") | | $(both "$(verdict "$v" "<=" 1000)" "$(verdict "$f" "==" 0)") |"
	done
}

churn_targets() {
	local r b
	ab_target churn_c1 "churn C=1" 1.25
	if has trivial_c1 && has churn_c1; then
		r=$(ratio churn_c1 rate trivial_c1 rate)
		b=$(best_ratio churn_c1 rate trivial_c1 rate max)
		echo "| churn C=1 ≥ 85% of the trivial server's connections/s (same-run ratio) | $(pct "$r") ($(share_runs churn_c1 rate trivial_c1 rate)) | $(pct "$b") | $(verdict "$r" ">=" 0.85) |"
	fi
	ab_target churn_c8 "churn C=8" 1.15
	ab_target stream "stream" 0.95
	ab_target bigread_16m "bigread 16 MiB" 0.95
	ab_target bigread_64m "bigread 64 MiB" 0.95
}

# Targets of earlier issues that still hold.
earlier_targets() {
	local r b
	if has stream; then
		r=$(vals stream rate | median)
		echo "| stream 2000 × 64 B ≥ 2000 packets/s | $r packets/s | | $(verdict "$r" ">=" 2000) |"
		r=$(vals stream p99_ms | median)
		echo "| stream p99 < 5 ms | $r ms | | $(verdict "$r" "<" 5) |"
	fi
	if has sendfile && has bigread_64m; then
		r=$(ratio bigread_64m rate sendfile rate)
		b=$(best_ratio bigread_64m rate sendfile rate max)
		echo "| bigread 64 MiB ≥ 80% of loopback sendfile | $(pct "$r") | $(pct "$b") | $(verdict "$r" ">=" 0.80) |"
	fi
	if has held && has held_base; then
		r=$(ratio held rate held_base rate)
		b=$(best_ratio held rate held_base rate max)
		echo "| churn while $(worst held hold max) are held ≥ 80% of churn without (same file growth) | $(pct "$r") | $(pct "$b") | $(verdict "$r" ">=" 0.80) |"
	fi
}

held_targets() {
	local k acc closed served ok v
	k=$(worst held hold max)
	acc=$(worst held hold_accepted min)
	closed=$(worst held hold_closed_early max)
	served=$(worst held hold_served_after min)
	ok="**no**"
	[ "${acc:--}" = "$k" ] && [ "${closed:--}" = 0 ] && [ "${served:--}" = "$k" ] && ok=yes
	echo "| $k connections held with the default options (half never sent a byte, half idle after one exchange): all accepted, none closed early, all served after (worst run) | ${acc:-n/a} accepted, ${closed:-n/a} closed early, ${served:-n/a} served after | | $ok |"
	v=$(vals held new_p99_ms | median)
	echo "| new client's first response p99 ≤ 50 ms while $k are held | $(fig held new_p99_ms) ms | | $(verdict "$v" "<=" 50) |"
	v=$(vals held pss_per_held_kib | median)
	echo "| ≤ 2 KiB PSS (whole process tree) per held connection | $v KiB | | $(verdict "$v" "<=" 2) |"
}

targets() {
	local errors
	# A's lines only: B's slow runs count their new clients' timeouts
	errors=$(awk '$2 !~ /^label=b_/ { for (i = 1; i <= NF; i++) if ($i ~ /^errors=/) s += substr($i, 8) }
		END { print s + 0 }' "$RESULTS")
	echo "## Targets"
	echo
	echo "Issue 14's targets. \"measured\" is the median over the runs (of the"
	echo "same-run ratios, for a ratio) with $(in_brackets) in brackets;"
	echo "\"best\" pairs the best run of each side, which other load on the"
	echo "machine disturbs least. B's slow figures are from its first run."
	echo
	echo "| target | measured | best | met |"
	echo "|---|---|---|---|"
	slow_targets
	if has held; then held_targets; fi
	churn_targets
	echo "| zero verification errors (A: all runs, all workloads) | $errors | | $(verdict "$errors" "==" 0) |"
	if has stream || has held_base; then
		echo
		echo "Earlier issues' targets, still checked:"
		echo
		echo "| target | measured | best | met |"
		echo "|---|---|---|---|"
		earlier_targets
	fi
}

ab_section() {
	local i l what
	has server_b || return 0
	echo
	echo "## A/B: A against B in the same runs"
	echo
	echo "Each workload ran on A and on B back to back, each on a fresh server"
	echo "with its default options: A first in odd runs, B first in even runs."
	echo "A/B is the ratio of the two throughputs within each run: the median,"
	echo "then $(in_brackets)."
	if has held; then
		echo "The held workload ran on A only: its targets are absolute, and B"
		echo "(issue 9's server) was built to meet them."
	fi
	if has b_slow || has b_slow_33 || has b_slow_200; then
		echo "The slow workloads ran on B in the first run only: B stalls until"
		echo "its 60 s idle timeout closes the slow clients, so each takes about a"
		echo "minute there, and their targets are absolute (see Slow clients)."
	fi
	echo
	echo "| workload | A | B | A/B | A CPU µs/request | B CPU µs/request |"
	echo "|---|---|---|---|---|---|"
	for ((i = 0; i < ${#AB_WORKLOADS[@]}; i += 2)); do
		l=${AB_WORKLOADS[i]} what=${AB_WORKLOADS[i + 1]}
		has "b_$l" || continue
		echo "| $what | $(fig "$l" rate) $(vals "$l" unit | head -n 1) | $(fig "b_$l" rate) | $(ratios "$l" rate "b_$l" rate | listing) | $(vals "$l" server_cpu_us_per_req | median) | $(vals "b_$l" server_cpu_us_per_req | median) |"
	done
}

# A against the same binary with its workers' filter off (run.sh -F).
confinement_section() {
	local i l what r c
	has u_churn_c1 || has u_stream || return 0
	echo
	echo "## Confinement: A against itself with its filter off"
	echo
	echo "Each workload ran on A and on the same binary started with"
	echo "\`--no-syscall-filter\` (U), back to back, each on a fresh server: A"
	echo "first in odd runs, U first in even runs. A/U is the ratio of the two"
	echo "throughputs within each run: the median, then $(in_brackets)."
	echo "Issue 19's target: A within 3% of U (A/U ≥ 0.97)."
	echo
	echo "| workload | A | U | A/U | met | A CPU µs/request | U CPU µs/request |"
	echo "|---|---|---|---|---|---|---|"
	for ((i = 0; i < ${#AB_WORKLOADS[@]}; i += 2)); do
		l=${AB_WORKLOADS[i]} what=${AB_WORKLOADS[i + 1]}
		has "u_$l" || continue
		r=$(ratio "$l" rate "u_$l" rate)
		echo "| $what | $(fig "$l" rate) $(vals "$l" unit | head -n 1) | $(fig "u_$l" rate) | $(ratios "$l" rate "u_$l" rate | listing) | $(verdict "$r" ">=" 0.97) | $(vals "$l" server_cpu_us_per_req | median) | $(vals "u_$l" server_cpu_us_per_req | median) |"
	done
	has seccomp || return 0
	echo
	echo "The filter per call (\`aesdprobe seccomp\`), in ns: the same calls in"
	echo "a process without the filter and in a child that loaded the workers'"
	echo "own, taking turns for 20 rounds of 50,000 calls; each run's figure is"
	echo "a side's least disturbed round. A call the filter allows whatever its"
	echo "arguments (\`getpid\`, \`recvfrom\`) skips the filter through the"
	echo "kernel's cache (Linux 5.11 and later) but still pays the slower way"
	echo "into and out of the kernel that any filter brings; \`fstat\` (glibc's"
	echo "\`newfstatat(fd, \"\", AT_EMPTY_PATH)\`) has its flags checked, so it"
	echo "runs the filter."
	echo
	echo "| call | without the filter | with it | difference (medians) |"
	echo "|---|---|---|---|"
	for c in getpid fstat recv; do
		echo "| \`$c\` | $(fig seccomp "${c}_off_ns") | $(fig seccomp "${c}_on_ns") | $(awk -v a="$(vals seccomp "${c}_on_ns" | median)" -v b="$(vals seccomp "${c}_off_ns" | median)" 'BEGIN { printf "%+.0f\n", a - b }') |"
	done
}

limits_section() {
	has sendfile || return 0
	echo
	echo "## Machine limits (aesdprobe, same runs)"
	echo
	echo "| probe | figure |"
	echo "|---|---|"
	echo "| loopback sendfile() of a 64 MiB file to a discarding reader | $(fig sendfile rate) MiB/s |"
	echo "| trivial server (in memory, one thread per CPU), churn C=1 | $(fig trivial_c1 rate) conn/s |"
	echo "| trivial server, churn C=8 | $(fig trivial_c8 rate) conn/s |"
	if has trivial_keep_c1; then
		echo "| trivial server keeping each connection until the client closes it (\`-k\`, a thread each), churn C=1 | $(fig trivial_keep_c1 rate) conn/s |"
		if has churn_c1; then
			echo "| churn C=1 of A as a share of that server's (same-run ratio) | $(pct "$(ratio churn_c1 rate trivial_keep_c1 rate)") ($(share_runs churn_c1 rate trivial_keep_c1 rate)) |"
		fi
	fi
	if has churn_c8; then
		echo "| churn C=8 of A as a share of the trivial server's (same-run ratio) | $(pct "$(ratio churn_c8 rate trivial_c8 rate)") |"
	fi
	echo "| fork + exit + waitpid | $(fig fork us_each) µs (the fork() call alone: $(fig fork us_call) µs) |"
	echo "| pthread_create + join | $(fig thread us_each) µs |"
}

row() {
	local label=$1 what=$2 unit
	has "$label" || return 0
	unit=$(vals "$label" unit | head -n 1)
	echo "| $what | $(fig "$label" rate) $unit | $(fig "$label" p50_ms) | $(fig "$label" p99_ms) | $(fig "$label" max_ms) | $(vals "$label" final_file_bytes | median) | $(fig "$label" server_cpu_s) | $(vals "$label" server_cpu_us_per_req | median) | $(vals "$label" errors | awk '{ s += $1 } END { print s + 0 }') |"
}

workloads_section() {
	local i
	echo
	echo "## aesdsocket (A)"
	echo
	echo "| workload | throughput | p50 ms | p99 ms | max ms | final file bytes | server CPU s | CPU µs/request | errors |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for ((i = 0; i < ${#AB_WORKLOADS[@]}; i += 2)); do
		row "${AB_WORKLOADS[i]}" "${AB_WORKLOADS[i + 1]}"
	done
	row held_base "churn C=1, 2000 × 64 B, nothing held (after the same file growth)"
	row held "churn C=1, 2000 × 64 B, $(worst held hold max) connections held"
}

held_section() {
	local k
	has held || return 0
	k=$(worst held hold max)
	echo
	echo "## Held connections (held workload, default options)"
	echo
	echo "$k connections opened at once: the even ones never send a byte, the"
	echo "odd ones do one exchange each, one after another, then stay idle. While"
	echo "all are held, $(vals held new_count | head -n 1) new clients are timed one after another (connect"
	echo "to the last byte of the first response), then churn runs; then every"
	echo "held connection is checked open and sends one packet."
	echo
	echo "| | $k held | nothing held |"
	echo "|---|---|---|"
	echo "| new client's first response, p50 ms | $(fig held new_p50_ms) | $(fig held_base new_p50_ms) |"
	echo "| new client's first response, p99 ms | $(fig held new_p99_ms) | $(fig held_base new_p99_ms) |"
	echo "| new client's first response, max ms | $(fig held new_max_ms) | $(fig held_base new_max_ms) |"
	echo "| churn C=1, conn/s | $(fig held rate) | $(fig held_base rate) |"
	echo "| churn C=1, p99 ms | $(fig held p99_ms) | $(fig held_base p99_ms) |"
	echo
	echo "| held connections | |"
	echo "|---|---|"
	echo "| opened / accepted by the server / closed early / served after / ended cleanly (worst run) | $(worst held hold_connected min) / $(worst held hold_accepted min) / $(worst held hold_closed_early max) / $(worst held hold_served_after min) / $(worst held hold_ended min) |"
	echo "| seconds from the last connect until the server had accepted all | $(fig held hold_accept_s) |"
	echo "| the odd ones' one exchange: p50 / p99 / max ms | $(vals held hold_xchg_p50_ms | median) / $(vals held hold_xchg_p99_ms | median) / $(vals held hold_xchg_max_ms | median) |"
	echo "| seconds held before the final packet (the idle timeout is 60 s) | $(fig held hold_s) |"
	echo "| listen queue overflows / SYN cookies sent while connecting (machine-wide) | $(fig held listen_overflows) / $(fig held syncookies_sent) |"
}

# scell LABEL KEY: the median of a slow workload's figure, "–" when it
# did not run.
scell() {
	if has "$1"; then vals "$1" "$2" | median; else echo "–"; fi
}

# span LABEL FROM TO: "a–b" of two medians, or "a" when they are equal.
span() {
	local a b
	a=$(vals "$1" "$2" | median)
	b=$(vals "$1" "$3" | median)
	if [ "$a" = "$b" ]; then echo "$a"; else echo "$a–$b"; fi
}

# closed LABEL WHAT: how many WHAT clients the server closed, and when
# (medians over the runs that closed any).
closed() {
	local n
	has "$1" || { echo "–"; return; }
	n=$(vals "$1" "$2_closed" | median)
	if [ "$n" = 0 ]; then
		echo 0
	else
		echo "$n at $(span "$1" "$2_closed_first_s" "$2_closed_last_s") s"
	fi
}

slow_row() {
	local what=$1 l out=""
	shift
	for l in slow b_slow slow_33 b_slow_33 slow_200 b_slow_200; do
		out+=" $("$@" "$l") |"
	done
	echo "| $what |$out"
}

# Cells of the slow table: each takes the label last.
cell() { scell "$2" "$1"; }
cell_served() { if has "$1"; then echo "$(vals "$1" new_ok | median) / $(vals "$1" new_failed | median)"; else echo "–"; fi; }
cell_closed() { closed "$2" "$1"; }
cell_mib() { if has "$1"; then mib "$(vals "$1" pss_peak_kib | median)"; else echo "–"; fi; }
cell_open() { if has "$1"; then echo "$(vals "$1" slow_connected | median) + $(vals "$1" big_connected | median) / $(vals "$1" slow_accepted | median)"; else echo "–"; fi; }
cell_phase() { if has "$1"; then span "$1" new_from_s new_to_s; else echo "–"; fi; }
cell_big() { if has "$1"; then echo "$(vals "$1" big_sent | median) / $(mib "$(vals "$1" big_read_kib | median)")"; else echo "–"; fi; }

slow_section() {
	has slow || has slow_33 || has slow_200 || return 0
	echo
	echo "## Slow clients (slow workloads, default options)"
	echo
	echo "Slow clients held open while new clients are timed: tricklers send one"
	echo "byte every $(vals slow trickle_ms | head -n 1) ms and never a newline; big clients send a partial"
	echo "packet at once (no newline), then stay silent. Once the server has"
	echo "accepted them all and read what it will of the big packets, new"
	echo "clients connect one after another, $(vals slow new_interval_ms | head -n 1) ms apart, each sending one"
	echo "packet; a new client's time runs from connect to the last byte of its"
	echo "response, and one that fails counts at the time it gave up (its"
	echo "timeout: $(vals slow new_timeout_ms | head -n 1) ms for \`slow\`, $(vals slow_33 new_timeout_ms | head -n 1) ms for the others, so that"
	echo "a one-minute stall shows). A: median over the runs; B: its first run."
	echo
	echo "| | A: $(slow_what slow) | B: same | A: $(vals slow_33 slow | head -n 1) tricklers | B: same | A: $(vals slow_200 slow | head -n 1) tricklers | B: same |"
	echo "|---|---|---|---|---|---|---|"
	slow_row "slow clients: tricklers + big connected / accepted by the server" cell_open
	slow_row "big partial packets handed to the kernel in full / MiB the server had read" cell_big
	slow_row "seconds until settled (accepted, big packets read or no longer read)" cell settle_s
	slow_row "new clients served / failed" cell_served
	slow_row "new client's first response, p50 ms" cell new_p50_ms
	slow_row "new client's first response, p99 ms" cell new_p99_ms
	slow_row "new client's first response, max ms" cell new_max_ms
	slow_row "slowest served new client, ms" cell new_ok_max_ms
	slow_row "new clients' phase, seconds after the slow clients connected" cell_phase
	slow_row "tricklers the server closed (when, s after they connected)" cell_closed slow
	slow_row "big clients the server closed (when)" cell_closed big
	slow_row "PSS of the server's process tree at the peak, MiB" cell_mib
	slow_row "generator: latest trickle behind its schedule, ms" cell trickle_lag_max_ms
}

memory_section() {
	echo
	echo "## Memory"
	echo
	echo "PSS from \`smaps_rollup\`, summed over the server's processes (page"
	echo "tables are not part of it)."
	echo
	echo "| | KiB |"
	echo "|---|---|"
	if has churn_c1; then echo "| fresh server | $(fig churn_c1 pss_base_kib) |"; fi
	if has churn_c8; then echo "| after churn C=8 | $(fig churn_c8 pss_end_kib) |"; fi
	if has held; then
		echo "| $(worst held hold max) connections held | $(fig held pss_held_kib) ($(vals held pss_per_held_kib | median) per connection) |"
		echo "| kernel slab per held connection: both ends of a loopback connection, machine-wide, approximate | $(fig held kern_slab_per_held_kib) |"
	fi
	if has slow; then
		echo "| slow clients ($(slow_what slow)), peak | $(fig slow pss_peak_kib)$(has b_slow && echo "; B: $(vals b_slow pss_peak_kib | median)") |"
	fi
}

# report RAWFILE: the whole of BENCHMARKS.md, whose raw lines are in
# RAWFILE (beside it).
report() {
	header "$1"
	echo
	targets
	ab_section
	confinement_section
	limits_section
	workloads_section
	held_section
	slow_section
	memory_section
}
