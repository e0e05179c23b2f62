"""Runs one scenario end to end and returns its Result.

The steps, each small: make the link and check it; boot the guests in
their namespaces (choosing the accelerator); migrate; check the guests
(alive, memory verified, blackout seen from outside); explain the verdict.
Every resource is held in a `with` block, so a failure, a timeout or
Ctrl-C tears everything down.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import artifacts, migration, phases, preflight, units, verdict
from .autotune import Autotuner, Sampler, read_ss
from .console import Console
from .guest import (
    HEARTBEAT,
    READY,
    Blackout,
    GuestReport,
    blackout,
    pages_per_node,
    read_console,
    ready_info,
    wait_for_checked_pass,
)
from .link import CHECK_HIGH, CHECK_LOW, DST_ADDR, Link, LinkCheck
from .migration import PARAM, Outcome
from .ramp import RampDriver
from .result import Result, Sample
from .scenario import Scenario
from .traffic import CrossTraffic, Delivered, FlowError
from .verdict import Integrity, Status
from .vm import VM, VMConfig, VMError, VMLaunchError

log = logging.getLogger(__name__)

MIGRATION_PORT = 4444
READY_TIMEOUT_S = 120.0
KVM_READY_TIMEOUT_S = 45.0  # a kernel that hangs under KVM (PVM hosts) is given up
# After a switchover a guest that resumed prints a heartbeat within
# milliseconds; one that has not within this is dead or stopped.
FIRST_HEARTBEAT_TIMEOUT_S = 3.0
COMMON_MACHINE = "pc-q35-7.2"
# Competing flows end by themselves this long after the migration's deadline
# (its cancel, the guests' check): they never outlive a run that lost track.
CROSS_TRAFFIC_SLACK_S = 60.0


class RunError(RuntimeError):
    """The run could not be made (link or guest); nothing was migrated."""


@dataclass
class Progress:
    """What the runner reports while it works."""

    stage: Callable[[str], None]
    sample: Callable[[Sample], None]

    @classmethod
    def silent(cls) -> Progress:
        return cls(lambda _: None, lambda _: None)


def machine_type(s: Scenario) -> str:
    """q35, or, when the two sides run different QEMUs, the q35 version both
    know: the oldest build miglab has is 7.2, and a migration stream is only
    compatible within one machine type version."""
    return COMMON_MACHINE if s.dst_qemu and s.dst_qemu != s.qemu else "q35"


def trace_log(logs: Path, name: str) -> Path:
    """Where the QEMU named @name writes its downtime checkpoints (phases.py)."""
    return logs / f"{name}-trace.log"


def _guest_config(s: Scenario, binary: Path, accel: str, netns: str, incoming: bool,
                  extra_args: list[str] | None, logs: Path, name: str) -> VMConfig:
    # QEMUs that trace the downtime's checkpoints write them for phases.py
    traced = phases.trace_args(trace_log(logs, name)) \
        if preflight.has_parameter(binary, preflight.CHECKPOINTS) else []
    return VMConfig.for_binary(binary, memory_mib=s.memory_mib, machine=machine_type(s),
                               numa_nodes_mib=s.numa_nodes_mib, vcpus=s.vcpus, accel=accel,
                               kernel=artifacts.kernel(), initramfs=artifacts.initramfs(),
                               workload=s.workload(), incoming=incoming, netns=netns,
                               extra_args=traced + list(extra_args or []))


KVM_HINT = "KVM is unusable on this host: use --accel tcg (or auto, which falls back to TCG)"


def accel_trials(choice: str, kvm_present: bool) -> list[tuple[str, float]]:
    """The accelerators to try, in order, each with how long its guest may take
    to reach its workload. With "auto", KVM only if QEMU starts under it and
    the guest gets there in bounded time (on PVM hosts QEMU aborts or the
    kernel hangs); otherwise TCG."""
    candidates = [choice] if choice != "auto" else (["kvm", "tcg"] if kvm_present else ["tcg"])
    return [(accel, READY_TIMEOUT_S if accel == candidates[-1] else KVM_READY_TIMEOUT_S)
            for accel in candidates]


def fallback_stage(accel: str, why: str, then: str) -> str:
    """The one line that says an accelerator was given up, and for which."""
    return f"{accel.upper()} unusable on this host ({why}); using {then.upper()}"


def reached_workload(console: Console, what: str, accel: str,
                     trials: list[tuple[str, float]], progress: Progress) -> bool:
    """Whether the guest on @console reached its workload within its trial's
    time; if not, RunError when @accel was the last to try, else the line
    that gives it up."""
    limit = dict(trials)[accel]
    if console.wait_for(READY, limit) is not None:
        return True
    if accel == trials[-1][0]:
        hint = f"; {KVM_HINT}" if accel == "kvm" else ""
        raise RunError(f"{what} ({accel}) did not reach its workload in {limit:.0f}s;"
                       f" console: {console.log_path}{hint}")
    progress.stage(fallback_stage(
        accel, f"the guest did not reach its workload in {limit:.0f} s", trials[-1][0]))
    return False


@contextlib.contextmanager
def _booted_source(s: Scenario, binary: Path, link: Link, logs: Path,
                   progress: Progress, extra_args: list[str]) -> Iterator[tuple[VM, str]]:
    """The source guest, booted to its workload (accel_trials()); yields it
    and the accelerator used, and the stage line says why one was given up."""
    trials = accel_trials(s.accel, os.path.exists("/dev/kvm"))
    for accel, _ in trials:
        last = accel == trials[-1][0]
        vm = VM(_guest_config(s, binary, accel, link.src_ns, False, extra_args, logs, "src"),
                "src", logs)
        progress.stage(f"booting the source guest ({accel})")
        try:
            vm.launch()
        except VMError as err:
            if last and accel == "kvm":
                raise RunError(f"{err}; {KVM_HINT}") from err
            if last:
                raise
            # one line for the user; QEMU's own words (an assertion, often)
            # are in its log and, with -v, on stderr
            log.info("%s failed to start: %s", accel, err)
            why = str(err)
            if isinstance(err, VMLaunchError):
                why = err.reason + (f", exit code {err.exitcode}" if err.exitcode else "")
            progress.stage(fallback_stage(accel, why, trials[-1][0]))
            continue
        try:
            assert vm.console
            if reached_workload(vm.console, "source guest", accel, trials, progress):
                yield vm, accel
                return
        finally:
            vm.shutdown()


@contextlib.contextmanager
def checked_link(s: Scenario, progress: Progress,
                 on_link_measured: Callable[[float], None] | None = None
                 ) -> Iterator[tuple[Link, LinkCheck]]:
    """The scenario's link, made and measured; refused (RunError) when its
    goodput is outside what LinkCheck accepts of the configured rate."""
    with Link(s.link()) as link:
        progress.stage(f"link {link.src_ns} <-> {link.dst_ns}")
        progress.stage("measuring the link")
        check = link.measure()
        progress.stage(check.describe())
        if on_link_measured:
            on_link_measured(check.measured_bps)
        if not check.ok:
            raise RunError(f"{check.describe()}: outside {CHECK_LOW:.0%}-{CHECK_HIGH:.0%} of the"
                           " configured rate, so results on it would not mean what they say")
        yield link, check


def _switchover_how(s: Scenario, source: str | None) -> str:
    """How the switchover bandwidth was set, for the verdict's reasons."""
    if s.switchover_qemu_auto:
        return f"QEMU's own (x-tcp-switchover-bandwidth; its source: {source or 'not reported'})"
    return "automatic (kernel TCP samples)" if s.switchover_auto else "declared"


def qemu_switchover(samples: list[Sample]) -> tuple[float, str | None]:
    """What QEMU said its last switchover decision assumed (bits/s) and where it
    came from, from the last sample that says it (0, None: none did)."""
    said = next((x for x in reversed(samples) if x.switchover_bandwidth_source), None)
    return (said.switchover_bandwidth_bps or 0.0, said.switchover_bandwidth_source) \
        if said else (0.0, None)


def _final_limit_ms(s: Scenario, ramped: RampDriver | None) -> int:
    """The downtime limit in force when the migration ended: the ramp's last, or the user's."""
    return ramped.limit_ms if ramped else s.downtime_limit_ms


def _verdict_reasons(s: Scenario, outcome: Outcome, check: LinkCheck | None,
                     estimate_bps: float | None, switchover_bps: float, how: str,
                     guests: GuestVerdict, ramped: RampDriver | None) -> list[str]:
    reasons = verdict.bandwidth_reasons(check.measured_bps, estimate_bps, switchover_bps, how) \
        if check else ["between two hosts given by URI: no link of the lab's, none measured"]
    last = outcome.samples[-1] if outcome.samples else None
    final_ms = _final_limit_ms(s, ramped)
    if outcome.status == Status.NOT_CONVERGED and last:
        reasons.append(f"still iterating after {s.timeout_s:.0f}s: expected downtime"
                       f" {last.expected_downtime_ms} ms > limit {final_ms} ms"
                       + (" (the downtime ramp's last)" if ramped else ""))
    if outcome.status == Status.COMPLETED and outcome.downtime_ms is not None:
        if ramped:
            reasons += verdict.ramp_reasons(outcome.downtime_ms, final_ms,
                                            s.downtime_limit_ms, len(ramped.changes))
        else:
            reasons.append(verdict.downtime_reason(outcome.downtime_ms, s.downtime_limit_ms))
    if outcome.status == Status.COMPLETED and guests.blackout:
        reasons.append(verdict.pause_reason(guests.blackout.ms, guests.blackout.error_ms,
                                            final_ms))
    if outcome.error:
        reasons.append(f"QEMU: {outcome.error}")
    which = "destination" if outcome.status == Status.COMPLETED else "source"
    alive = guests.destination_alive if which == "destination" else guests.source_alive
    return reasons + verdict.guest_reasons(guests.report, which, alive)


@dataclass
class GuestVerdict:
    integrity: Integrity
    destination_alive: bool | None
    source_alive: bool | None
    blackout: Blackout | None
    report: GuestReport | None = None


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


@dataclass
class Lab:
    """A checked link with the source guest at work and a destination waiting."""

    scenario: Scenario
    link: Link
    check: LinkCheck
    src: VM
    dst: VM
    accel: str
    binary: Path  # the source's
    dst_binary: Path
    logs: Path
    uri: str = f"tcp:{DST_ADDR}:{MIGRATION_PORT}"

    def new_destination(self) -> VM:
        """A fresh destination (after one died or failed), launched; the caller owns it."""
        self.dst.shutdown()
        self.dst = VM(_guest_config(self.scenario, self.dst_binary, self.accel,
                                    self.link.dst_ns, True, None, self.logs, "dst-retry"),
                      "dst-retry", self.logs)
        self.dst.launch()
        return self.dst


@contextlib.contextmanager
def lab(s: Scenario, logs: Path, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None,
        src_extra_args: list[str] | None = None,
        dst_extra_args: list[str] | None = None) -> Iterator[Lab]:
    """Everything a migration needs, torn down on the way out whatever happens.

    @src_extra_args and @dst_extra_args go to one side's QEMU only (say, a
    QMP server for a tool, or a gdbstub)."""
    progress = progress or Progress.silent()
    binary = artifacts.qemu_binary(s.qemu)
    dst_binary = artifacts.qemu_binary(s.dst_qemu or s.qemu)
    logs.mkdir(parents=True, exist_ok=True)
    with checked_link(s, progress, on_link_measured) as (link, check):
        with _booted_source(s, binary, link, logs, progress,
                            list(src_extra_args or [])) as (src, accel):
            dst = VM(_guest_config(s, dst_binary, accel, link.dst_ns, True,
                                   dst_extra_args, logs, "dst"), "dst", logs)
            env = Lab(s, link, check, src, dst, accel, binary, dst_binary, logs)
            try:
                env.dst.launch()
                yield env
            finally:
                env.dst.shutdown()


def _qemu_label(env: Lab) -> str:
    """Each side's QEMU: its version and binary."""
    def one(choice: str) -> str:
        qemu = preflight.check_qemu(choice, "--qemu")
        return f"QEMU {qemu.version} ({qemu.path})"
    s = env.scenario
    if not s.dst_qemu or s.dst_qemu == s.qemu:
        return one(s.qemu)
    return f"{one(s.qemu)} -> {one(s.dst_qemu)}, machine {machine_type(s)}"


def libvirt_reasons(s: Scenario, record: dict[str, Any]) -> list[str]:
    """What a run through libvirt adds: whose downtime is judged, the cap applied."""
    out = [f"through libvirt {record.get('libvirt_version', '?')}: the downtime judged is"
           " libvirt's (source paused to destination resumed)"
           + (f"; QEMU's own was {record['qemu_downtime_ms']} ms"
              if record.get("qemu_downtime_ms") is not None else "")]
    applied = record.get("max_bandwidth_bytes_per_s")
    if applied is not None and applied != s.max_bandwidth_bytes_per_s:
        out.append(f"max-bandwidth applied {record['max_bandwidth_mib_per_s']} MiB/s"
                   f" ({units.both_rates(applied)}), not the scenario's"
                   f" {units.both_rates(s.max_bandwidth_bytes_per_s or 0)}: libvirt takes"
                   " whole MiB/s")
    return out


def judge(env: Lab, outcome: Outcome, progress: Progress | None = None,
          tuner: Autotuner | None = None, cross: dict[str, Any] | None = None,
          ramped: RampDriver | None = None,
          libvirt: dict[str, Any] | None = None) -> Result:
    """The Result of a migration that ran in @env: guests checked, reasons given.

    @tuner is the automatic mode's; @cross, cross_traffic_report()'s;
    @ramped, the downtime ramp that drove the limit; @libvirt, a libvirt
    run's record (libvirtlab.py)."""
    progress = progress or Progress.silent()
    s = env.scenario
    declared = tuner.declared_bytes_per_s if tuner else s.switchover_bandwidth_bytes_per_s
    switchover_bps, source = qemu_switchover(outcome.samples) \
        if s.switchover_qemu_auto else ((declared or 0) * 8, None)
    progress.stage(f"migration {outcome.status}; checking the guests")
    guests = _check_guests(s, outcome, env.src, env.dst)
    seen = guests.blackout
    final_ms = _final_limit_ms(s, ramped)
    cut = _pause_phases(env, seen) if seen else []
    estimate = next((x.mbps * 1e6 for x in reversed(outcome.samples)
                     if x.status == "active" and x.mbps > 0), None)
    advice = verdict.pause_advice(
        seen.ms if seen else None, outcome.downtime_ms, phases.ram_pass_ms(cut),
        s.downtime_limit_ms,
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
        error=outcome.error, qemu=_qemu_label(env), accel=env.accel, scenario=s.to_dict(),
        pages_per_node=pages_per_node(env.src.console.lines()) if env.src.console else {},
        guest_threads=ready.threads if ready else None,
        guest_cpus=ready.cpus if ready else None,
        corrupt_pages=[verdict.describe_page(p) for p in guests.report.corrupt_pages]
        if guests.report else [],
        cross_traffic=cross or {},
        downtime_ramp=_ramp_record(ramped, outcome) if ramped else {},
        reasons=_verdict_reasons(s, outcome, env.check, estimate, switchover_bps,
                                 _switchover_how(s, source), guests, ramped)
        + ([verdict.advice_reason(advice)] if advice else [])
        + ([f"the automatic mode summed {tuner.connections} migration connection(s)"]
           if tuner else [])
        + (verdict.cross_traffic_reasons(cross) if cross else [])
        + (libvirt_reasons(s, libvirt) if libvirt is not None else [])
        + ([phases.describe(cut)] if cut else []),
        via=s.via, libvirt=libvirt or {},
        samples=outcome.samples)


def _pause_phases(env: Lab, seen: Blackout) -> list[phases.Phase]:
    """The blackout cut at both QEMUs' downtime checkpoints ([] without them)."""
    offset = phases.clock_offset_s()
    points = {**phases.read_checkpoints(trace_log(env.logs, env.src.name), offset),
              **phases.read_checkpoints(trace_log(env.logs, env.dst.name), offset)}
    return phases.cut(seen.last_before_s, seen.first_after_s, points)


def _ramp_record(ramped: RampDriver, outcome: Outcome) -> dict[str, Any]:
    """The ramp as it ran: its settings, every change, the limit at the end."""
    return {"settings": ramped.ramp.to_dict(), "changes": [asdict(c) for c in ramped.changes],
            "limit_at_switchover_ms": ramped.limit_ms
            if outcome.status == Status.COMPLETED else None}


def _steering(env: Lab, progress: Progress, tuner: Autotuner | None,
              ramped: RampDriver | None) -> Callable[[Sample], None]:
    """A sample hook that applies, while the migration is active, what the
    automatic mode and the downtime ramp decide."""
    def on_sample(sample: Sample) -> None:
        if tuner and sample.status == "active" and \
                (value := tuner.decide(sample.t_s)) is not None:
            env.src.command("migrate-set-parameters", **{PARAM: value})
            progress.stage(f"autotune: {PARAM} = {units.both_rates(value)}"
                           f" ({tuner.changes[-1].reason})")
        if ramped and (limit := ramped.decide(sample)) is not None:
            env.src.command("migrate-set-parameters", **{"downtime-limit": limit})
            progress.stage(f"downtime ramp: downtime-limit = {limit} ms at {sample.t_s:.1f}s,"
                           f" iteration {sample.dirty_sync_count}")
        progress.sample(sample)
    return on_sample


def _sampling(env: Lab, tuner: Autotuner) -> Callable[[float], Sampler]:
    """Starts, with the migration, a thread feeding the tuner from the migration socket."""
    def sampler(started: float) -> Sampler:
        return Sampler(tuner, lambda t: read_ss(env.link.src_ns, MIGRATION_PORT, t), started)
    return sampler


def _cross_traffic(env: Lab) -> contextlib.AbstractContextManager[CrossTraffic | None]:
    """The scenario's competing flows, running once entered (none: a null context)."""
    s = env.scenario
    if not s.cross_traffic_flows:
        return contextlib.nullcontext()
    # Bounded by themselves: a migration's deadline, its cancel and slack.
    seconds = s.timeout_s + CROSS_TRAFFIC_SLACK_S
    return CrossTraffic(env.link.src_ns, env.link.dst_ns, DST_ADDR, s.cross_traffic_flows,
                        seconds)


def cross_traffic_report(env: Lab, delivered: list[Delivered],
                         observed: Autotuner) -> dict[str, Any]:
    """The flows' goodput and the migration connection's share of the link.

    The share is the fastest TCP delivery rate the migration's own samples
    agreed on (autotune's filter, over its last window) against the link's
    goodput measured alone before the run."""
    alone_bps = env.check.measured_bps
    migration_bps = observed.measured_bps()
    return {
        "flows": len(delivered),
        "link_goodput_alone_bps": round(alone_bps),
        "flows_goodput_bps": round(sum(d.goodput_bps for d in delivered)),
        "flow_goodput_bps": [round(d.goodput_bps) for d in delivered],
        "migration_tcp_bps": round(migration_bps) if migration_bps else None,
        "migration_share": round(migration_bps / alone_bps, 3) if migration_bps else None,
    }


def _stopped_flows_report(env: Lab, flows: CrossTraffic, observed: Autotuner) -> dict[str, Any]:
    """cross_traffic_report() of the stopped flows; if a flow cannot say what it
    delivered, the record says why instead, and the migration's result stands."""
    try:
        delivered = flows.stop()
    except FlowError as err:
        return {"flows": env.scenario.cross_traffic_flows, "error": str(err)}
    return cross_traffic_report(env, delivered, observed)


def run(s: Scenario, logs: Path, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None) -> Result:
    """One scenario, start to verdict."""
    progress = progress or Progress.silent()
    if s.via == "libvirt":
        return _run_via_libvirt(s, logs, progress, on_link_measured)
    with lab(s, logs, progress, on_link_measured) as env, _cross_traffic(env) as flows:
        tuner = Autotuner() if s.switchover_auto else None
        ramped = RampDriver(s.downtime_ramp) if s.downtime_ramp else None
        # With competing flows the migration's samples are watched in any
        # mode: they say what share of the link it got. In QEMU's own
        # automatic mode they are the input it decided from.
        watched = tuner or (Autotuner() if flows or s.switchover_qemu_auto else None)
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
        cross = _stopped_flows_report(env, flows, watched) if flows and watched else {}
        if watched:
            watched.write_csv(logs / "tcpinfo.csv")
        if tuner and env.src.running and outcome.status != Status.FAILED:
            # leave the parameter as it was before the run
            env.src.command("migrate-set-parameters", **{PARAM: 0})
        return judge(env, outcome, progress, tuner, cross, ramped)


def _run_via_libvirt(s: Scenario, logs: Path, progress: Progress,
                     on_link_measured: Callable[[float], None] | None) -> Result:
    """run() with each host's libvirtd driving QEMU (libvirtlab.py)."""
    from . import libvirtlab  # libvirt's Python binding is needed only here

    made = libvirtlab.remote_lab(s, logs, progress) if s.remote else \
        libvirtlab.lab(s, logs, progress, on_link_measured)
    with made as env:
        tuner = Autotuner() if s.switchover_auto else None
        # the harness reads the connection's samples only on the lab's own link
        watched = tuner or (Autotuner() if s.switchover_qemu_auto and env.link else None)
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
            env.src.command("migrate-set-parameters", **{PARAM: 0})  # as it was
        return judge(env, outcome, progress, tuner, None, None, env.record)
