"""A guest serial console read live, each line stamped with the host clock.

QEMU connects to a unix socket we listen on (a socket chardev in client
mode), so no line is lost before we are ready and none is read late from a
file: the arrival time of a line is when the host saw it.
"""
from __future__ import annotations

import bisect
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .ownership import open_log


@dataclass(frozen=True)
class ConsoleLine:
    host_time: float  # time.monotonic() when the line arrived
    text: str


class Console:
    """Listens on @socket_path, records every line, and mirrors it to @log_path."""

    def __init__(self, socket_path: Path, log_path: Path) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self._lines: list[ConsoleLine] = []
        self._cond = threading.Condition()
        self._closed = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(socket_path))
        self._listener.listen(1)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name=f"console:{socket_path.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = None
        with open_log(self.log_path, encoding="utf-8", errors="replace") as log:
            while not self._closed and conn is None:
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
            if conn is None:
                return
            conn.settimeout(0.2)
            pending = b""
            while not self._closed:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                now = time.monotonic()
                pending += data
                *complete, pending = pending.split(b"\n")
                if not complete:
                    continue
                texts = [c.decode(errors="replace").rstrip("\r") for c in complete]
                log.write("".join(t + "\n" for t in texts))
                log.flush()
                with self._cond:
                    self._lines.extend(ConsoleLine(now, t) for t in texts)
                    self._cond.notify_all()
            conn.close()

    def lines(self) -> list[ConsoleLine]:
        with self._cond:
            return list(self._lines)

    def index_after(self, host_time: float) -> int:
        """Index of the first line that arrived at or after @host_time (lines are
        kept in arrival order, so their times are sorted)."""
        with self._cond:
            return bisect.bisect_left(self._lines, host_time, key=lambda line: line.host_time)

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> ConsoleLine | None:
        """First line from index @since matching @pattern, waiting up to @timeout s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                for line in self._lines[index:]:
                    if regex.search(line.text):
                        return line
                index = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._thread.join(timeout=2)
        self.socket_path.unlink(missing_ok=True)
