#!/bin/bash
# Delete everything Buildroot built and its configuration (make distclean):
# buildroot/output/ (the build, the images, and the Buildroot guest's
# persistent disk, buildroot/output/aesd-disk.ext4, with whatever was
# changed in the guest) and buildroot/.config. A build after this starts
# from scratch. The downloads (BR2_DL_DIR, by default ~/.buildroot-dl) are
# kept, so it downloads nothing again.
#
#   ./clean.sh         say what would be deleted, and ask
#   ./clean.sh --yes   delete without asking
set -e

cd "$(dirname "$0")"

yes=0
case "${1:-}" in
-y | --yes) yes=1 ;;
"") ;;
*)
	echo "usage: $0 [--yes]" >&2
	exit 2
	;;
esac

if [ ! -f buildroot/Makefile ]; then
	echo "No Buildroot tree in buildroot/: nothing to clean"
	exit 0
fi

# What make distclean deletes, as it is now
doomed=()
for path in buildroot/output buildroot/.config; do
	[ -e "$path" ] && doomed+=("$path")
done
if [ "${#doomed[@]}" -eq 0 ]; then
	echo "Nothing to clean: no buildroot/output/ and no buildroot/.config"
	exit 0
fi

echo "This deletes (make -C buildroot distclean):"
if [ -e buildroot/output ]; then
	echo "  buildroot/output/      $(du -sh buildroot/output 2>/dev/null | cut -f1)," \
		"everything Buildroot built; a clean build makes it again"
	if [ -d buildroot/output/images ]; then
		echo "    with images/, the image ./runqemu.sh boots"
	fi
	if [ -e buildroot/output/aesd-disk.ext4 ]; then
		echo "    with aesd-disk.ext4, the Buildroot guest's disk: what you changed in the guest"
	fi
fi
if [ -e buildroot/.config ]; then
	echo "  buildroot/.config      the configuration (./build.sh loads the defconfig again)"
fi
echo "Kept: the downloads (BR2_DL_DIR, by default ~/.buildroot-dl)."

if [ "$yes" = 0 ]; then
	if ! [ -t 0 ]; then
		echo "Not deleting anything without a terminal to ask on: run $0 --yes" >&2
		exit 1
	fi
	printf 'Delete them? [y/N] '
	read -r answer
	case $answer in
	y | Y | yes | YES) ;;
	*)
		echo "Nothing deleted."
		exit 1
		;;
	esac
fi

make -C buildroot distclean
echo "Deleted: ${doomed[*]}"
