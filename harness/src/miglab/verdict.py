"""The verdict rules, in one place: the CLI, the runner, reports and tests use these.

- status: completed, not-converged (still iterating at the deadline, then
  cancelled) or failed (QEMU said so, died, or stopped answering);
- integrity: ok only when every page the workload owns was checked after
  the switchover (a whole verification pass that started after it) and no
  page was bad, on a guest that is alive; corrupt when any page or the
  kernel says so; not-checked otherwise;
- alive: a heartbeat arrived within ALIVE_WITHIN_S of the check;
- downtime: within the limit up to DOWNTIME_ALLOWANCE (the final device
  state rides on top of RAM, which the limit is computed for);
- a run passes when it completed, intact, within the limit;
- the guest's pause seen from outside (the blackout) is judged beside it:
  a run whose blackout, less its error bound, is above the limit paused
  the guest longer than the limit, whatever QEMU's downtime says
  (paused_over_limit; `miglab run` exits 3 for it);
- the advice for a pause within the limit (pause_advice): downtime-limit
  bounds RAM's last pass only, at the switchover bandwidth QEMU assumed;
  the rest of the pause (device state, the destination's load of the rest
  and its resume) it does not count, so a limit that keeps the pause
  within L is L less that rest and less the pause's error bound (the
  pause as measured, its upper bound, is to stay within L, and the next
  run's heartbeats fall anywhere in their spacing), scaled by the link's
  rate over the bandwidth assumed when that was more than the link
  carried.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .units import both_rates, human_bits

if TYPE_CHECKING:
    from .guest import Blackout, CorruptPage, GuestReport
    from .migration import Outcome
    from .result import CrossTrafficRecord, LibvirtRecord, Result
    from .scenario import Scenario, Switchover

DOWNTIME_ALLOWANCE = 1.10
ALIVE_WITHIN_S = 1.0  # heartbeats come every 10 ms; a second of silence is a dead guest
OVERDECLARED = 1.05  # a declared bandwidth above the measured link by more than this


class Status(str, Enum):
    COMPLETED = "completed"
    NOT_CONVERGED = "not-converged"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class Integrity(str, Enum):
    OK = "ok"
    CORRUPT = "corrupt"
    NOT_CHECKED = "not-checked"

    def __str__(self) -> str:
        return self.value


def within_limit(downtime_ms: int, limit_ms: int) -> bool:
    return downtime_ms <= limit_ms * DOWNTIME_ALLOWANCE


def alive(heartbeats: list[float], now: float) -> bool:
    return bool(heartbeats) and now - heartbeats[-1] < ALIVE_WITHIN_S


def integrity(report: GuestReport, is_alive: bool) -> Integrity:
    if report.bad_pages or report.corrupt_pages or report.kernel_errors:
        return Integrity.CORRUPT
    if report.memory_verified and is_alive:
        return Integrity.OK
    return Integrity.NOT_CHECKED


def limit_in_force_ms(result: Result) -> int:
    """The limit QEMU switched over with: the downtime ramp's last, or the user's."""
    ramp = result.downtime_ramp
    return ramp.limit_at_switchover_ms if ramp and ramp.limit_at_switchover_ms \
        else result.downtime_limit_ms


def passed(result: Result) -> bool:
    """Completed, intact, within the limit in force at the switchover (with the
    downtime ramp, that is its promise; ramp_reasons() also tells the user's)."""
    return (result.status == Status.COMPLETED and result.integrity == Integrity.OK
            and result.downtime_ms is not None
            and within_limit(result.downtime_ms, limit_in_force_ms(result)))


def paused_over_limit(blackout_ms: float | None, error_ms: float | None,
                      limit_ms: int) -> bool | None:
    """Whether the guest was certainly paused longer than @limit_ms: its
    blackout less the error bound is above it (None: no blackout seen)."""
    if blackout_ms is None or error_ms is None:
        return None
    return blackout_ms - error_ms > limit_ms


@dataclass(frozen=True)
class PauseAdvice:
    wanted_ms: int  # the pause asked for: the user's downtime-limit
    unbounded_ms: float  # the part of the pause downtime-limit does not bound
    margin_ms: float  # the pause's error bound, kept free
    # the bandwidth QEMU assumed over the link's measured rate, when above 1
    overassumed: float
    advised_limit_ms: int | None  # None: the unbounded part alone fills wanted_ms


def pause_advice(seen: Blackout | None, downtime_ms: int | None, ram_ms: float | None,
                 wanted_ms: int, link_bps: float | None,
                 switchover_bps: float | None) -> PauseAdvice | None:
    """The downtime-limit that keeps the guest's pause, as measured (its upper
    bound), within @wanted_ms, from a completed run: the blackout @seen less RAM's
    last pass where QEMU traced its checkpoints (@ram_ms), else less QEMU's
    downtime (7.2: the device state then counts as bounded), is the part the
    limit does not bound; @wanted_ms less that part and less the blackout's
    error bound is what the limit may be, less the share by which
    the bandwidth QEMU assumed (@switchover_bps) was above the link's
    measured rate. None without a blackout."""
    if seen is None or downtime_ms is None:
        return None
    unbounded = max(0.0, seen.ms - (downtime_ms if ram_ms is None else ram_ms))
    over = switchover_bps / link_bps if link_bps and switchover_bps else 1.0
    advised = math.floor((wanted_ms - unbounded - seen.error_ms) / max(1.0, over))
    return PauseAdvice(wanted_ms, round(unbounded, 1), round(seen.error_ms, 1),
                       round(max(1.0, over), 3), advised if advised > 0 else None)


def advice_reason(a: PauseAdvice) -> str:
    where = (f"{a.unbounded_ms:.0f} ms of the guest's pause lay outside what downtime-limit"
             " bounds (device state, the destination's load and resume)")
    if a.advised_limit_ms is None:
        return f"{where}: no downtime-limit keeps the pause within {a.wanted_ms} ms"
    scaled = (f", and the bandwidth assumed was {a.overassumed:.0%} of the link's"
              if a.overassumed > 1 else "")
    return (f"{where}{scaled}: for a pause within {a.wanted_ms} ms (its error bound,"
            f" {a.margin_ms:.0f} ms, kept free), set downtime-limit to {a.advised_limit_ms} ms")


def pause_reason(blackout_ms: float, error_ms: float, limit_ms: int) -> str:
    if paused_over_limit(blackout_ms, error_ms, limit_ms):
        return (f"the guest was paused {blackout_ms:.0f} ms (at least"
                f" {blackout_ms - error_ms:.0f} ms: the heartbeats' spacing bounds the error"
                f" to {error_ms:.0f} ms) > the limit {limit_ms} ms, seen from outside")
    return (f"the guest's pause seen from outside, {blackout_ms:.0f} ms (at least"
            f" {max(0.0, blackout_ms - error_ms):.0f} ms), is not certainly above the limit"
            f" {limit_ms} ms")


def overdeclared(declared_bps: float, link_bps: float) -> bool:
    return declared_bps > link_bps * OVERDECLARED


def downtime_reason(downtime_ms: int, limit_ms: int) -> str:
    if within_limit(downtime_ms, limit_ms):
        return f"downtime {downtime_ms} ms within the limit {limit_ms} ms"
    return f"downtime {downtime_ms} ms exceeds the limit {limit_ms} ms"


def ramp_reasons(downtime_ms: int, in_force_ms: int, user_ms: int, raises: int) -> list[str]:
    """The downtime against the ramp's limit at switchover and against the user's."""
    def against(limit_ms: int) -> str:
        return "within" if within_limit(downtime_ms, limit_ms) else "exceeds"
    return [f"downtime {downtime_ms} ms {against(in_force_ms)} the limit in force at"
            f" switchover, {in_force_ms} ms (the downtime ramp's, after {raises} raise(s))",
            f"downtime {downtime_ms} ms {against(user_ms)} the --downtime-limit asked for,"
            f" {user_ms} ms"]


def bandwidth_reasons(link_bps: float, estimate_bps: float | None,
                      declared_bps: float | None, how: str = "declared") -> list[str]:
    """Why QEMU decided as it did: its estimate and the switchover bandwidth
    (@how it was set, for people) against the link."""
    out = []
    if estimate_bps:
        out.append(f"QEMU's bandwidth estimate {human_bits(estimate_bps)} is"
                   f" {estimate_bps / link_bps:.0%} of the measured link"
                   f" {human_bits(link_bps)}")
    if declared_bps:
        out.append(f"{how} switchover bandwidth {human_bits(declared_bps)} is"
                   f" {declared_bps / link_bps:.0%} of the measured link")
        if overdeclared(declared_bps, link_bps):
            out.append("the declared bandwidth is above the measured link rate:"
                       " the real downtime can exceed the limit")
    else:
        out.append("no switchover bandwidth declared: QEMU decides on its estimate")
    return out


def cross_traffic_reasons(cross: CrossTrafficRecord) -> list[str]:
    """What the competing flows took, and what the migration's connection got."""
    if cross.error:
        return [f"{cross.flows} competing flow(s): what they delivered is unknown"
                f" ({cross.error})"]
    out = [f"{cross.flows} competing flow(s) carried"
           f" {human_bits(cross.flows_goodput_bps)} on a link that carried"
           f" {human_bits(cross.link_goodput_alone_bps)} alone"]
    if cross.migration_tcp_bps and cross.migration_share is not None:
        out.append(f"the migration connection's TCP delivery rate"
                   f" {human_bits(cross.migration_tcp_bps)} is"
                   f" {cross.migration_share:.0%} of the link alone"
                   f" (1/{cross.flows + 1} would be"
                   f" {1 / (cross.flows + 1):.0%})")
    else:
        out.append("the migration connection's TCP samples agreed on no rate")
    return out


@dataclass
class GuestVerdict:
    """The guests after the migration: the one that should run on, judged."""

    integrity: Integrity
    destination_alive: bool | None
    source_alive: bool | None
    blackout: Blackout | None
    report: GuestReport | None = None


def switchover_how(switchover: Switchover, source: str | None) -> str:
    """How the switchover bandwidth was set, for people."""
    if switchover.qemu_auto:
        return f"QEMU's own (x-tcp-switchover-bandwidth; its source: {source or 'not reported'})"
    return "automatic (kernel TCP samples)" if switchover.auto else "declared"


def run_reasons(s: Scenario, outcome: Outcome, link_bps: float | None,
                estimate_bps: float | None, switchover_bps: float, source: str | None,
                guests: GuestVerdict, final_ms: int, ramp_raises: int | None,
                connections: int | None) -> list[str]:
    """Why a run's verdict is what it is, in sentences for people: the
    bandwidths against the link, convergence, the downtime against the limit
    (@final_ms, the downtime ramp's last after @ramp_raises raises when it
    ran), the guest's pause, QEMU's error, the guest that runs on; and how
    many connections the automatic mode summed (@connections: it ran)."""
    how = switchover_how(s.switchover, source)
    reasons = bandwidth_reasons(link_bps, estimate_bps, switchover_bps, how) if link_bps \
        else ["between two hosts given by URI: no link of the lab's, none measured"]
    last = outcome.samples[-1] if outcome.samples else None
    if outcome.status == Status.NOT_CONVERGED and last:
        reasons.append(f"still iterating after {s.timeout_s:.0f}s: expected downtime"
                       f" {last.expected_downtime_ms} ms > limit {final_ms} ms"
                       + (" (the downtime ramp's last)" if ramp_raises is not None else ""))
    if outcome.status == Status.COMPLETED and outcome.downtime_ms is not None:
        if ramp_raises is not None:
            reasons += ramp_reasons(outcome.downtime_ms, final_ms, s.downtime_limit_ms,
                                    ramp_raises)
        else:
            reasons.append(downtime_reason(outcome.downtime_ms, s.downtime_limit_ms))
    if outcome.status == Status.COMPLETED and guests.blackout:
        reasons.append(pause_reason(guests.blackout.ms, guests.blackout.error_ms, final_ms))
    if outcome.error:
        reasons.append(f"QEMU: {outcome.error}")
    which = "destination" if outcome.status == Status.COMPLETED else "source"
    alive = guests.destination_alive if which == "destination" else guests.source_alive
    reasons += guest_reasons(guests.report, which, alive)
    if connections is not None:
        reasons.append(f"the automatic mode summed {connections} migration connection(s)")
    return reasons


def libvirt_reasons(s: Scenario, record: LibvirtRecord) -> list[str]:
    """What a run through libvirt adds: whose downtime is judged, the cap applied."""
    out = [f"through libvirt {record.libvirt_version}: the downtime judged is"
           " libvirt's (source paused to destination resumed)"
           + (f"; QEMU's own was {record.qemu_downtime_ms} ms"
              if record.qemu_downtime_ms is not None else "")]
    applied = record.max_bandwidth_bytes_per_s
    if applied is not None and applied != s.max_bandwidth_bytes_per_s:
        out.append(f"max-bandwidth applied {record.max_bandwidth_mib_per_s} MiB/s"
                   f" ({both_rates(applied)}), not the scenario's"
                   f" {both_rates(s.max_bandwidth_bytes_per_s or 0)}: libvirt takes"
                   " whole MiB/s")
    return out


def describe_page(page: CorruptPage) -> str:
    where = f" at guest-physical {page.paddr:#x}" if page.paddr > 0 else ""
    return f"{page.set_name}-set page {page.page}{where} ({page.detail})"


def guest_reasons(report: GuestReport | None, which: str, is_alive: bool | None) -> list[str]:
    """What the guest that should run on said about its memory."""
    if report is None:
        return []
    out = []
    for page in report.corrupt_pages[:8]:
        out.append(f"{which} guest: corrupt {describe_page(page)}")
    if len(report.corrupt_pages) > 8:
        out.append(f"{which} guest: {len(report.corrupt_pages) - 8} more corrupt pages")
    out += [f"{which} guest kernel: {line}" for line in report.kernel_errors[:3]]
    if is_alive is False:
        out.append(f"{which} guest: no heartbeat in the last {ALIVE_WITHIN_S:g} s")
    elif not report.memory_verified and not report.bad_pages:
        out.append(f"{which} guest: no complete verification pass after the switchover")
    return out
