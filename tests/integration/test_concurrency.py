"""Integrity under concurrency: many clients, no torn or interleaved data."""
import socket
import threading

import pytest

from server_harness import live_children, recv_exactly, recv_until_suffix, scaled

CLIENTS = 32
PACKETS = 40


def packet_for(client, n):
    # unique, and long enough that an interleaving would show
    return b"client %02d packet %03d %s\n" % (client, n, b"=" * (20 + client))


def run_clients(server, reconnect_every):
    responses = {c: [] for c in range(CLIENTS)}
    errors = []
    start = threading.Barrier(CLIENTS)

    def client(c):
        try:
            start.wait(timeout=scaled(10))
            s = None
            for n in range(PACKETS):
                if s is None or (reconnect_every and n % reconnect_every == 0):
                    if s:
                        s.close()
                    s = server.connect(timeout=30)
                p = packet_for(c, n)
                s.sendall(p)
                responses[c].append(recv_until_suffix(s, p, timeout=30))
            s.close()
        except Exception as e:  # reported by the main thread
            errors.append(f"client {c}: {e!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(120))
    assert not any(t.is_alive() for t in threads), "clients hung"
    assert not errors, errors
    return responses


def check_integrity(server, responses):
    with open(server.data_file, "rb") as f:
        final = f.read()
    lines = final.split(b"\n")
    assert lines[-1] == b"", "file does not end with a complete packet"
    stored = [line + b"\n" for line in lines[:-1]]
    expected = {packet_for(c, n) for c in range(CLIENTS) for n in range(PACKETS)}
    # every packet exactly once, nothing else, never interleaved
    assert len(stored) == len(expected)
    assert set(stored) == expected
    for c, answers in responses.items():
        previous = 0
        for n, answer in enumerate(answers):
            assert answer.endswith(packet_for(c, n))
            assert final.startswith(answer), "response is not a prefix of the file"
            assert len(answer) > previous, "a client's responses must grow"
            previous = len(answer)


def test_persistent_clients_store_every_packet_once(server):
    check_integrity(server, run_clients(server, reconnect_every=0))


def test_reconnecting_clients_store_every_packet_once(server):
    check_integrity(server, run_clients(server, reconnect_every=3))


def test_idle_client_does_not_block_others(server):
    with server.connect() as idle:
        idle.sendall(b"half a pack")      # holds no lock while waiting
        with server.connect() as s:
            s.sendall(b"other\n")
            assert recv_until_suffix(s, b"other\n", timeout=5) == b"other\n"


def test_client_idle_after_one_exchange_does_not_hold_the_one_worker(
        make_server):
    """With one worker, a client that stays connected after its exchange
    does not keep a second client from being served: the worker's event
    loop serves both.  Then the first client is served again, and the one
    worker is still the only process serving."""
    server = make_server("--workers", "1")
    workers = server.workers()
    with server.connect() as first:
        first.sendall(b"first\n")
        assert recv_exactly(first, 6) == b"first\n"
        with server.connect() as second:
            second.sendall(b"second\n")
            try:
                answer = recv_exactly(second, 13, timeout=1)
            except socket.timeout:
                pytest.fail("the one worker stayed with the idle client")
            assert answer == b"first\nsecond\n"
        first.sendall(b"again\n")
        assert recv_exactly(first, 19) == b"first\nsecond\nagain\n"
        assert live_children(server.proc.pid) == workers
