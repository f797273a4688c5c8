"""hubsvc.ports: socket table parsing, address overlap, and real listeners on loopback."""
# ruff: noqa: E501  (kernel table lines are wide)

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from hubsvc import host, ports

# Real lines in the kernel's format (little-endian host): 127.0.0.1:8081 LISTEN,
# 0.0.0.0:22 LISTEN, one ESTABLISHED connection that must be ignored.
TCP4 = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000   993        0 4242 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0
   2: 0100007F:1F91 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000   993        0 999 1 0 20 4 30 10 -1
"""
# [::1]:8000 and [::]:8001 LISTEN
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 556 1 0 100 0 0 10 0
"""


@pytest.mark.unit
@pytest.mark.skipif(sys.byteorder != "little", reason="sample lines are little-endian")
def test_parse_v4_keeps_only_listeners() -> None:
    got = ports.parse_table(TCP4, v6=False)
    assert [(str(li.address), li.port, li.uid, li.inode) for li in got] == [
        ("127.0.0.1", 8081, 993, 4242),
        ("0.0.0.0", 22, 0, 17),
    ]


@pytest.mark.unit
@pytest.mark.skipif(sys.byteorder != "little", reason="sample lines are little-endian")
def test_parse_v6() -> None:
    got = ports.parse_table(TCP6, v6=True)
    assert [(str(li.address), li.port, li.inode) for li in got] == [
        ("::1", 8000, 555),
        ("::", 8001, 556),
    ]


@pytest.mark.unit
def test_parse_ignores_garbage() -> None:
    assert ports.parse_table("header\nnot a line\n  0: zz:zz 0 0A 0 0 0 0 0 0\n", v6=False) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("listen", "want", "clash"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("0.0.0.0", "127.0.0.1", True),
        ("127.0.0.1", "0.0.0.0", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("::", "127.0.0.1", True),  # dual-stack wildcard
        ("127.0.0.1", "::", True),
        ("::1", "127.0.0.1", False),
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "127.0.0.1", True),
        ("::1", "0.0.0.0", False),
    ],
)
def test_overlaps(listen: str, want: str, clash: bool) -> None:
    assert ports.overlaps(ipaddress.ip_address(listen), ipaddress.ip_address(want)) is clash


def _listen(host: str = "127.0.0.1", fam: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen()
    return s


@pytest.mark.unit
def test_own_listener_is_found_with_our_pid() -> None:
    with _listen() as s:
        port = s.getsockname()[1]
        h = ports.port_holder("127.0.0.1", port)
        assert h is not None
        assert h.pid == os.getpid()
        assert h.port == port and h.address == "127.0.0.1"
        assert h.uid == os.geteuid()
        assert h.cmdline and "python" in h.cmdline
        assert f"pid {os.getpid()}" in h.describe()
        # a wildcard bind on the same port would clash too
        assert ports.port_holder("0.0.0.0", port) is not None
        assert not ports.is_free("127.0.0.1", port)
        assert not ports.is_free("0.0.0.0", port)
        # a different loopback address does not clash with a specific bind
        assert ports.port_holder("127.0.0.2", port) is None
    assert ports.port_holder("127.0.0.1", port) is None
    assert ports.is_free("127.0.0.1", port)


@pytest.mark.unit
def test_connected_socket_is_not_a_listener() -> None:
    with _listen() as srv:
        port = srv.getsockname()[1]
        cli = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        srv.close()
        try:
            assert ports.port_holder("127.0.0.1", port) is None
            # TIME_WAIT / established peers do not make a port busy for a server
            assert ports.is_free("127.0.0.1", port)
        finally:
            conn.close()
            cli.close()


@pytest.mark.unit
@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_listener() -> None:
    try:
        s = _listen("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("::1 not configured")
    with s:
        port = s.getsockname()[1]
        h = ports.port_holder("::1", port)
        assert h is not None and h.pid == os.getpid() and h.address == "::1"
        assert "[::1]" in h.describe()
        assert ports.port_holder("127.0.0.1", port) is None


@pytest.mark.unit
def test_not_local_address_is_not_reported_busy() -> None:
    # 192.0.2.1 (TEST-NET-1) is not on this host: bind fails with EADDRNOTAVAIL, but
    # nobody holds the port, so it is "free" in the sense of this module.
    err = ports.bind_error("192.0.2.1", 5)
    assert err is not None
    assert ports.is_free("192.0.2.1", 5)


@pytest.fixture
def child_listener() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, "marker-xyz"], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        port = int(p.stdout.readline())
        yield p, port
    finally:
        p.kill()
        p.wait(timeout=10)


@pytest.mark.integration
def test_other_process_holder(child_listener: tuple[subprocess.Popen[bytes], int]) -> None:
    p, port = child_listener
    t0 = time.monotonic()
    h = ports.port_holder("0.0.0.0", port)
    elapsed = time.monotonic() - t0
    assert h is not None
    assert h.pid == p.pid
    assert h.cmdline is not None and "marker-xyz" in h.cmdline
    assert elapsed < 1.0
    assert not ports.is_free("127.0.0.1", port)
    assert p.pid in set(host.pids_of_tree(os.getpid()))
