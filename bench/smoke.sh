#!/bin/bash
# smoke.sh - correctness-only run of the load generator, for CI: every
# workload once with tiny counts against a fresh aesdsocket, expecting zero
# verification errors (and, for held, 300 connections held with the default
# options and every one served afterwards); then the generator against the
# probe's trivial server, clean and with each injected bug, to show the
# checks can fail.
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
