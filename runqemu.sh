#!/bin/bash
# Boot the AArch64 system in QEMU, on this terminal (-nographic: the serial
# console is stdin/stdout; Ctrl-A X quits QEMU).
#
# Which image: the Buildroot one when buildroot/output/images has Image and
# rootfs.ext4, otherwise the fast image from image/out/ (built with
# image/build.sh when missing or older than its sources).
# AESD_IMAGE=buildroot|fast forces a choice.
#
# Network: QEMU user networking with restrict=on (the guest reaches nothing
# outside); the host forwards, on 127.0.0.1 only:
#   127.0.0.1:$AESD_HOST_PORT (default 9000)  -> guest port 9000 (aesdsocket)
#   127.0.0.1:$AESD_SSH_PORT  (default 10022) -> guest port 22   (dropbear)
#
# Other environment:
#   AESD_ROOTFS            Buildroot image: the ext4 file to boot (default
#                          buildroot/output/images/rootfs.ext4)
#   AESD_QEMU_SNAPSHOT=1   Buildroot image: do not write to the ext4 file
#   AESD_QEMU_SMP, AESD_QEMU_MEM   CPUs (default 1: under TCG a second vCPU
#                          slows the boot) and memory (default 256M)
#   AESD_QEMU_APPEND       extra kernel command line
# Arguments are passed on to qemu-system-aarch64.

set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
br_images=$top/buildroot/output/images
fast_images=${AESD_IMAGE_OUT:-$top/image/out}

host_port=${AESD_HOST_PORT:-9000}
ssh_port=${AESD_SSH_PORT:-10022}
smp=${AESD_QEMU_SMP:-1}
mem=${AESD_QEMU_MEM:-256M}

choice=${AESD_IMAGE:-}
if [ -z "$choice" ]; then
	if [ -f "$br_images/Image" ] && [ -f "$br_images/rootfs.ext4" ]; then
		choice=buildroot
	else
		choice=fast
	fi
fi

# QEMU, and what the hints printed below need on a fresh machine: OpenBSD
# netcat (nc -N) and the OpenSSH client (ssh, scp).
installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}
missing=()
command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm)
installed netcat-openbsd || missing+=(netcat-openbsd)
{ command -v ssh && command -v scp; } >/dev/null || missing+=(openssh-client)
if ((${#missing[@]})); then
	echo "runqemu.sh: installing ${missing[*]}" >&2
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update >&2
	$sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

netdev="user,id=n0,restrict=on"
netdev+=",hostfwd=tcp:127.0.0.1:$host_port-:9000"
netdev+=",hostfwd=tcp:127.0.0.1:$ssh_port-:22"

args=(-M virt -cpu cortex-a53 -smp "$smp" -m "$mem" -nographic -no-reboot
	-netdev "$netdev" -device "virtio-net-device,netdev=n0"
	-device virtio-rng-device)

case "$choice" in
	buildroot)
		echo "runqemu.sh: booting the Buildroot image from $br_images" >&2
		drive="file=${AESD_ROOTFS:-$br_images/rootfs.ext4},if=none,format=raw,id=hd0"
		[ "${AESD_QEMU_SNAPSHOT:-0}" = 1 ] && drive+=",snapshot=on"
		# quiet: the kernel's messages on the emulated serial console
		# cost a few tenths of a second (dmesg still has them)
		args+=(-kernel "$br_images/Image"
			-append "rootwait root=/dev/vda console=ttyAMA0 quiet ${AESD_QEMU_APPEND:-}"
			-drive "$drive" -device "virtio-blk-device,drive=hd0")
		;;
	fast)
		if ! [ -f "$fast_images/Image" ] || ! [ -f "$fast_images/rootfs.cpio" ]; then
			echo "runqemu.sh: the fast image is missing; building it" >&2
			AESD_IMAGE_OUT=$fast_images "$top/image/build.sh"
		elif [ -n "$(find "$top/server" "$top/image/skeleton" "$top/image/build.sh" \
			\( -path "$top/server/build" -o -path "$top/server/aesdsocket" \) -prune \
			-o -newer "$fast_images/rootfs.cpio" -type f -print -quit)" ]; then
			echo "runqemu.sh: the fast image is older than its sources; rebuilding it" >&2
			AESD_IMAGE_OUT=$fast_images "$top/image/build.sh"
		fi
		echo "runqemu.sh: booting the fast image from $fast_images" >&2
		# quiet: a serial console is slow under emulation; cryptomgr.notests:
		# skip the crypto self-tests, about a third of the kernel's boot
		args+=(-kernel "$fast_images/Image" -initrd "$fast_images/rootfs.cpio"
			-append "console=ttyAMA0 quiet cryptomgr.notests ${AESD_QEMU_APPEND:-}")
		;;
	*)
		echo "runqemu.sh: AESD_IMAGE must be buildroot or fast, not '$choice'" >&2
		exit 2
		;;
esac

cat >&2 <<EOF
runqemu.sh: log in on this console as root / root; from another terminal:
  echo hello | nc -N 127.0.0.1 $host_port     # aesdsocket
  ssh -p $ssh_port root@127.0.0.1              # password: root
  scp -P $ssh_port FILE root@127.0.0.1:/tmp/
runqemu.sh: quit with 'poweroff' in the guest, or Ctrl-A X
EOF

exec qemu-system-aarch64 "${args[@]}" "$@"
