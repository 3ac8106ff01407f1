#!/bin/bash
# Build the AArch64 QEMU image with Buildroot and our external tree
# (base_external/). Images end up in buildroot/output/images/.
#
# Downloads go to BR2_DL_DIR: $HOME/.buildroot-dl unless the environment
# says otherwise, so a second clone or a rebuild after ./clean.sh
# downloads nothing.
set -e

cd "$(dirname "$0")"

EXTERNAL="$PWD/base_external"
DEFCONFIG=aesd_qemu_defconfig

phase() {
	printf '\n==> %s\n' "$*"
}

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	phase "Updating the buildroot submodule"
	git submodule update --init buildroot
fi

if [ ! -f buildroot/Makefile ]; then
	echo "error: no Buildroot tree in buildroot/ (not a git clone?)" >&2
	exit 1
fi

if [ ! -f buildroot/.config ]; then
	phase "First run: loading $DEFCONFIG with BR2_EXTERNAL=$EXTERNAL"
	make -C buildroot BR2_EXTERNAL="$EXTERNAL" "$DEFCONFIG"
else
	phase "Keeping the existing configuration (buildroot/.config)"
fi

phase "Building (downloads go to ${BR2_DL_DIR:-the BR2_DL_DIR of the configuration})"
make -C buildroot

phase "Done. Images in $PWD/buildroot/output/images:"
ls -l buildroot/output/images/Image buildroot/output/images/rootfs.ext4
echo "Boot them with ./runqemu.sh"
