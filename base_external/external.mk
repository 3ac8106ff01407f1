include $(sort $(wildcard $(BR2_EXTERNAL_AESD_PATH)/package/*/*.mk))

# A reproducible rootfs.ext4: mke2fs takes the UUID and the directory hash
# seed from BR2_TARGET_ROOTFS_EXT2_MKFS_OPTIONS (-U, -E hash_seed=), but
# the times it writes (created, last write, last checked, lost+found and the
# root directory's ctime) are the clock's, unless E2FSPROGS_FAKE_TIME gives
# one. Give it Buildroot's SOURCE_DATE_EPOCH; the fakeroot script that runs
# mke2fs inherits the variable.
ifeq ($(BR2_REPRODUCIBLE),y)
export E2FSPROGS_FAKE_TIME = $(SOURCE_DATE_EPOCH)
endif
