#!/bin/sh
# Installs the Debian packages every test area lists in tests/packages/*.txt
# (only those missing), so a fresh Debian/Ubuntu machine needs nothing else.
set -e
here=$(cd "$(dirname "$0")" && pwd)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

wanted=$(cat "$here"/packages/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | sort -u)
missing=""
for pkg in $wanted; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
		missing="$missing $pkg"
	fi
done
if [ -z "$missing" ]; then
	echo "install-deps: all $(echo "$wanted" | wc -w) packages present"
	exit 0
fi
echo "install-deps: installing$missing"
# A package of another architecture (libseccomp-dev:arm64, for the cross
# build) needs that architecture known to dpkg before apt-get update.
for arch in $(echo "$missing" | tr ' ' '\n' | sed -n 's/^[^:]*:\(.*\)$/\1/p' | sort -u); do
	if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		$sudo dpkg --add-architecture "$arch"
	fi
done
$sudo apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
