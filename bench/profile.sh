#!/bin/bash
# profile.sh - where aesdsocket spends its work in churn and stream, in
# figures that do not drift with the machine's load:
#   system calls per request      strace -f -c over the server's processes
#   instructions per request      valgrind --tool=callgrind (user space), as
#                                 the difference between n and 2n requests so
#                                 that start-up drops out, and the top
#                                 functions of the busiest process
# usage: bench/profile.sh [-n REQUESTS]   (default 400; about a minute)
# Needs strace and valgrind. Prints a plain-text report on stdout.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

N=400
while getopts "n:h" opt; do
	case $opt in
	n) N=$OPTARG ;;
	h) sed -n '2,10p' "$0"; exit 0 ;;
	*) exit 2 ;;
	esac
done
case $N in
'' | *[!0-9]* | 0) echo "profile.sh: -n needs a positive number" >&2; exit 2 ;;
esac
for tool in strace valgrind callgrind_annotate; do
	command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing" >&2; exit 1; }
done

WORK=$(mktemp -d)
trap 'stop_all; rm -rf "$WORK"' EXIT
build_all "$WORK"

# valgrind makes the server's system calls itself and maps executable
# code, which the workers' filter kills: a server that has one runs
# without it under valgrind (an older one has no such option).
UNFILTERED=()
# shellcheck disable=SC2153 # SERVER is lib.sh's
if "$SERVER" --help 2>/dev/null | grep -q -- --no-syscall-filter; then
	UNFILTERED=(--no-syscall-filter)
fi

# under WRAPPER... -- LOAD ARGS...: run the server under a tool, run the
# load against it, stop the server (SIGTERM to the server, not the tool).
under() {
	local wrapper=() load pid server options=()
	while [ "$1" != "--" ]; do
		wrapper+=("$1")
		shift
	done
	shift
	[ "${wrapper[0]}" != valgrind ] || options=("${UNFILTERED[@]}")
	SERVER_PORT=$("$PROBE" freeport)
	rm -f "$WORK/data"
	"${wrapper[@]}" "$SERVER" -p "$SERVER_PORT" -b 127.0.0.1 -f "$WORK/data" \
		"${options[@]}" 2>>"$WORK/server.log" &
	pid=$!
	STARTED_PIDS+=("$pid")
	"$LOAD" wait -p "$SERVER_PORT" -t 60000
	load=$("$LOAD" "$@" -p "$SERVER_PORT" -t 60000) || {
		echo "profile.sh: load reported errors: $load" >&2
	}
	# strace runs the server as its child; valgrind runs it as itself
	server=$pid
	if [ "${wrapper[0]}" = strace ]; then
		server=$(cat /proc/"$pid"/task/*/children | awk '{ print $1 }')
	fi
	kill -TERM "$server"
	wait "$pid" || true
}

# callgrind_total DIR: summed instruction count of every process.
callgrind_total() {
	cat "$1"/cg.* | awk '/^(summary|totals):/ { s += $2 } END { print s + 0 }'
}

for w in churn stream; do
	echo "== $w, 64-byte packets, 1 client"
	echo
	under strace -f -c -o "$WORK/strace.$w" -- "$w" -c 1 -n "$N" -s 64
	echo "system calls per request (all server processes, $N requests):"
	awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $(NF - 1) ~ /^[0-9]+$/ && $NF != "total" {
		calls = $4
		errors = (NF == 6) ? $5 : 0
		if (calls / n >= 0.5)
			printf "  %-14s %5.2f%s\n", $NF, calls / n, (errors > 0 ? sprintf("  (%d failed)", errors) : "")
		total += calls
	} END { printf "  %-14s %5.2f\n", "all", total / n }' "$WORK/strace.$w"
	echo
	for k in 1 2; do
		mkdir -p "$WORK/cg$k.$w"
		under valgrind -q --tool=callgrind --trace-children=yes \
			--callgrind-out-file="$WORK/cg$k.$w/cg.%p" -- \
			"$w" -c 1 -n $((k * N)) -s 64
	done
	ir1=$(callgrind_total "$WORK/cg1.$w")
	ir2=$(callgrind_total "$WORK/cg2.$w")
	echo "user-space instructions per request: $(((ir2 - ir1) / N))" \
		"(callgrind; $N and $((2 * N)) requests: $ir1 and $ir2 in all)"
	busiest=$(grep -H '^summary:' "$WORK/cg2.$w"/cg.* | sort -t' ' -k2 -rn | head -n 1 | cut -d: -f1)
	echo "top functions of the busiest process ($(basename "$busiest")):"
	callgrind_annotate --inclusive=no "$busiest" 2>/dev/null |
		awk '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ && n++ < 12 { print "  " $0 }'
	echo
done
