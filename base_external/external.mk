include $(sort $(wildcard $(BR2_EXTERNAL_AESD_PATH)/package/*/*.mk))

################################################################################
#
# Reproducible images (BR2_REPRODUCIBLE): what Buildroot 2026.02 leaves to
# chance in this configuration. Two clean builds, compared with diffoscope,
# differed only in rootfs.ext4, in these three ways.
#
################################################################################

ifeq ($(BR2_REPRODUCIBLE),y)

# 1. The root password is hashed with a random salt at every build. With a
# clear-text BR2_TARGET_GENERIC_ROOT_PASSWD, hash it again after Buildroot
# (target-finalize hooks run in order) with a fixed salt: every image of
# this configuration has the same password anyway.
AESD_ROOT_PASSWD = $(call qstrip,$(BR2_TARGET_GENERIC_ROOT_PASSWD))
AESD_ROOT_PASSWD_SALT = aesdreproducible
ifeq ($(BR2_TARGET_ENABLE_ROOT_LOGIN),y)
ifeq ($(filter $$1$$% $$5$$% $$6$$%,$(AESD_ROOT_PASSWD)),)
ifneq ($(AESD_ROOT_PASSWD),)
define AESD_ROOT_PASSWD_FIXED_SALT
	$(SED) "s,^root:[^:]*:,root:`$(MKPASSWD) \
		-m '$(call qstrip,$(BR2_TARGET_GENERIC_PASSWD_METHOD))' \
		-S '$(AESD_ROOT_PASSWD_SALT)' '$(AESD_ROOT_PASSWD)'`:," \
		$(TARGET_DIR)/etc/shadow
endef
TARGET_FINALIZE_HOOKS += AESD_ROOT_PASSWD_FIXED_SALT
endif
endif
endif

# 2. mke2fs takes the UUID and the directory hash seed from
# BR2_TARGET_ROOTFS_EXT2_MKFS_OPTIONS (-U, -E hash_seed=), but writes the
# clock's time as created, last write and last checked times (and the
# journal's and lost+found's), unless E2FSPROGS_FAKE_TIME gives one. Every
# mke2fs version reads it; the fakeroot script that runs mke2fs inherits it.
export E2FSPROGS_FAKE_TIME = $(SOURCE_DATE_EPOCH)

# 3. mke2fs -d copies every file's ctime from the target directory, where
# it is the time of the build (see ext4-fixed-ctime.sh). A compressed image
# is made before this hook runs, so only the uncompressed one is fixed.
ifeq ($(BR2_TARGET_ROOTFS_EXT2)$(BR2_TARGET_ROOTFS_EXT2_NONE),yy)
define AESD_EXT2_FIXED_CTIME
	PATH=$(BR_PATH) $(BR2_EXTERNAL_AESD_PATH)/board/aesd-qemu/ext4-fixed-ctime.sh \
		$(BINARIES_DIR)/rootfs.ext2 $(SOURCE_DATE_EPOCH)
endef
ROOTFS_EXT2_POST_GEN_HOOKS += AESD_EXT2_FIXED_CTIME
endif

endif
