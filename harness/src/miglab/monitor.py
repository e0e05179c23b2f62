"""QMP with a deadline on everything: connect, accept, every command, close.

qemu.qmp's synchronous wrapper waits forever by default: a QEMU that hangs
(or a socket that accepts and never greets, as when a management layer
already holds the monitor) would hang miglab with it. Every call here has
a deadline, and a missed one raises QMPTimeout naming the socket and the
command.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from qemu.qmp import ConnectError, ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from .errors import LabError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0  # a healthy QEMU answers in milliseconds, even under TCG
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


class QMPError(LabError):
    """The monitor could not be reached or stopped answering."""


class QMPTimeout(QMPError):
    def __init__(self, socket: str, what: str, timeout_s: float) -> None:
        super().__init__(f"QMP {socket}: no answer to {what} within {timeout_s:g}s")
        self.socket, self.what, self.timeout_s = socket, what, timeout_s


class Monitor(QEMUMonitorProtocol):
    """A QMP connection on a unix socket whose every wait has a deadline."""

    def __init__(self, socket_path: str, server: bool = False, nickname: str | None = None,
                 command_timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        super().__init__(socket_path, server=server, nickname=nickname)
        self.socket_path = socket_path
        self.settimeout(command_timeout_s)

    def _deadline(self, coro: Any, timeout_s: float | None, what: str) -> Any:
        try:
            return self._sync(coro, timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise QMPTimeout(self.socket_path, what, timeout_s or 0.0) from None

    def connect(self, negotiate: bool = True,  # type: ignore[override]
                timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, Any] | None:
        self._qmp.await_greeting = negotiate
        self._qmp.negotiate = negotiate
        try:
            self._deadline(self._qmp.connect(self.socket_path), timeout_s, "the greeting")
        except ConnectError as err:
            raise QMPError(f"QMP {self.socket_path}: {err}") from None
        return self._get_greeting()

    def accept(self, timeout: float | None = CONNECT_TIMEOUT_S,
               alive: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Wait for QEMU to connect and negotiate, up to @timeout seconds; give up
        early when @alive() says the process is gone.

        One accept runs to its end: cancelling it halfway through the
        negotiation (a slow QEMU) would leave a connection QEMU never
        repeats, so the deadline and the liveness checks only look at it."""
        self._qmp.await_greeting = True
        self._qmp.negotiate = True
        task = self._aloop.create_task(self._qmp.accept())
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while not task.done():
            left = deadline - time.monotonic()
            if left <= 0 or (alive is not None and not alive()):
                task.cancel()
                with contextlib.suppress(BaseException):
                    self._aloop.run_until_complete(task)
                if left <= 0:
                    raise QMPTimeout(self.socket_path, "the connection from QEMU",
                                     timeout or 0.0)
                raise QMPError(f"QMP {self.socket_path}: QEMU exited before it connected")
            self._aloop.run_until_complete(asyncio.wait([task], timeout=min(left, 0.5)))
        task.result()  # its own error, if negotiation failed
        greeting = self._get_greeting()
        assert greeting is not None
        return greeting

    def cmd(self, cmd: str, timeout_s: float | None = None,  # type: ignore[override]
            **kwds: object) -> Any:
        """Run a QMP command; QEMU's own error text is raised as ExecuteError."""
        timeout = timeout_s if timeout_s is not None else self._timeout
        return self._deadline(self._qmp.execute(cmd, kwds), timeout, cmd)

    def close(self) -> None:
        try:
            self._deadline(self._qmp.disconnect(), CLOSE_TIMEOUT_S, "disconnect")
        except Exception as err:  # closing is best effort; the process is killed anyway
            log.debug("closing %s: %s", self.socket_path, err)


__all__ = ["Monitor", "QMPError", "QMPTimeout", "ExecuteError"]
