"""The running system, one boot for the whole module: aesdsocket started at
boot, reachable from the host, ssh/scp, and its init script's lifecycle."""

import os
import re
import shlex
import socket
import subprocess

import pytest

from qemu_guest import DATA_FILE, INIT_SCRIPT, send_packets, sockettest


def aesdsocket_pids(guest):
    """Pids of processes whose command line starts with /usr/bin/aesdsocket."""
    out = guest.check("ps -o pid,args")
    return sorted(int(m.group(1)) for m in
                  re.finditer(r"^\s*(\d+)\s+/usr/bin/aesdsocket\b", out, re.M))


def main_pid(guest):
    return int(guest.check("cat /var/run/aesdsocket.pid").strip())


def ensure_running_fresh(guest):
    """aesdsocket running with no data yet (stop deletes the data file)."""
    guest.check(f"{INIT_SCRIPT} restart")
    _, out = guest.run(f"cat {DATA_FILE} 2>/dev/null")
    assert out == "", f"data left after restart:\n{out}"


def test_aesdsocket_runs_from_boot(guest):
    # Checked before any test restarts it: this is the instance init started
    pids = aesdsocket_pids(guest)
    assert pids, guest.check("ps -o pid,args")
    assert main_pid(guest) in pids
    assert "Starting aesdsocket: OK" in guest.console_log()
    rc, out = guest.run(f"{INIT_SCRIPT} status")
    assert rc == 0, out


# QEMU's start to port 9000 answering, under TCG with 1 vCPU, at most. The
# Buildroot image's is issue 10's requirement (measured: 2.1 to 3.1 s at a
# load below 1); the fast image's is a guard against regressions, twice its
# usual 3 s (measured: 2.8 to 4.6 s).
BOOT_BUDGET = {"buildroot": 4.0, "fast": 6.0}


def test_boots_within_budget(guest):
    if guest.load_at_boot > os.cpu_count():
        pytest.skip(f"machine too busy to time a boot: load {guest.load_at_boot:.1f} "
                    f"on {os.cpu_count()} CPUs")
    budget = BOOT_BUDGET[guest.env["AESD_IMAGE"]]
    assert guest.port_seconds < budget, \
        f"port 9000 answered {guest.port_seconds:.1f} s after QEMU's start, " \
        f"budget {budget} s (load {guest.load_at_boot:.1f})"


def test_clients_are_served_by_the_aesd_user(guest):
    # /etc/default/aesdsocket runs connection processes as aesd; only the
    # supervising parent (no client I/O) keeps root
    ensure_running_fresh(guest)
    assert send_packets(guest.host_port, b"who\n") == b"who\n"
    parent = main_pid(guest)
    users = {}
    for line in guest.check("ps -o pid,ppid,user,args").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == "/usr/bin/aesdsocket":
            users[int(fields[0])] = (int(fields[1]), fields[2])
    assert users[parent][1] == "root", users
    workers = [user for pid, (ppid, user) in users.items() if ppid == parent]
    assert workers and set(workers) == {"aesd"}, users
    assert guest.check(f"stat -c %U {DATA_FILE}").strip() == "aesd"


def status_value(guest, pid, name):
    """A field of /proc/PID/status in the guest, e.g. "Seccomp"."""
    found = re.search(rf"^{name}:\s*(\S+)$",
                      guest.check(f"cat /proc/{pid}/status"), re.M)
    assert found, f"no {name} in /proc/{pid}/status"
    return found.group(1)


def test_workers_are_confined_by_their_filter(guest):
    """Every worker, once ready and before it served, confined itself with
    its own seccomp filter (Seccomp: 2, filter mode; one filter); the
    parent, which never reads from a client, has none.  On this image's
    kernel and architecture, as on the host's."""
    ensure_running_fresh(guest)
    assert send_packets(guest.host_port, b"confined\n") == b"confined\n"
    parent = main_pid(guest)
    workers = [int(f[0]) for f in (line.split() for line in guest.check(
        "ps -o pid,ppid,args").splitlines())
        if len(f) >= 3 and f[1] == str(parent) and
        f[2] == "/usr/bin/aesdsocket"]
    assert workers, guest.check("ps -o pid,ppid,args")
    for worker in workers:
        assert status_value(guest, worker, "Seccomp") == "2", worker
        assert status_value(guest, worker, "Seccomp_filters") == "1", worker
    assert status_value(guest, parent, "Seccomp") == "0"


def test_sockettest_through_forwarded_port(guest):
    ensure_running_fresh(guest)
    before = guest.connection_log()
    result = sockettest(guest.host_port)
    assert result.returncode == 0, result.stdout + result.stderr
    # The packets are really in the guest's data file
    assert "abcdefg\nhijklmnop\n" in guest.check(f"head -c 18 {DATA_FILE}")
    # and syslog has a line for each connection's start and end
    connections = result.stdout.count("sending string")
    assert connections >= 5, result.stdout
    expected = tuple(n + connections for n in before)
    assert guest.wait_connection_log(expected) == expected


def test_ssh_runs_commands(guest):
    result = guest.ssh("uname -m; id -u; cat /etc/hostname")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["aarch64", "0", "aesd"]
    assert guest.ssh("exit 7").returncode == 7


def test_scp_both_ways(guest, tmp_path):
    # Default scp (SFTP protocol, served by sftp-server) and legacy scp -O
    for legacy in (False, True):
        guest.scp_round_trip(str(tmp_path), legacy)


def test_init_script_stop_start_restart_status(guest):
    ensure_running_fresh(guest)
    assert send_packets(guest.host_port, b"before stop\n") == b"before stop\n"
    guest.check(f"test -f {DATA_FILE}")
    old = main_pid(guest)

    rc, out = guest.run(f"{INIT_SCRIPT} stop")
    assert rc == 0, out
    assert "OK" in out
    assert aesdsocket_pids(guest) == []
    guest.check(f"! test -e {DATA_FILE}")
    guest.wait_for("grep -q 'aesdsocket.*Caught signal, exiting' /var/log/messages", timeout=10)

    rc, out = guest.run(f"{INIT_SCRIPT} status")
    assert rc == 3, out

    rc, out = guest.run(f"{INIT_SCRIPT} start")
    assert rc == 0, out
    assert send_packets(guest.host_port, b"after start\n") == b"after start\n"
    started = main_pid(guest)
    assert started != old

    rc, out = guest.run(f"{INIT_SCRIPT} restart")
    assert rc == 0, out
    restarted = main_pid(guest)
    assert restarted != started
    assert started not in aesdsocket_pids(guest)
    # restart stopped the old instance (file deleted), the new one serves
    assert send_packets(guest.host_port, b"after restart\n") == b"after restart\n"

    rc, out = guest.run(f"{INIT_SCRIPT} status")
    assert rc == 0, out


def test_stale_pidfile_does_not_block_start(guest):
    ensure_running_fresh(guest)
    pid = main_pid(guest)
    guest.check(f"kill -s KILL {pid}")
    guest.wait_for(f"! test -e /proc/{pid}", timeout=15)
    # SIGKILL leaves the daemon's pidfile behind
    guest.check("test -f /var/run/aesdsocket.pid")
    rc, out = guest.run(f"{INIT_SCRIPT} status")
    assert rc == 3, out
    # Its pool workers go with it, freeing the port
    guest.wait_for("! pidof aesdsocket >/dev/null", timeout=30)
    rc, out = guest.run(f"{INIT_SCRIPT} start")
    assert rc == 0, out
    assert send_packets(guest.host_port, b"x\n").endswith(b"x\n")


def test_kill_term_and_int_remove_data_file(guest):
    for signal in ("TERM", "INT"):
        ensure_running_fresh(guest)
        assert send_packets(guest.host_port, b"to be removed\n") == b"to be removed\n"
        guest.check(f"test -f {DATA_FILE}")
        pid = main_pid(guest)
        guest.check(f"kill -s {signal} {pid}")
        guest.wait_for(f"! test -e /proc/{pid}", timeout=15)
        guest.check(f"! test -e {DATA_FILE}")
        assert aesdsocket_pids(guest) == [], signal
    guest.check(f"{INIT_SCRIPT} start")


def test_second_instance_fails_and_keeps_data(guest):
    ensure_running_fresh(guest)
    assert send_packets(guest.host_port, b"keep me\n") == b"keep me\n"
    rc, out = guest.run("/usr/bin/aesdsocket -d 2>&1")
    assert rc != 0, out
    assert out.strip(), "the failing instance printed no reason"
    # The running instance and its data are untouched
    assert guest.check(f"cat {DATA_FILE}") == "keep me\n"
    assert send_packets(guest.host_port, b"still here\n") == b"keep me\nstill here\n"
    rc, out = guest.run(f"{INIT_SCRIPT} status")
    assert rc == 0, out


def stale_host_key_config(tmp_path, port):
    """An ssh configuration whose known_hosts has another key for the
    guest's address: what a user's ~/.ssh/known_hosts holds after booting
    another image, or after a rebuild, and checks strictly."""
    key = tmp_path / "stale_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"UserKnownHostsFile {known_hosts}\nStrictHostKeyChecking yes\n")
    return str(config)


# What sshpass needs of ssh; nothing about host keys
PASSWORD_ONLY = ["-o", "ConnectTimeout=30", "-o", "PubkeyAuthentication=no",
                 "-o", "PreferredAuthentications=password"]


def test_printed_hints_work(guest, tmp_path):
    # What runqemu.sh tells a new user to try, run as printed, with the
    # password given by sshpass, and with a known_hosts that remembers
    # another key for the guest's address (options on the command line,
    # which the printed ones are, win over a configuration file)
    hints = guest.printed_hints()
    ensure_running_fresh(guest)
    nc = subprocess.run(["sh", "-c", hints["nc"]], capture_output=True,
                        timeout=30, check=False)
    assert (nc.returncode, nc.stdout) == (0, b"hello\n"), nc.stderr.decode()

    config = stale_host_key_config(tmp_path, guest.ssh_port)
    ssh = shlex.split(hints["ssh"])
    result = subprocess.run(["sshpass", "-p", "root", ssh[0], "-F", config, *PASSWORD_ONLY,
                             *ssh[1:], "echo hint-ok"], capture_output=True,
                            timeout=60, check=False)
    assert result.stdout == b"hint-ok\n", result.stderr.decode()
    # (without the printed options, that known_hosts is refused)
    refused = subprocess.run(["sshpass", "-p", "root", "ssh", "-F", config, *PASSWORD_ONLY,
                              "-p", str(guest.ssh_port), "root@127.0.0.1", "true"],
                             capture_output=True, timeout=60, check=False)
    assert refused.returncode == 255, refused.stderr.decode()
    assert b"HOST IDENTIFICATION HAS CHANGED" in refused.stderr, refused.stderr.decode()

    source = tmp_path / "notes.txt"
    source.write_text("from the scp hint\n")
    scp = [str(source) if word == "FILE" else word
           for word in shlex.split(hints["scp"])]
    result = subprocess.run(["sshpass", "-p", "root", scp[0], "-F", config, *PASSWORD_ONLY,
                             *scp[1:]], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert guest.check("cat /tmp/notes.txt") == "from the scp hint\n"


def test_guest_reaches_nothing_outside(guest):
    # restrict=on: not even the host, which QEMU's user network shows the
    # guest as 10.0.2.2 (without it, 10.0.2.2:PORT reaches 127.0.0.1:PORT)
    # The tools are there, or the attempt below would prove nothing
    guest.check("command -v nc && command -v timeout")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        rc, out = guest.run(f"echo hello | timeout 5 nc 10.0.2.2 {port}", timeout=30)
        # refused or timed out, not "not found"
        assert rc not in (0, 126, 127), out
        with pytest.raises(socket.timeout):
            listener.accept()


def test_no_worker_was_killed_by_the_filter(guest):
    """Last in this module: every workload above (clients, sockettest, the
    init script's stops and restarts, signals, a second instance) ran on
    confined workers, and the parent logged no worker killed by the
    filter: the allow-list holds on this image."""
    rc, out = guest.run("grep 'killed by the system call filter' "
                        "/var/log/messages")
    assert rc == 1, out
