#!/bin/bash
# Build the AArch64 QEMU image with Buildroot and our external tree
# (base_external/). Images end up in buildroot/output/images/.
#
#   ./build.sh           check out Buildroot, configure (first run), build
#   ./build.sh --check   only check that the build can get what it needs;
#                        changes nothing (no checkout, no configuration)
#
# Every package that is ready builds at once, on every CPU (make -jN; the
# defconfig's BR2_PER_PACKAGE_DIRECTORIES makes that safe): AESD_JOBS=N
# sets N (default: one more than the CPUs, see br_jobs). The kernel, then
# the root file system's host tools, are named as goals before "all", so
# that the kernel starts first and the rest builds beside it (br_plan).
# Buildroot's own output goes to buildroot/output/aesd-build.log; the
# terminal gets a line per package.
#
# Downloads go to BR2_DL_DIR: $HOME/.buildroot-dl unless the environment
# says otherwise, so a second clone or a rebuild after ./clean.sh
# downloads nothing. Before building, the script checks that it can get
# the Buildroot submodule and the source archives (from the network or
# from BR2_DL_DIR), and stops at once, saying what to do, if it cannot:
# Buildroot itself would stop only at its first download.
set -e

cd "$(dirname "$0")"
# br_submodule_update, br_progress
# shellcheck source=scripts/buildroot.sh
. scripts/buildroot.sh

EXTERNAL="$PWD/base_external"
DEFCONFIG=aesd_qemu_defconfig
LOG=buildroot/output/aesd-build.log
# the test aid that builds the image where nothing can be downloaded
OFFLINE_RECIPE=../shared/br-offline
# a probe of a download site gives up after this many seconds
PROBE_TIMEOUT=10

check_only=0
case "${1:-}" in
--check) check_only=1 ;;
"") ;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac
jobs=$(br_jobs)
case $jobs in
'' | *[!0-9]* | 0)
	echo "AESD_JOBS must be a number of parallel jobs, not '$jobs'" >&2
	exit 2
	;;
esac

phase() {
	printf '\n==> %s\n' "$*"
}

# fail LINE...: print the lines (an argument may hold several) as an
# error, then exit.
fail() {
	printf '%s\n' "$@" | sed -e '1s/^/error: /' -e '2,$s/^./       &/' >&2
	exit 1
}

# What to do when the sources cannot be downloaded.
download_help() {
	echo "What to do:"
	echo "  - connect this machine to the internet and run $0 again;"
	echo "  - or build from a download directory filled on a connected machine"
	echo "    (by ./build.sh there, or 'make -C buildroot source'):"
	echo "      BR2_DL_DIR=/path/to/buildroot-dl $0"
	if [ -x "$OFFLINE_RECIPE/build-offline.sh" ]; then
		echo "  - or, on this development machine, build with Debian's toolchain"
		echo "    and sources instead of Buildroot's downloads ($OFFLINE_RECIPE,"
		echo "    see its NOTES.md):"
		echo "      ./test.sh buildroot-image"
	fi
}

# reachable URL: the host of URL answers (any HTTP answer, even an error,
# counts; wget says 4 for a network failure, 5 for a TLS one).
reachable() {
	local rc=0
	wget -q --spider -T "$PROBE_TIMEOUT" -t 1 "$1/" >/dev/null 2>&1 || rc=$?
	[ "$rc" -eq 0 ] || [ "$rc" -eq 8 ]
}

# --- The Buildroot tree: the pinned submodule ------------------------------
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	pinned=$(git ls-files -s buildroot | awk '{ print $2 }')
	if ! [ -e buildroot/.git ] ||
		! git -C buildroot cat-file -e "$pinned^{commit}" 2>/dev/null; then
		# The pinned commit is not here: git must fetch it.
		url=$(br_submodule_url .)
		phase "Fetching the buildroot submodule (${pinned:0:10}) from $url"
		if ! timeout "$PROBE_TIMEOUT" git ls-remote "$url" HEAD >/dev/null 2>&1; then
			fail "cannot reach $url, where the Buildroot submodule comes from." "" \
				"What to do:" \
				"  - connect this machine to the internet and run $0 again;" \
				"  - or check it out from a copy of Buildroot's git repository (a clone" \
				"    of $url made on a connected machine), then run $0 again:" \
				"      git config submodule.buildroot.url /path/to/buildroot.git" \
				"      git -c protocol.file.allow=always submodule update --init buildroot" \
				"    (git refuses a submodule from a local path without that -c;" \
				"    $0 passes it too, for a local URL)"
		fi
		if [ "$check_only" = 1 ]; then
			phase "Ready as far as can be checked (--check: nothing fetched)"
			echo "The submodule's URL answers; ./build.sh will check it out. The"
			echo "downloads can be checked once it is there."
			exit 0
		fi
	elif [ "$check_only" = 1 ]; then
		phase "The buildroot submodule is at the pinned commit (${pinned:0:10})"
	else
		phase "Updating the buildroot submodule"
	fi
	if [ "$check_only" = 0 ] && ! br_submodule_update .; then
		fail "could not check out the Buildroot submodule at ${pinned:0:10} (git's message above)."
	fi
fi

if [ ! -f buildroot/Makefile ]; then
	fail "no Buildroot tree in buildroot/. It is a git submodule: get the project" \
		"with 'git clone', or put the Buildroot release it pins into buildroot/."
fi

# --- The configuration -------------------------------------------------------
# The offline recipe's configuration (./test.sh buildroot-image) downloads
# nothing and needs the recipe's own make options.
if grep -qsx 'BR2_WGET="false"' buildroot/.config; then
	fail "buildroot/.config cannot download (BR2_WGET=\"false\"): it is the offline" \
		"recipe's (./test.sh buildroot-image). Run ./clean.sh first (it says what" \
		"it deletes) to build here with ./build.sh, or go on with" \
		"./test.sh buildroot-image."
fi

br=(make -s --no-print-directory -C buildroot)
if [ "$check_only" = 1 ]; then
	# The checks below need a configured tree: configure one in a
	# directory of our own, from buildroot/.config when there is one.
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/aesd-build-check.XXXXXX")
	trap 'rm -rf "$scratch"' EXIT
	br+=(O="$scratch")
	if [ -f buildroot/.config ]; then
		cp buildroot/.config "$scratch/.config"
		"${br[@]}" BR2_EXTERNAL="$EXTERNAL" olddefconfig >/dev/null
	else
		"${br[@]}" BR2_EXTERNAL="$EXTERNAL" "$DEFCONFIG" >/dev/null
	fi
elif [ ! -f buildroot/.config ]; then
	phase "First run: loading $DEFCONFIG with BR2_EXTERNAL=$EXTERNAL"
	make -C buildroot BR2_EXTERNAL="$EXTERNAL" "$DEFCONFIG"
else
	phase "Keeping the existing configuration (buildroot/.config)"
fi

# --- The source archives -----------------------------------------------------
# value NAME: NAME's value, from Buildroot's printvars output in $vars
value() {
	sed -n "s/^$1=//p" <<<"$vars" | sed 's/^"\(.*\)"$/\1/'
}
vars=$("${br[@]}" printvars VARS='DL_DIR BR2_PRIMARY_SITE BR2_BACKUP_SITE')
dl_dir=$(value DL_DIR)
sites=()
for site in "$(value BR2_PRIMARY_SITE)" "$(value BR2_BACKUP_SITE)"; do
	[ -n "$site" ] && sites+=("$site")
done

phase "Checking the downloads (BR2_DL_DIR: $dl_dir)"
command -v wget >/dev/null ||
	fail "no wget: Buildroot downloads with it (Debian: apt-get install wget)."
online=
for site in "${sites[@]}"; do
	if reachable "$site"; then
		online=$site
		break
	fi
done
if [ "${#sites[@]}" -eq 0 ]; then
	echo "No BR2_PRIMARY_SITE or BR2_BACKUP_SITE to try: not checked."
elif [ -n "$online" ]; then
	echo "$online answers: what is not in $dl_dir can be downloaded."
else
	# No network: every archive must be in the download directory already.
	if [ -z "$(find "$dl_dir" -type f -print -quit 2>/dev/null)" ]; then
		fail "no network: ${sites[*]} cannot be reached, and the download" \
			"directory $dl_dir (BR2_DL_DIR) is empty or does not exist." \
			"Buildroot would stop at its first download." "" \
			"$(download_help)"
	fi
	# (a package built from a local directory is listed as its file:// URL)
	needed=$("${br[@]}" external-deps | grep -v / | sort -u)
	have=$(find "$dl_dir" -type f -printf '%f\n' 2>/dev/null | sort -u)
	missing=$(comm -23 <(printf '%s\n' "$needed") <(printf '%s\n' "$have"))
	total=$(grep -c . <<<"$needed" || true)
	if [ -n "$missing" ]; then
		count=$(grep -c . <<<"$missing")
		fail "no network: ${sites[*]} cannot be reached, and $count of the" \
			"$total source archives this build needs are not in $dl_dir" \
			"(BR2_DL_DIR), for example:" \
			"$(head -n 3 <<<"$missing" | sed 's/^/  /')" \
			"Buildroot would stop at the first one." "" \
			"$(download_help)"
	fi
	echo "No network, but all $total source archives are in $dl_dir."
fi

if [ "$check_only" = 1 ]; then
	phase "Ready to build (--check: nothing changed, not building)"
	exit 0
fi

# --- The build ---------------------------------------------------------------
# How many packages, and the goals to name before "all" (br_plan): the
# kernel, then the root file system's host tools, which make would reach
# only after the kernel.
read -r total early <<<"$(br_plan buildroot)"
mkdir -p "$(dirname "$LOG")"
phase "Building $total packages: make -C buildroot -j$jobs $early all"
echo "Downloads go to $dl_dir. Buildroot's output goes to $PWD/$LOG"
echo "(tail -f it to see everything); here, a line as each package starts:"
start=$SECONDS
: >"$LOG"
br_progress "$LOG" "$$" "$total" build.sh &
progress=$!
trap 'kill "$progress" 2>/dev/null || true' EXIT
rc=0
# shellcheck disable=SC2086 # $early: package names, one a word
make -C buildroot -j"$jobs" $early all >"$LOG" 2>&1 || rc=$?
kill "$progress" 2>/dev/null || true
took=$(br_elapsed $((SECONDS - start)))
if [ "$rc" -ne 0 ]; then
	echo "--- the end of $LOG:" >&2
	tail -n 40 "$LOG" >&2
	fail "the build failed after $took (make exit status $rc); all of Buildroot's" \
		"output is in $PWD/$LOG. The error is usually just above" \
		"'make: *** ... Error'."
fi

phase "Done in $took. Images in $PWD/buildroot/output/images:"
ls -l buildroot/output/images/Image buildroot/output/images/rootfs.ext4
echo "Boot them with ./runqemu.sh"
