"""Results for people: the live progress line, a summary, a comparison table."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from . import units
from .result import Result, Sample
from .units import human_bits
from .verdict import limit_in_force_ms

if TYPE_CHECKING:
    from .scenario import Scenario

MIB = 1024 * 1024


def progress_line(s: Sample, link_bps: float | None) -> str:
    # In the first pass QEMU's expected-downtime is the limit echoed back,
    # not an estimate: it has measured no dirty rate yet.
    expected = f"{s.expected_downtime_ms:6d} ms" if s.dirty_sync_count > 1 else f"{'-':>9}"
    return (f"{s.t_s:6.1f}s {s.status:<9} pending {s.remaining_bytes / MIB:7.1f} MiB"
            f"  iteration {s.dirty_sync_count:3d}"
            f"  expected downtime {expected}"
            f"  estimate {human_bits(s.mbps * 1e6):>12} vs link {human_bits(link_bps)}")


class LiveProgress:
    """One line, rewritten in place on a terminal; a line per second otherwise."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.tty = out.isatty()
        self.link_bps: float | None = None
        self._last_t = -1.0
        self._dirty = False  # a progress line is open on the terminal

    def stage(self, text: str) -> None:
        self._end_line()
        print(f"miglab: {text}", file=self.out, flush=True)

    def sample(self, s: Sample) -> None:
        line = progress_line(s, self.link_bps)
        if self.tty:
            print(f"\r{line}\x1b[K", end="", file=self.out, flush=True)
        elif s.t_s - self._last_t >= 1.0 or s.status != "active":
            print(line, file=self.out, flush=True)
            self._last_t = s.t_s
        self._dirty = self.tty

    def _end_line(self) -> None:
        if self._dirty:
            print(file=self.out)
            self._dirty = False


def _ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _last_expected_downtime(r: Result) -> int | None:
    active = [s.expected_downtime_ms for s in r.samples if s.status == "active"]
    return active[-1] if active else None


def _declared(r: Result) -> str:
    """The switchover bandwidth; qemu-auto's with QEMU's word for where it came from."""
    if not r.switchover_bandwidth_bps:
        return "none"
    said = f" (QEMU: {r.switchover_bandwidth_source})" if r.switchover_bandwidth_source else ""
    return human_bits(r.switchover_bandwidth_bps) + said


def _blackout(r: Result) -> str:
    """The blackout with its error bound: "333 ms (-40)", the pause at least 293 ms."""
    if r.observed_blackout_ms is None:
        return "-"
    if r.blackout_error_ms is None:
        return _ms(r.observed_blackout_ms)
    return f"{r.observed_blackout_ms:.0f} ms (-{r.blackout_error_ms:.0f})"


def _status(r: Result) -> str:
    """The status, and the guest's pause when it was certainly over the limit."""
    if r.paused_over_limit:
        return (f"{r.status}, guest paused {r.observed_blackout_ms:.0f} ms >"
                f" {limit_in_force_ms(r)} ms")
    return str(r.status)


def summary(r: Result) -> str:
    accel = r.accel
    if r.scenario.get("vcpus", 1) > 1:  # one vCPU, as it always was: said nowhere
        accel += (f", {r.scenario['vcpus']} vCPUs, the guest saw {r.guest_cpus} and rewrote"
                  f" from {r.guest_threads} threads")
    lines = [f"verdict: {_status(r)}   integrity: {r.integrity}   ({r.qemu}, {accel})"]
    if r.status == "completed":
        limit = f"limit {r.downtime_limit_ms} ms"
        if r.downtime_ramp and r.downtime_ramp.limit_at_switchover_ms:
            limit += f" (the downtime ramp's at switchover: {limit_in_force_ms(r)} ms)"
        whose = ("libvirt's: source paused to destination resumed" if r.via == "libvirt"
                 else "QEMU's")
        lines.append(f"downtime {_ms(r.downtime_ms)} ({whose}, judged against the {limit});"
                     f" the guest's pause seen from outside {_blackout(r)} (judged beside it:"
                     f" {'above' if r.paused_over_limit else 'not certainly above'} the"
                     f" limit); total {_ms(r.total_time_ms)}")
        lines.append(f"destination guest alive: {r.destination_alive}")
    else:
        lines.append(f"source guest alive after the attempt: {r.source_alive}")
    for name, counts in r.pages_per_node.items():
        lines.append(f"{name} set over {len(counts)} NUMA nodes: "
                     + ", ".join(f"node {i} {n} pages" for i, n in enumerate(counts)))
    lines.append(f"bandwidth: QEMU's estimate {human_bits(r.estimated_bandwidth_bps)},"
                 f" link {human_bits(r.link_rate_bps)},"
                 f" declared {_declared(r)}")
    lines += [f"  - {reason}" for reason in r.reasons]
    return "\n".join(lines)


def _share(part: float | None, whole: float | None) -> str:
    return f"{part / whole:.0%}" if part and whole else "-"


def table(rows: list[tuple[str, Result]]) -> str:
    """A markdown table, one row per named result; with competing flows, also
    their number, the share of the link each run declared and the migration
    connection's measured share."""
    shared = any(r.cross_traffic for _, r in rows)
    ramped = any(r.scenario.get("downtime_ramp") for _, r in rows)
    head = ("| run | status | total time | downtime / limit | blackout seen (error) |"
            " expected downtime (last) | QEMU estimate | link | declared | integrity |")
    if shared:
        head += " flows | declared share | migration's TCP share |"
    if ramped:
        head += " limit at switchover | data sent |"
    columns = 10 + (3 if shared else 0) + (2 if ramped else 0)
    out = [head, "| " + " | ".join(["---"] * columns) + " |"]
    for name, r in rows:
        line = (f"| {name} | {_status(r)} | {_ms(r.total_time_ms)} |"
                f" {_ms(r.downtime_ms)} / {r.downtime_limit_ms} ms |"
                f" {_blackout(r)} | {_ms(_last_expected_downtime(r))} |"
                f" {human_bits(r.estimated_bandwidth_bps)} | {human_bits(r.link_rate_bps)} |"
                f" {_declared(r)} | {r.integrity} |")
        if shared:
            cross = r.cross_traffic
            line += (f" {cross.flows if cross else 0} |"
                     f" {_share(r.switchover_bandwidth_bps, r.link_rate_bps)} |"
                     f" {_share(cross.migration_tcp_bps if cross else None, r.link_rate_bps)} |")
        if ramped:
            at = limit_in_force_ms(r) if r.status == "completed" else None
            sent = r.samples[-1].transferred_bytes if r.samples else None
            line += (f" {_ms(at)} | {'-' if sent is None else f'{sent / MIB:.0f} MiB'} |")
        out.append(line)
    return "\n".join(out)


def slug(name: str) -> str:
    """A variant's name as the stem of its files ("patched:auto+ramp" -> "patched-auto+ramp")."""
    return name.replace(":", "-").replace("/", "_")


def comparison_summary(rows: list[tuple[str, Result]], first: Scenario) -> str:
    """summary.md of a comparison, readable without anything else: what was
    run, the table, the plots (linked, beside it) and each run's reasons."""
    s = first
    cap = s.max_bandwidth_bytes_per_s
    out = [f"# miglab compare: {len(rows)} variant(s)",
           "",
           f"Link {human_bits(s.link_rate_bps)}; guest {s.memory_mib} MiB, {s.vcpus} vCPU(s),"
           f" rewriting {s.hot_set_mib} MiB at {s.dirty_rate_mib} MiB/s; max-bandwidth"
           f" {units.both_rates(cap) if cap else 'none'}; downtime-limit"
           f" {s.downtime_limit_ms} ms; timeout {s.timeout_s:.0f} s"
           + (f"; {s.cross_traffic_flows} competing flow(s)" if s.cross_traffic_flows else "")
           + "." + (" Through libvirt (each side a host with its own libvirtd, the migration"
                    " through virDomainMigrateToURI3, peer to peer): the downtime is"
                    " libvirt's own, from the source's pause to the destination's resume."
                    if s.via == "libvirt" else ""), "", table(rows), "",
           "Blackout seen (error): the gap between the source guest's last heartbeat and"
           " the destination guest's first, on the host's clock; the guest's pause lay"
           " between it less the error and it (the error is the heartbeats' longest spacing"
           " on each side, added). A status says \"guest paused N ms > L ms\" when even the"
           " least pause is above the limit.", "",
           "Pending data and expected downtime of every run: [comparison.png](comparison.png)",
           ""]
    for name, r in rows:
        out += [f"## {name}: {r.status}, integrity {r.integrity}", "",
                f"[{slug(name)}.png]({slug(name)}.png),"
                f" [{slug(name)}.json]({slug(name)}.json)", ""]
        out += [f"- {reason}" for reason in r.reasons] + [""]
    return "\n".join(out)
