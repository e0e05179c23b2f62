"""The test guest: Debian's kernel, our workload as /init, and its console lines.

The workload (guest/workload.c, whose header comment documents every line)
prints lines starting with "ml:"; this module turns the kernel command line
into its configuration and its console lines back into facts: ready (with
the physical addresses of its sets), heartbeats, measured rates,
verification passes and the corrupt pages they found.
"""
from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .console import Console, ConsoleLine
from .errors import LabError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
PAGE_BYTES = 4096

# Memory work (MiB/s of checks and rewrites) that even a slow TCG guest keeps
# up: verify_deadline_s assumes no more.  A guest alone on this host kept
# pace with 1.3 GiB/s (600 MiB/s rewritten and checked, 64 verified); 100 is
# the low end of the 100-300 MiB/s assumed for TCG guests on a busy 2-core
# host (two guests and QEMU's migration threads).  Erring long is cheap: the
# wait ends at the pass, and runs to the deadline only when none comes.
SLOW_GUEST_MEMORY_MIB_PER_S = 100.0
# Added to every verify deadline: room for a destination that runs slowly
# right after the switchover (TCG translates all its code afresh) and for the
# "V" line to cross the emulated serial port and the console socket.
VERIFY_SLACK_S = 3.0


class GuestLineError(LabError, ValueError):
    """A console line is not what the workload prints (or an older workload's)."""


@dataclass(frozen=True)
class Workload:
    hot_set_mib: int = 32
    dirty_rate_mib: int = 40  # MiB/s
    zero_set_mib: int = 0
    zero_rate_mib: int = 0  # MiB/s
    heartbeat_ms: int = 10
    verify_rate_mib: int = 64  # MiB/s
    numa_nodes: int = 1  # the sets are interleaved over this many guest NUMA nodes
    threads: int = 1  # hot-set rewriters, one pinned to each of the first N vCPUs

    def kernel_args(self) -> list[str]:
        return [
            f"miglab.hot_mib={self.hot_set_mib}",
            f"miglab.dirty_rate_mib={self.dirty_rate_mib}",
            f"miglab.zero_mib={self.zero_set_mib}",
            f"miglab.zero_rate_mib={self.zero_rate_mib}",
            f"miglab.heartbeat_ms={self.heartbeat_ms}",
            f"miglab.verify_rate_mib={self.verify_rate_mib}",
            f"miglab.numa_nodes={self.numa_nodes}",
            f"miglab.threads={self.threads}",
        ]

    @property
    def owned_bytes(self) -> int:
        """The memory one verification pass sweeps: the hot set and the zero set."""
        return (self.hot_set_mib + self.zero_set_mib) * MIB

    @property
    def owned_pages(self) -> int:
        return self.owned_bytes // PAGE_BYTES

    @property
    def sweep_s(self) -> float:
        """One full verification pass at the workload's paced verify rate.

        0 when the workload owns no pages (it then prints no "V" line at all).
        """
        if self.owned_bytes == 0:
            return 0.0
        if self.verify_rate_mib <= 0:
            raise ValueError("verify_rate_mib must be positive for the memory to be checked")
        return self.owned_bytes / (self.verify_rate_mib * MIB)

    @property
    def demanded_memory_mib_per_s(self) -> float:
        """Memory work the workload asks of the guest's CPU, MiB/s.

        Each rewrite is a check of the page (a read) and its fill (a write);
        the sweep reads at the verify rate.
        """
        return 2.0 * (self.dirty_rate_mib + self.zero_rate_mib) + self.verify_rate_mib

    @property
    def verify_deadline_s(self) -> float:
        """How long after a moment a pass that started after it has surely ended.

        The pass in progress at the moment ends within one sweep, the next one
        (the first to start after the moment) within a second sweep: two
        sweeps at the paced rate.  A guest too slow for all the work asked of
        it falls behind on every paced activity alike, so the sweep is
        stretched by what is asked over what the slowest TCG guest does
        (SLOW_GUEST_MEMORY_MIB_PER_S), never shrunk; then VERIFY_SLACK_S for a
        cold destination and the console.  E.g. the showcase's 32 MiB at
        40 MiB/s, verified at 64 MiB/s: 2 x 0.5 s x 1.44 + 3 s = 4.4 s.
        """
        stretch = max(1.0, self.demanded_memory_mib_per_s / SLOW_GUEST_MEMORY_MIB_PER_S)
        return 2.0 * self.sweep_s * stretch + VERIFY_SLACK_S


# quiet: the serial console is slow, and boot messages only delay the workload.
BASE_KERNEL_ARGS = ["console=ttyS0", "quiet", "panic=0"]

READY = r"^ml:READY "
HEARTBEAT = r"^ml:H "
_HEARTBEAT = re.compile(r"^ml:H (\d+)$")
_RATES = re.compile(r"^ml:R (\d+) dirty_bps=(\d+) zero_bps=(\d+)$")
_VERIFY = re.compile(r"^ml:V (\d+) pages=(\d+) bad=(\d+)$")
_CORRUPT_ANY = re.compile(r"^ml:C ")
_CORRUPT = re.compile(r"^ml:C set=(\w+) page=(\d+) paddr=0x([0-9a-fA-F]+)(?: (.*))?$")
_READY_FIELD = re.compile(r"(\w+)=(0x[0-9a-fA-F]+|\d+)")
# Signs of a dying kernel, whatever the workload managed to print.
_KERNEL_DEATH = re.compile(r"Kernel panic|general protection fault|BUG:|list_add corruption"
                           r"|Oops:|invalid opcode")


def kernel_command_line(workload: Workload) -> str:
    return " ".join(BASE_KERNEL_ARGS + workload.kernel_args())


@dataclass(frozen=True)
class CorruptPage:
    """One "ml:C" line: a page of the workload's that did not hold what it wrote."""

    set_name: str  # "hot" or "zero"; "unparsed" for a line in an unknown format
    page: int  # index in its set; -1 if unparsed
    paddr: int  # guest-physical address; 0 if the guest could not tell, -1 if unparsed
    detail: str  # the rest of the line (what was expected and found, and by whom)


@dataclass(frozen=True)
class ReadyInfo:
    """The "ml:READY" line: the workload's configuration and where its sets are."""

    fields: dict[str, int]  # every KEY=VALUE on the line
    hot_paddr0: int  # guest-physical address of hot page 0, 0 if there is no hot set
    zero_paddr0: int  # the same for zero page 0
    threads: int  # the workload's rewriting threads, each pinned to a vCPU of its own
    cpus: int  # the CPUs the guest kernel has online


def parse_ready(text: str) -> ReadyInfo:
    """The facts of a READY line; GuestLineError if it is not one of this workload's."""
    if not re.match(READY, text):
        raise GuestLineError(f"not a READY line: {text!r}")
    fields = {key: int(value, 0) for key, value in _READY_FIELD.findall(text)}
    missing = [key for key in ("hot_paddr0", "zero_paddr0", "threads", "cpus")
               if key not in fields]
    if missing:
        raise GuestLineError(f"READY line without {', '.join(missing)} (an initramfs older"
                             f" than the harness? rebuild it with ninja): {text!r}")
    return ReadyInfo(fields, fields["hot_paddr0"], fields["zero_paddr0"], fields["threads"],
                     fields["cpus"])


def ready_info(lines: Iterable[ConsoleLine]) -> ReadyInfo | None:
    """The facts of the first READY line among @lines; None if there is none, or
    if it is an older workload's (logged: a run's verdict does not hang on it)."""
    line = next((line for line in lines if re.match(READY, line.text)), None)
    if line is None:
        return None
    try:
        return parse_ready(line.text)
    except GuestLineError as err:
        log.warning("%s", err)
        return None


def parse_corrupt(text: str) -> CorruptPage:
    """An "ml:C" line as a CorruptPage; one in an unknown format still is one."""
    if m := _CORRUPT.match(text):
        return CorruptPage(m.group(1), int(m.group(2)), int(m.group(3), 16), m.group(4) or "")
    if not _CORRUPT_ANY.match(text):
        raise GuestLineError(f"not a corrupt-page line: {text!r}")
    # Fail safe: a corruption report we cannot read is still a corruption.
    log.warning("corrupt-page line in an unknown format: %r", text)
    return CorruptPage("unparsed", -1, -1, text[len("ml:C "):])


@dataclass
class GuestReport:
    """What one console says about the guest after a given moment."""

    heartbeats: list[float]  # host arrival times
    verify_passes: int  # complete passes that started after the moment
    bad_pages: int  # found by the passes that ended after it, and by the one still open
    dirty_bytes_per_s: list[int]  # the guest prints it as "dirty_bps", bytes/s
    zero_bytes_per_s: list[int]  # "zero_bps", bytes/s too
    kernel_errors: list[str]
    corrupt_pages: list[CorruptPage] = field(default_factory=list)  # every "C" line

    @property
    def memory_verified(self) -> bool:
        return self.verify_passes > 0 and self.bad_pages == 0 and not self.kernel_errors


def read_console(lines: Iterable[ConsoleLine], after: float = 0.0) -> GuestReport:
    """Summarise console lines that arrived after host time @after.

    A verification pass is counted only if it started after @after: the first
    "V" line after the moment closes a pass that began before it, so it is
    skipped; its corrupt pages still count.  A pass's "bad=" counts every
    corrupt page it found (its "C" lines are capped), so "C" lines count on
    their own only while their pass has not ended: the guest may die or the
    console be read before its "V" line.
    """
    report = GuestReport([], 0, 0, [], [], [])
    seen_first_verify = False
    open_pass_corrupt = 0  # "C" lines since the last "V"
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
            open_pass_corrupt = 0
        elif _CORRUPT_ANY.match(text):
            report.corrupt_pages.append(parse_corrupt(text))
            open_pass_corrupt += 1
        elif m := _RATES.match(text):
            report.dirty_bytes_per_s.append(int(m.group(2)))
            report.zero_bytes_per_s.append(int(m.group(3)))
        elif _KERNEL_DEATH.search(text):
            report.kernel_errors.append(text.strip())
    report.bad_pages += open_pass_corrupt
    return report


def wait_for_checked_pass(console: Console, after: float, deadline_s: float) -> bool:
    """Wait until a verification pass that started after host time @after has ended.

    That is the second "V" line arriving after @after (the first closes a pass
    that began before).  @deadline_s counts from @after (Workload.verify_deadline_s
    is made for it); False if the pass has not ended by then.
    """
    deadline = after + deadline_s
    since = console.index_after(after)
    first = console.wait_for(_VERIFY.pattern, max(0.0, deadline - time.monotonic()), since)
    if first is None:
        return False
    m = _VERIFY.match(first.text)
    assert m  # wait_for matched the same pattern
    # Pass numbers only grow (they continue on a migrated guest), so the
    # next one is found by number, without knowing the first one's index.
    closing = rf"^ml:V {int(m.group(1)) + 1} "
    # With no time left, wait_for still looks once at the lines already in.
    left = max(0.0, deadline - time.monotonic())
    return console.wait_for(closing, left, since) is not None


_NUMA = re.compile(r"^ml:NUMA set=(\w+) pages_per_node=([\d,]+)$")


def pages_per_node(lines: Iterable[ConsoleLine]) -> dict[str, list[int]]:
    """Where the workload's sets are: set name -> pages on each guest NUMA node
    (the "ml:NUMA" lines it prints before READY; empty with one node)."""
    out = {}
    for line in lines:
        if m := _NUMA.match(line.text):
            out[m.group(1)] = [int(n) for n in m.group(2).split(",")]
    return out


_THREAD = re.compile(r"^ml:T (\d+) cpu=(\d+) first=(\d+) pages=(\d+) rate_pages=(\d+)"
                     r" paddr=0x([0-9a-fA-F]+)$")


@dataclass(frozen=True)
class ThreadShare:
    """One "ml:T" line: a rewriting thread and its share of the hot set."""

    thread: int
    cpu: int  # the vCPU it is pinned to
    first: int  # its first hot page
    pages: int
    rate_pages: int  # its share of the rate, pages/s
    paddr: int  # guest-physical address of its first page; 0 if it has none


def thread_shares(lines: Iterable[ConsoleLine]) -> list[ThreadShare]:
    """The rewriting threads' shares, from the "ml:T" lines the workload prints
    before READY (none with one thread: it owns the whole hot set)."""
    return [ThreadShare(*(int(g) for g in m.groups()[:5]), int(m.group(6), 16))
            for line in lines if (m := _THREAD.match(line.text))]


def blackout_ms(before: list[float], after: list[float]) -> float | None:
    """Host-seen blackout: from the source's last heartbeat to the destination's first."""
    if not before or not after:
        return None
    return (after[0] - before[-1]) * 1000.0


# The heartbeats around the switchover whose spacing bounds the error of the
# blackout: the source's last ones, the destination's first ones.
RESOLUTION_HEARTBEATS = 50


@dataclass(frozen=True)
class Blackout:
    """The guest's pause as seen from outside, and how far off that can be.

    The guest stopped somewhere between the source's last heartbeat and the
    one it would have printed next, and resumed somewhere between the
    destination's first heartbeat and the one before it would have been:
    so the pause is between `ms - error_ms` and `ms`, where error_ms is the
    longest spacing of the source's last and of the destination's first
    heartbeats, added (each at least the heartbeat period). Both consoles
    reach the host the same way (a socket chardev, or libvirt's stream),
    so their delivery delays cancel out to within that spacing.
    """

    ms: float
    error_ms: float
    last_before_s: float  # the source's last heartbeat (host monotonic time)
    first_after_s: float  # the destination's first

    @property
    def at_least_ms(self) -> float:
        return max(0.0, self.ms - self.error_ms)


def _longest_gap_ms(times: list[float], period_ms: float) -> float:
    gaps = [(b - a) * 1000.0 for a, b in itertools.pairwise(times)]
    return max([period_ms, *gaps])


def blackout(before: list[float], after: list[float], period_ms: float) -> Blackout | None:
    """blackout_ms() with its error bound (Blackout), from the heartbeats'
    own spacing around the switchover; None without heartbeats on both sides."""
    gap = blackout_ms(before, after)
    if gap is None:
        return None
    error = (_longest_gap_ms(before[-RESOLUTION_HEARTBEATS:], period_ms)
             + _longest_gap_ms(after[:RESOLUTION_HEARTBEATS], period_ms))
    return Blackout(gap, error, before[-1], after[0])
