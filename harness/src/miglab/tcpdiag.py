"""Sockets of a network namespace as the kernel lists them: netlink sock_diag.

What `ss -tinp` and `ss -xlp` show, asked the way ss asks (an inet_diag
dump with INET_DIAG_INFO for TCP, a unix_diag dump with the socket's name)
without starting a process ten times a second per namespace and parsing
its text. The request is made here rather than through pyroute2's
DiagSocket: its get_sock_stats() is marked as a signature that will change
before its next release, and it cannot open its socket in another network
namespace; the messages are the kernel's stable ABI (linux/inet_diag.h,
linux/unix_diag.h, struct tcp_info of linux/tcp.h).

A socket belongs to a process when one of the process's descriptors is
it: /proc/PID/fd links to "socket:[inode]" (as ss -p finds them).
"""
from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import ownership

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2  # the attribute holding struct tcp_info
UNIX_DIAG_NAME = 0
UDIAG_SHOW_NAME = 0x1
TCP_ESTABLISHED, TCP_LISTEN = 1, 10

_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then a
# struct inet_diag_sockid of 48 bytes (ports, addresses, interface, cookie)
_INET_REQ = struct.Struct("=BBBxI48x")
# struct inet_diag_msg: family, state, timer, retrans; the sockid (ports
# big-endian, then 16 bytes per address), then expires, rqueue, wqueue, uid, inode
_INET_MSG = struct.Struct("=BBBB2s2s16s16s4x8xIIIII")
_UNIX_REQ = struct.Struct("=BBxxIII8x")  # family, protocol, states, ino, show, cookie
_UNIX_MSG = struct.Struct("=BBBxI8x")  # family, type, state, inode, cookie
# struct tcp_info up to tcpi_delivered (Linux 4.18): 8 one-byte fields (the
# app-limited flag is bit 0 of the 8th), 24 u32 (rto ... total_retrans), 4 u64
# (pacing rates, bytes_acked, bytes_received), 6 u32 (segs ... data_segs_out),
# 4 u64 (delivery_rate, busy, rwnd_limited, sndbuf_limited), 2 u32 (delivered, _ce)
_TCP_INFO = struct.Struct("=8B24I4Q6I4Q2I")


@dataclass(frozen=True)
class TcpInfo:
    """The fields of a connection's struct tcp_info the lab reads (kernel units)."""

    delivery_rate_bytes_per_s: int
    app_limited: bool
    rtt_us: int
    bytes_acked: int
    delivered: int  # segments
    rwnd_limited_us: int
    sndbuf_limited_us: int

    @classmethod
    def unpack(cls, data: bytes) -> TcpInfo | None:
        """From the kernel's struct; None from a kernel older than 4.18."""
        if len(data) < _TCP_INFO.size:
            return None
        f = _TCP_INFO.unpack_from(data)
        # f[0:8] bytes, f[8:32] u32 (rtt is the 16th), f[32:36] u64 (bytes_acked
        # the 3rd), f[36:42] u32, f[42:46] u64, f[46:48] u32
        return cls(delivery_rate_bytes_per_s=f[42], app_limited=bool(f[7] & 1),
                   rtt_us=f[8 + 15], bytes_acked=f[32 + 2], delivered=f[46],
                   rwnd_limited_us=f[44], sndbuf_limited_us=f[45])


@dataclass(frozen=True)
class TcpSocket:
    """One TCP socket: "addr:port" of both ends (IPv6 in brackets), as ss writes them."""

    local: str
    peer: str
    state: int
    inode: int
    info: TcpInfo | None

    @property
    def local_port(self) -> int:
        return int(self.local.rsplit(":", 1)[1])

    @property
    def peer_port(self) -> int:
        return int(self.peer.rsplit(":", 1)[1])


def _address(family: int, raw: bytes, port: bytes) -> str:
    size = 4 if family == socket.AF_INET else 16
    addr = socket.inet_ntop(family, raw[:size])
    text = addr if family == socket.AF_INET else f"[{addr}]"
    return f"{text}:{struct.unpack('>H', port)[0]}"


def _attributes(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind, data[offset + _RTATTR.size:offset + length]
        offset += (length + 3) & ~3


class DiagSocket:
    """A sock_diag netlink socket opened in @netns (None: ours); use with `with`.

    A socket stays in the namespace it was created in, so it is created by a
    thread that entered the namespace and then ends (setns affects only the
    calling thread)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._sock: socket.socket | None = None
        self._seq = 0

    def __enter__(self) -> DiagSocket:
        self._sock = self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None

    def _open(self) -> socket.socket:
        if self.netns is None:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        made: list[socket.socket | OSError] = []

        def inside() -> None:
            try:
                ownership.enter_netns(self.netns)
                made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                          NETLINK_SOCK_DIAG))
            except OSError as err:
                made.append(err)

        thread = threading.Thread(target=inside, name=f"sock-diag-{self.netns}")
        thread.start()
        thread.join()
        if isinstance(made[0], OSError):
            raise made[0]
        return made[0]

    def _dump(self, request: bytes) -> Iterator[bytes]:
        """The payloads of the kernel's answer to a dump @request."""
        assert self._sock, "use DiagSocket in a with block"
        self._seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY,
                                NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0)
        self._sock.send(header + request)
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                payload = data[offset + _NLMSGHDR.size:offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", payload)[0]
                    raise OSError(errno, f"sock_diag: {os.strerror(errno)}")
                yield payload

    def tcp(self, states: tuple[int, ...] = (TCP_ESTABLISHED,),
            pid: int | None = None) -> list[TcpSocket]:
        """The TCP sockets (IPv4 and IPv6) in @states, with their tcp_info;
        only those process @pid holds, if given."""
        mask = sum(1 << state for state in states)
        owned = socket_inodes(pid) if pid is not None else None
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            request = _INET_REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1),
                                     mask)
            for payload in self._dump(request):
                (fam, state, _, _, sport, dport, src, dst,
                 _, _, _, _, inode) = _INET_MSG.unpack_from(payload)
                if owned is not None and inode not in owned:
                    continue
                info = next((TcpInfo.unpack(value) for kind, value
                             in _attributes(payload, _INET_MSG.size)
                             if kind == INET_DIAG_INFO), None)
                out.append(TcpSocket(_address(fam, src, sport), _address(fam, dst, dport),
                                     state, inode, info))
        return out

    def unix_listeners(self) -> dict[str, int]:
        """The listening unix sockets with a path name: path -> inode."""
        request = _UNIX_REQ.pack(socket.AF_UNIX, 0, 1 << TCP_LISTEN, 0, UDIAG_SHOW_NAME)
        out = {}
        for payload in self._dump(request):
            _, _, _, inode = _UNIX_MSG.unpack_from(payload)
            for kind, value in _attributes(payload, _UNIX_MSG.size):
                if kind == UNIX_DIAG_NAME and value[:1] not in (b"", b"\0"):
                    out[value.rstrip(b"\0").decode(errors="replace")] = inode
        return out


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process @pid holds (empty once it is gone)."""
    fds = Path(f"/proc/{pid}/fd")
    out = set()
    try:
        names = os.listdir(fds)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(fds / name)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def socket_owner(inode: int) -> int | None:
    """A process holding socket @inode (the lowest pid), as ss -p finds it."""
    for entry in sorted((e for e in os.listdir("/proc") if e.isdigit()), key=int):
        if inode in socket_inodes(int(entry)):
            return int(entry)
    return None
