#!/bin/bash
# Boot the AArch64 system in QEMU, on this terminal (-nographic: the serial
# console is stdin/stdout; Ctrl-A X quits QEMU).
#
#   ./runqemu.sh [--snapshot] [--dry-run] [--] [QEMU ARGUMENTS...]
#
#   --snapshot   a throwaway boot: nothing the guest writes is kept
#                (the same as AESD_QEMU_SNAPSHOT=1)
#   --dry-run    do everything but start QEMU (install what is missing,
#                build the fast image when needed, make the persistent disk) and print
#                the QEMU command line on stdout
#   -h, --help   print this text
# Further arguments (after -- if they could be taken for ours) go to
# qemu-system-aarch64.
#
# Which image: the Buildroot one when buildroot/output/images has Image and
# rootfs.ext4, otherwise the fast image from image/out/ (built with
# image/build.sh when missing or older than its sources).
# AESD_IMAGE=buildroot|fast forces a choice.
#
# What persists across boots:
#   Buildroot image: the guest's disk, by default. It is a copy of the
#     image's rootfs.ext4 in buildroot/output/aesd-disk.ext4 (AESD_DISK),
#     made at the first boot and made again, from the new image, after the
#     image is rebuilt (what you changed on the old disk is then lost). The
#     build output itself is never written: it stays as it was built.
#     With --snapshot the guest boots rootfs.ext4 itself and its writes go
#     to a temporary file that QEMU deletes when it exits.
#   Fast image: nothing. It runs from RAM (an initramfs, rootfs.cpio), so
#     every boot starts from the image as built, with or without --snapshot.
#
# Network: QEMU user networking with restrict=on (the guest reaches nothing
# outside); the host forwards, on 127.0.0.1 only:
#   127.0.0.1:$AESD_HOST_PORT (default 9000)  -> guest port 9000 (aesdsocket)
#   127.0.0.1:$AESD_SSH_PORT  (default 10022) -> guest port 22   (dropbear)
# A port already in use stops it before QEMU starts, naming the variable
# that moves it. The ssh and scp commands it prints neither keep nor check
# the guest's host key, which changes with every fast-image boot and every
# Buildroot rebuild.
#
# Other environment:
#   AESD_ROOTFS            Buildroot image: its root file system (default
#                          buildroot/output/images/rootfs.ext4)
#   AESD_DISK              Buildroot image: the persistent disk (default
#                          buildroot/output/aesd-disk.ext4)
#   AESD_QEMU_SNAPSHOT=1   as --snapshot
#   AESD_IMAGE_OUT         the fast image's directory (default image/out)
#   AESD_QEMU_SMP, AESD_QEMU_MEM   CPUs (default 1: under TCG a second vCPU
#                          slows the boot) and memory (default 256M)
#   AESD_QEMU_APPEND       extra kernel command line

set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
br_images=$top/buildroot/output/images
fast_images=${AESD_IMAGE_OUT:-$top/image/out}
rootfs=${AESD_ROOTFS:-$br_images/rootfs.ext4}
disk=${AESD_DISK:-$top/buildroot/output/aesd-disk.ext4}

host_port=${AESD_HOST_PORT:-9000}
ssh_port=${AESD_SSH_PORT:-10022}
smp=${AESD_QEMU_SMP:-1}
mem=${AESD_QEMU_MEM:-256M}
snapshot=${AESD_QEMU_SNAPSHOT:-0}
dry_run=0

log() { printf 'runqemu.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
		--snapshot) snapshot=1;;
		--dry-run) dry_run=1;;
		-h|--help)
			sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
			exit 0
			;;
		--) shift; break;;
		*) break;;
	esac
	shift
done
[ "$snapshot" = 0 ] || [ "$snapshot" = 1 ] ||
	die "AESD_QEMU_SNAPSHOT must be 0 or 1, not '$snapshot'"

# QEMU would only say "Could not set up host forwarding rule": say which
# port, and how to move it. (Something answering on 127.0.0.1:PORT holds
# it: a listener on 127.0.0.1 or on every address, or another guest.)
in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
if [ "$dry_run" = 0 ]; then
	for forward in "AESD_HOST_PORT $host_port 9000" "AESD_SSH_PORT $ssh_port 22"; do
		read -r variable port guest_port <<<"$forward"
		if in_use "$port"; then
			log "port $port on 127.0.0.1, forwarded to the guest's port $guest_port, is in use"
			log "(another runqemu.sh, or another program: ss -ltnp 'sport = :$port' names it)."
			log "Pick another one: $variable=$((port + 1)) ./runqemu.sh"
			exit 2
		fi
	done
fi

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
	log "installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update >&2
	$sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

# The persistent disk: a copy of the root file system, made again when the
# root file system is another file or was rebuilt since the copy (its
# identity is kept beside the disk). The copy goes in under a temporary
# name, so a QEMU still running on the old disk keeps its own file.
persistent_disk() {
	local made_from
	made_from="$(realpath "$rootfs") $(stat -L -c '%d:%i %s %Y' "$rootfs")"
	if [ -f "$disk" ] && [ "$(cat "$disk.from" 2>/dev/null)" = "$made_from" ]; then
		log "the guest's disk: $disk, kept from the last boots" \
			"(--snapshot for a throwaway boot)"
		return
	fi
	if [ -f "$disk" ]; then
		log "$rootfs changed since the guest's disk was made from it:" \
			"making the disk again (what was changed on it is lost)"
	fi
	mkdir -p "$(dirname "$disk")"
	cp --sparse=always "$rootfs" "$disk.tmp"
	mv "$disk.tmp" "$disk"
	printf '%s\n' "$made_from" > "$disk.from"
	log "the guest's disk: $disk, a new copy of $rootfs that persists" \
		"across boots (--snapshot for a throwaway boot)"
}

netdev="user,id=n0,restrict=on"
netdev+=",hostfwd=tcp:127.0.0.1:$host_port-:9000"
netdev+=",hostfwd=tcp:127.0.0.1:$ssh_port-:22"

args=(-M virt -cpu cortex-a53 -smp "$smp" -m "$mem" -nographic -no-reboot
	-netdev "$netdev" -device "virtio-net-device,netdev=n0"
	-device virtio-rng-device)

case "$choice" in
	buildroot)
		[ -f "$rootfs" ] || die "no $rootfs: build the Buildroot image first (./build.sh)"
		log "the Buildroot image from $br_images"
		if [ "$snapshot" = 1 ]; then
			log "a throwaway boot of $rootfs: QEMU keeps what the guest" \
				"writes in a temporary file, deleted when it exits"
			drive="file=$rootfs,snapshot=on"
		else
			persistent_disk
			drive="file=$disk"
		fi
		# quiet: the kernel's messages on the emulated serial console
		# cost a few tenths of a second (dmesg still has them)
		args+=(-kernel "$br_images/Image"
			-append "rootwait root=/dev/vda console=ttyAMA0 quiet ${AESD_QEMU_APPEND:-}"
			-drive "$drive,if=none,format=raw,id=hd0" -device "virtio-blk-device,drive=hd0")
		;;
	fast)
		if ! [ -f "$fast_images/Image" ] || ! [ -f "$fast_images/rootfs.cpio" ]; then
			log "the fast image is missing; building it"
			AESD_IMAGE_OUT=$fast_images "$top/image/build.sh"
		elif [ -n "$(find "$top/server" "$top/image/skeleton" "$top/image/build.sh" \
			\( -path "$top/server/build" -o -path "$top/server/aesdsocket" \) -prune \
			-o -newer "$fast_images/rootfs.cpio" -type f -print -quit)" ]; then
			log "the fast image is older than its sources; rebuilding it"
			AESD_IMAGE_OUT=$fast_images "$top/image/build.sh"
		fi
		log "the fast image from $fast_images (it runs from RAM: nothing persists across boots)"
		# quiet: a serial console is slow under emulation; cryptomgr.notests:
		# skip the crypto self-tests, about a third of the kernel's boot
		args+=(-kernel "$fast_images/Image" -initrd "$fast_images/rootfs.cpio"
			-append "console=ttyAMA0 quiet cryptomgr.notests ${AESD_QEMU_APPEND:-}")
		;;
	*)
		die "AESD_IMAGE must be buildroot or fast, not '$choice'"
		;;
esac

if [ "$dry_run" = 1 ]; then
	printf '%q ' qemu-system-aarch64 "${args[@]}" "$@"
	printf '\n'
	exit 0
fi

# The guest's ssh host key changes with every fast-image boot and every
# Buildroot rebuild, and every guest answers on the same 127.0.0.1 port,
# so ssh is told neither to remember nor to check it (on this machine's
# loopback only: the forwards listen on 127.0.0.1).
ssh_opts="-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR"
cat >&2 <<EOF_HINTS
runqemu.sh: booting; log in on this console as root / root; from another terminal:
  echo hello | nc -N 127.0.0.1 $host_port     # aesdsocket
  ssh $ssh_opts -p $ssh_port root@127.0.0.1    # password: root
  scp $ssh_opts -P $ssh_port FILE root@127.0.0.1:/tmp/
runqemu.sh: quit with 'poweroff' in the guest, or Ctrl-A X
EOF_HINTS

exec qemu-system-aarch64 "${args[@]}" "$@"
