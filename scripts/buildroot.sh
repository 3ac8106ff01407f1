# shellcheck shell=bash
# Helpers for the Buildroot build, sourced by build.sh and
# tests/system/buildroot-image.sh: the pinned Buildroot submodule, and how
# far a build is, in a few lines instead of Buildroot's thousands (the
# builds write Buildroot's whole output to a log file).

# br_elapsed SECONDS: "12 min 05 s"
br_elapsed() {
	printf '%d min %02d s' $(($1 / 60)) $(($1 % 60))
}

# br_jobs: how many jobs make runs at once in a Buildroot build: AESD_JOBS,
# or one more than the CPUs (Buildroot's own default for each package's
# make). The kernel's make shares those slots (Buildroot runs it without a
# -j of its own) and, having a compile ready at every moment, takes
# nearly every slot that frees, so the other packages wait minutes for
# one; with a slot more than the CPUs, the kernel keeps both CPUs busier
# and finishes sooner: a clean build took 1,007 s with 2 slots on 2 CPUs,
# 865 to 998 s with 3 (2026-12-07).
br_jobs() {
	echo "${AESD_JOBS:-$(($(nproc) + 1))}"
}

# br_plan BUILDROOT_DIR [MAKE_ARGUMENTS...]: what the configured tree will
# build (make show-info), in one line: how many packages (host ones
# included, not counting the root file system images), then the goals to
# name before "all" on make's command line, in the order make should
# start their work: the kernel, the longest package by far, then the host
# packages the root file system images need, which Buildroot would reach
# only once every package is built. The kernel starts as soon as the few
# host tools it needs are built, and the rest builds beside it.
# (Naming the images' host tools first, so that their long chain of
# configure scripts would not wait for the kernel, was slower: 1,034 s
# against 940 s; make hands the kernel's make the job slots all the same.)
# "? " when show-info fails.
br_plan() {
	local br=$1
	shift
	nice -n 19 make -s --no-print-directory -C "$br" "$@" show-info 2>/dev/null |
		/usr/bin/python3 -c 'import json, sys
info = json.load(sys.stdin)
count = sum(p["type"] != "rootfs" for p in info.values())
kernel = ["linux"] if "linux" in info else []
early = sorted({d for p in info.values() if p["type"] == "rootfs"
                for d in p.get("dependencies", []) if info.get(d, {}).get("type") == "host"})
print(count, *kernel, *early)' 2>/dev/null || echo "?"
}

# br_progress LOG PID TOTAL LABEL: while process PID runs, print
# "LABEL: [n/TOTAL] PACKAGE (elapsed)" as each package starts its real work
# (Buildroot's ">>> PACKAGE VERSION Configuring" line in LOG, which every
# package prints once what it depends on is built; in a parallel build
# every package's sources are fetched and extracted at the start), and at
# least one line a minute with the last thing the build did. TOTAL is
# br_plan's count; in a partial rebuild only the packages rebuilt start.
br_progress() {
	local file=$1 pid=$2 total=$3 label=$4 start=$SECONDS said=$SECONDS \
		started=0 lines names n current name step new
	while kill -0 "$pid" 2>/dev/null; do
		sleep 5
		# ">>> PACKAGE VERSION STEP", or ">>>   STEP" for the whole build;
		# in a parallel build it may follow another package's unfinished
		# line ("checking for snprintf... >>> host-pkgconf 2.3.0 Configuring")
		lines=$(sed -n 's/\x1b\[[0-9;]*m//g; s/^.*>>> //p' "$file" 2>/dev/null)
		names=$(grep -v '^ ' <<<"$lines" | awk '/ Configuring$/ && !seen[$1]++ { print $1 }')
		n=$(printf '%s' "$names" | grep -c .) || true
		# the last line (VERSION may be empty)
		current=$(printf '%s\n' "$lines" | tail -n 1)
		case $current in
		" "*)
			name=Buildroot
			step=${current#"${current%%[! ]*}"}
			;;
		*)
			name=${current%% *}
			step=${current#* }
			step=${step#* }
			;;
		esac
		if [ "$n" -gt "$started" ]; then
			for new in $(printf '%s\n' "$names" | tail -n "$((n - started))"); do
				started=$((started + 1))
				printf '%s: [%d/%s] %s (%s)\n' "$label" "$started" "$total" \
					"$new" "$(br_elapsed $((SECONDS - start)))"
			done
			said=$SECONDS
		elif [ $((SECONDS - said)) -ge 60 ]; then
			printf '%s: [%d/%s] %s: %s (%s)\n' "$label" "$started" "$total" \
				"${name:-Buildroot}" "${step:-configuring itself}" \
				"$(br_elapsed $((SECONDS - start)))"
			said=$SECONDS
		fi
	done
}

# br_submodule_url TOP: where the buildroot submodule of the project at TOP
# comes from (the URL set in its git configuration, else .gitmodules')
br_submodule_url() {
	git -C "$1" config submodule.buildroot.url ||
		git -C "$1" config -f .gitmodules submodule.buildroot.url
}

# br_submodule_update TOP: check out the pinned Buildroot in TOP/buildroot.
# From a URL that is a local path (a copy of Buildroot's repository, for an
# offline machine) git 2.38.1 and later refuse to clone a submodule
# ("transport 'file' not allowed") unless told that the file transport is
# allowed: the user gave that URL, so it is, for this command only.
br_submodule_update() {
	case $(br_submodule_url "$1") in
	/* | ./* | ../* | file://*)
		git -C "$1" -c protocol.file.allow=always submodule update --init buildroot
		;;
	*)
		git -C "$1" submodule update --init buildroot
		;;
	esac
}
