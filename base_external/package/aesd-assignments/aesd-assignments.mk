################################################################################
#
# aesd-assignments
#
################################################################################

# The server's own version: AESD_VERSION in server/src/options.h, which
# "aesdsocket --version" prints and server/aesdsocket.8 states
# (tests/lifecycle/test_version.py checks that the three agree).
AESD_ASSIGNMENTS_VERSION = 1.0.0
AESD_ASSIGNMENTS_SITE = $(BR2_EXTERNAL_AESD_PATH)/../server
AESD_ASSIGNMENTS_SITE_METHOD = local
AESD_ASSIGNMENTS_LICENSE = MIT
AESD_ASSIGNMENTS_LICENSE_FILES = LICENSE
# Every worker installs a seccomp system call filter built with libseccomp.
AESD_ASSIGNMENTS_DEPENDENCIES = libseccomp

# A native build in server/ (make, make unit-tests) leaves host objects and
# a host binary there; never copy them into the target build directory.
AESD_ASSIGNMENTS_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /aesdsocket --exclude /build

# -Werror is for development: a package must not fail to build because a
# compiler we have not tried warns about something new. The same options
# for the install steps, or the install would rebuild with other flags.
AESD_ASSIGNMENTS_BUILD_OPTS = $(TARGET_CONFIGURE_OPTS) WERROR=0

# The server's own Makefile installs the files, so that this image and
# the image built without Buildroot ship exactly the same ones.
AESD_ASSIGNMENTS_MAKE_OPTS = $(AESD_ASSIGNMENTS_BUILD_OPTS) DESTDIR=$(TARGET_DIR)

define AESD_ASSIGNMENTS_BUILD_CMDS
	$(TARGET_MAKE_ENV) $(MAKE) $(AESD_ASSIGNMENTS_BUILD_OPTS) -C $(@D)
endef

define AESD_ASSIGNMENTS_INSTALL_TARGET_CMDS
	$(TARGET_MAKE_ENV) $(MAKE) $(AESD_ASSIGNMENTS_MAKE_OPTS) -C $(@D) \
		PREFIX=/usr install
endef

define AESD_ASSIGNMENTS_INSTALL_INIT_SYSV
	$(TARGET_MAKE_ENV) $(MAKE) $(AESD_ASSIGNMENTS_MAKE_OPTS) -C $(@D) \
		install-sysv
endef

define AESD_ASSIGNMENTS_INSTALL_INIT_SYSTEMD
	$(TARGET_MAKE_ENV) $(MAKE) $(AESD_ASSIGNMENTS_MAKE_OPTS) -C $(@D) \
		install-systemd
endef

define AESD_ASSIGNMENTS_USERS
	aesd -1 aesd -1 * - - - aesdsocket server
endef

$(eval $(generic-package))
