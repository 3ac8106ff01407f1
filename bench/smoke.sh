#!/bin/bash
# smoke.sh - correctness-only run of the load generator, for CI: every
# workload once with tiny counts against a fresh aesdsocket, expecting zero
# verification errors (and, for held, 300 connections held with the default
# options and every one served afterwards; for slow, 20 tricklers and 2 big
# partial packets held while 20 new clients are served); then the generator
# against the probe's trivial server, clean and with each injected bug, to
# show the checks can fail; then BENCHMARKS.md rendered from the slow lines
# (the page, and its raw lines in a file beside it).
# No timing is asserted. Last line: "bench-smoke: N passed, M failed".
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

passed=0
failed=0
WORK=$(mktemp -d)
trap 'stop_all; rm -rf "$WORK"' EXIT

ok() {
	passed=$((passed + 1))
	echo "ok - $1"
}

not_ok() {
	failed=$((failed + 1))
	echo "not ok - $1"
	shift
	printf '#   %s\n' "$@"
}

# expect_clean NAME LINE [KEY=VALUE...]: zero errors and the given fields.
expect_clean() {
	local name=$1 line=$2 kv want got
	shift 2
	if [ -z "$line" ]; then
		not_ok "$name" "no result line"
		return
	fi
	for kv in errors=0 "$@"; do
		want=${kv#*=}
		got=$(field "$line" "${kv%%=*}") || got="(missing)"
		if [ "$got" != "$want" ]; then
			not_ok "$name" "${kv%%=*}=$got, expected $want" "$line"
			return
		fi
	done
	ok "$name"
}

# run_load ARGS...: the generator's result line (its exit status is 1 when
# it counted errors, which the callers check through the line).
run_load() {
	timeout 120 "$LOAD" "$@" || true
}

build_all "$WORK"

# The real server: each workload on a fresh instance.
start_server "$WORK" -c 64
expect_clean "churn: 2 clients, 60 connections" \
	"$(run_load churn -p "$SERVER_PORT" -c 2 -n 60 -s 64)" ok=60 failed=0
stop_server || not_ok "server exits 0 after churn" "status $?"

start_server "$WORK" -c 64
expect_clean "stream: 2 connections x 100 packets" \
	"$(run_load stream -p "$SERVER_PORT" -c 2 -n 100 -s 64)" ok=200 failed=0
stop_server || not_ok "server exits 0 after stream" "status $?"

start_server "$WORK" -c 64
expect_clean "bigread: 3 MiB file, 5 requests" \
	"$(run_load bigread -p "$SERVER_PORT" -F 3M -g 500000 -r 5)" ok=5 failed=0
stop_server || not_ok "server exits 0 after bigread" "status $?"

start_server "$WORK" -c 64
expect_clean "idle: 20 held while churning 30" \
	"$(run_load idle -p "$SERVER_PORT" -k 20 -c 2 -n 30 -P "$SERVER_PID")" \
	ok=30 idle_held=20 idle_accepted=20 idle_served_after=20
stop_server || not_ok "server exits 0 after idle" "status $?"

start_server "$WORK" -c 64
expect_clean "idle baseline: 20 pings on one connection, then churn 30" \
	"$(run_load idle -b -p "$SERVER_PORT" -k 20 -c 2 -n 30)" \
	ok=30 idle_held=0 idle_accepted=20
stop_server || not_ok "server exits 0 after idle baseline" "status $?"

# Issue 9's availability target, in small: with the default options, 300
# connections held (half silent, half idle after one exchange) while new
# clients and churn are served; afterwards every one is open and answers.
start_server "$WORK"
expect_clean "held: 300 held with default options, new clients and churn meanwhile" \
	"$(run_load held -p "$SERVER_PORT" -k 300 -L 20 -c 2 -n 30 -P "$SERVER_PID")" \
	ok=30 hold_connected=300 hold_exchanged=150 hold_accepted=300 \
	hold_closed_early=0 hold_served_after=300 hold_ended=300 new_ok=20
stop_server || not_ok "server exits 0 after held" "status $?"

start_server "$WORK"
expect_clean "held baseline: the same growth over one connection, then churn" \
	"$(run_load held -b -p "$SERVER_PORT" -k 300 -L 20 -c 2 -n 30)" \
	ok=30 hold_connected=0 hold_exchanged=150 new_ok=20
stop_server || not_ok "server exits 0 after held baseline" "status $?"

# Issue 14's slow clients, in small: tricklers and big partial packets
# held while new clients are served; the server closes none of them.
SLOW_LINES="$WORK/slow-results"
: >"$SLOW_LINES"
start_server "$WORK"
line=$(run_load slow -p "$SERVER_PORT" -P "$SERVER_PID" -k 20 -B 2 -z 100K -R 100 -L 20 -I 5)
expect_clean "slow: 20 tricklers and 2 x 100 KiB partial packets held, 20 new clients served" \
	"$line" slow_connected=20 big_connected=2 big_sent=2 \
	settle_timed_out=0 slow_closed=0 big_closed=0 slow_open_end=20 big_open_end=2 \
	new_started=20 new_ok=20 new_failed=0
for key in new_p99_ms new_max_ms pss_peak_kib trickle_bytes; do
	field "$line" "$key" >/dev/null || not_ok "slow: the line has $key" "$line"
done
echo "run=1 label=slow $line" >>"$SLOW_LINES"
echo "run=1 label=b_slow $line" >>"$SLOW_LINES"
stop_server || not_ok "server exits 0 after slow" "status $?"

start_server "$WORK"
line=$(run_load slow -p "$SERVER_PORT" -P "$SERVER_PID" -k 3 -B 0 -R 100 -L 5 -I 5)
expect_clean "slow: 3 tricklers, 5 new clients served" "$line" \
	slow_connected=3 slow_closed=0 new_ok=5 new_failed=0
echo "run=1 label=slow_33 $line" >>"$SLOW_LINES"
echo "run=1 label=b_slow_33 $line" >>"$SLOW_LINES"
stop_server || not_ok "server exits 0 after slow with tricklers only" "status $?"

# With a 1 s idle timeout the server closes every slow client while 400
# new clients, 10 ms apart, are served: the generator must see it.
start_server "$WORK" -i 1
line=$(run_load slow -p "$SERVER_PORT" -k 5 -B 1 -z 10K -R 100 -L 400 -I 10)
expect_clean "slow: the server's idle timeout closes the slow clients, and that is seen" \
	"$line" slow_closed=5 big_closed=1 slow_open_end=0 big_open_end=0 new_ok=400
stop_server || not_ok "server exits 0 after slow with -i 1" "status $?"

# The report renders the slow workloads: their rows, with figures.
if "$BENCH_DIR/run.sh" -i "$SLOW_LINES" -o "$WORK/report.md" 2>"$WORK/report.err"; then
	rows=$(sed -n '/^## Slow clients/,/^## /p' "$WORK/report.md" | grep -c '^| ' || true)
	bad=$(sed -n '/^## Slow clients/,/^## /p' "$WORK/report.md" | grep '^| ' | grep 'n/a' || true)
	if ! grep -q '^| slow clients (20 trickling a byte every 100 ms + 2 holding a 100 KiB partial packet): every new client served' "$WORK/report.md"; then
		not_ok "report: the slow clients' target" "$(grep -c . "$WORK/report.md") lines"
	elif ! grep -q '^| 3 slow clients (issue 14.s test' "$WORK/report.md"; then
		not_ok "report: the few slow clients' target"
	elif [ "$rows" -lt 14 ] || [ -n "$bad" ]; then
		not_ok "report: the slow clients' table" "$rows rows" "$bad"
	elif grep -q '^run=' "$WORK/report.md" ||
		! grep -qF '[report.raw](report.raw)' "$WORK/report.md" ||
		! diff <(grep '^run=' "$WORK/report.raw") "$SLOW_LINES" >/dev/null; then
		not_ok "report: the raw lines in report.raw beside the page, not on it"
	else
		ok "report: slow clients' targets and table ($rows rows), the raw lines beside it"
	fi
else
	not_ok "report renders from the slow lines" "$(cat "$WORK/report.err")"
fi

# The generator itself: clean against the trivial server ...
start_trivial -k
expect_clean "generator: trivial server, stream" \
	"$(run_load stream -p "$SERVER_PORT" -n 50)" ok=50
stop_server || true

start_trivial -k
expect_clean "generator: trivial server, held" \
	"$(run_load held -p "$SERVER_PORT" -k 100 -L 5 -n 10)" \
	hold_closed_early=0 hold_served_after=100 hold_ended=100
stop_server || true

# ... and it must see each kind of broken server.
for bug in short flip dup extra; do
	start_trivial -k -B "$bug"
	line=$(run_load churn -p "$SERVER_PORT" -c 2 -n 20 -t 1000)
	errors=$(field "$line" errors) || errors=""
	if [ -n "$errors" ] && [ "$errors" -gt 0 ]; then
		ok "generator detects a server with bug '$bug' ($errors errors)"
	else
		not_ok "generator detects a server with bug '$bug'" "$line"
	fi
	stop_server || true
done

start_trivial -k
expect_clean "generator: trivial server, slow clients" \
	"$(run_load slow -p "$SERVER_PORT" -k 10 -B 2 -z 100K -R 100 -L 10 -I 0)" \
	slow_closed=0 big_closed=0 new_ok=10
stop_server || true

# One thread serving one connection at a time is pinned by one trickler:
# the new clients time out, and the generator counts them as failed.
start_trivial -t 1
line=$(run_load slow -p "$SERVER_PORT" -k 1 -B 0 -R 100 -L 3 -I 0 -T 500 -t 5000)
nfailed=$(field "$line" new_failed) || nfailed=""
errors=$(field "$line" errors) || errors=""
if [ "$nfailed" = 3 ] && [ "${errors:-0}" -ge 3 ]; then
	ok "generator sees a server pinned by one slow client (3 new clients failed)"
else
	not_ok "generator sees a server pinned by one slow client" "$line"
fi
stop_server || true

# A server that closes a connection idle after one exchange: no wrong
# byte, so no error, but the held connections are not all served after.
start_trivial -k -B close
line=$(run_load held -p "$SERVER_PORT" -k 100 -L 5 -n 10 -t 2000)
closed=$(field "$line" hold_closed_early) || closed=""
served=$(field "$line" hold_served_after) || served=""
if [ "${closed:-0}" -gt 0 ] && [ "${served:-100}" -lt 100 ]; then
	ok "generator detects a server that closes idle connections ($closed closed, $served served after)"
else
	not_ok "generator detects a server that closes idle connections" "$line"
fi
stop_server || true

echo "bench-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
