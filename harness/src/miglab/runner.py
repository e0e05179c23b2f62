"""Runs one scenario end to end and returns its Result.

The steps, each small: make the link and check it; boot the guests in
their namespaces (choosing the accelerator); migrate; check the guests
(alive, memory verified, blackout seen from outside); explain the verdict.
Every resource is held in a `with` block, so a failure, a timeout or
Ctrl-C tears everything down.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import artifacts, migration
from .autotune import PARAM, Autotuner, Sampler, read_ss
from .guest import READY, blackout_ms, read_console
from .link import DST_ADDR, Link, LinkCheck
from .migration import Outcome
from .result import Result, Sample
from .scenario import Scenario
from .units import human_bits
from .vm import VM, VMConfig, VMError

MIGRATION_PORT = 4444
READY_TIMEOUT_S = 120.0
KVM_READY_TIMEOUT_S = 45.0  # a kernel that hangs under KVM (PVM hosts) is given up
SETTLE_S = 2.0  # after the migration: room for the kernel to trip and two verify passes
DOWNTIME_ALLOWANCE = 1.10  # the final device state rides on top of RAM


def within_limit(downtime_ms: int, limit_ms: int) -> bool:
    return downtime_ms <= limit_ms * DOWNTIME_ALLOWANCE


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


def _guest_config(s: Scenario, binary: Path, accel: str, netns: str,
                  incoming: bool, extra_args: list[str] | None = None) -> VMConfig:
    return VMConfig.for_binary(binary, memory_mib=s.memory_mib, accel=accel,
                               kernel=artifacts.kernel(), initramfs=artifacts.initramfs(),
                               workload=s.workload(), incoming=incoming, netns=netns,
                               extra_args=list(extra_args or []))


@contextlib.contextmanager
def _booted_source(s: Scenario, binary: Path, link: Link, logs: Path,
                   progress: Progress, extra_args: list[str]) -> Iterator[tuple[VM, str]]:
    """The source guest, booted to its workload; yields it and the accelerator used.

    With accel "auto", KVM is used only if QEMU starts under it and the guest
    reaches its workload in bounded time (on PVM hosts QEMU aborts or the
    kernel hangs); otherwise TCG, and the stage line says why.
    """
    candidates = [s.accel] if s.accel != "auto" else (
        ["kvm", "tcg"] if os.path.exists("/dev/kvm") else ["tcg"])
    for accel in candidates:
        last = accel == candidates[-1]
        limit = READY_TIMEOUT_S if last else KVM_READY_TIMEOUT_S
        vm = VM(_guest_config(s, binary, accel, link.src_ns, False, extra_args), "src", logs)
        progress.stage(f"booting the source guest ({accel})")
        try:
            vm.launch()
        except VMError as err:
            if last:
                raise
            progress.stage(f"{accel} unusable here ({err}); trying {candidates[-1]}")
            continue
        try:
            assert vm.console
            if vm.console.wait_for(READY, limit) is not None:
                yield vm, accel
                return
            if last:
                raise RunError(f"source guest ({accel}) did not reach its workload in"
                               f" {limit:.0f}s; console: {vm.console_path}")
            progress.stage(f"{accel}: guest not ready in {limit:.0f}s; trying {candidates[-1]}")
        finally:
            vm.shutdown()


def _check_link(link: Link, progress: Progress) -> LinkCheck:
    progress.stage("measuring the link")
    check = link.measure()
    progress.stage(check.describe())
    return check


def _verdict_reasons(s: Scenario, outcome: Outcome, check: LinkCheck,
                     estimate_bps: float | None, declared: int | None) -> list[str]:
    reasons = []
    link_bps = check.measured_bps
    if estimate_bps:
        reasons.append(f"QEMU's bandwidth estimate {human_bits(estimate_bps)} is"
                       f" {estimate_bps / link_bps:.0%} of the measured link"
                       f" {human_bits(link_bps)}")
    if declared:
        declared_bps = declared * 8
        how = "automatic (kernel TCP samples)" if s.switchover_auto else "declared"
        reasons.append(f"{how} switchover bandwidth {human_bits(declared_bps)} is"
                       f" {declared_bps / link_bps:.0%} of the measured link")
        if declared_bps > link_bps * 1.05:
            reasons.append("the declared bandwidth is above the measured link rate:"
                           " the real downtime can exceed the limit")
    else:
        reasons.append("no switchover bandwidth declared: QEMU decides on its estimate")
    last = outcome.samples[-1] if outcome.samples else None
    if outcome.status == "not-converged" and last:
        reasons.append(f"still iterating after {s.timeout_s:.0f}s: expected downtime"
                       f" {last.expected_downtime_ms} ms > limit {s.downtime_limit_ms} ms")
    if outcome.status == "completed" and outcome.downtime_ms is not None:
        if within_limit(outcome.downtime_ms, s.downtime_limit_ms):
            reasons.append(f"downtime {outcome.downtime_ms} ms within the limit"
                           f" {s.downtime_limit_ms} ms")
        else:
            reasons.append(f"downtime {outcome.downtime_ms} ms exceeds the limit"
                           f" {s.downtime_limit_ms} ms")
    if outcome.error:
        reasons.append(f"QEMU: {outcome.error}")
    return reasons


@dataclass
class GuestVerdict:
    integrity: str
    destination_alive: bool | None
    source_alive: bool | None
    blackout_ms: float | None


def _check_guests(outcome: Outcome, src: VM, dst: VM) -> GuestVerdict:
    """After a completion the destination must run on intact; otherwise the source."""
    time.sleep(SETTLE_S)
    assert src.console and dst.console
    now = time.monotonic()
    if outcome.status == "completed":
        # Everything the destination printed came after it resumed.
        checked = read_console(dst.console.lines())
        source_beats = read_console(src.console.lines()).heartbeats
        blackout = blackout_ms(source_beats, checked.heartbeats)
    else:
        checked = read_console(src.console.lines(), after=outcome.ended_at)
        blackout = None
    alive = bool(checked.heartbeats) and now - checked.heartbeats[-1] < 1.0
    if checked.memory_verified and alive:
        integrity = "ok"
    elif checked.bad_pages or checked.kernel_errors:
        integrity = "corrupt"
    else:
        integrity = "not-checked"
    # The guest that should run on is judged; the other side is not applicable.
    if outcome.status == "completed":
        return GuestVerdict(integrity, alive, None, blackout)
    return GuestVerdict(integrity, None, alive, blackout)


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
                                    self.link.dst_ns, True), "dst-retry", self.logs)
        self.dst.launch()
        return self.dst


@contextlib.contextmanager
def lab(s: Scenario, logs: Path, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None,
        src_extra_args: list[str] | None = None) -> Iterator[Lab]:
    """Everything a migration needs, torn down on the way out whatever happens.

    @src_extra_args go to the source QEMU only (say, a QMP server for a tool)."""
    progress = progress or Progress.silent()
    binary = artifacts.qemu_binary(s.qemu)
    dst_binary = artifacts.qemu_binary(s.dst_qemu or s.qemu)
    logs.mkdir(parents=True, exist_ok=True)
    with Link(s.link()) as link:
        progress.stage(f"link {link.src_ns} <-> {link.dst_ns}")
        check = _check_link(link, progress)
        if on_link_measured:
            on_link_measured(check.measured_bps)
        if not check.ok:
            raise RunError(f"{check.describe()}: outside 80-120% of the configured rate,"
                           " so results on it would not mean what they say")
        with _booted_source(s, binary, link, logs, progress,
                            list(src_extra_args or [])) as (src, accel):
            dst = VM(_guest_config(s, dst_binary, accel, link.dst_ns, True), "dst", logs)
            env = Lab(s, link, check, src, dst, accel, binary, dst_binary, logs)
            try:
                env.dst.launch()
                yield env
            finally:
                env.dst.shutdown()


def _qemu_label(env: Lab) -> str:
    if env.dst_binary == env.binary:
        return str(env.binary)
    return f"{env.binary} -> {env.dst_binary}"


def judge(env: Lab, outcome: Outcome, progress: Progress | None = None,
          tuner: Autotuner | None = None) -> Result:
    """The Result of a migration that ran in @env: guests checked, reasons given."""
    progress = progress or Progress.silent()
    declared = tuner.declared if tuner else env.scenario.switchover_bandwidth
    progress.stage(f"migration {outcome.status}; checking the guests")
    s = env.scenario
    guests = _check_guests(outcome, env.src, env.dst)
    estimate = next((x.mbps * 1e6 for x in reversed(outcome.samples)
                     if x.status == "active" and x.mbps > 0), None)
    return Result(
        status=outcome.status, integrity=guests.integrity, downtime_ms=outcome.downtime_ms,
        observed_blackout_ms=None if guests.blackout_ms is None else round(guests.blackout_ms, 1),
        downtime_limit_ms=s.downtime_limit_ms, total_time_ms=outcome.total_time_ms,
        link_rate_bps=round(env.check.measured_bps), estimated_bandwidth_bps=estimate,
        switchover_bandwidth_bps=(declared or 0) * 8, avail_switchover_bandwidth=declared,
        autotune=[asdict(c) for c in tuner.changes] if tuner else [],
        destination_alive=guests.destination_alive, source_alive=guests.source_alive,
        error=outcome.error, qemu=_qemu_label(env), accel=env.accel, scenario=s.to_dict(),
        reasons=_verdict_reasons(s, outcome, env.check, estimate, declared),
        samples=outcome.samples)


def _autotuning(env: Lab, tuner: Autotuner, progress: Progress) -> Callable[[Sample], None]:
    """A sample hook that applies what the tuner decides while the migration is active."""
    def on_sample(sample: Sample) -> None:
        if sample.status == "active" and (value := tuner.decide(sample.t_s)) is not None:
            env.src.command("migrate-set-parameters", **{PARAM: value})
            progress.stage(f"autotune: {PARAM} = {value} B/s ({tuner.changes[-1].reason})")
        progress.sample(sample)
    return on_sample


def _sampling(env: Lab, tuner: Autotuner) -> Callable[[float], Sampler]:
    """Starts, with the migration, a thread feeding the tuner from the migration socket."""
    def sampler(started: float) -> Sampler:
        return Sampler(tuner, lambda t: read_ss(env.link.src_ns, MIGRATION_PORT, t), started)
    return sampler


def run(s: Scenario, logs: Path, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None) -> Result:
    """One scenario, start to verdict."""
    progress = progress or Progress.silent()
    with lab(s, logs, progress, on_link_measured) as env:
        progress.stage("migrating")
        tuner = Autotuner() if s.switchover_auto else None
        outcome = migration.run(
            env.src, env.dst, s.migration(), env.uri, s.timeout_s,
            _autotuning(env, tuner, progress) if tuner else progress.sample,
            during=_sampling(env, tuner) if tuner else None)
        if tuner:
            # leave the parameter as it was before the run
            env.src.command("migrate-set-parameters", **{PARAM: 0})
            tuner.write_csv(logs / "tcpinfo.csv")
        return judge(env, outcome, progress, tuner)
