#!/bin/bash
# The buildroot-image stage of test.sh: build the Buildroot image where
# runqemu.sh finds it (buildroot/output/images), then run the system suite
# on it (AESD_IMAGE=buildroot).
#
# The build uses the offline recipe in ../shared/br-offline (Debian's cross
# toolchain and Debian's sources in place of Buildroot's downloads; see its
# NOTES.md), which exists on the project's development machine only;
# without it, or without a Buildroot tree, this prints "SKIP:" and exits 0.
#
#   - no build yet, or a configuration that changed since the last one
#     (base_external/, the offline fragment, the Buildroot commit): a clean
#     build, tens of minutes;
#   - then, twice, only the package and the root file system (make
#     aesd-assignments-rebuild all), which is what a change to server/
#     needs; the second time must rebuild nothing else and give the same
#     rootfs.ext4 and Image, bit for bit.
#
# Environment: BR_OFFLINE_DIR (the recipe's work directory, default
# ${TMPDIR:-/tmp}/br-offline), AESD_BR_OFFLINE (the recipe, default
# ../shared/br-offline next to the project).
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
recipe=${AESD_BR_OFFLINE:-$(dirname "$top")/shared/br-offline}
export BR_OFFLINE_DIR=${BR_OFFLINE_DIR:-${TMPDIR:-/tmp}/br-offline}
br=$top/buildroot
images=$br/output/images
stamp=$br/output/.aesd-offline-config

log() { printf 'buildroot-image: %s\n' "$*"; }
# br_progress: a line per package as the build goes, as ./build.sh prints
# shellcheck source=scripts/buildroot.sh
. "$top/scripts/buildroot.sh"
skip() { printf 'SKIP: %s\n' "$*"; exit 0; }

if ! [ -x "$recipe/build-offline.sh" ] || ! [ -x "$recipe/setup-offline.sh" ]; then
	skip "no offline Buildroot recipe at $recipe (it exists only on the development machine; elsewhere build with ./build.sh and run AESD_IMAGE=buildroot pytest tests/system)"
fi

# The pinned Buildroot, as ./build.sh gets it
if ! br_submodule_update "$top"; then
	[ -f "$br/Makefile" ] || skip "no Buildroot tree: 'git submodule update --init buildroot' failed"
	log "warning: could not update the submodule; using the tree in $br"
fi
[ -f "$br/Makefile" ] || skip "no Buildroot tree in $br"

if [ -f "$br/.config" ] && ! grep -qs "^BR2_PACKAGE_OVERRIDE_FILE=\"$BR_OFFLINE_DIR/local.mk\"" "$br/.config"; then
	echo "buildroot-image: $br/.config is not the offline recipe's (a ./build.sh build?);" >&2
	echo "buildroot-image: not touching it. Run ./clean.sh first to build offline here." >&2
	exit 1
fi

# Buildroot's own choice of time stamp (the Buildroot commit's date), as
# in ./build.sh
unset SOURCE_DATE_EPOCH

if ! [ -f "$BR_OFFLINE_DIR/offline.config" ]; then
	log "preparing the offline recipe in $BR_OFFLINE_DIR"
	"$recipe/setup-offline.sh"
fi

# Per-package directories (BR2_PER_PACKAGE_DIRECTORIES) give each package a
# host directory with only what it depends on. Two of the recipe's Debian
# sources need more: Debian's attr 2.5.1 and acl 2.3.1 carry a patch
# (gettext-musl) that calls gettext's AM_GNU_GETTEXT_REQUIRE_VERSION, which
# their bundled m4/gettext.m4 (gettext 0.18.2) lacks, and autoconf runs on
# them (attr's autoreconf; acl's build regenerates configure, the patch
# being newer). Without per-package directories they found the macro in
# the one host directory, where the recipe's host-gettext stub had put it.
# So aclocal also searches the stub's macros. Buildroot's own attr 2.5.2
# and acl 2.3.2 need no such thing (attr calls no such macro; acl's
# configure is generated from gettext 0.22.4's and not redone).
offline_make_args="ACLOCAL_PATH=\$(ACLOCAL_DIR):\$(ACLOCAL_HOST_DIR):$BR_OFFLINE_DIR/stubs/gettext-tiny/m4"

# Everything a clean build depends on besides server/
config_id() {
	{
		git -C "$br" rev-parse HEAD
		cat "$BR_OFFLINE_DIR/offline.config" "$BR_OFFLINE_DIR/local.mk"
		echo "$offline_make_args"
		(cd "$top/base_external" && find . -type f | LC_ALL=C sort | xargs sha256sum)
	} | sha256sum | cut -d' ' -f1
}

# offline NAME RECONFIGURE [MAKE_ARGS]: run the recipe's build, its output
# in buildroot/output/aesd-NAME.log; with PROGRESS=N, report progress
# (N: how many packages)
offline() {
	local rc=0 log=$br/output/aesd-$1.log pid
	BUILD_LOG=/dev/null RECONFIGURE=$2 MAKE_ARGS="${3:-} $offline_make_args" \
		"$recipe/build-offline.sh" "$top" > "$log" 2>&1 &
	pid=$!
	if [ -n "${PROGRESS:-}" ]; then
		br_progress "$log" "$pid" "$PROGRESS" buildroot-image
	fi
	wait "$pid" || rc=$?
	if [ "$rc" -ne 0 ] && [ -z "${EXPECT_NO_IMAGES:-}" ]; then
		tail -n 40 "$log" >&2
		echo "buildroot-image: the $1 build failed (log: $log)" >&2
	fi
	return "$rc"
}

if ! [ -f "$images/rootfs.ext4" ] || ! [ -f "$images/Image" ] ||
	[ "$(cat "$stamp" 2>/dev/null)" != "$(config_id)" ]; then
	log "clean build (no image yet, or its configuration changed): tens of minutes"
	rm -f "$stamp"
	if [ -d "$br/output" ]; then
		nice -n 19 make -s -C "$br" clean
	fi
	mkdir -p "$br/output"
	log "Buildroot's output goes to $br/output/aesd-clean.log"
	start=$SECONDS
	# The recipe's configuration first (its make runs olddefconfig, which
	# builds nothing), to know what the build will build. The recipe then
	# lists the images, which do not exist yet, and fails: the .config it
	# wrote says whether the configuration worked.
	EXPECT_NO_IMAGES=1 offline configure 1 olddefconfig || true
	if ! grep -qs "^BR2_PACKAGE_OVERRIDE_FILE=\"$BR_OFFLINE_DIR/local.mk\"" "$br/.config"; then
		tail -n 40 "$br/output/aesd-configure.log" >&2
		echo "buildroot-image: configuring failed (log: $br/output/aesd-configure.log)" >&2
		exit 1
	fi
	read -r total early <<<"$(br_plan "$br")"
	jobs=$(br_jobs)
	# Every package that is ready builds at once, on every CPU
	# (BR2_PER_PACKAGE_DIRECTORIES in the defconfig makes that safe), and
	# the kernel first, the root file system's host tools beside it (as
	# ./build.sh does; br_plan, br_jobs)
	PROGRESS=$total offline clean 0 "-j$jobs $early all"
	log "clean build: $((SECONDS - start)) s (make -j$jobs $early all)"
	config_id > "$stamp"
fi

# What a change to server/ needs: the package and the root file system
# again. The first rebuild also catches up with anything else that is out
# of date (an edited BusyBox fragment, say); the second must rebuild the
# package alone, leave the kernel alone, and give the same bytes. Without
# -j: with per-package directories make would also work on the goals of
# one command line at once, and "all" must come after the rebuild.
offline rebuild 0 "aesd-assignments-rebuild all"
first=$(cd "$images" && sha256sum Image rootfs.ext2)

marker=$br/output/.aesd-rebuild-start
touch "$marker"
start=$SECONDS
offline rebuild-again 0 "aesd-assignments-rebuild all"
log "package-only rebuild (aesd-assignments and the root file system): $((SECONDS - start)) s"
rebuilt=$(find "$br/output/build" -mindepth 2 -maxdepth 2 -name .stamp_built \
	-newer "$marker" -printf '%h\n' | xargs -r -n1 basename | sort)
# the package's build directory, aesd-assignments-<its version>, and the
# kernel's
dirs=$(make -s --no-print-directory -C "$br" printvars VARS='AESD_ASSIGNMENTS_DIR LINUX_DIR')
package_dir=$(sed -n 's/^AESD_ASSIGNMENTS_DIR=//p' <<<"$dirs")
linux_dir=$(sed -n 's/^LINUX_DIR=//p' <<<"$dirs")
if [ -z "$package_dir" ]; then
	echo "buildroot-image: Buildroot did not report AESD_ASSIGNMENTS_DIR" >&2
	exit 1
fi
if [ "$rebuilt" != "$(basename "$package_dir")" ]; then
	echo "buildroot-image: the package rebuild rebuilt more than aesd-assignments:" >&2
	echo "$rebuilt" >&2
	exit 1
fi
if [ "$images/Image" -nt "$marker" ] || ! [ "$images/rootfs.ext2" -nt "$marker" ]; then
	echo "buildroot-image: expected a new rootfs.ext2 and the same Image" >&2
	exit 1
fi
second=$(cd "$images" && sha256sum Image rootfs.ext2)
if [ "$first" != "$second" ]; then
	printf 'buildroot-image: the same inputs gave other bytes:\n%s\n%s\n' "$first" "$second" >&2
	exit 1
fi
log "two package rebuilds gave the same Image and rootfs.ext2:"
echo "$second"
ls -l "$images/Image" "$images/rootfs.ext2"

# The kernel as built: the workers' seccomp filter needs CONFIG_SECCOMP and
# CONFIG_SECCOMP_FILTER (board/aesd-qemu/linux.fragment); and nothing in it
# needed the host OpenSSL the defconfig does not build: the kernel's only
# host programs that link it (certificates, module signing) were not built.
for option in CONFIG_SECCOMP CONFIG_SECCOMP_FILTER; do
	if ! grep -qx "$option=y" "$linux_dir/.config"; then
		echo "buildroot-image: the kernel lacks $option=y ($linux_dir/.config)" >&2
		exit 1
	fi
done
for program in certs/extract-cert scripts/sign-file scripts/insert-sys-cert; do
	if [ -e "$linux_dir/$program" ]; then
		echo "buildroot-image: the kernel built $program, which needs the host's OpenSSL" >&2
		echo "buildroot-image: (BR2_LINUX_KERNEL_NEEDS_HOST_OPENSSL is off in the defconfig)" >&2
		exit 1
	fi
done
log "the kernel has CONFIG_SECCOMP_FILTER and built nothing that needs OpenSSL"

cd "$top"
# -rs: a skipped test says why
AESD_IMAGE=buildroot /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/system
