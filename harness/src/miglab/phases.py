"""Where the guest's pause goes: QEMU's downtime checkpoints on the host's clock.

QEMU 8.2 and later trace the checkpoints of a migration's downtime on both
sides (the trace event vmstate_downtime_checkpoint): on the source
src-downtime-start, src-vm-stopped, src-iterable-saved (RAM's last pass),
src-non-iterable-saved (device state) and src-downtime-end (QEMU's downtime
is the span of the first and the last); on the destination
dst-precopy-loadvm-completed, then the bottom half that resumes the guest:
dst-precopy-bh-enter, -announced, -vm-started. A run of such a build turns
the event on with the log backend's wall-clock stamps (-trace, -msg
timestamp=on, -D FILE per side); afterwards both files are read, each
checkpoint is put on the host's monotonic clock (one machine, one clock:
the offset between the two clocks is read once), and the pause between the
source guest's last heartbeat and the destination guest's first is cut at
the checkpoints. Through libvirt the domain's QEMU gets -trace alone: its
stderr, and so the events (stamped: libvirt passes -msg timestamp=on), go
to the domain's log on its host. QEMU 7.2 has no such events: its runs
show QEMU's downtime (query-migrate) and the blackout, nothing in between.
"""
from __future__ import annotations

import datetime
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EVENT = "vmstate_downtime_checkpoint"
MARKER = EVENT.encode()  # in the binaries that have the event
# The log backend's stamped lines: "PID@SECONDS.MICROS:event args" in QEMU
# 10.0 (and before); the stamp of QEMU's other messages,
# "2025-01-31T12:00:00.123456Z event args" (UTC), in 10.2.2.
_LINE_UNTIL_10_0 = re.compile(rf"^\d+@(\d+)\.(\d{{6}}):{EVENT} (\S+)$")
_LINE = re.compile(rf"^(\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{6}})Z {EVENT} (\S+)$")

# The cut points in order, each naming the phase that ends there.
PHASES = (
    ("src-downtime-start", "guest's last heartbeat to the source stopping it"),
    ("src-iterable-saved", "source: stop, then RAM's last pass"),
    ("src-non-iterable-saved", "source: device state"),
    ("dst-precopy-loadvm-completed", "destination: the rest of the stream loaded"),
    ("dst-precopy-bh-vm-started", "destination: resuming the guest (announce, VM start)"),
)
LAST_PHASE = "destination: guest's first heartbeat after it started"
# The one phase downtime-limit bounds (it is computed for RAM's last pass).
RAM_PHASE = PHASES[1][1]


def trace_args(log_file: Path | None) -> list[str]:
    """QEMU options that write the checkpoints, stamped, to @log_file; with
    None to QEMU's stderr, for a QEMU that libvirt starts (its stderr goes
    to the domain's log, and libvirt gives -msg timestamp=on itself)."""
    if log_file is None:
        return ["-trace", f"enable={EVENT}"]
    return ["-trace", f"enable={EVENT}", "-msg", "timestamp=on", "-D", str(log_file)]


def read_checkpoints(path: Path, wall_minus_monotonic_s: float) -> dict[str, float]:
    """Each checkpoint's first time in @path, on the monotonic clock (s)."""
    found: dict[str, float] = {}
    if not path.exists():
        return found
    for line in map(str.strip, path.read_text(errors="replace").splitlines()):
        if m := _LINE_UNTIL_10_0.match(line):
            wall, point = int(m.group(1)) + int(m.group(2)) / 1e6, m.group(3)
        elif m := _LINE.match(line):
            stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            wall, point = stamp.replace(tzinfo=datetime.timezone.utc).timestamp(), m.group(2)
        else:
            continue
        found.setdefault(point, wall - wall_minus_monotonic_s)
    return found


@dataclass(frozen=True)
class Phase:
    name: str
    ms: float


def cut(last_heartbeat_s: float, first_heartbeat_s: float,
        checkpoints: dict[str, float]) -> list[Phase]:
    """The pause from @last_heartbeat_s (source) to @first_heartbeat_s
    (destination), cut at the checkpoints both QEMUs traced; [] when any is
    missing. The phases add up to the blackout."""
    if any(point not in checkpoints for point, _ in PHASES):
        return []
    out, start = [], last_heartbeat_s
    for point, name in PHASES:
        out.append(Phase(name, round((checkpoints[point] - start) * 1000.0, 1)))
        start = checkpoints[point]
    out.append(Phase(LAST_PHASE, round((first_heartbeat_s - start) * 1000.0, 1)))
    return out


def clock_offset_s() -> float:
    """Wall-clock minus monotonic time, now (the trace stamps are wall-clock)."""
    return time.time() - time.monotonic()


def ram_pass_ms(cut: list[Phase]) -> float | None:
    """How long the source took to stop the guest and send RAM's last pass."""
    return next((p.ms for p in cut if p.name == RAM_PHASE), None)


def records(cut: list[Phase]) -> list[dict[str, Any]]:
    return [asdict(p) for p in cut]


def describe(cut: list[Phase]) -> str:
    return ("where the pause went (QEMU's downtime checkpoints, both sides): "
            + "; ".join(f"{p.name} {p.ms:.0f} ms" for p in cut))
