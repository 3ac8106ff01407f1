#!/bin/bash
# Offline checks of the Buildroot integration (base_external/) against a
# local Buildroot tree at the pinned release. Nothing is downloaded or
# built; all output goes to a temporary O= directory, never into the
# Buildroot tree.
#
#   BUILDROOT_DIR=/path/to/buildroot tests/buildroot-check.sh
#
# BUILDROOT_DIR defaults to the buildroot/ submodule. Without a Buildroot
# tree there, the checks are skipped (exit 0). Needs make, gcc, rsync,
# file, python3-magic, flake8, shellcheck and gcc-aarch64-linux-gnu
# (tests/packages/buildroot.txt).
set -e

cd "$(dirname "$0")/.."
ROOT=$PWD
EXTERNAL=$ROOT/base_external
DEFCONFIG=$EXTERNAL/configs/aesd_qemu_defconfig
INIT_SCRIPT=$ROOT/server/aesdsocket-start-stop
BUILDROOT_DIR=${BUILDROOT_DIR:-$ROOT/buildroot}
PINNED_VERSION=2026.02.3
UPSTREAM_DEFCONFIG=qemu_aarch64_virt_defconfig

if [ ! -f "$BUILDROOT_DIR/Makefile" ] || [ ! -x "$BUILDROOT_DIR/utils/check-package" ]; then
	echo "SKIP: no Buildroot tree at $BUILDROOT_DIR"
	echo "      (git submodule update --init buildroot, or set BUILDROOT_DIR)"
	exit 0
fi
BUILDROOT_DIR=$(cd "$BUILDROOT_DIR" && pwd)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/buildroot-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/output

passed=0
failed=0
pass() {
	passed=$((passed + 1))
	echo "ok: $*"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL: $*"
}
# check DESCRIPTION COMMAND...: one check, passed when COMMAND succeeds.
check() {
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}

# Quiet, one-directory make in Buildroot with our output directory.
br_make() {
	make --no-print-directory -C "$BUILDROOT_DIR" O="$OUT" "$@"
}

br_git_status() {
	git -C "$BUILDROOT_DIR" status --porcelain --ignored 2>/dev/null || true
}
status_before=$(br_git_status)

echo "Buildroot tree: $BUILDROOT_DIR"

# --- The pinned release ------------------------------------------------------
version=$(sed -n 's/^export BR2_VERSION := *//p' "$BUILDROOT_DIR/Makefile")
check "Buildroot version is $PINNED_VERSION (found: ${version:-none})" \
	test "$version" = "$PINNED_VERSION"

# --- (a) the defconfig loads, and savedefconfig gives it back unchanged -----
if br_make BR2_EXTERNAL="$EXTERNAL" aesd_qemu_defconfig >"$TMP/defconfig.log" 2>&1; then
	pass "make BR2_EXTERNAL=base_external aesd_qemu_defconfig"
else
	fail "make BR2_EXTERNAL=base_external aesd_qemu_defconfig"
	cat "$TMP/defconfig.log"
fi
if grep -i 'warning' "$TMP/defconfig.log"; then
	fail "kconfig warnings while loading the defconfig (above)"
else
	pass "no kconfig warnings while loading the defconfig"
fi

# What ./save-config.sh writes, from a copy of the project (its own
# base_external/ to write to, the Buildroot tree under test).
CONFIG=$OUT/.config
project=$TMP/project
mkdir -p "$project"
cp "$ROOT/save-config.sh" "$project/"
cp -a "$EXTERNAL" "$project/base_external"
ln -s "$BUILDROOT_DIR" "$project/buildroot"
if [ -f "$CONFIG" ] && O="$OUT" "$project/save-config.sh" >"$TMP/save.log" 2>&1; then
	if diff -u "$DEFCONFIG" "$project/base_external/configs/aesd_qemu_defconfig"; then
		pass "./save-config.sh (make savedefconfig) gives our defconfig back unchanged"
	else
		fail "./save-config.sh changed our defconfig (diff above: - ours, + saved)"
	fi
else
	fail "O=... ./save-config.sh"
	cat "$TMP/save.log"
fi
# ...and refuses a configuration with an override file of its own (as the
# offline recipe's), whose deviations it would save.
cp "$CONFIG" "$TMP/config.saved"
sed -i 's|^BR2_PACKAGE_OVERRIDE_FILE=.*|BR2_PACKAGE_OVERRIDE_FILE="/elsewhere/local.mk"|' "$CONFIG"
cp "$DEFCONFIG" "$project/base_external/configs/aesd_qemu_defconfig"
if O="$OUT" "$project/save-config.sh" >"$TMP/save-refused.log" 2>&1; then
	fail "./save-config.sh saved a configuration with its own override file"
else
	check "./save-config.sh refuses a configuration with its own override file" \
		cmp -s "$DEFCONFIG" "$project/base_external/configs/aesd_qemu_defconfig"
fi
cp "$TMP/config.saved" "$CONFIG"

# Derived from the release's defconfig: every line of it is in ours, but
# for lists of scripts (BR2_ROOTFS_POST_IMAGE_SCRIPT...), to which ours add
# their own: there, every script of the release's is in our list; and but
# for the lines ours leaves out on purpose, each for the reason given in
# docs/buildroot.md#what-the-build-builds-and-why:
dropped=(
	# Buildroot's own toolchain's kernel headers: ours is Bootlin's
	# prebuilt toolchain, with headers of its own
	'BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_6_18=y'
	# the kernel configuration builds no extract-cert or sign-file
	# (./test.sh buildroot-image checks the built kernel)
	'BR2_LINUX_KERNEL_NEEDS_HOST_OPENSSL=y'
	# runqemu.sh boots with the distribution's QEMU
	'BR2_PACKAGE_HOST_QEMU=y'
	'BR2_PACKAGE_HOST_QEMU_SYSTEM_MODE=y'
)
# script_list NAME FILE: the scripts NAME="..." lists in FILE, one a line
script_list() {
	sed -n "s/^$1=\"\(.*\)\"$/\1/p" "$2" | tr -s ' ' '\n'
}
upstream=$BUILDROOT_DIR/configs/$UPSTREAM_DEFCONFIG
mapfile -t upstream_lines < "$upstream"
missing=
for line in "${upstream_lines[@]}"; do
	name=${line%%=*}
	case $name in
	BR2_ROOTFS_*_SCRIPT)
		if grep -vxF -f <(script_list "$name" "$DEFCONFIG") \
			<(script_list "$name" "$upstream") \
			>/dev/null; then
			missing+="$line"$'\n'
		fi
		;;
	*)
		if ! grep -qxF "$line" "$DEFCONFIG" &&
			! printf '%s\n' "${dropped[@]}" | grep -qxF "$line"; then
			missing+="$line"$'\n'
		fi
		;;
	esac
done
if [ -z "$missing" ]; then
	pass "every line of $UPSTREAM_DEFCONFIG is in our defconfig, but ${#dropped[@]} left out on purpose"
else
	fail "lines of $UPSTREAM_DEFCONFIG missing from our defconfig:"
	printf '%s' "$missing" | sed 's/^/    /'
fi
# ...and those are really left out: not in ours, and off in the .config
for line in "${dropped[@]}"; do
	name=${line%%=*}
	check "$name is left out (upstream: $line)" \
		test -z "$(grep -e "^$name=" "$DEFCONFIG" "$CONFIG")"
done

# --- (c) the expanded .config ------------------------------------------------
for line in \
	'BR2_PACKAGE_AESD_ASSIGNMENTS=y' \
	'BR2_PACKAGE_DROPBEAR=y' \
	'BR2_PACKAGE_GESFTPSERVER=y' \
	'BR2_TARGET_GENERIC_ROOT_PASSWD="root"' \
	'BR2_TARGET_ENABLE_ROOT_LOGIN=y' \
	'BR2_SYSTEM_DHCP="eth0"' \
	'BR2_REPRODUCIBLE=y' \
	'BR2_TARGET_ROOTFS_EXT2_4=y' \
	'BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_AARCH64_GLIBC_STABLE=y' \
	'BR2_PER_PACKAGE_DIRECTORIES=y' \
	'BR2_PACKAGE_LIBSECCOMP=y' \
	'# BR2_CCACHE is not set'; do
	check ".config has $line" grep -qxF "$line" "$CONFIG"
done
# The kernel configuration fragment that keeps the seccomp filter working
# shellcheck disable=SC2016 # $(BR2_EXTERNAL_AESD_PATH) is Buildroot's
check '.config merges board/aesd-qemu/linux.fragment into the kernel configuration' \
	grep -qxF 'BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES="$(BR2_EXTERNAL_AESD_PATH)/board/aesd-qemu/linux.fragment"' "$CONFIG"
check "board/aesd-qemu/linux.fragment asks for CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER" \
	test "$(grep -cxE 'CONFIG_SECCOMP(_FILTER)?=y' "$EXTERNAL/board/aesd-qemu/linux.fragment")" = 2
# Downloads outside the tree; Buildroot's make expands $(HOME).
# shellcheck disable=SC2016
check '.config has BR2_DL_DIR="$(HOME)/.buildroot-dl"' \
	grep -qxF 'BR2_DL_DIR="$(HOME)/.buildroot-dl"' "$CONFIG"
check ".config has BR2_INIT_BUSYBOX=y (S99aesdsocket is the start script)" \
	grep -qx 'BR2_INIT_BUSYBOX=y' "$CONFIG"

# --- The build's plan (scripts/buildroot.sh, used by build.sh and the
# buildroot-image stage): the kernel named first among the goals before
# "all", then the root file system's host tools; one job more than the
# CPUs unless AESD_JOBS says otherwise (docs/buildroot.md, "Where the time
# goes", has the builds that chose them).
# shellcheck source=scripts/buildroot.sh
. "$ROOT/scripts/buildroot.sh"
read -r plan_count plan_goals <<<"$(br_plan "$BUILDROOT_DIR" O="$OUT")"
check "the build plan counts the packages ($plan_count)" \
	test "$plan_count" -gt 30
check "the build plan names the kernel first, then the root file system's host tools ($plan_goals)" \
	test "${plan_goals%% *}" = linux -a -n "$(grep -ow host-e2fsprogs <<<"$plan_goals")"
check "a build runs one job more than the CPUs ($(br_jobs)), or AESD_JOBS" \
	test "$(br_jobs)" = $(($(nproc) + 1)) -a "$(AESD_JOBS=7 br_jobs)" = 7

# --- The external tree: packages in external.mk, the rest in board/ -------
# A Buildroot external.mk includes the packages' .mk files and nothing
# else; what is particular to the image is done by the board's post-build
# and post-image scripts, named in the defconfig.
check "external.mk only includes the packages' .mk files" \
	test -z "$(grep -v -e '^include ' -e '^#' -e '^$' "$EXTERNAL/external.mk")"
# shellcheck disable=SC2016 # $(BR2_EXTERNAL_AESD_PATH) is Buildroot's
for script in 'BR2_ROOTFS_POST_BUILD_SCRIPT="$(BR2_EXTERNAL_AESD_PATH)/board/aesd-qemu/post-build.sh"' \
	'BR2_ROOTFS_POST_IMAGE_SCRIPT="board/qemu/post-image.sh $(BR2_EXTERNAL_AESD_PATH)/board/aesd-qemu/post-image.sh"'; do
	check ".config has $script" grep -qxF "$script" "$CONFIG"
done
for script in post-build.sh post-image.sh ext4-fixed-times.sh; do
	check "board/aesd-qemu/$script is executable" \
		test -x "$EXTERNAL/board/aesd-qemu/$script"
done

# --- (b) utils/check-package on every file we own ---------------------------
# check-package's shebang finds "python3" on PATH; use the system one, which
# has python3-magic.
PYTHON=/usr/bin/python3
check_package() {
	local label=$1
	shift
	if "$PYTHON" "$BUILDROOT_DIR/utils/check-package" "$@" >"$TMP/cp.log" 2>&1; then
		lines=$(sed -n 's/ lines processed//p' "$TMP/cp.log")
		if [ "$lines" = 0 ]; then
			pass "check-package: $label (a file it has no rules for)"
		else
			pass "check-package: $label ($lines lines)"
		fi
	else
		fail "check-package: $label"
		sed 's/^/    /' "$TMP/cp.log"
	fi
}
while IFS= read -r -d '' file; do
	check_package "${file#"$ROOT"/}" -b "$file"
done < <(find "$EXTERNAL" -type f -print0 | sort -z)

if [ -f "$INIT_SCRIPT" ]; then
	check_package "server/aesdsocket-start-stop" -b "$INIT_SCRIPT"
	# Buildroot's start-script rules (DAEMON, PIDFILE, S<nn><daemon> name,
	# tabs) apply by file name: check it under the name it is installed as.
	# It is installed with "install -m 0755", so, as for any file in an
	# etc/init.d/ directory, its mode in the source tree is not checked.
	mkdir -p "$TMP/target/etc/init.d"
	cp -p "$INIT_SCRIPT" "$TMP/target/etc/init.d/S99aesdsocket"
	check_package "server/aesdsocket-start-stop as /etc/init.d/S99aesdsocket" \
		-b "$TMP/target/etc/init.d/S99aesdsocket"
else
	fail "server/aesdsocket-start-stop does not exist"
fi

# The package's own steps below run without per-package directories: with
# them each package builds against copies of its dependencies' host and
# target directories, which dependencies taken as built (make -o) do not
# have. What the package's steps do is the same either way.
sed -i 's/^BR2_PER_PACKAGE_DIRECTORIES=y$/# BR2_PER_PACKAGE_DIRECTORIES is not set/' "$CONFIG"
if ! br_make olddefconfig >"$TMP/olddefconfig.log" 2>&1; then
	fail "make olddefconfig without BR2_PER_PACKAGE_DIRECTORIES"
	tail -n 20 "$TMP/olddefconfig.log"
fi

# --- The package resolves, offline ------------------------------------------
# One make run: the package's variables, with BR2_DL_DIR unset and a known
# HOME, then its "rsync" step (a local package needs no download).
vars='AESD_ASSIGNMENTS_VERSION AESD_ASSIGNMENTS_SITE_METHOD AESD_ASSIGNMENTS_OVERRIDE_SRCDIR AESD_ASSIGNMENTS_LICENSE AESD_ASSIGNMENTS_LICENSE_FILES AESD_ASSIGNMENTS_DIR AESD_ASSIGNMENTS_FINAL_ALL_DEPENDENCIES TARGET_CROSS TARGET_DIR DL_DIR'
if env -u BR2_DL_DIR HOME="$TMP/home" \
	make --no-print-directory -C "$BUILDROOT_DIR" O="$OUT" \
	printvars VARS="$vars" aesd-assignments-rsync >"$TMP/pkg.log" 2>&1; then
	pass "make printvars aesd-assignments-rsync"
else
	fail "make printvars aesd-assignments-rsync"
	tail -n 20 "$TMP/pkg.log"
fi
var() {
	sed -n "s/^$1=//p" "$TMP/pkg.log"
}
check "aesd-assignments uses SITE_METHOD local" \
	test "$(var AESD_ASSIGNMENTS_SITE_METHOD)" = local
srcdir=$(var AESD_ASSIGNMENTS_OVERRIDE_SRCDIR)
check "aesd-assignments is built from $ROOT/server (${srcdir:-unset})" \
	test -n "$srcdir" -a "$(realpath -m "$srcdir")" = "$(realpath "$ROOT/server")"
check "aesd-assignments LICENSE is MIT, from LICENSE" \
	test "$(var AESD_ASSIGNMENTS_LICENSE)/$(var AESD_ASSIGNMENTS_LICENSE_FILES)" = "MIT/LICENSE"
check "the default download dir is \$HOME/.buildroot-dl ($(var DL_DIR))" \
	test "$(var DL_DIR)" = "$TMP/home/.buildroot-dl"

pkgdir=$(var AESD_ASSIGNMENTS_DIR)
check "the rsync step copied server/ (Makefile, src/, LICENSE)" \
	test -n "$pkgdir" -a -f "$pkgdir/Makefile" -a -d "$pkgdir/src" -a -f "$pkgdir/LICENSE"
# Plant the leftovers of a native build in a copy of server/ and sync that
# (as <pkg>_OVERRIDE_SRCDIR, the same rsync step): none of them may reach
# the target build directory.
mkdir -p "$TMP/server-copy"
cp -a "$ROOT/server/." "$TMP/server-copy/"
mkdir -p "$TMP/server-copy/build/default"
echo host >"$TMP/server-copy/aesdsocket"
echo host >"$TMP/server-copy/build/default/main.o"
if br_make AESD_ASSIGNMENTS_OVERRIDE_SRCDIR="$TMP/server-copy" \
	printvars VARS=AESD_ASSIGNMENTS_DIR aesd-assignments-rsync \
	>"$TMP/rsync.log" 2>&1; then
	copydir=$(sed -n 's/^AESD_ASSIGNMENTS_DIR=//p' "$TMP/rsync.log")
	check "host build leftovers (server/aesdsocket, server/build/) are not synced" \
		test -n "$copydir" -a -f "$copydir/Makefile" \
		-a ! -e "$copydir/aesdsocket" -a ! -e "$copydir/build"
else
	fail "make aesd-assignments-rsync from a copy of server/"
	tail -n 20 "$TMP/rsync.log"
fi

if BR2_DL_DIR="$TMP/dl-from-env" br_make printvars VARS=DL_DIR >"$TMP/dl.log" 2>&1; then
	check "BR2_DL_DIR from the environment wins ($(sed -n 's/^DL_DIR=//p' "$TMP/dl.log"))" \
		grep -qxF "DL_DIR=$TMP/dl-from-env" "$TMP/dl.log"
else
	fail "make printvars VARS=DL_DIR with BR2_DL_DIR set"
	tail -n 20 "$TMP/dl.log"
fi

# --- The package builds and installs through Buildroot ----------------------
# Buildroot's toolchain cannot be downloaded here, so Debian's AArch64
# cross compiler stands in for it, under the names Buildroot calls, and
# the package's dependencies (toolchain, skeleton, host tools) are taken
# as built (make -o). What runs is Buildroot's own rsync, build and
# install steps of the package, with our .mk's commands.
cross=$(var TARGET_CROSS)
target=$(var TARGET_DIR)
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
	echo "note: no aarch64-linux-gnu-gcc (gcc-aarch64-linux-gnu): package build not checked"
elif [ -z "$cross" ] || [ -z "$target" ]; then
	fail "Buildroot did not report TARGET_CROSS and TARGET_DIR"
else
	mkdir -p "$(dirname "$cross")"
	for tool in gcc cpp ar as ld nm ranlib readelf strip objcopy objdump \
		gcc-ar gcc-nm gcc-ranlib; do
		if [ -x "/usr/bin/aarch64-linux-gnu-$tool" ]; then
			ln -sf "/usr/bin/aarch64-linux-gnu-$tool" "$cross$tool"
		fi
	done
	assume_built=()
	for dep in $(var AESD_ASSIGNMENTS_FINAL_ALL_DEPENDENCIES); do
		assume_built+=(-o "$dep")
	done
	if br_make "${assume_built[@]}" aesd-assignments >"$TMP/build.log" 2>&1; then
		pass "make aesd-assignments (Buildroot's build and install steps)"
	else
		fail "make aesd-assignments (Buildroot's build and install steps)"
		tail -n 30 "$TMP/build.log"
	fi
	check "target has /usr/bin/aesdsocket for AArch64" \
		grep -q 'ARM aarch64' <(file -b "$target/usr/bin/aesdsocket" 2>&1)
	check "target has an executable /etc/init.d/S99aesdsocket" \
		test -x "$target/etc/init.d/S99aesdsocket"
	check "target has /etc/default/aesdsocket" \
		test -f "$target/etc/default/aesdsocket"
	check "no systemd units with BusyBox init" \
		test ! -e "$target/usr/lib/systemd/system/aesdsocket.service"
fi

# --- The board scripts, as Buildroot runs them -------------------------------
# config_value NAME: NAME's string value in the loaded configuration
config_value() {
	sed -n "s/^$1=\"\\(.*\\)\"$/\\1/p" "$CONFIG"
}
# Buildroot's environment for the scripts: the configuration, the host
# tools (here the host's own e2fsprogs), SOURCE_DATE_EPOCH
epoch=1700000000
board_env=(env BR2_CONFIG="$CONFIG" SOURCE_DATE_EPOCH="$epoch"
	PATH="/usr/sbin:/sbin:$PATH")

# post-build.sh hashes the root password with a fixed salt; a stand-in for
# host-mkpasswd shows how it was called.
pb=$TMP/post-build
mkdir -p "$pb/target/etc" "$pb/host/bin"
# shellcheck disable=SC2016 # a hash, not an expansion
printf 'root:$5$random$salted:19000:0:99999:7:::\ndaemon:*:::::::\n' >"$pb/target/etc/shadow"
cat >"$pb/host/bin/mkpasswd" <<EOF
#!/bin/sh
echo "\$*" > "$pb/args"
echo '\$5\$aesdreproducible\$hash'
EOF
chmod +x "$pb/host/bin/mkpasswd"
if "${board_env[@]}" HOST_DIR="$pb/host" "$EXTERNAL/board/aesd-qemu/post-build.sh" \
	"$pb/target" "$DEFCONFIG" >"$TMP/post-build.log" 2>&1; then
	want="-m $(config_value BR2_TARGET_GENERIC_PASSWD_METHOD) -S aesdreproducible $(config_value BR2_TARGET_GENERIC_ROOT_PASSWD)"
	check "post-build.sh runs mkpasswd $want" \
		test "$(cat "$pb/args" 2>/dev/null)" = "$want"
	# shellcheck disable=SC2016 # a hash, not an expansion
	check "post-build.sh puts its hash into /etc/shadow, and only for root" \
		test "$(cat "$pb/target/etc/shadow")" = \
		"$(printf 'root:$5$aesdreproducible$hash:19000:0:99999:7:::\ndaemon:*:::::::')"
else
	fail "post-build.sh"
	sed 's/^/    /' "$TMP/post-build.log"
fi

# post-image.sh on two root file systems made by mke2fs (the host's) from
# the same target directory a few seconds apart, as Buildroot makes
# rootfs.ext2 (BR2_REPRODUCIBLE: every mtime SOURCE_DATE_EPOCH, the
# defconfig's size and mkfs options): they differ, by the clock, and after
# post-image.sh they must not.
make_rootfs() {
	local dir=$TMP/post-image/$1
	rm -rf "$dir"
	mkdir -p "$dir/images" "$dir/target/etc/init.d" "$dir/target/usr/bin" "$dir/target/tmp"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/target/etc/passwd"
	cp "$INIT_SCRIPT" "$dir/target/etc/init.d/S99aesdsocket"
	cp /bin/true "$dir/target/usr/bin/true"
	ln -s true "$dir/target/usr/bin/false"
	find "$dir/target" -print0 | xargs -0 touch -hd "@$epoch"
	# shellcheck disable=SC2046 # the defconfig's options, one word each
	PATH="/usr/sbin:/sbin:$PATH" mke2fs -q -t ext4 -d "$dir/target" \
		-N "$(sed -n 's/^BR2_TARGET_ROOTFS_EXT2_INODES=//p' "$CONFIG")" \
		-m "$(sed -n 's/^BR2_TARGET_ROOTFS_EXT2_RESBLKS=//p' "$CONFIG")" \
		-L "$(config_value BR2_TARGET_ROOTFS_EXT2_LABEL)" \
		-I "$(sed -n 's/^BR2_TARGET_ROOTFS_EXT2_INODE_SIZE=//p' "$CONFIG")" \
		$(config_value BR2_TARGET_ROOTFS_EXT2_MKFS_OPTIONS) \
		"$dir/images/rootfs.ext2" "$(config_value BR2_TARGET_ROOTFS_EXT2_SIZE)"
}
if make_rootfs one >"$TMP/mke2fs.log" 2>&1 && sleep 1.1 &&
	make_rootfs two >>"$TMP/mke2fs.log" 2>&1; then
	images=$TMP/post-image
	if cmp -s "$images/one/images/rootfs.ext2" "$images/two/images/rootfs.ext2"; then
		fail "mke2fs made the same image twice: the post-image check proves nothing"
	elif ! PATH="/usr/sbin:/sbin:$PATH" dumpe2fs "$images/one/images/rootfs.ext2" \
		2>/dev/null | grep -q 'Backup superblock at'; then
		# (mke2fs writes its times into the backups too)
		fail "the image has no backup superblock: the post-image check proves less"
	elif "${board_env[@]}" "$EXTERNAL/board/aesd-qemu/post-image.sh" \
		"$images/one/images" "$DEFCONFIG" >"$TMP/post-image.log" 2>&1 &&
		"${board_env[@]}" "$EXTERNAL/board/aesd-qemu/post-image.sh" \
		"$images/two/images" "$DEFCONFIG" >>"$TMP/post-image.log" 2>&1; then
		check "post-image.sh makes two rootfs.ext2 made seconds apart identical" \
			cmp "$images/one/images/rootfs.ext2" "$images/two/images/rootfs.ext2"
		if env PATH="/usr/sbin:/sbin:$PATH" e2fsck -fn "$images/one/images/rootfs.ext2" \
			>"$TMP/e2fsck.log" 2>&1; then
			pass "post-image.sh leaves a clean file system (e2fsck -fn)"
		else
			fail "post-image.sh leaves a clean file system (e2fsck -fn)"
			sed 's/^/    /' "$TMP/e2fsck.log"
		fi
	else
		fail "post-image.sh"
		sed 's/^/    /' "$TMP/post-image.log"
	fi
else
	fail "mke2fs -d (the host's, as Buildroot's rootfs-ext2)"
	sed 's/^/    /' "$TMP/mke2fs.log"
fi

# --- ./build.sh without network ----------------------------------------------
# It must stop in seconds, before building anything, and say what is
# missing and what to do. Run in a network namespace of its own (no
# network at all), from copies of the project: a git superproject whose
# submodule is not checked out, and one with a Buildroot tree (symbolic
# links to the tree under test) but no download directory.
if [ "$(id -u)" -eq 0 ]; then
	no_network=(unshare -n)
else
	no_network=(unshare -r -n)
fi
# offline_build LOG DIR ARGS...: run ./build.sh ARGS in DIR with no network
# and a home and git configuration of its own, its output in LOG; its exit
# status, and in $took the seconds it ran
offline_build() {
	local log=$1 dir=$2 start=$SECONDS rc=0
	shift 2
	(cd "$dir" && env HOME="$TMP/home" GIT_CONFIG_NOSYSTEM=1 \
		BR2_DL_DIR="$TMP/build-sh-dl" "${no_network[@]}" \
		timeout 300 ./build.sh "$@") >"$log" 2>&1 || rc=$?
	took=$((SECONDS - start))
	return "$rc"
}
if ! "${no_network[@]}" true 2>/dev/null; then
	echo "note: cannot make a network namespace (${no_network[*]}): build.sh offline not checked"
else
	mkdir -p "$TMP/home"
	# (1) The submodule cannot be fetched.
	super=$TMP/build-sh-super
	mkdir -p "$super/buildroot"
	cp "$ROOT/build.sh" "$ROOT/.gitmodules" "$super/"
	ln -s "$ROOT/scripts" "$super/scripts"
	git -C "$super" init -q
	git -C "$super" update-index --add --cacheinfo \
		"160000,$(git -C "$BUILDROOT_DIR" rev-parse HEAD),buildroot"
	url=$(git config -f "$ROOT/.gitmodules" submodule.buildroot.url)
	if offline_build "$TMP/build-sh-super.log" "$super"; then
		fail "build.sh without network or submodule succeeded"
		sed 's/^/    /' "$TMP/build-sh-super.log"
	else
		# what it said
		sed -n '/^error:/,$s/^/    /p' "$TMP/build-sh-super.log"
		check "build.sh without network or submodule stops in ${took} s (at most 20)" \
			test "$took" -le 20
		check "...saying it cannot reach $url" \
			grep -qF "error: cannot reach $url, where the Buildroot submodule comes from" \
			"$TMP/build-sh-super.log"
		check "...and how to use a copy of Buildroot's repository instead" \
			grep -qF "git config submodule.buildroot.url /path/to/buildroot.git" \
			"$TMP/build-sh-super.log"
		# That recipe, run as printed with the tree under test as the
		# copy: git must check out the pinned commit (git 2.38.1 and
		# later refuse a submodule from a local path unless told).
		sed -n 's/^ *\(git .*\)$/\1/p' "$TMP/build-sh-super.log" |
			sed "s|/path/to/buildroot.git|$BUILDROOT_DIR|" >"$TMP/recipe.sh"
		if (cd "$super" && env HOME="$TMP/home" GIT_CONFIG_NOSYSTEM=1 \
			"${no_network[@]}" sh -e "$TMP/recipe.sh") >"$TMP/recipe.log" 2>&1; then
			check "...which checks out the pinned Buildroot when run as printed" \
				test "$(git -C "$super/buildroot" rev-parse HEAD 2>/dev/null)" = \
				"$(git -C "$BUILDROOT_DIR" rev-parse HEAD)"
		else
			fail "the printed recipe failed:"
			sed 's/^/    /' "$TMP/recipe.sh" "$TMP/recipe.log"
		fi
	fi

	# (2) A Buildroot tree, but nothing to download with and no downloads.
	copy=$TMP/build-sh-copy
	mkdir -p "$copy"
	cp "$ROOT/build.sh" "$ROOT/clean.sh" "$copy/"
	ln -s "$EXTERNAL" "$copy/base_external"
	ln -s "$ROOT/scripts" "$copy/scripts"
	/usr/bin/python3 - "$BUILDROOT_DIR" "$copy/buildroot" <<'EOF'
import os, subprocess, sys
tree, copy = sys.argv[1:]
files = subprocess.run(["git", "-C", tree, "ls-files", "-z"], check=True,
                       capture_output=True).stdout.decode().split("\0")
for name in filter(None, files):
    os.makedirs(os.path.join(copy, os.path.dirname(name)), exist_ok=True)
    os.symlink(os.path.join(tree, name), os.path.join(copy, name))
EOF
	if offline_build "$TMP/build-sh-copy.log" "$copy"; then
		fail "build.sh without network or downloads succeeded"
		sed 's/^/    /' "$TMP/build-sh-copy.log"
	else
		# what it said
		sed -n '/^error:/,$s/^/    /p' "$TMP/build-sh-copy.log"
		check "build.sh without network or downloads stops in ${took} s (at most 90)" \
			test "$took" -le 90
		check "...before building anything" \
			test -z "$(find "$copy/buildroot/output/build" -name '.stamp_*' -print -quit)"
		check "...saying the download site cannot be reached and BR2_DL_DIR is empty" \
			grep -qF "error: no network: https://sources.buildroot.net cannot be reached, and the download" \
			"$TMP/build-sh-copy.log"
		check "...and what to do: connect, or BR2_DL_DIR" \
			grep -qF "BR2_DL_DIR=/path/to/buildroot-dl ./build.sh" "$TMP/build-sh-copy.log"
	fi

	# (3) The same, with every archive in the download directory (empty
	# stand-ins: only their names are checked before building).
	# (a package built from a local directory is listed as its file:// URL)
	if make -s --no-print-directory -C "$copy/buildroot" external-deps \
		>"$TMP/external-deps" 2>&1 &&
		grep -v / "$TMP/external-deps" >"$TMP/archives"; then
		mkdir -p "$TMP/build-sh-dl/some-package"
		(cd "$TMP/build-sh-dl/some-package" && xargs touch <"$TMP/archives")

		# clean.sh says what it deletes, and deletes it only when told
		if (cd "$copy" && ./clean.sh </dev/null) >"$TMP/clean.log" 2>&1; then
			fail "clean.sh without a terminal or --yes went ahead"
		else
			check "clean.sh without a terminal or --yes names what it would delete" \
				grep -qF "  buildroot/output/ " "$TMP/clean.log"
			check "...and deletes nothing" \
				test -f "$copy/buildroot/.config" -a -d "$copy/buildroot/output"
		fi
		if (cd "$copy" && ./clean.sh --yes) >>"$TMP/clean.log" 2>&1; then
			check "clean.sh --yes deletes buildroot/output and buildroot/.config" \
				test ! -e "$copy/buildroot/.config" -a ! -e "$copy/buildroot/output"
		else
			fail "clean.sh --yes"
			sed 's/^/    /' "$TMP/clean.log"
		fi

		if offline_build "$TMP/build-sh-check.log" "$copy" --check; then
			check "build.sh --check without network, every archive in BR2_DL_DIR: ready" \
				grep -qF "No network, but all $(wc -l <"$TMP/archives") source archives are in" \
				"$TMP/build-sh-check.log"
			check "...having changed nothing (no buildroot/.config, no output/)" \
				test ! -e "$copy/buildroot/.config" -a ! -e "$copy/buildroot/output"
		else
			fail "build.sh --check without network, every archive in BR2_DL_DIR"
			sed 's/^/    /' "$TMP/build-sh-check.log"
		fi
		# one missing: named
		first=$(head -n 1 "$TMP/archives")
		rm "$TMP/build-sh-dl/some-package/$first"
		if offline_build "$TMP/build-sh-one.log" "$copy" --check; then
			fail "build.sh --check without network succeeded with $first missing"
		else
			check "build.sh without network, one archive missing: says so" \
				grep -qF "cannot be reached, and 1 of the" "$TMP/build-sh-one.log"
			check "...and names it ($first)" \
				grep -qxF "         $first" "$TMP/build-sh-one.log"
		fi
	else
		fail "make external-deps in the copy"
		sed 's/^/    /' "$TMP/external-deps"
	fi
fi

# --- Nothing written into the Buildroot tree --------------------------------
check "the Buildroot tree was not modified" test "$(br_git_status)" = "$status_before"

echo "buildroot-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
