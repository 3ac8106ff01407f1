"""A kernel without IPv6 (embedded targets often build it out): aesdsocket
falls back from its dual-stack IPv6 socket to an IPv4 one."""

from qemu_guest import send_packets


def test_serves_over_ipv4_when_the_kernel_has_no_ipv6(make_guest):
    guest = make_guest("no-ipv6", AESD_QEMU_APPEND="ipv6.disable=1")
    guest.boot()
    rc, out = guest.run("cat /proc/net/tcp6")
    assert rc != 0, f"IPv6 is still there:\n{out}"
    assert send_packets(guest.host_port, b"v4 only\n") == b"v4 only\n"
    # the listener: 0.0.0.0:9000 (0x2328) in state LISTEN (0A)
    assert "00000000:2328 00000000:0000 0A" in guest.check("cat /proc/net/tcp")
