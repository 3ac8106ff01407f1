"""The packet protocol, against the real binary over TCP."""
import socket

import pytest

from server_harness import exchange, recv_exactly, scaled


def test_one_packet_is_stored_and_echoed(server):
    with server.connect() as s:
        assert exchange(s, b"hello\n", 6) == b"hello\n"
    with open(server.data_file, "rb") as f:
        assert f.read() == b"hello\n"


def test_response_is_whole_file_across_connections(server):
    sent = b""
    for word in (b"alpha\n", b"beta\n", b"gamma\n"):
        sent += word
        with server.connect() as s:
            assert exchange(s, word, len(sent)) == sent


def test_many_packets_on_one_connection(server):
    sent = b""
    with server.connect() as s:
        for i in range(50):
            packet = b"packet %d\n" % i
            sent += packet
            assert exchange(s, packet, len(sent)) == sent


def test_pipelined_packets_get_one_response_each(server):
    with server.connect() as s:
        s.sendall(b"one\ntwo\nthree\n")
        expected = b"one\n" + b"one\ntwo\n" + b"one\ntwo\nthree\n"
        assert recv_exactly(s, len(expected)) == expected


def test_packet_split_across_sends_has_no_garbage(server):
    with server.connect() as s:
        s.sendall(b"fo")
        # the server must answer nothing before the newline arrives
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(1)
        s.sendall(b"ur\n")
        assert recv_exactly(s, 5) == b"four\n"


def test_one_byte_per_send(server):
    with server.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"slow\n":
            s.send(bytes([byte]))
        assert recv_exactly(s, 5) == b"slow\n"


def test_binary_bytes_are_opaque_data(server):
    packet = bytes(range(256)).replace(b"\n", b"") + b"\r\x00\xff\n"
    with server.connect() as s:
        assert exchange(s, packet, len(packet)) == packet


def test_empty_packet_is_a_packet(server):
    with server.connect() as s:
        assert exchange(s, b"\n", 1) == b"\n"
        assert exchange(s, b"x\n", 3) == b"\nx\n"


def test_trailing_bytes_without_newline_are_discarded_and_logged(server):
    with server.connect() as s:
        s.sendall(b"kept\nlost")
        assert recv_exactly(s, 5) == b"kept\n"
    server.wait_log(r"Discarding 4 bytes from 127\.0\.0\.1 after its last newline")
    with server.connect() as s:
        assert exchange(s, b"next\n", 10) == b"kept\nnext\n"


def test_large_packet_round_trips(server):
    packet = b"x" * (512 * 1024) + b"\n"
    with server.connect() as s:
        assert exchange(s, packet, len(packet)) == packet


def test_half_closed_client_still_gets_its_responses(server):
    with server.connect() as s:
        s.sendall(b"a\nb\n")
        s.shutdown(socket.SHUT_WR)
        assert recv_exactly(s, 6) == b"a\na\nb\n"
        s.settimeout(scaled(5))
        assert s.recv(1) == b""     # then the server closes


def test_client_vanishing_before_its_response_does_no_harm(server):
    packet = b"y" * (512 * 1024) + b"\n"
    with server.connect() as s:
        s.sendall(packet * 8)   # ~18 MiB of responses that nobody reads
    # the server hits EPIPE/ECONNRESET while sending; SIGPIPE must not kill it
    server.wait_log(r"Closed connection from", count=2)
    size = len(open(server.data_file, "rb").read())
    with server.connect() as s:
        response = exchange(s, b"z\n", size + 2)
        assert response.endswith(b"z\n")
    assert server.proc.poll() is None


def test_ipv6_loopback_is_served(server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = socket.create_connection(("::1", server.port), timeout=scaled(5))
    except OSError as e:
        pytest.skip(f"IPv6 loopback unavailable: {e}")
    with s:
        assert exchange(s, b"six\n", 4) == b"six\n"
    server.wait_log(r"Accepted connection from ::1\n")


def test_log_lines_name_ipv4_peers_plainly(server):
    with server.connect() as s:
        exchange(s, b"log\n", 4)
    server.wait_log(r"Closed connection from 127\.0\.0\.1\n", count=2)
    log = server.log()
    assert "Accepted connection from 127.0.0.1\n" in log
    assert "::ffff:" not in log
