"""Bulk TCP flows over the lab's link: the link check's, and competing traffic.

A flow is a linkprobe receiver in the destination namespace and a sender in
the source namespace, both started through the run's record (Record.spawn: recorded, and
killed with us). The link check runs one flow alone for two seconds;
--cross-traffic runs N flows from before the migration starts until it has
ended, the storage or tenant traffic a real migration network carries, so
that the switchover gets a share of the link and not its rate.
"""
from __future__ import annotations

import logging
import select
import subprocess
import sys
from dataclasses import dataclass

from . import ownership
from .errors import LabError

log = logging.getLogger(__name__)

PROBE = [sys.executable, "-m", "miglab.linkprobe"]
START_TIMEOUT_S = 15.0  # a receiver starts listening within this
REPORT_TIMEOUT_S = 15.0  # and reports within this once its sender is gone
CROSS_TRAFFIC_BASE_PORT = 5301  # flow i listens on this + i (the link check: 5201)


class FlowError(LabError):
    """A flow did not start, or its receiver did not report."""


@dataclass(frozen=True)
class Delivered:
    """What a flow's receiver got: bytes, between its first and last data."""

    bytes: int
    seconds: float

    @property
    def goodput_bps(self) -> float:
        return self.bytes * 8 / self.seconds


class Flow:
    """One sender -> receiver TCP flow; start() it, then wait() or stop() it."""

    def __init__(self, src_ns: str, dst_ns: str, addr: str, port: int, seconds: float,
                 what: str, *, record: ownership.Record) -> None:
        self._record = record
        self.src_ns, self.dst_ns, self.addr, self.port = src_ns, dst_ns, addr, port
        self.seconds, self.what = seconds, what
        self._recv: subprocess.Popen[str] | None = None
        self._send: subprocess.Popen[str] | None = None
        self._entries: list[ownership.Entry] = []

    def start(self) -> None:
        self._recv, entry = self._record.spawn([*PROBE, "recv", self.addr, str(self.port)],
                                               f"{self.what} receiver", self.dst_ns,
                                               stdout=subprocess.PIPE, text=True)
        self._entries.append(entry)
        assert self._recv.stdout
        ready, _, _ = select.select([self._recv.stdout], [], [], START_TIMEOUT_S)
        if not ready or self._recv.stdout.readline().strip() != "listening":
            raise FlowError(f"{self.what}: the receiver did not listen on port {self.port}"
                            f" within {START_TIMEOUT_S:.0f}s")
        self._send, entry = self._record.spawn(
            [*PROBE, "send", self.addr, str(self.port), str(self.seconds)],
            f"{self.what} sender", self.src_ns, stderr=subprocess.PIPE, text=True)
        self._entries.append(entry)

    def wait(self) -> Delivered:
        """What was delivered once the sender has run its time."""
        assert self._send
        try:
            _, err = self._send.communicate(timeout=self.seconds + START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise FlowError(f"{self.what}: the sender did not end within"
                            f" {self.seconds + START_TIMEOUT_S:.0f}s") from None
        if self._send.returncode != 0:
            raise FlowError(f"{self.what}: the sender failed: {err.strip()}")
        return self._report()

    def stop(self) -> Delivered:
        """Stop the sender now; what was delivered until then."""
        assert self._send
        # The kernel still sends what the socket holds, then a FIN: the
        # receiver sees an orderly end and reports.
        self._send.kill()
        self._send.wait()
        return self._report()

    def _report(self) -> Delivered:
        assert self._recv
        try:
            out, _ = self._recv.communicate(timeout=REPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise FlowError(f"{self.what}: no report within {REPORT_TIMEOUT_S:.0f}s"
                            ) from None
        try:
            total, seconds = out.split()
            return Delivered(int(total), float(seconds))
        except ValueError:
            raise FlowError(f"{self.what}: the receiver reported {out.strip()!r}") from None

    def close(self) -> None:
        """Kill and forget both processes (idempotent; every path ends here)."""
        for proc in (self._send, self._recv):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
        while self._entries:
            self._record.release(self._entries.pop())


class CrossTraffic:
    """@flows bulk flows over the link while a migration runs (a context manager).

    Each sender runs at most @seconds, so a flow never outlives a run even if
    stop() is never reached; ownership kills them with us anyway."""

    def __init__(self, src_ns: str, dst_ns: str, addr: str, flows: int,
                 seconds: float, *, record: ownership.Record) -> None:
        self._flows = [Flow(src_ns, dst_ns, addr, CROSS_TRAFFIC_BASE_PORT + i, seconds,
                            f"cross-traffic flow {i + 1}", record=record)
                       for i in range(flows)]
        self.delivered: list[Delivered] = []

    def __enter__(self) -> CrossTraffic:
        try:
            for flow in self._flows:
                flow.start()
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> list[Delivered]:
        """Stop every flow; what each delivered (also kept in .delivered)."""
        if not self.delivered:
            self.delivered = [flow.stop() for flow in self._flows]
            log.info("cross traffic: %s", ", ".join(
                f"{d.goodput_bps / 1e6:.0f} Mbit/s over {d.seconds:.1f}s"
                for d in self.delivered))
        return self.delivered

    def close(self) -> None:
        for flow in self._flows:
            flow.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
