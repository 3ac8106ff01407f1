#!/bin/sh
# Client check of an aesdsocket server, with the course harness's interface:
#
#   sockettest.sh [-t HOST] [-p PORT]      (defaults: localhost 9000)
#
# Sends a sequence of newline-terminated strings, one connection each, and
# checks that every response equals everything sent so far (so the server's
# data file must be empty when it starts). Exits 0 when all match, 1 on the
# first mismatch (printing expected and received), 2 on a usage error.
# POSIX sh; needs nc (netcat-openbsd, or any nc with -w).

target=localhost
port=9000

usage() {
	echo "Usage: $0 [-t target_ip] [-p port]" >&2
	exit 2
}

while getopts "t:p:h" opt; do
	case "$opt" in
		t) target=$OPTARG;;
		p) port=$OPTARG;;
		*) usage;;
	esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || usage

workdir=$(mktemp -d) || exit 1
trap 'rm -rf "$workdir"' EXIT
expected=$workdir/expected
received=$workdir/received
: > "$expected"

# With -N, nc half-closes after stdin's end and returns as soon as the server
# has answered and closed; other nc flavours wait for 1 s of silence (-w).
if nc -h 2>&1 | grep -q -- '-N'; then
	nc_opts="-N -w 10"
else
	nc_opts="-w 1"
fi

# send STRING: send it as one packet and compare the response
send() {
	shown=$1
	[ "${#shown}" -le 80 ] || shown="$(printf '%.20s' "$1")... (${#1} bytes)"
	echo "sending string ${shown} to ${target} on port ${port}"
	# shellcheck disable=SC2086 # nc_opts holds several options
	printf '%s\n' "$1" | nc $nc_opts "$target" "$port" > "$received"
	printf '%s\n' "$1" >> "$expected"
	if ! cmp -s "$expected" "$received"; then
		echo "Differences found after sending ${shown} to ${target} on port ${port}"
		echo "Expected ($(wc -c < "$expected") bytes, first 4 KiB):"
		head -c 4096 "$expected"
		echo "Received ($(wc -c < "$received") bytes, first 4 KiB):"
		head -c 4096 "$received"
		exit 1
	fi
}

send "abcdefg"
send "hijklmnop"
send "1234567890"
send "9876543210"

# A packet longer than one TCP segment and than typical read buffers
long=
i=0
while [ "$i" -lt 300 ]; do
	long="${long}abcdefghijklmnopqrstuvwxyz0123456789"
	i=$((i + 1))
done
send "$long"

# Packets are appended, never merged with their neighbours
send "abcdefg"

echo "Tests complete with success!"
