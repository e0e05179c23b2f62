"""The test guest: Debian's kernel, our workload as /init, and its console lines.

The workload (guest/workload.c) prints lines starting with "ml:"; this module
turns the kernel command line into its configuration and its console lines
back into facts: ready, heartbeats, measured rates, verification passes.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .console import ConsoleLine

MIB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    hot_set_mib: int = 32
    dirty_rate_mib: int = 40  # MiB/s
    zero_set_mib: int = 0
    zero_rate_mib: int = 0  # MiB/s
    heartbeat_ms: int = 10
    verify_rate_mib: int = 64  # MiB/s

    def kernel_args(self) -> list[str]:
        return [
            f"miglab.hot_mib={self.hot_set_mib}",
            f"miglab.dirty_rate_mib={self.dirty_rate_mib}",
            f"miglab.zero_mib={self.zero_set_mib}",
            f"miglab.zero_rate_mib={self.zero_rate_mib}",
            f"miglab.heartbeat_ms={self.heartbeat_ms}",
            f"miglab.verify_rate_mib={self.verify_rate_mib}",
        ]


# quiet: the serial console is slow, and boot messages only delay the workload.
BASE_KERNEL_ARGS = ["console=ttyS0", "quiet", "panic=0"]

READY = r"^ml:READY "
_HEARTBEAT = re.compile(r"^ml:H (\d+)$")
_RATES = re.compile(r"^ml:R (\d+) dirty_bps=(\d+) zero_bps=(\d+)$")
_VERIFY = re.compile(r"^ml:V (\d+) pages=(\d+) bad=(\d+)$")
_CORRUPT = re.compile(r"^ml:C (\d+) ")
# Signs of a dying kernel, whatever the workload managed to print.
_KERNEL_DEATH = re.compile(r"Kernel panic|general protection fault|BUG:|list_add corruption"
                           r"|Oops:|invalid opcode")


def kernel_command_line(workload: Workload) -> str:
    return " ".join(BASE_KERNEL_ARGS + workload.kernel_args())


@dataclass
class GuestReport:
    """What one console says about the guest after a given moment."""

    heartbeats: list[float]  # host arrival times
    verify_passes: int  # complete passes that started after the moment
    bad_pages: int  # found by those passes (and any corrupt-page line)
    dirty_bps: list[int]
    zero_bps: list[int]
    kernel_errors: list[str]

    @property
    def memory_verified(self) -> bool:
        return self.verify_passes > 0 and self.bad_pages == 0 and not self.kernel_errors


def read_console(lines: Iterable[ConsoleLine], after: float = 0.0) -> GuestReport:
    """Summarise console lines that arrived after host time @after.

    A verification pass is counted only if it started after @after: the first
    "V" line after the moment closes a pass that began before it, so it is
    skipped; its corrupt pages still count.
    """
    report = GuestReport([], 0, 0, [], [], [])
    seen_first_verify = False
    for line in lines:
        if line.host_time < after:
            continue
        text = line.text
        if m := _HEARTBEAT.match(text):
            report.heartbeats.append(line.host_time)
        elif m := _VERIFY.match(text):
            if seen_first_verify:
                report.verify_passes += 1
            report.bad_pages += int(m.group(3))
            seen_first_verify = True
        elif _CORRUPT.match(text):
            continue  # counted through the pass's "bad=" total
        elif m := _RATES.match(text):
            report.dirty_bps.append(int(m.group(2)))
            report.zero_bps.append(int(m.group(3)))
        elif _KERNEL_DEATH.search(text):
            report.kernel_errors.append(text.strip())
    return report


def blackout_ms(before: list[float], after: list[float]) -> float | None:
    """Host-seen blackout: from the source's last heartbeat to the destination's first."""
    if not before or not after:
        return None
    return (after[0] - before[-1]) * 1000.0
