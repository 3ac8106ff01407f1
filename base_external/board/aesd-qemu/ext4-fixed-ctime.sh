#!/bin/sh
# ext4-fixed-ctime.sh IMAGE EPOCH: set the inode change time (ctime) of
# every file in the ext4 file system IMAGE to EPOCH (seconds).
#
# mke2fs -d copies each file's times from the target directory. Buildroot
# (BR2_REPRODUCIBLE) sets every mtime there to SOURCE_DATE_EPOCH, but a
# host file's ctime is always the moment it last changed, that is the time
# of the build. mke2fs 1.47.1 and later clamp the times they copy to
# SOURCE_DATE_EPOCH (tytso/e2fsprogs#131); older ones, such as Debian 12's
# 1.47.0 used by the offline build, do not. This makes the result the same
# with any of them. Run from external.mk as a rootfs post-gen hook, with
# Buildroot's host tools (debugfs, dumpe2fs) first in PATH.
set -eu

image=$1
epoch=$2
# debugfs's own time stamps (the superblock's last write time)
E2FSPROGS_FAKE_TIME=$epoch
export E2FSPROGS_FAKE_TIME

commands=$(mktemp)
trap 'rm -f "$commands"' EXIT

# The inodes in use: in each group, those not listed as free. Of the
# reserved ones (below "First inode") only the root directory's (2) is a
# file copied from the target directory.
dumpe2fs "$image" 2>/dev/null | awk -v epoch="$epoch" '
	/^Inodes per group:/ { ipg = $4 }
	/^First inode:/ { first = $3 }
	/^Group [0-9]+:/ { group = $2 + 0 }
	/^  Free inodes:/ {
		split("", free)
		sub(/^  Free inodes: */, "")
		n = split($0, ranges, /, */)
		for (i = 1; i <= n; i++) {
			if (ranges[i] == "")
				continue
			m = split(ranges[i], ends, "-")
			lo = ends[1] + 0
			hi = (m == 2 ? ends[2] : ends[1]) + 0
			for (ino = lo; ino <= hi; ino++)
				free[ino] = 1
		}
		for (ino = group * ipg + 1; ino <= (group + 1) * ipg; ino++)
			if (!(ino in free) && (ino == 2 || ino >= first))
				printf "set_inode_field <%d> ctime @%d\n", ino, epoch
	}
' > "$commands"

if ! [ -s "$commands" ]; then
	echo "ext4-fixed-ctime.sh: found no inode in use in $image" >&2
	exit 1
fi
debugfs -w -f "$commands" "$image" > /dev/null
