#!/bin/sh
# Post-build script of aesd_qemu_defconfig (BR2_ROOTFS_POST_BUILD_SCRIPT):
# Buildroot runs it at the end of target-finalize, with the target
# directory as $1 and BR2_CONFIG and HOST_DIR in the environment.
#
# Reproducible images (BR2_REPRODUCIBLE): Buildroot hashes a clear-text
# root password (BR2_TARGET_GENERIC_ROOT_PASSWD) with a random salt at
# every build. Hash it again with a fixed salt: every image of this
# configuration has the same password anyway.
set -eu

target_dir=$1
salt=aesdreproducible

# config NAME: NAME's value in the configuration as Buildroot's make rules
# use it: without the quotes, \" and \\ unescaped, $$ as $.
config() {
	sed -n "s/^$1=//p" "$BR2_CONFIG" |
		sed -e 's/^"\(.*\)"$/\1/' -e 's/\\\(.\)/\1/g' -e 's/\$\$/$/g'
}

[ "$(config BR2_REPRODUCIBLE)" = y ] || exit 0
[ "$(config BR2_TARGET_ENABLE_ROOT_LOGIN)" = y ] || exit 0
passwd=$(config BR2_TARGET_GENERIC_ROOT_PASSWD)
case $passwd in
# none, or given already hashed: Buildroot used it as it is
'' | \$1\$* | \$5\$* | \$6\$*)
	exit 0
	;;
esac

hash=$("$HOST_DIR/bin/mkpasswd" -m "$(config BR2_TARGET_GENERIC_PASSWD_METHOD)" \
	-S "$salt" "$passwd")
sed -i -e "s,^root:[^:]*:,root:$hash:," "$target_dir/etc/shadow"
grep -q "^root:$hash:" "$target_dir/etc/shadow"
