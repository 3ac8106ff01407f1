# lib.sh - shared by bench/run.sh and bench/smoke.sh (sourced, bash).
# shellcheck shell=bash
# Starts servers on free loopback ports and stops exactly those, by PID.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
LOAD="$BENCH_DIR/build/aesdload"
PROBE="$BENCH_DIR/build/aesdprobe"
SERVER="${AESDSOCKET:-$REPO_DIR/server/aesdsocket}"
SERVER_B="${AESDSOCKET_B:-}"	# run.sh's A/B mode: the server to compare with
STARTED_PIDS=()
SERVER_PID=
SERVER_PORT=

# build_all WORKDIR: build the generator, and the server if it is missing;
# then run a copy of the server (and of SERVER_B), so a rebuild during the
# run cannot pull the binary away.
build_all() {
	make -s -C "$BENCH_DIR" >&2
	if [ ! -x "$SERVER" ]; then
		make -s -C "$REPO_DIR/server" >&2
	fi
	cp "$SERVER" "$1/aesdsocket"
	SERVER="$1/aesdsocket"
	if [ -n "$SERVER_B" ]; then
		cp "$SERVER_B" "$1/aesdsocket-b"
		SERVER_B="$1/aesdsocket-b"
	fi
}

# start_server WORKDIR [aesdsocket options...]: fresh data file, free port.
start_server() {
	local dir=$1
	shift
	SERVER_PORT=$("$PROBE" freeport)
	rm -f "$dir/data"
	"$SERVER" -p "$SERVER_PORT" -b 127.0.0.1 -f "$dir/data" "$@" \
		2>>"$dir/server.log" &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	if ! "$LOAD" wait -p "$SERVER_PORT" -t 10000; then
		echo "server did not start; log:" >&2
		tail -n 20 "$dir/server.log" >&2
		return 1
	fi
}

# start_trivial [aesdprobe trivial options...]
start_trivial() {
	SERVER_PORT=$("$PROBE" freeport)
	"$PROBE" trivial -p "$SERVER_PORT" "$@" &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	"$LOAD" wait -p "$SERVER_PORT" -t 10000
}

stop_server() {
	local rc=0

	if [ -n "$SERVER_PID" ]; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" || rc=$?
	fi
	SERVER_PID=
	return "$rc"
}

stop_all() {
	local pid

	for pid in "${STARTED_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${STARTED_PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}

# field LINE KEY: value of KEY=... in a key=value line.
field() {
	local kv

	for kv in $1; do
		if [ "${kv%%=*}" = "$2" ]; then
			printf '%s\n' "${kv#*=}"
			return 0
		fi
	done
	return 1
}
