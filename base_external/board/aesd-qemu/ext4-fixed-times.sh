#!/bin/sh
# ext4-fixed-times.sh IMAGE EPOCH: set every time stamp in the ext4 file
# system IMAGE that depends on when it was made to EPOCH (seconds): the
# superblock's (and its backups') created, last write and last checked
# times, and each inode's access, change, modification and creation times
# where set.
#
# mke2fs takes the UUID and the directory hash seed from the command line
# (BR2_TARGET_ROOTFS_EXT2_MKFS_OPTIONS: -U, -E hash_seed=), but stamps the
# file system and the inodes it makes itself (the root directory,
# lost+found, the journal, the resize and bad blocks inodes) with the
# clock, and every inode with the clock as its creation time. mke2fs -d
# copies each file's times from the target directory, where Buildroot
# (BR2_REPRODUCIBLE) has set atime and mtime to SOURCE_DATE_EPOCH but the
# ctime is the moment of the build. mke2fs 1.47.1 and later clamp what
# they copy to SOURCE_DATE_EPOCH (tytso/e2fsprogs#131); older ones, such as
# Debian 12's 1.47.0 used by the offline build, do not. The result is the
# same with any of them.
#
# Run by post-image.sh. Needs dumpe2fs and debugfs (Buildroot's
# host-e2fsprogs) in PATH.
set -eu

image=$1
epoch=$2
# debugfs's own time stamps (the superblock's last write time)
E2FSPROGS_FAKE_TIME=$epoch
export E2FSPROGS_FAKE_TIME
# no pager between debugfs and awk
DEBUGFS_PAGER=__none__
export DEBUGFS_PAGER

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The inodes in use: in each group, those not listed as free (the reserved
# ones, below "First inode", are always marked in use).
dumpe2fs "$image" 2>/dev/null | awk '
	/^Inodes per group:/ { ipg = $4 }
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
			if (!(ino in free))
				printf "stat <%d>\n", ino
	}
' > "$work/stat"

if ! [ -s "$work/stat" ]; then
	echo "ext4-fixed-times.sh: found no inode in use in $image" >&2
	exit 1
fi

# Of their times, each one that is set (an unused reserved inode has none;
# a small inode has no crtime) and is not EPOCH already.
debugfs -f "$work/stat" "$image" 2>/dev/null | awk -v epoch="$epoch" '
	/^Inode: [0-9]+ / { ino = $2 }
	/^ *(a|c|m|cr)time: 0x/ {
		field = $1
		sub(/^ */, "", field)
		sub(/:$/, "", field)
		value = $2
		if (value ~ /^0x0+(:0+)?$/)
			next
		if (value == sprintf("0x%08x", epoch) || \
		    value == sprintf("0x%08x:00000000", epoch))
			next
		printf "set_inode_field <%d> %s @%d\n", ino, field, epoch
	}
	END {
		printf "set_super_value mkfs_time @%d\n", epoch
		printf "set_super_value lastcheck @%d\n", epoch
		# into the backup superblocks too (mke2fs wrote its times there)
		print "close_filesys -a"
	}
' > "$work/set"
# debugfs exits 0 whether its commands succeed or not; it reports on
# stderr, after its version line.
debugfs -w -f "$work/set" "$image" > /dev/null 2> "$work/errors"
if grep -v '^debugfs [0-9]' "$work/errors" >&2; then
	echo "ext4-fixed-times.sh: debugfs failed on $image" >&2
	exit 1
fi
