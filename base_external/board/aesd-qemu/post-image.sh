#!/bin/sh
# Post-image script of aesd_qemu_defconfig (BR2_ROOTFS_POST_IMAGE_SCRIPT,
# after Buildroot's board/qemu/post-image.sh): Buildroot runs it once the
# images are made, with the images directory as $1 and BR2_CONFIG,
# SOURCE_DATE_EPOCH and its host tools first in PATH in the environment.
#
# Reproducible images (BR2_REPRODUCIBLE): mke2fs stamps the root file
# system with the time of the build; ext4-fixed-times.sh sets those time
# stamps to SOURCE_DATE_EPOCH (the date of the Buildroot commit).
set -eu

images=$1
board_dir=$(dirname "$0")

enabled() {
	grep -qx "$1=y" "$BR2_CONFIG"
}

enabled BR2_REPRODUCIBLE || exit 0
enabled BR2_TARGET_ROOTFS_EXT2 || exit 0
# A compressed image (BR2_TARGET_ROOTFS_EXT2_GZIP...) is made straight
# after the uncompressed one, so it would keep the times of the build.
if ! enabled BR2_TARGET_ROOTFS_EXT2_NONE; then
	echo "post-image.sh: warning: the compressed rootfs.ext2 keeps the time of the build" >&2
fi
"$board_dir/ext4-fixed-times.sh" "$images/rootfs.ext2" "$SOURCE_DATE_EPOCH"
