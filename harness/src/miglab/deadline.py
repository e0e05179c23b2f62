"""Waiting for a condition with a deadline: the one polling helper of miglab.

Where QEMU or the guest emits an event (a QMP event, a console line) the
callers wait on that; this is for state that can only be asked for.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import LabError

T = TypeVar("T")


class DeadlineExceeded(LabError, TimeoutError):
    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"{what}: not within {timeout_s:g}s")
        self.what, self.timeout_s = what, timeout_s


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str,
             interval_s: float = 0.1) -> T:
    """The first non-None, non-False value of @condition(), asked every @interval_s;
    DeadlineExceeded naming @what after @timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(what, timeout_s)
        time.sleep(min(interval_s, left))
