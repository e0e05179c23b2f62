"""Writing guest memory from outside, through QEMU's gdbstub.

Tests use this to corrupt a page the guest's workload owns, so that its
checker is tested against a fault it did not make itself.  QEMU must have
been started with a gdbstub on a unix socket, either of (both accepted by
QEMU 7.2, which parses -gdb as a chardev):

    -gdb unix:PATH,server=on,wait=off
    -chardev socket,id=gdb0,path=PATH,server=on,wait=off -gdb chardev:gdb0

The GDB remote serial protocol, as much of it as we need: packets are
"$payload#cc" (cc: the payload's byte sum mod 256, two hex digits), each
acknowledged with "+" ("-" asks for it again).  QEMU-specific parts (its
gdbstub/gdbstub.c in 7.2):

- A client connecting stops the VM (and QEMU then sends an unsolicited stop
  reply, "T02thread:..."); "D" (detach) restarts it, even if it was stopped
  for another reason before we attached, so do not use this on a VM that
  must stay stopped (e.g. a migration source after switchover).
- While the VM runs QEMU drops the first byte it receives (it stops the VM
  instead), so a packet may go unacknowledged: we send it again.
- "Qqemu.PhyMemMode:1" makes "M" packets write guest-physical memory
  (cpu_physical_memory_write), not virtual memory through a CPU's MMU.
- A packet may be at most 4096 bytes (MAX_PACKET_LENGTH), so writes go in
  chunks.
"""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from .errors import LabError

log = logging.getLogger(__name__)

# "M" payloads are "M<addr>,<len>:<hex>": 1 KiB of data is 2 KiB of hex,
# well under QEMU's 4096-byte packet buffer whatever the address.
CHUNK_BYTES = 1024
# How long to wait for an ack before sending a packet again.
RESEND_AFTER_S = 0.5
# Time the detach gets of its own when the deadline passed before it.
DETACH_S = 2.0


class GdbStubError(LabError):
    """The gdbstub at @socket_path failed (or did not answer) @packet."""

    def __init__(self, socket_path: Path | str, packet: str, reason: str) -> None:
        self.socket_path = str(socket_path)
        self.packet = packet
        self.reason = reason
        super().__init__(f"gdbstub {self.socket_path}: {packet!r}: {reason}")


def _checksum(payload: bytes) -> bytes:
    return b"%02x" % (sum(payload) % 256)


def frame(payload: str) -> bytes:
    """@payload as a packet on the wire (no escaping: we send only hex and ASCII)."""
    data = payload.encode("ascii")
    if any(c in data for c in b"$#}*"):
        raise ValueError(f"payload needs escaping, which this client does not do: {payload!r}")
    return b"$" + data + b"#" + _checksum(data)


class _Session:
    """One connection to a gdbstub; every method takes the overall deadline."""

    def __init__(self, socket_path: Path | str, deadline: float) -> None:
        self.path = str(socket_path)
        self.deadline = deadline
        self._buf = b""
        timeout = self._left("connect")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise GdbStubError(self.path, "connect", str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def _left(self, packet: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise GdbStubError(self.path, packet, "deadline passed")
        return left

    def _recv(self, packet: str, timeout: float) -> bool:
        """Read what is there into the buffer; False if nothing came in @timeout."""
        self._sock.settimeout(max(0.001, min(timeout, self._left(packet))))
        try:
            data = self._sock.recv(4096)
        except TimeoutError:
            return False
        except OSError as exc:
            raise GdbStubError(self.path, packet, f"receive failed: {exc}") from exc
        if not data:
            raise GdbStubError(self.path, packet, "QEMU closed the connection")
        self._buf += data
        return True

    def _send_raw(self, packet: str, data: bytes) -> None:
        try:
            self._sock.settimeout(self._left(packet))
            self._sock.sendall(data)
        except OSError as exc:
            raise GdbStubError(self.path, packet, f"send failed: {exc}") from exc

    def _next_item(self, packet: str) -> str | None:
        """The next thing QEMU sent: "+", "-", "$<payload>" (acked), or None if
        nothing whole is in the buffer yet.  Bytes outside packets are dropped."""
        while self._buf:
            head = self._buf[:1]
            if head in (b"+", b"-"):
                self._buf = self._buf[1:]
                return head.decode()
            if head != b"$":
                self._buf = self._buf[1:]
                continue
            end = self._buf.find(b"#")
            if end < 0 or len(self._buf) < end + 3:
                return None
            payload, check = self._buf[1:end], self._buf[end + 1:end + 3]
            self._buf = self._buf[end + 3:]
            if check.lower() != _checksum(payload):
                self._send_raw(packet, b"-")  # QEMU sends it again
                continue
            self._send_raw(packet, b"+")
            return "$" + payload.decode("ascii", errors="replace")
        return None

    def _wait_item(self, packet: str, timeout: float) -> str | None:
        """The next item, waiting up to @timeout (and never past the deadline)."""
        until = time.monotonic() + timeout
        while (item := self._next_item(packet)) is None:
            left = until - time.monotonic()
            if left <= 0 or not self._recv(packet, left):
                return None
        return item

    def command(self, packet: str) -> str:
        """Send @packet until it is acked; return QEMU's reply to it."""
        wire = frame(packet)
        acked = False
        while not acked:
            self._send_raw(packet, wire)
            sent_at = time.monotonic()
            while (left := RESEND_AFTER_S - (time.monotonic() - sent_at)) > 0:
                item = self._wait_item(packet, left)
                if item in (None, "-"):
                    break  # lost (QEMU was running) or garbled: send it again
                if item == "+":
                    acked = True
                    break
                # A packet before our ack (the stop reply to our attaching).
                log.debug("gdbstub %s: skipping %r", self.path, item)
            if not acked:
                log.debug("gdbstub %s: %r not acked, sending it again", self.path, packet)
        while True:
            item = self._wait_item(packet, self._left(packet))
            if item is None or not item.startswith("$"):
                continue  # stray acks; _left() raises at the deadline
            reply = item[1:]
            # Stop replies ("T..", "S..") and console output ("O..") come
            # unasked; none of the replies we wait for starts so.
            if reply[:1] in ("T", "S") or (reply.startswith("O") and reply != "OK"):
                log.debug("gdbstub %s: skipping %r", self.path, reply)
                continue
            return reply

    def expect_ok(self, packet: str) -> None:
        reply = self.command(packet)
        if reply != "OK":
            raise GdbStubError(self.path, packet, f"QEMU replied {reply!r}, not 'OK'")


def write_guest_physical(socket_path: Path | str, paddr: int, data: bytes,
                         timeout_s: float = 10.0) -> None:
    """Write @data at guest-physical address @paddr of the VM behind @socket_path.

    The VM is stopped while this runs (a gdb client is attached) and resumes
    when it returns, also on an error once connected.  Raises GdbStubError
    naming the socket and the packet if any step fails or @timeout_s passes;
    the detach that follows a failure may take DETACH_S more.
    """
    if paddr < 0 or not data:
        raise ValueError(f"nothing to write: paddr {paddr:#x}, {len(data)} bytes")
    session = _Session(socket_path, time.monotonic() + timeout_s)
    error: GdbStubError | None = None
    try:
        try:
            session.expect_ok("Qqemu.PhyMemMode:1")
            for offset in range(0, len(data), CHUNK_BYTES):
                chunk = data[offset:offset + CHUNK_BYTES]
                session.expect_ok(f"M{paddr + offset:x},{len(chunk):x}:{chunk.hex()}")
            # The mode is global to the stub: leave it as a debugger expects it.
            session.expect_ok("Qqemu.PhyMemMode:0")
        except GdbStubError as exc:
            error = exc
        # Detach even after a failure, else the VM stays stopped; with time of
        # its own, as the failure may have been the deadline.
        session.deadline = max(session.deadline, time.monotonic() + DETACH_S)
        try:
            session.expect_ok("D")
        except GdbStubError as exc:
            if error is None:
                raise
            log.error("gdbstub %s: detach failed too, the VM may stay stopped: %s",
                      session.path, exc)
        if error is not None:
            raise error
        log.info("gdbstub %s: wrote %d bytes at guest-physical %#x", session.path, len(data),
                 paddr)
    finally:
        session.close()
