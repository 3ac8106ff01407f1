#!/bin/bash
# End-to-end validation of the system (the course's full-test.sh): boot the
# image in QEMU and check, from the host through QEMU's forwarded ports:
#   - boot: init starts aesdsocket, root logs in on the serial console;
#   - tests/sockettest.sh against aesdsocket (guest port 9000);
#   - syslog: aesdsocket's "Accepted connection from" and "Closed
#     connection from" lines for each of those connections;
#   - ssh, then scp both ways (guest port 22);
#   - poweroff: the init script stops the service, QEMU exits 0;
#   - the image files are unchanged by the boot (same sha256).
# Prints a PASS or FAIL line per check and ends with the line
# "N passed, M failed"; exits 0 only when M is 0. QEMU never outlives it,
# whatever fails, and on Ctrl-C.
#
#   ./full-test.sh
#
# The image: the Buildroot one when built, otherwise the fast one (built
# when missing or older than its sources); AESD_IMAGE=buildroot|fast
# chooses, as for runqemu.sh. The boot is a throwaway one (runqemu.sh
# --snapshot): nothing is written to the image or to runqemu.sh's
# persistent disk.
# Ports: free ones, so it runs beside another QEMU; AESD_HOST_PORT and
# AESD_SSH_PORT choose them. AESD_BOOT_TIMEOUT: seconds a boot may take
# (default 180).
# Installs what it needs when missing (QEMU, netcat, ssh, sshpass, Python's
# pexpect), with sudo unless run as root.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ $# -gt 0 ]; then
	sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	[ "$1" = -h ] || [ "$1" = --help ] && exit 0
	exit 2
fi

missing=()
for pkg in qemu-system-arm netcat-openbsd openssh-client sshpass python3-pexpect; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$pkg")
done
if ((${#missing[@]})); then
	echo "full-test: installing ${missing[*]}" >&2
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update >&2
	$sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

exec /usr/bin/python3 "$top/tests/system/fulltest.py"
