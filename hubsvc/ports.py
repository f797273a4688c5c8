"""Who holds a TCP port on this host, and is a port free to listen on.

Reads the kernel's socket tables (/proc/net/tcp and /proc/net/tcp6) for listening
sockets, then maps a socket's inode to the process holding it through
/proc/PID/fd/* links (`socket:[INODE]`). Without the privilege to read another
account's /proc/PID/fd the holder's pid stays unknown, but the socket's owning uid is
still reported. Everything here is read-only and local to the caller's network
namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .host import PROC, IPAddress, bind_error, cmdline, resolve, user_name

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column
_LITTLE = sys.byteorder == "little"



@dataclass(frozen=True)
class Listener:
    """One listening TCP socket from /proc/net/tcp{,6}."""

    address: IPAddress
    port: int
    uid: int
    inode: int


@dataclass(frozen=True)
class Holder:
    """The process (if it could be found) holding a listening socket."""

    address: str  # the address the socket is bound to ("0.0.0.0", "::1" …)
    port: int
    uid: int  # owner of the socket, always known
    inode: int
    pid: int | None = None  # None when /proc/PID/fd could not be read
    cmdline: str | None = None  # argv joined by spaces, None when unknown

    @property
    def user(self) -> str:
        return user_name(self.uid)

    def describe(self) -> str:
        """A short phrase for a person: 'pid 123 (node …) as root on 0.0.0.0:8000'."""
        where = f"{_fmt_host(self.address)}:{self.port}"
        if self.pid is None:
            return f"an unidentified process of user {self.user} on {where}"
        cmd = " ".join((self.cmdline or "?").split())
        if len(cmd) > 120:
            cmd = cmd[:117] + "..."
        return f"pid {self.pid} ({cmd}) as {self.user} on {where}"


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _decode_v4(hexaddr: str) -> ipaddress.IPv4Address:
    # one 32-bit word in host byte order
    raw = bytes.fromhex(hexaddr)
    return ipaddress.IPv4Address(raw[::-1] if _LITTLE else raw)


def _decode_v6(hexaddr: str) -> ipaddress.IPv6Address:
    # four 32-bit words, each in host byte order
    raw = bytes.fromhex(hexaddr)
    if _LITTLE:
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return ipaddress.IPv6Address(raw)


def parse_table(text: str, v6: bool) -> list[Listener]:
    """Listening sockets from the text of /proc/net/tcp (v6=False) or tcp6 (v6=True)."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or f[3] != _LISTEN:
            continue
        addr_hex, _, port_hex = f[1].partition(":")
        try:
            addr: IPAddress = _decode_v6(addr_hex) if v6 else _decode_v4(addr_hex)
            out.append(Listener(addr, int(port_hex, 16), int(f[7]), int(f[9])))
        except ValueError:
            continue
    return out


def listeners(proc: Path = PROC) -> list[Listener]:
    """Every listening TCP socket in this network namespace."""
    out: list[Listener] = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            text = (proc / "net" / name).read_text()
        except OSError:
            continue  # no IPv6 in this kernel, or /proc not mounted
        out.extend(parse_table(text, v6))
    return out


def _v4_view(a: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(a, ipaddress.IPv4Address):
        return a
    return a.ipv4_mapped


def overlaps(listen: IPAddress, want: IPAddress) -> bool:
    """Would binding `want` clash with a socket listening on `listen` (same port)?

    A wildcard on either side covers its family; an IPv6 wildcard also covers IPv4
    (Linux's default dual-stack; an IPV6_V6ONLY listener is the rare exception that
    /proc does not show).
    """
    if listen == want:
        return True
    lv4, wv4 = _v4_view(listen), _v4_view(want)
    if listen.version == 6 and listen.is_unspecified:
        return True
    if want.version == 6 and want.is_unspecified:
        return True
    if lv4 is not None and wv4 is not None:
        return lv4.is_unspecified or wv4.is_unspecified or lv4 == wv4
    return False


def _socket_owners(inodes: set[int], proc: Path = PROC) -> dict[int, int]:
    """inode → pid for the given socket inodes (first process found holding each)."""
    found: dict[int, int] = {}
    if not inodes:
        return found
    wanted = {f"socket:[{i}]": i for i in inodes}
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            ino = wanted.get(target)
            if ino is not None and ino not in found:
                found[ino] = pid
                if len(found) == len(wanted):
                    return found
    return found


def holders(host: str, port: int, proc: Path = PROC,
            table: list[Listener] | None = None) -> list[Holder]:
    """Every listening socket that clashes with listening on host:port. `table`: the
    listeners read once for several ports (reading them costs ~3 ms on an idle host)."""
    wants = resolve(host)
    hits = [
        li
        for li in (listeners(proc) if table is None else table)
        if li.port == port and any(overlaps(li.address, w) for w in wants)
    ]
    owners = _socket_owners({li.inode for li in hits}, proc)
    out: list[Holder] = []
    for li in hits:
        pid = owners.get(li.inode)
        out.append(
            Holder(
                address=str(li.address),
                port=li.port,
                uid=li.uid,
                inode=li.inode,
                pid=pid,
                cmdline=cmdline(pid, proc) if pid is not None else None,
            )
        )
    return out


def port_holder(host: str, port: int, table: list[Listener] | None = None) -> Holder | None:
    """The process listening where host:port would be bound, or None if nobody is.

    `host` is what a config says to bind ("0.0.0.0", "127.0.0.1", "::", a name). A
    holder with a known pid is preferred over one whose pid could not be read.
    """
    found = holders(host, port, table=table)
    if not found:
        return None
    found.sort(key=lambda h: h.pid is None)
    return found[0]


def is_free(host: str, port: int) -> bool:
    """True when nothing listens where host:port would be bound.

    The bind attempt decides; when it fails for another reason than the port being in
    use (privileged port, address not local), the socket tables decide.
    """
    err = bind_error(host, port)
    if err is None:
        return True
    if err.errno == errno.EADDRINUSE:
        return False
    return not holders(host, port)


@dataclass(frozen=True)
class Connection:
    """An established TCP connection whose server side is a local listening port."""

    local: str  # "addr:port" of the server side
    peer: str  # "addr:port" of the client
    peer_local: bool  # the client is on this host (its socket is in our tables)
    peer_pid: int | None  # the client's process, when on this host and identifiable


_ESTABLISHED = "01"


def _raw_rows(proc: Path = PROC) -> list[tuple[IPAddress, int, IPAddress, int, str, int]]:
    rows = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            text = (proc / "net" / name).read_text()
        except OSError:
            continue
        dec = _decode_v6 if v6 else _decode_v4
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) < 10:
                continue
            try:
                la, _, lp = f[1].partition(":")
                ra, _, rp = f[2].partition(":")
                rows.append((dec(la), int(lp, 16), dec(ra), int(rp, 16), f[3], int(f[9])))
            except ValueError:
                continue
    return rows


def _same(a: IPAddress, b: IPAddress) -> bool:
    return a == b or (_v4_view(a) is not None and _v4_view(a) == _v4_view(b))


def connections_to(port: int, proc: Path = PROC) -> list[Connection]:
    """Established connections accepted on local `port`, with the client's pid if local."""
    rows = _raw_rows(proc)
    est = [r for r in rows if r[4] == _ESTABLISHED]
    served = [r for r in est if r[1] == port]
    pairs: list[tuple[tuple[IPAddress, int, IPAddress, int, str, int], int | None]] = []
    for srv in served:
        peer_inode = None
        for r in est:
            if r[1] == srv[3] and r[3] == port and _same(r[0], srv[2]) and _same(r[2], srv[0]):
                peer_inode = r[5]
                break
        # the client side of a connection we also see listed as served (port == port) is
        # the same connection seen from the other end only if ports match both ways
        if srv[3] == port and peer_inode is None:
            continue
        pairs.append((srv, peer_inode))
    owners = _socket_owners({i for _, i in pairs if i}, proc)
    out = []
    for srv, ino in pairs:
        la, lp, ra, rp = srv[0], srv[1], srv[2], srv[3]
        out.append(Connection(
            local=f"{_fmt_host(str(la))}:{lp}",
            peer=f"{_fmt_host(str(ra))}:{rp}",
            peer_local=ino is not None or ra.is_loopback,
            peer_pid=owners.get(ino) if ino else None,
        ))
    return out
