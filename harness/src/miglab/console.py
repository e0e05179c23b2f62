"""A guest serial console read live, each line stamped with the host clock.

Lines come from a byte source read by a thread of its own: a unix socket
QEMU connects to (a socket chardev in client mode, so no line is lost
before we are ready and none is read late from a file), or libvirt's
console stream of a domain (libvirthost.py), which works as well when the
host is remote. The arrival time of a line is when the host saw it.
"""
from __future__ import annotations

import bisect
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .ownership import open_log

# A source returns the next bytes (b"" at the end), or None when nothing
# came within its own short wait, so that close() is seen promptly.
Source = Callable[[], "bytes | None"]
POLL_S = 0.2


@dataclass(frozen=True)
class ConsoleLine:
    host_time: float  # time.monotonic() when the line arrived
    text: str


class Console:
    """Records every line of @source, mirrored to @log_path."""

    def __init__(self, source: Source, log_path: Path, name: str,
                 on_close: Callable[[], None] | None = None) -> None:
        self.log_path = log_path
        self._lines: list[ConsoleLine] = []
        self._cond = threading.Condition()
        self._closed = False
        self._on_close = on_close
        self._thread = threading.Thread(target=self._run, args=(source,),
                                        name=f"console:{name}", daemon=True)
        self._thread.start()

    @classmethod
    def listening(cls, socket_path: Path, log_path: Path) -> Console:
        """A console QEMU connects to at @socket_path (made here, removed at close)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(socket_path))
        listener.listen(1)
        listener.settimeout(POLL_S)
        conn: list[socket.socket] = []

        def source() -> bytes | None:
            try:
                if not conn:
                    conn.append(listener.accept()[0])
                    conn[0].settimeout(POLL_S)
                return conn[0].recv(65536)
            except TimeoutError:
                return None
            except OSError:
                return b""

        def close() -> None:
            listener.close()
            for c in conn:
                c.close()
            socket_path.unlink(missing_ok=True)
        return cls(source, log_path, socket_path.name, close)

    def _run(self, source: Source) -> None:
        with open_log(self.log_path, encoding="utf-8", errors="replace") as log:
            pending = b""
            while not self._closed:
                data = source()
                if data is None:
                    continue
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
        if self._on_close:  # ends a read that is waiting (a libvirt stream's blocks)
            self._on_close()
        self._thread.join(timeout=2)
