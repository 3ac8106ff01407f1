#!/bin/bash
# Build the fast AArch64 image: Debian's arm64 kernel plus an initramfs made of
# Debian arm64 packages (BusyBox, dropbear, sftp-server, scp and their shared
# libraries), the skeleton in image/skeleton/ and our aesdsocket, cross-compiled
# and installed with the server's own `make install` / `make install-sysv`.
#
# Outputs (in $AESD_IMAGE_OUT, default image/out/):
#   Image          the kernel, loadable with qemu-system-aarch64 -kernel
#   rootfs.cpio    the initramfs (newc), loadable with -initrd
#   manifest.txt   package versions and sha256 of both files
# Downloads are cached in $AESD_IMAGE_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/aesd-image, or image/cache/ without a home)
# so that any clone reuses them.
#
# The build is reproducible: the same inputs (package versions, skeleton,
# server sources, SOURCE_DATE_EPOCH) give bit-identical Image and rootfs.cpio.
#
# Environment:
#   AESD_IMAGE_OUT      output directory
#   AESD_IMAGE_CACHE    download cache
#   AESD_KERNEL_PKG     kernel package (default: what linux-image-arm64 depends on)
#   SOURCE_DATE_EPOCH   timestamp of every file in the cpio (default: the last
#                       commit's date, or 0 outside git)
#   AESD_IMAGE_NO_SERVER=1  build without aesdsocket (only for bringing up the image)

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
out=${AESD_IMAGE_OUT:-$here/out}
if [ -n "${AESD_IMAGE_CACHE:-}" ]; then
	cache=$AESD_IMAGE_CACHE
elif [ -n "${XDG_CACHE_HOME:-}${HOME:-}" ]; then
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/aesd-image
else
	cache=$here/cache
fi
cross=aarch64-linux-gnu-

# Arm64 packages that go into the image; their shared libraries are picked
# from them by following the binaries' DT_NEEDED entries. libseccomp-dev
# only builds aesdsocket (its workers' system call filter): its header and
# link library are used from the unpacked package, and only libseccomp2's
# libseccomp.so.2 goes into the image.
target_packages=(
	busybox-static
	dropbear-bin
	openssh-sftp-server
	openssh-client
	libc6
	libcrypt1
	libgmp10
	libtomcrypt1
	libtommath1
	zlib1g
	libseccomp2
	libseccomp-dev
)
# Programs (and links to them) copied from those packages
target_programs=(
	/usr/sbin/dropbear
	/usr/bin/dropbearkey
	/usr/bin/dbclient
	/usr/lib/openssh/sftp-server
	/usr/bin/scp
)
# Kernel modules (with their dependencies) for QEMU's virtio-mmio devices
kernel_modules=(virtio_mmio virtio_net virtio-rng)

# Host tools, installed from Debian when missing
host_packages=(cpio gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu make)

log() { printf '%s\n' "build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
# apt-get install and dpkg need root; anyone else goes through sudo
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_host_tools() {
	local missing=() p
	for p in "${host_packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "installing host packages: ${missing[*]}"
		as_root apt-get update >&2
		as_root apt-get install -y --no-install-recommends "${missing[@]}" >&2
	fi
}

# apt must know the arm64 packages; enable the architecture once
ensure_arm64_lists() {
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		log "enabling the arm64 architecture for apt (download only, nothing is installed)"
		as_root dpkg --add-architecture arm64
		as_root apt-get update >&2
	elif ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
		as_root apt-get update >&2
	fi
}

# download PKG... : fetch the arm64 packages into the cache, except those
# whose file with the expected SHA256 is there already; print the .deb paths
# (in apt's order).
download() {
	local pkg file size sum uris=() missing=()
	mkdir -p "$cache/debs"
	mapfile -t uris < <(apt-get download --print-uris "${@/%/:arm64}")
	[ "${#uris[@]}" -eq "$#" ] || die "apt does not know all of: $*"
	for pkg in "${uris[@]}"; do
		read -r _ file size sum <<< "$pkg"
		file=$cache/debs/$file
		if ! [ -f "$file" ] || [ "$(sha256sum < "$file" | cut -d' ' -f1)" != "${sum#SHA256:}" ]; then
			missing+=("${file##*/}")
			log "downloading ${file##*/} ($size bytes)"
		fi
	done
	if ((${#missing[@]})); then
		(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "${@/%/:arm64}" >&2)
	fi
	for pkg in "${uris[@]}"; do
		read -r _ file size sum <<< "$pkg"
		file=$cache/debs/$file
		[ "$(sha256sum < "$file" | cut -d' ' -f1)" = "${sum#SHA256:}" ] || die "checksum mismatch for $file"
		printf '%s\n' "$file"
	done
}

# modinfo_depends KO: the "depends=" field of a kernel module
modinfo_depends() {
	"${cross}objcopy" -O binary --only-section=.modinfo "$1" /dev/stdout |
		tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}

# find_module NAME: path of module NAME (- and _ are the same) in $modpath
find_module() {
	local name=${1//-/_}
	[ -n "${modpath[$name]:-}" ] || die "kernel module $1 not found"
	printf '%s\n' "${modpath[$name]}"
}

# needed_libs FILE: the DT_NEEDED sonames of an ELF file
needed_libs() {
	"${cross}readelf" -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# copy_path PATH: copy PATH (a file or a symlink chain) from $pkgroot to $root
copy_path() {
	local path=$1 target
	[ -e "$root$path" ] || [ -L "$root$path" ] && return 0
	mkdir -p "$root$(dirname "$path")"
	if [ -L "$pkgroot$path" ]; then
		target=$(readlink "$pkgroot$path")
		ln -s "$target" "$root$path"
		case "$target" in
			/*) copy_path "$target";;
			*) copy_path "$(realpath -m -s "$(dirname "$path")/$target")";;
		esac
	elif [ -f "$pkgroot$path" ]; then
		cp --preserve=mode "$pkgroot$path" "$root$path"
	else
		die "$path is in none of the packages"
	fi
}

# copy_elf PATH: copy a program or library and, recursively, the libraries it needs
copy_elf() {
	local path=$1
	[ -e "$root$path" ] && return 0
	copy_path "$path"
	copy_libs_of "$pkgroot$path" "$path"
}

# copy_libs_of FILE NAME: copy the libraries the ELF file FILE (NAME in the
# image) needs, and theirs
copy_libs_of() {
	local soname dir found
	for soname in $(needed_libs "$1"); do
		found=
		for dir in /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do
			if [ -e "$pkgroot$dir/$soname" ]; then
				copy_elf "$dir/$soname"
				found=1
				break
			fi
		done
		[ -n "$found" ] || die "library $soname (needed by $2) is in none of the packages"
	done
}

build_server() {
	local src=$work/server
	[ -f "$top/server/Makefile" ] || die "server/Makefile is missing"
	mkdir -p "$src"
	# Build in a copy, so the host build in server/ is left alone
	tar -C "$top/server" --exclude=./aesdsocket --exclude=./build -cf - . | tar -C "$src" -xf -
	# -ffile-prefix-map: no build directory in the binary, so that any clone
	# builds the same bytes
	# libseccomp's header and link library: from the arm64 packages
	# unpacked in $pkgroot, the same version the image carries. The
	# second prefix map keeps $pkgroot's path out of the debug information
	# too, and so out of the build ID that stripping keeps.
	local vars=(BUILD=build/aarch64 CROSS_COMPILE="$cross"
		CC="${cross}gcc -ffile-prefix-map=$src=. -ffile-prefix-map=$pkgroot=/"
		CPPFLAGS="-I$pkgroot/usr/include"
		LDFLAGS="-L$pkgroot/usr/lib/aarch64-linux-gnu")
	make -s -C "$src" "${vars[@]}" all >&2
	make -s -C "$src" "${vars[@]}" install DESTDIR="$root" PREFIX=/usr >&2
	make -s -C "$src" "${vars[@]}" install-sysv DESTDIR="$root" >&2
	[ -x "$root/usr/bin/aesdsocket" ] || die "make install did not install /usr/bin/aesdsocket"
	[ -x "$root/etc/init.d/S99aesdsocket" ] || die "make install-sysv did not install /etc/init.d/S99aesdsocket"
	# Like Buildroot, ship stripped binaries and no documentation (its
	# target-finalize deletes /usr/share/man, where make install puts the
	# man page)
	"${cross}strip" "$root/usr/bin/aesdsocket"
	copy_libs_of "$root/usr/bin/aesdsocket" /usr/bin/aesdsocket
	rm -rf "$root/usr/share/man"
	rmdir "$root/usr/share" 2>/dev/null || true
}

main() {
	umask 022
	export LC_ALL=C TZ=UTC
	if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
		SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || echo 0)
	fi
	export SOURCE_DATE_EPOCH

	ensure_host_tools
	ensure_arm64_lists

	local kpkg=${AESD_KERNEL_PKG:-}
	if [ -z "$kpkg" ]; then
		kpkg=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -n 1)
		[ -n "$kpkg" ] || die "cannot resolve linux-image-arm64:arm64"
	fi
	local kver=${kpkg#linux-image-}

	mkdir -p "$out"
	work=$out/work
	root=$work/root
	pkgroot=$work/packages
	rm -rf "$work"
	mkdir -p "$root" "$pkgroot"

	log "kernel package: $kpkg"
	local deb
	local all=() debs=() kdeb=
	mapfile -t all < <(download "${target_packages[@]}" "$kpkg")
	for deb in "${all[@]}"; do
		case "${deb##*/}" in
			"${kpkg}_"*) kdeb=$deb;;
			*) debs+=("$deb");;
		esac
	done
	[ -n "$kdeb" ] || die "no $kpkg among the downloads"

	# Unpack the packages once into a scratch tree; copy only what we need
	for deb in "${debs[@]}"; do
		dpkg-deb -x "$deb" "$pkgroot"
	done

	# Kernel: the uncompressed Image and just the modules we load, with
	# their dependencies. The cache keeps only those (a few hundred KB
	# instead of the package's 300 MB of modules).
	local kmods=lib/modules/$kver
	local kcache=$cache/kernel/$kver
	local stamp="${kdeb##*/} ${kernel_modules[*]}"
	local kroot=$kcache m
	local -a order=() modules=()
	local -A seen=()
	declare -gA modpath=()

	# Resolve module dependencies depth-first (each one after what it needs)
	add_module() {
		local path dep
		path=$(find_module "$1")
		[ -n "${seen[$path]:-}" ] && return 0
		seen[$path]=1
		for dep in $(modinfo_depends "$kroot/$kmods/$path"); do
			add_module "$dep"
		done
		order+=("$path")
	}
	# Index the modules under $kroot and resolve ours into $modules
	resolve_modules() {
		local f base
		modpath=()
		while read -r f; do
			base=${f##*/}
			base=${base%.ko}
			modpath[${base//-/_}]=$f
		done < <(cd "$kroot/$kmods" && find kernel -name '*.ko' | sort)
		order=()
		seen=()
		for m in "${kernel_modules[@]}"; do
			add_module "$m"
		done
		modules=("${order[@]}")
	}

	if ! [ -f "$kcache/.complete" ] || [ "$(cat "$kcache/.complete")" != "$stamp" ]; then
		log "unpacking $kpkg"
		kroot=$work/kernel
		mkdir -p "$kroot"
		dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$kroot" \
			"./boot/vmlinuz-$kver" "./$kmods/kernel"
		resolve_modules
		rm -rf "$cache/kernel"
		install -D -m 0644 "$kroot/boot/vmlinuz-$kver" "$kcache/boot/vmlinuz-$kver"
		for m in "${modules[@]}"; do
			install -D -m 0644 "$kroot/$kmods/$m" "$kcache/$kmods/$m"
		done
		printf '%s\n' "$stamp" > "$kcache/.complete"
		rm -rf "$kroot"
		kroot=$kcache
	fi
	resolve_modules

	# Skeleton directories (modes set explicitly, not by umask or git)
	local d
	for d in bin sbin usr/bin usr/sbin lib usr/lib dev proc sys run mnt root \
		etc/init.d etc/default etc/dropbear etc/network/if-pre-up.d \
		etc/network/if-up.d etc/network/if-down.d etc/network/if-post-down.d \
		var/log var/lib "$kmods"; do
		mkdir -p "$root/$d"
	done
	install -d -m 1777 "$root/tmp" "$root/var/tmp"
	chmod 700 "$root/root" "$root/etc/dropbear"
	ln -s ../run "$root/var/run"

	# BusyBox; /init adds the other applet links at boot
	cp "$pkgroot/bin/busybox" "$root/bin/busybox"
	chmod 755 "$root/bin/busybox"
	ln -s busybox "$root/bin/sh"
	ln -s ../bin/busybox "$root/sbin/init"

	local p
	for p in "${target_programs[@]}"; do
		copy_elf "$p"
	done
	copy_path /usr/lib/sftp-server
	# The dynamic loader is found through its absolute path in PT_INTERP
	copy_path /lib/ld-linux-aarch64.so.1

	# Skeleton files from git: text files 0644, scripts and /init 0755,
	# /etc/shadow 0600
	(cd "$here/skeleton" && find . -type f | sort) | while read -r f; do
		local mode=0644
		case "$f" in
			./init|./etc/init.d/*) mode=0755;;
			./etc/shadow) mode=0600;;
		esac
		install -D -m "$mode" "$here/skeleton/$f" "$root/$f"
	done

	# Kernel modules and a modules.dep covering exactly them. Like depmod's,
	# each line lists all of a module's dependencies, direct or not, the one
	# to load first last (BusyBox modprobe does not recurse).
	: > "$root/$kmods/modules.dep"
	for m in "${modules[@]}"; do
		install -D -m 0644 "$kroot/$kmods/$m" "$root/$kmods/$m"
		order=()
		seen=()
		add_module "$(basename "$m" .ko)"
		local line=$m: i
		for ((i = ${#order[@]} - 2; i >= 0; i--)); do
			line="$line ${order[i]}"
		done
		printf '%s\n' "$line" >> "$root/$kmods/modules.dep"
	done

	if [ "${AESD_IMAGE_NO_SERVER:-0}" = 1 ]; then
		log "warning: building without aesdsocket (AESD_IMAGE_NO_SERVER=1)"
	else
		build_server
	fi

	# The archive: sorted names, owner root, one timestamp, renumbered inodes
	# (--reproducible), a real /dev/console for the kernel to open before /init
	mknod -m 600 "$root/dev/console" c 5 1
	mknod -m 666 "$root/dev/null" c 1 3
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	(cd "$root" && find . | sort) |
		(cd "$root" && cpio --quiet -o -H newc --owner 0:0 --reproducible) \
		> "$out/rootfs.cpio.tmp"
	mv "$out/rootfs.cpio.tmp" "$out/rootfs.cpio"
	install -m 0644 "$kroot/boot/vmlinuz-$kver" "$out/Image"

	{
		printf 'kernel %s\n' "${kdeb##*/}"
		for deb in "${debs[@]}"; do
			printf 'package %s\n' "${deb##*/}"
		done
		printf 'modules %s\n' "${modules[*]}"
		printf 'SOURCE_DATE_EPOCH %s\n' "$SOURCE_DATE_EPOCH"
		(cd "$out" && sha256sum Image rootfs.cpio)
	} > "$out/manifest.txt"
	rm -rf "$work"
	log "done: $out/Image $out/rootfs.cpio ($(du -h "$out/rootfs.cpio" | cut -f1))"
}

main "$@"
