"""sock_diag against the kernel: a connection over the lab's link read through
netlink is the one getsockopt(TCP_INFO) describes, and so is its owner."""
from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from miglab import autotune, ownership, tcpdiag
from miglab.link import DST_ADDR, Link, LinkConfig
from miglab.ownership import Record

T = TypeVar("T")
PORT = 5299
SENT_BYTES = 4 << 20


def in_netns(netns: str, make: Callable[[], T]) -> T:
    """make() run by a thread that entered @netns (its sockets stay there)."""
    out: list[T] = []

    def inside() -> None:
        ownership.enter_netns(netns)
        out.append(make())

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    return out[0]


def listener() -> socket.socket:
    sock = socket.create_server((DST_ADDR, PORT))
    return sock


def test_a_connection_over_the_link_reads_as_getsockopt_describes_it(run_record: Record) -> None:
    with Link(LinkConfig(200_000_000), record=run_record) as link:
        server = in_netns(link.dst_ns, listener)
        client = in_netns(link.src_ns, lambda: socket.create_connection((DST_ADDR, PORT)))
        peer, _ = server.accept()
        reader = threading.Thread(target=lambda: [None for _ in iter(
            lambda: peer.recv(1 << 16), b"")])
        reader.start()
        client.sendall(b"\1" * SENT_BYTES)
        try:
            # every byte ACKed: the connection is idle, its tcp_info stands still
            ownership.wait_for(lambda: struct.unpack_from(
                "=Q", client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 120
            )[0] >= SENT_BYTES, 10, "the receiver to ACK every byte")
            raw = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            with tcpdiag.DiagSocket(link.src_ns) as diag:
                mine = [s for s in diag.tcp() if s.peer_port == PORT]
                samples = autotune.read_samples(diag, 1.0, PORT, pid=os.getpid())
            assert len(mine) == 1, mine
            assert mine[0].inode == os.fstat(client.fileno()).st_ino
            assert mine[0].inode in tcpdiag.socket_inodes(os.getpid())
            assert mine[0].info == tcpdiag.TcpInfo.unpack(raw)
            info = mine[0].info
            assert info and info.bytes_acked >= SENT_BYTES and info.delivered > 0
            # a rate was sampled, under the link's 200 Mbit/s plus its bursts
            assert 0 < info.delivery_rate_bytes_per_s * 8 < 10 * 200_000_000
            (key, sample), = samples.items()
            assert key == f"{mine[0].local}->{DST_ADDR}:{PORT}"
            assert sample.delivered == info.delivered
            # another namespace does not see it
            with tcpdiag.DiagSocket(link.dst_ns) as other:
                assert not [s for s in other.tcp() if s.peer_port == PORT]
        finally:
            client.close()
            reader.join(timeout=10)
            peer.close()
            server.close()
