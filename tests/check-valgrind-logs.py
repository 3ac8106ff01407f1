#!/usr/bin/python3
"""Checks the per-process logs of a valgrind run (--log-file=DIR/vg.%p.log).

Every process that reached exit must report 0 errors and "All heap blocks
were freed".  A log with no summary belongs to a process killed by SIGKILL
on purpose (fault tests); those are counted and listed, never hidden.
"""
import pathlib
import sys

FREED = "All heap blocks were freed -- no leaks are possible"


def main(directory):
    logs = sorted(pathlib.Path(directory).glob("vg.*.log"))
    if not logs:
        print(f"valgrind: no logs in {directory}")
        return 1
    bad, killed, clean = [], [], 0
    for log in logs:
        text = log.read_text(errors="replace")
        if "ERROR SUMMARY:" not in text:
            killed.append(log.name)
        elif "ERROR SUMMARY: 0 errors" not in text or FREED not in text:
            bad.append(log)
        else:
            clean += 1
    for log in bad:
        print(f"==== {log}\n{log.read_text(errors='replace')}")
    print(f"valgrind: {len(logs)} processes, {clean} clean "
          "(0 errors, all heap blocks freed), "
          f"{len(bad)} with errors or leaks, {len(killed)} killed before exit")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
