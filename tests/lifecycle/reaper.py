"""Run commands for a test as a child subreaper, standing in for init.

A daemon started by an init script outlives the script; on a real system it
is reparented to init, which reaps it when it exits. Here it is reparented to
this process instead (PR_SET_CHILD_SUBREAPER), which reaps it the same way,
and which kills whatever is still running when the test closes it. So a test
never leaves a daemon or a zombie behind, whatever happened to it.

With a chroot directory as argument, it first moves into a mount namespace
of its own and mounts /proc inside the chroot there: every command it runs
(and every daemon they leave) sees that one /proc, as on a real system, and
the mount disappears with the last of them, so it never leaks to the host.

Protocol, one JSON value per line: stdin gets [argv, env, timeout_seconds];
stdout answers {"rc": exit status or -signal, "out": stdout+stderr,
"timed_out": bool}. End of stdin: SIGKILL every remaining child, reap, exit.
"""

import ctypes
import json
import os
import signal
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def status_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def reap_any():
    """Reap every child that has exited, without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(argv, env, timeout):
    with tempfile.TemporaryFile() as out:
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 2),
            ])
        finally:
            os.close(devnull)
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            # Wait for any child: orphans are reaped here as they exit.
            done, status = os.waitpid(-1, os.WNOHANG)
            if done == pid:
                break
            if done == 0:
                if not timed_out and time.monotonic() > deadline:
                    timed_out = True
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {"rc": status_code(status), "out": text, "timed_out": timed_out}


def children():
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("PPid:"):
                        if line.split()[1] == me:
                            found.append(int(entry))
                        break
        except OSError:
            continue
    return found


def kill_all(timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_any()
        pids = children()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def check(what, result):
    if result != 0:
        sys.exit(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount_proc_privately(libc, chroot):
    check("unshare(CLONE_NEWNS)", libc.unshare(CLONE_NEWNS))
    check("making / private",
          libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
    target = os.path.join(chroot, "proc").encode()
    check("mounting proc", libc.mount(b"proc", target, b"proc", 0, None))


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    check("prctl(PR_SET_CHILD_SUBREAPER)",
          libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
    if len(sys.argv) > 1:
        mount_proc_privately(libc, sys.argv[1])
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        argv, env, timeout = json.loads(line)
        reap_any()
        print(json.dumps(run(argv, env, timeout)), flush=True)
    kill_all()


if __name__ == "__main__":
    main()
