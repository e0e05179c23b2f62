"""Runs one scenario end to end and returns its Result.

The steps, each small: the lab (lab.py: the link checked, the guests
booted); the migration steered (the automatic mode, the downtime ramp,
competing flows); the guests checked (alive, memory verified, the pause
seen from outside); the verdict and its reasons (verdict.py).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from . import autotune, migration, ownership, phases, tcpdiag, units, verdict
from .autotune import Autotuner, Sampler, read_samples
from .guest import (
    HEARTBEAT,
    Blackout,
    blackout,
    pages_per_node,
    read_console,
    ready_info,
    wait_for_checked_pass,
)
from .lab import MIGRATION_PORT, Lab, Progress, lab
from .link import DST_ADDR
from .migration import PARAM, Outcome
from .ramp import RampDriver
from .result import CrossTrafficRecord, LibvirtRecord, RampRecord, Result, Sample
from .scenario import Scenario
from .traffic import CrossTraffic, Delivered, FlowError
from .verdict import GuestVerdict, Status
from .vm import VM

log = logging.getLogger(__name__)

# After a switchover a guest that resumed prints a heartbeat within
# milliseconds; one that has not within this is dead or stopped.
FIRST_HEARTBEAT_TIMEOUT_S = 3.0
# Competing flows end by themselves this long after the migration's deadline
# (its cancel, the guests' check): they never outlive a run that lost track.
CROSS_TRAFFIC_SLACK_S = 60.0


def qemu_switchover(samples: list[Sample]) -> tuple[float, str | None]:
    """What QEMU said its last switchover decision assumed (bits/s) and where it
    came from, from the last sample that says it (0, None: none did)."""
    said = next((x for x in reversed(samples) if x.switchover_bandwidth_source), None)
    return (said.switchover_bandwidth_bps or 0.0, said.switchover_bandwidth_source) \
        if said else (0.0, None)


def _final_limit_ms(s: Scenario, ramped: RampDriver | None) -> int:
    """The downtime limit in force when the migration ended: the ramp's last, or the user's."""
    return ramped.limit_ms if ramped else s.downtime_limit_ms


def _check_guests(s: Scenario, outcome: Outcome, src: VM, dst: VM) -> GuestVerdict:
    """After a completion the destination must run on intact; otherwise the source.

    Waits for events, not for a fixed time: the guest's first heartbeat
    after the migration ended, then a whole verification pass that started
    after it (every page the workload owns), with a deadline that follows
    from the memory to sweep and the verify rate."""
    completed = outcome.status == Status.COMPLETED
    guest = dst if completed else src
    assert guest.console and src.console
    # Everything the destination printed came after it resumed.
    after = 0.0 if completed else outcome.ended_at
    workload = s.workload()
    ended = outcome.ended_at
    if guest.running and guest.console.wait_for(
            HEARTBEAT, FIRST_HEARTBEAT_TIMEOUT_S, since=guest.console.index_after(ended)):
        wait_for_checked_pass(guest.console, ended, workload.verify_deadline_s)
    checked = read_console(guest.console.lines(), after=after)
    is_alive = verdict.alive(checked.heartbeats, time.monotonic())
    seen = None
    if completed:
        seen = blackout(read_console(src.console.lines()).heartbeats, checked.heartbeats,
                        workload.heartbeat_ms)
    integrity = verdict.integrity(checked, is_alive)
    # The guest that should run on is judged; the other side is not applicable.
    if completed:
        return GuestVerdict(integrity, is_alive, None, seen, checked)
    return GuestVerdict(integrity, None, is_alive, seen, checked)


def judge(env: Lab, outcome: Outcome, progress: Progress | None = None,
          tuner: Autotuner | None = None, cross: CrossTrafficRecord | None = None,
          ramped: RampDriver | None = None,
          libvirt: LibvirtRecord | None = None) -> Result:
    """The Result of a migration that ran in @env: guests checked, reasons given.

    @tuner is the automatic mode's; @cross, cross_traffic_report()'s;
    @ramped, the downtime ramp that drove the limit; @libvirt, a libvirt
    run's record (libvirtlab.py)."""
    progress = progress or Progress.silent()
    s = env.scenario
    declared = tuner.declared_bytes_per_s if tuner else s.switchover.bytes_per_s
    switchover_bps, source = qemu_switchover(outcome.samples) \
        if s.switchover.qemu_auto else ((declared or 0) * 8, None)
    progress.stage(f"migration {outcome.status}; checking the guests")
    guests = _check_guests(s, outcome, env.src, env.dst)
    seen = guests.blackout
    final_ms = _final_limit_ms(s, ramped)
    cut = _pause_phases(env, seen) if seen else []
    estimate = next((x.mbps * 1e6 for x in reversed(outcome.samples)
                     if x.status == "active" and x.mbps > 0), None)
    advice = verdict.pause_advice(
        seen, outcome.downtime_ms, phases.ram_pass_ms(cut), s.downtime_limit_ms,
        env.check.measured_bps if env.check else None, switchover_bps or estimate) \
        if outcome.status == Status.COMPLETED else None
    ready = ready_info(env.src.console.lines()) if env.src.console else None
    return Result(
        status=outcome.status, integrity=guests.integrity, downtime_ms=outcome.downtime_ms,
        observed_blackout_ms=round(seen.ms, 1) if seen else None,
        pause_phases=phases.records(cut),
        blackout_error_ms=round(seen.error_ms, 1) if seen else None,
        paused_over_limit=verdict.paused_over_limit(seen.ms, seen.error_ms, final_ms)
        if seen else None,
        pause_unbounded_ms=advice.unbounded_ms if advice else None,
        advised_downtime_limit_ms=advice.advised_limit_ms if advice else None,
        downtime_limit_ms=s.downtime_limit_ms, total_time_ms=outcome.total_time_ms,
        link_rate_bps=round(env.check.measured_bps) if env.check else None,
        estimated_bandwidth_bps=estimate,
        switchover_bandwidth_bps=switchover_bps,
        avail_switchover_bandwidth_bytes_per_s=declared,
        switchover_bandwidth_source=source,
        autotune=[asdict(c) for c in tuner.changes] if tuner else [],
        autotune_connections=tuner.connections if tuner else None,
        destination_alive=guests.destination_alive, source_alive=guests.source_alive,
        error=outcome.error, qemu=env.qemu_label, accel=env.accel, scenario=s.to_dict(),
        pages_per_node=pages_per_node(env.src.console.lines()) if env.src.console else {},
        guest_threads=ready.threads if ready else None,
        guest_cpus=ready.cpus if ready else None,
        corrupt_pages=[verdict.describe_page(p) for p in guests.report.corrupt_pages]
        if guests.report else [],
        cross_traffic=cross,
        downtime_ramp=_ramp_record(ramped, outcome) if ramped else None,
        reasons=verdict.run_reasons(s, outcome, env.check.measured_bps if env.check else None,
                                    estimate, switchover_bps, source, guests, final_ms,
                                    len(ramped.changes) if ramped else None,
                                    tuner.connections if tuner else None)
        + ([verdict.advice_reason(advice)] if advice else [])
        + (verdict.cross_traffic_reasons(cross) if cross else [])
        + (verdict.libvirt_reasons(s, libvirt) if libvirt is not None else [])
        + ([phases.describe(cut)] if cut else []),
        via=s.via, libvirt=libvirt,
        samples=outcome.samples)


def _pause_phases(env: Lab, seen: Blackout) -> list[phases.Phase]:
    """The blackout cut at both QEMUs' downtime checkpoints ([] without them)."""
    offset = phases.clock_offset_s()
    points = {name: t for path in env.trace_logs
              for name, t in phases.read_checkpoints(path, offset).items()}
    return phases.cut(seen.last_before_s, seen.first_after_s, points)


def _ramp_record(ramped: RampDriver, outcome: Outcome) -> RampRecord:
    """The ramp as it ran: its settings, every change, the limit at the end."""
    return RampRecord(ramped.ramp.initial_ms, list(ramped.changes),
                      ramped.limit_ms if outcome.status == Status.COMPLETED else None,
                      ramped.ramp.to_dict())


def _steering(env: Lab, progress: Progress, tuner: Autotuner | None,
              ramped: RampDriver | None) -> Callable[[Sample], None]:
    """A sample hook that applies, while the migration is active, what the
    automatic mode and the downtime ramp decide."""
    def on_sample(sample: Sample) -> None:
        if tuner and (value := autotune.apply(tuner, env.src.command, sample)) is not None:
            progress.stage(f"autotune: {PARAM} = {units.both_rates(value)}"
                           f" ({tuner.changes[-1].reason})")
        if ramped and (limit := ramped.decide(sample)) is not None:
            env.src.command("migrate-set-parameters", **{"downtime-limit": limit})
            progress.stage(f"downtime ramp: downtime-limit = {limit} ms at {sample.t_s:.1f}s,"
                           f" iteration {sample.dirty_sync_count}")
        progress.sample(sample)
    return on_sample


def _sampling(env: Lab, tuner: Autotuner
              ) -> Callable[[float], contextlib.AbstractContextManager[None]]:
    """Starts, with the migration, a thread feeding the tuner from the migration socket."""
    @contextlib.contextmanager
    def sampler(started: float) -> Iterator[None]:
        with tcpdiag.DiagSocket(env.link.src_ns) as diag, \
                Sampler(tuner, lambda t: read_samples(diag, t, MIGRATION_PORT), started):
            yield
    return sampler


def _cross_traffic(env: Lab) -> contextlib.AbstractContextManager[CrossTraffic | None]:
    """The scenario's competing flows, running once entered (none: a null context)."""
    s = env.scenario
    if not s.cross_traffic_flows:
        return contextlib.nullcontext()
    # Bounded by themselves: a migration's deadline, its cancel and slack.
    seconds = s.timeout_s + CROSS_TRAFFIC_SLACK_S
    return CrossTraffic(env.link.src_ns, env.link.dst_ns, DST_ADDR, s.cross_traffic_flows,
                        seconds, record=env.record)


def cross_traffic_report(env: Lab, delivered: list[Delivered],
                         observed: Autotuner) -> CrossTrafficRecord:
    """The flows' goodput and the migration connection's share of the link.

    The share is the fastest TCP delivery rate the migration's own samples
    agreed on (autotune's filter, over its last window) against the link's
    goodput measured alone before the run."""
    alone_bps = env.check.measured_bps
    migration_bps = observed.measured_bps()
    return CrossTrafficRecord(
        flows=len(delivered), link_goodput_alone_bps=round(alone_bps),
        flows_goodput_bps=round(sum(d.goodput_bps for d in delivered)),
        flow_goodput_bps=[round(d.goodput_bps) for d in delivered],
        migration_tcp_bps=round(migration_bps) if migration_bps else None,
        migration_share=round(migration_bps / alone_bps, 3) if migration_bps else None)


def _stopped_flows_report(env: Lab, flows: CrossTraffic,
                          observed: Autotuner) -> CrossTrafficRecord:
    """cross_traffic_report() of the stopped flows; if a flow cannot say what it
    delivered, the record says why instead, and the migration's result stands."""
    try:
        delivered = flows.stop()
    except FlowError as err:
        return CrossTrafficRecord(env.scenario.cross_traffic_flows, error=str(err))
    return cross_traffic_report(env, delivered, observed)


def run(s: Scenario, logs: Path, record: ownership.Record, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None) -> Result:
    """One scenario, start to verdict; what it makes is recorded in @record."""
    progress = progress or Progress.silent()
    if s.via == "libvirt":
        return _run_via_libvirt(s, logs, record, progress, on_link_measured)
    with lab(s, logs, record, progress, on_link_measured) as env, _cross_traffic(env) as flows:
        tuner = Autotuner() if s.switchover.auto else None
        ramped = RampDriver(s.downtime_ramp) if s.downtime_ramp else None
        # With competing flows the migration's samples are watched in any
        # mode: they say what share of the link it got. In QEMU's own
        # automatic mode they are the input it decided from.
        watched = tuner or (Autotuner() if flows or s.switchover.qemu_auto else None)
        if flows:
            progress.stage(f"{s.cross_traffic_flows} competing flow(s) on the link")
        settings = s.migration()
        cap = settings.max_bandwidth_bytes_per_s
        progress.stage(f"migrating: max-bandwidth {units.both_rates(cap) if cap else 'none'},"
                       f" downtime-limit {settings.downtime_limit_ms} ms")
        outcome = migration.run(
            env.src, env.dst, settings, env.uri, s.timeout_s,
            _steering(env, progress, tuner, ramped),
            during=_sampling(env, watched) if watched else None)
        cross = _stopped_flows_report(env, flows, watched) if flows and watched else None
        if watched:
            watched.write_csv(logs / "tcpinfo.csv")
        if tuner and env.src.running and outcome.status != Status.FAILED:
            autotune.restore(env.src.command, 0)  # as it was before the run
        return judge(env, outcome, progress, tuner, cross, ramped)


def _run_via_libvirt(s: Scenario, logs: Path, record: ownership.Record, progress: Progress,
                     on_link_measured: Callable[[float], None] | None) -> Result:
    """run() with each host's libvirtd driving QEMU (libvirtlab.py)."""
    from . import libvirtlab  # libvirt's Python binding is needed only here

    made = libvirtlab.remote_lab(s, logs, record, progress) if s.remote else \
        libvirtlab.lab(s, logs, record, progress, on_link_measured)
    with made as env:
        tuner = Autotuner() if s.switchover.auto else None
        # the harness reads the connection's samples only on the lab's own link
        watched = tuner or (Autotuner() if s.switchover.qemu_auto and env.link else None)
        settings = s.migration()
        cap = settings.max_bandwidth_bytes_per_s
        progress.stage(f"migrating through libvirt: bandwidth"
                       f" {f'{libvirtlab.applied_cap_mib_per_s(cap)} MiB/s' if cap else 'none'},"
                       f" max downtime {settings.downtime_limit_ms} ms")
        outcome = libvirtlab.migrate(
            env, settings, s.timeout_s, _steering(env, progress, tuner, None),
            during=_sampling(env, watched) if watched else None)
        if watched:
            watched.write_csv(logs / "tcpinfo.csv")
        if tuner and env.src.running and outcome.status != Status.FAILED:
            autotune.restore(env.src.command, 0)  # as it was before the run
        return judge(env, outcome, progress, tuner, None, None, env.libvirt)
