#!/bin/bash
# Regenerate the pictures of docs/buildroot.md#where-the-time-goes with
# Buildroot's own tools, after a clean build in buildroot/output:
#
#   scripts/buildroot-graphs.sh
#
#   docs/images/buildroot-timeline.png   make graph-build: when each package
#                                        built, and what ran beside it
#   docs/images/buildroot-durations.png  make graph-build: each package's
#                                        time, by step, longest first
#   docs/images/buildroot-size.png       make graph-size: what the root file
#                                        system holds, by package
#   docs/images/buildroot-depends.png    make graph-depends: what the
#                                        defconfig builds and why (from
#                                        aesd_qemu_defconfig itself, in a
#                                        scratch output directory, so the
#                                        picture is the product's even after
#                                        an offline build)
#
# Needs python3-matplotlib and graphviz (apt-get install python3-matplotlib
# graphviz). The build's figures are those of the build in buildroot/output
# (its build-time.log): a clean one, or the picture shows a partial build.
set -euo pipefail

cd "$(dirname "$0")/.."
out=docs/images
graphs=buildroot/output/graphs
log=buildroot/output/build/build-time.log

[ -f "$log" ] || { echo "no $log: build first (./build.sh)" >&2; exit 1; }
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null ||
	{ echo "needs python3-matplotlib (apt-get install python3-matplotlib)" >&2; exit 1; }
command -v dot >/dev/null || { echo "needs graphviz (apt-get install graphviz)" >&2; exit 1; }

mkdir -p "$out"
# Buildroot's scripts find python3 on PATH; the system one has matplotlib
PATH=/usr/bin:$PATH make -s -C buildroot BR2_GRAPH_OUT=png graph-build graph-size
cp "$graphs/build.timeline.png" "$out/buildroot-timeline.png"
cp "$graphs/build.hist-duration.png" "$out/buildroot-durations.png"
cp "$graphs/graph-size.png" "$out/buildroot-size.png"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/aesd-graphs.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
make -s -C buildroot O="$scratch" BR2_EXTERNAL="$PWD/base_external" aesd_qemu_defconfig >/dev/null
make -s -C buildroot O="$scratch" BR2_GRAPH_OUT=png graph-depends
cp "$scratch/graphs/graph-depends.png" "$out/buildroot-depends.png"
ls -l "$out"/buildroot-*.png
