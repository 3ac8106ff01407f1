#!/bin/bash
# Save the Buildroot configuration (after 'make -C buildroot menuconfig')
# back into base_external/configs/aesd_qemu_defconfig, and the kernel
# configuration (after 'make -C buildroot linux-menuconfig') back into
# its custom config file when that file is ours.
#
#   ./save-config.sh            the configuration in buildroot/.config
#   O=DIR ./save-config.sh      that of the output directory DIR, as for
#                               make -C buildroot O=DIR menuconfig
set -e

# O is relative to where the script was started from
output=${O:+$(realpath -m "$O")}

cd "$(dirname "$0")"

DEFCONFIG="$PWD/base_external/configs/aesd_qemu_defconfig"
if [ -n "$output" ]; then
	CONFIG=$output/.config
	br_make=(make -C buildroot O="$output")
else
	CONFIG=buildroot/.config
	br_make=(make -C buildroot)
fi

if [ ! -f "$CONFIG" ]; then
	echo "error: no $CONFIG: run ./build.sh first" >&2
	exit 1
fi

# A tree configured by the offline recipe (../shared/br-offline, used by
# ./test.sh buildroot-image) has its deviations in .config: an external
# Debian toolchain, another kernel version, no downloads, and a package
# override file of its own (not Buildroot's default, $(CONFIG_DIR)/local.mk).
# Saving them would put them into our defconfig.
# shellcheck disable=SC2016 # $(CONFIG_DIR) is Buildroot's, not the shell's
if grep '^BR2_PACKAGE_OVERRIDE_FILE=' "$CONFIG" |
	grep -qvxF 'BR2_PACKAGE_OVERRIDE_FILE="$(CONFIG_DIR)/local.mk"'; then
	echo "error: $CONFIG uses a package override file of its own (an offline build?):" >&2
	grep '^BR2_PACKAGE_OVERRIDE_FILE=' "$CONFIG" >&2
	echo "Not saving it. Edit base_external/configs/aesd_qemu_defconfig by hand, or" >&2
	echo "use an output directory of its own:" >&2
	echo "  make -C buildroot O=/tmp/aesd-config BR2_EXTERNAL=$PWD/base_external aesd_qemu_defconfig" >&2
	echo "  make -C buildroot O=/tmp/aesd-config menuconfig" >&2
	echo "  O=/tmp/aesd-config ./save-config.sh" >&2
	exit 1
fi

echo "==> Saving the Buildroot configuration to $DEFCONFIG"
"${br_make[@]}" savedefconfig BR2_DEFCONFIG="$DEFCONFIG"

# The kernel configuration can only be saved when it comes from a custom
# config file (not from an in-kernel defconfig) and the kernel of this
# output directory has been configured.
if ! grep -qx 'BR2_LINUX_KERNEL_USE_CUSTOM_CONFIG=y' "$CONFIG"; then
	echo "==> No custom kernel config in use: nothing more to save"
	exit 0
fi

# Let Buildroot expand the paths (they may use $(BR2_EXTERNAL_AESD_PATH)).
kconfig_file=
linux_dir=
while IFS='=' read -r name value; do
	case "$name" in
	LINUX_KCONFIG_FILE) kconfig_file=$value ;;
	LINUX_DIR) linux_dir=$value ;;
	esac
done < <("${br_make[@]}" -s --no-print-directory printvars \
		VARS='LINUX_KCONFIG_FILE LINUX_DIR')

if [ -z "$kconfig_file" ] || [ -z "$linux_dir" ]; then
	echo "error: Buildroot did not report LINUX_KCONFIG_FILE/LINUX_DIR" >&2
	exit 1
fi

if [ ! -f "$linux_dir/.stamp_kconfig_fixup_done" ]; then
	echo "==> Kernel not configured in this output directory: no kernel config to save"
	exit 0
fi

# Relative paths in the configuration are relative to Buildroot's top.
br_top=$(realpath buildroot)
case "$kconfig_file" in
/*) ;;
*) kconfig_file="$br_top/$kconfig_file" ;;
esac
kconfig_file=$(realpath -m "$kconfig_file")

case "$kconfig_file" in
"$br_top/"*)
	echo "==> The kernel config is Buildroot's own file:" >&2
	echo "    $kconfig_file" >&2
	echo "    It is not rewritten: changes there would be lost with the submodule." >&2
	echo "    To keep kernel changes, copy it into base_external/board/, point" >&2
	echo "    BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE at" >&2
	echo "    \"\$(BR2_EXTERNAL_AESD_PATH)/board/...\" in menuconfig and run this again." >&2
	exit 0
	;;
esac

echo "==> Saving the kernel configuration to $kconfig_file"
"${br_make[@]}" linux-update-defconfig
