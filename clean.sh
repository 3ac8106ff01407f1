#!/bin/bash
# Remove everything Buildroot built and the configuration (make distclean).
# The download directory (BR2_DL_DIR) and the ccache are kept, so the
# next ./build.sh downloads nothing.
set -e

cd "$(dirname "$0")"

if [ ! -f buildroot/Makefile ]; then
	echo "No Buildroot tree in buildroot/: nothing to clean"
	exit 0
fi

make -C buildroot distclean
