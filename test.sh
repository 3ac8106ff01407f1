#!/usr/bin/env bash
# Runs every test of aesd-system, installing what it needs first.
#   ./test.sh            everything
#   ./test.sh unit ...   only the named stages (see STAGES below, and
#                        buildroot-image, which is not in the default list)
# Each stage runs even if an earlier one failed; the exit status is 0 only
# when all passed.  Needs root or sudo (apt-get, tmpfs mounts, chroots).
set -u
cd "$(dirname "$0")" || exit 1
# chroots, tmpfs mounts and --user tests need root
[ "$(id -u)" -eq 0 ] || exec sudo "$PWD/test.sh" "$@"

ROOT=$PWD
# -rs: every skipped test says why
PYTEST=(/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider)
VALGRIND_LOGS=$(mktemp -d /tmp/aesd-valgrind.XXXXXX)
# workers that dropped root (--user tests) write their own logs here
chmod 1777 "$VALGRIND_LOGS"
trap 'rm -rf "$VALGRIND_LOGS"' EXIT

stage_deps() {
	sh tests/install-deps.sh
}

# Warning-free with gcc and clang (-Werror), and for the AArch64 target.
stage_build() {
	make -C server -s clean &&
	make -C server -s &&
	make -C server -s BUILD=build/clang CC=clang &&
	make -C server -s BUILD=build/aarch64 CROSS_COMPILE=aarch64-linux-gnu- &&
	file server/build/aarch64/aesdsocket | grep -q 'ARM aarch64' &&
	make -C server -s sanitize
}

stage_unit() {
	make -C server -s unit-tests && make -C server -s sanitize-unit-tests
}

stage_shellcheck() {
	# shellcheck disable=SC2046 # file names have no spaces
	shellcheck -x $(git ls-files '*.sh' 'server/aesdsocket-start-stop' \
		'image/skeleton/init' 'image/skeleton/etc/init.d/*')
}

stage_integration() {
	"${PYTEST[@]}" tests/integration
}

# Sanitizers make each process slower, so time bounds stretch; behaviour
# does not.
stage_sanitize() {
	AESDSOCKET=$ROOT/server/build/sanitize/aesdsocket AESD_TIME_SCALE=10 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"${PYTEST[@]}" tests/integration
}

# Its servers run with --no-syscall-filter (the harness adds it under
# valgrind, which makes the program's system calls itself); every other
# stage runs the workers confined.
# --vgdb=no: nothing attaches vgdb, and each valgrind'd process would
# leave its FIFOs in /tmp when a test kills it. The logs are checked even
# when a test failed: a process valgrind saw crash has its report there.
stage_valgrind() {
	local rc=0
	AESD_TIME_SCALE=10 AESDSOCKET_WRAPPER="valgrind --vgdb=no --trace-children=yes \
--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
--log-file=$VALGRIND_LOGS/vg.%p.log" \
		"${PYTEST[@]}" tests/integration || rc=$?
	/usr/bin/python3 tests/check-valgrind-logs.py "$VALGRIND_LOGS" || rc=1
	return "$rc"
}

stage_sockettest() {
	local port data pid rc
	# a port nothing listens on (not a fixed one: two runs at once, or
	# anything else on it, and the script would test another server)
	port=$(PYTHONPATH=tests/integration /usr/bin/python3 -c \
		'from server_harness import free_port; print(free_port())')
	data=$(mktemp /tmp/aesd-sockettest.XXXXXX)
	rm -f "$data"
	server/aesdsocket -p "$port" -f "$data" &
	pid=$!
	for _ in $(seq 50); do nc -z 127.0.0.1 "$port" && break; sleep 0.1; done
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "sockettest: aesdsocket did not start on port $port" >&2
		return 1
	fi
	sh tests/sockettest.sh -t 127.0.0.1 -p "$port"
	rc=$?
	kill -TERM "$pid" && wait "$pid" && [ ! -e "$data" ] && return "$rc"
}

stage_lifecycle() {
	"${PYTEST[@]}" tests/lifecycle
}

# The external tree against the pinned Buildroot without building the
# image: check-package, the defconfig round trip through save-config.sh,
# the package's Buildroot steps, the board scripts, build.sh without network.
stage_buildroot() {
	bash tests/buildroot-check.sh
}

stage_fuzz() {
	bash fuzz/smoke.sh
}

stage_bench() {
	bash bench/smoke.sh
}

stage_system() {
	"${PYTEST[@]}" tests/system
}

# What a user runs: one throwaway boot of the image runqemu.sh boots (the
# Buildroot one when built, else the fast one in image/out, built when
# missing or stale), checked from the host.
stage_full_test() {
	./full-test.sh
}

# Not in the default list: a clean Buildroot build takes tens of minutes.
# Builds the Buildroot image with ../shared/br-offline (or prints SKIP:),
# a line per package as it starts (Buildroot's output goes to
# buildroot/output/aesd-*.log), checks that two package rebuilds give the
# same bytes, then runs the system suite on it.
stage_buildroot_image() {
	bash tests/system/buildroot-image.sh
}

STAGES=(deps build unit shellcheck integration sanitize valgrind sockettest
	lifecycle buildroot fuzz bench system full-test)
[ $# -gt 0 ] && STAGES=("$@")

passed=0 failed=0 failures=""
for stage in "${STAGES[@]}"; do
	echo "=== stage $stage"
	start=$SECONDS
	if ! declare -F "stage_${stage//-/_}" >/dev/null; then
		failed=$((failed + 1))
		failures="$failures $stage"
		echo "=== stage $stage: FAILED (no such stage)"
		continue
	fi
	if "stage_${stage//-/_}"; then
		passed=$((passed + 1))
		echo "=== stage $stage: ok ($((SECONDS - start)) s)"
	else
		failed=$((failed + 1))
		failures="$failures $stage"
		echo "=== stage $stage: FAILED ($((SECONDS - start)) s)"
	fi
done
[ -n "$failures" ] && echo "failed stages:$failures"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
