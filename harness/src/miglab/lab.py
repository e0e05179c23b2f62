"""The lab a run migrates in: a shaped link between two network namespaces,
checked, with the source guest booted to its workload (the accelerator
chosen) and a destination QEMU waiting for the migration.

runner.py steers a migration in it and judges what happened; libvirtlab.py
makes the same lab with each side's libvirtd running the guests.
Every resource is held in a `with` block, so a failure, a timeout or
Ctrl-C tears everything down.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import artifacts, ownership, phases, preflight
from .console import Console
from .errors import LabError
from .guest import READY, Workload, kernel_command_line
from .link import CHECK_HIGH, CHECK_LOW, DST_ADDR, Link, LinkCheck
from .result import Sample
from .scenario import Scenario
from .vm import VM, VMConfig, VMError, VMLaunchError

log = logging.getLogger(__name__)

MIGRATION_PORT = 4444
READY_TIMEOUT_S = 120.0
# A kernel that hangs under KVM (PVM hosts) is given up after this: under
# TCG the guest reaches its workload in 5.5-6.6 s on this 2-core host (30
# runs, docs/measurements.md), and KVM runs the same kernel faster, so 20 s
# is three times the slowest TCG boot; a KVM guest slower than that on a
# loaded host runs under TCG, and says so.
KVM_READY_TIMEOUT_S = 20.0
COMMON_MACHINE = "pc-q35-7.2"


class RunError(LabError):
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


def guest_config(s: Scenario, binary: Path, accel: str, incoming: bool,
                 extra_args: list[str] | None, logs: Path, name: str,
                 workload: Workload | None = None) -> VMConfig:
    """The guest QEMU @name of @s (@workload in place of the scenario's, for
    tests that need a heartbeat or verify rate a scenario does not set)."""
    # QEMUs that trace the downtime's checkpoints write them for phases.py
    traced = phases.trace_args(trace_log(logs, name)) \
        if preflight.has_parameter(binary, preflight.CHECKPOINTS) else []
    return VMConfig.for_binary(binary, memory_mib=s.memory_mib, machine=machine_type(s),
                               numa_nodes_mib=s.numa_nodes_mib, vcpus=s.vcpus, accel=accel,
                               kernel=artifacts.kernel(), initramfs=artifacts.initramfs(),
                               kernel_append=kernel_command_line(workload or s.workload()),
                               incoming=incoming, extra_args=traced + list(extra_args or []))


KVM_HINT = "KVM is unusable on this host: use --accel tcg (or auto, which falls back to TCG)"


# Why KVM failed on this host, once a run of this process found it: later
# runs (compare's variants) then go to TCG at once, not after another probe
# of up to KVM_READY_TIMEOUT_S.
_local_kvm_unusable: str | None = None


def accel_trials(choice: str, kvm_present: bool, progress: Progress | None = None,
                 local: bool = True) -> list[tuple[str, float]]:
    """The accelerators to try, in order, each with how long its guest may take
    to reach its workload. With "auto", KVM only if QEMU starts under it and
    the guest gets there in bounded time (on PVM hosts QEMU aborts or the
    kernel hangs), and an earlier run on this (@local) host did not find it
    unusable; otherwise TCG."""
    known = _local_kvm_unusable if local and kvm_present and choice == "auto" else None
    if known and progress:
        progress.stage(fallback_stage("kvm", f"{known}, found by an earlier run", "tcg"))
    candidates = [choice] if choice != "auto" else \
        (["kvm", "tcg"] if kvm_present and not known else ["tcg"])
    return [(accel, READY_TIMEOUT_S if accel == candidates[-1] else KVM_READY_TIMEOUT_S)
            for accel in candidates]


def fallback_stage(accel: str, why: str, then: str) -> str:
    """The one line that says an accelerator was given up, and for which."""
    return f"{accel.upper()} unusable on this host ({why}); using {then.upper()}"


def give_up(accel: str, why: str, then: str, progress: Progress, local: bool = True) -> None:
    """Say that @accel was given up for @then; KVM given up on this (@local)
    host is remembered for the runs after (accel_trials)."""
    global _local_kvm_unusable
    if accel == "kvm" and local:
        _local_kvm_unusable = why
    progress.stage(fallback_stage(accel, why, then))


def reached_workload(console: Console, what: str, accel: str,
                     trials: list[tuple[str, float]], progress: Progress,
                     local: bool = True) -> bool:
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
    give_up(accel, f"the guest did not reach its workload in {limit:.0f} s", trials[-1][0],
            progress, local)
    return False


@contextlib.contextmanager
def _booted_source(s: Scenario, binary: Path, link: Link, logs: Path,
                   progress: Progress, extra_args: list[str],
                   record: ownership.Record) -> Iterator[tuple[VM, str]]:
    """The source guest, booted to its workload (accel_trials()); yields it
    and the accelerator used, and the stage line says why one was given up."""
    trials = accel_trials(s.accel, os.path.exists("/dev/kvm"), progress)
    for accel, _ in trials:
        last = accel == trials[-1][0]
        vm = VM(guest_config(s, binary, accel, False, extra_args, logs, "src"), "src", logs,
                link.src_ns, record=record)
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
            give_up(accel, why, trials[-1][0], progress)
            continue
        try:
            assert vm.console
            if reached_workload(vm.console, "source guest", accel, trials, progress):
                yield vm, accel
                return
        finally:
            vm.shutdown()


@contextlib.contextmanager
def checked_link(s: Scenario, progress: Progress, record: ownership.Record,
                 on_link_measured: Callable[[float], None] | None = None
                 ) -> Iterator[tuple[Link, LinkCheck]]:
    """The scenario's link, made and measured; refused (RunError) when its
    goodput is outside what LinkCheck accepts of the configured rate."""
    with Link(s.link(), record=record) as link:
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
    qemu_label: str
    record: ownership.Record  # where what the lab makes is recorded
    uri: str = f"tcp:{DST_ADDR}:{MIGRATION_PORT}"

    @property
    def trace_logs(self) -> list[Path]:
        """Where both QEMUs wrote their downtime checkpoints (if they trace them)."""
        return [trace_log(self.logs, self.src.name), trace_log(self.logs, self.dst.name)]

    def new_destination(self) -> VM:
        """A fresh destination (after one died or failed), launched; the caller owns it."""
        self.dst.shutdown()
        self.dst = VM(guest_config(self.scenario, self.dst_binary, self.accel, True, None,
                                    self.logs, "dst-retry"), "dst-retry", self.logs,
                      self.link.dst_ns, record=self.record)
        self.dst.launch()
        return self.dst


@contextlib.contextmanager
def lab(s: Scenario, logs: Path, record: ownership.Record, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None,
        src_extra_args: list[str] | None = None,
        dst_extra_args: list[str] | None = None) -> Iterator[Lab]:
    """Everything a migration needs, recorded in @record, torn down on the way
    out whatever happens.

    @src_extra_args and @dst_extra_args go to one side's QEMU only (say, a
    QMP server for a tool, or a gdbstub)."""
    progress = progress or Progress.silent()
    binary, dst_binary, label = builds(s)
    logs.mkdir(parents=True, exist_ok=True)
    with checked_link(s, progress, record, on_link_measured) as (link, check):
        with _booted_source(s, binary, link, logs, progress,
                            list(src_extra_args or []), record) as (src, accel):
            dst = VM(guest_config(s, dst_binary, accel, True, dst_extra_args, logs, "dst"),
                     "dst", logs, link.dst_ns, record=record)
            env = Lab(s, link, check, src, dst, accel, binary, dst_binary, logs, label, record)
            try:
                env.dst.launch()
                yield env
            finally:
                env.dst.shutdown()


def builds(s: Scenario) -> tuple[Path, Path, str]:
    """The source's and the destination's QEMU binaries, and their label
    (qemu_label), found before anything is made."""
    return (artifacts.qemu_binary(s.qemu), artifacts.qemu_binary(s.dst_qemu or s.qemu),
            qemu_label(s))


def qemu_label(s: Scenario) -> str:
    """Each side's QEMU: its version and binary (asked before the run: the
    probe preflight made, cached)."""
    def one(choice: str) -> str:
        qemu = preflight.check_qemu(choice, "--qemu")
        return f"QEMU {qemu.version} ({qemu.path})"
    if not s.dst_qemu or s.dst_qemu == s.qemu:
        return one(s.qemu)
    return f"{one(s.qemu)} -> {one(s.dst_qemu)}, machine {machine_type(s)}"


