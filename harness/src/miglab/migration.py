"""The migration driver: configure, start, follow, decide.

Each step is a small function over two running VMs; run() strings them
together and returns the outcome with the time series it sampled. follow()
is the one loop that watches a migration: the runner, `miglab autotune`
and the avocado suites all use it. What the guests say about the migration
(alive, memory intact) is checked by the caller, which owns the guests.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .deadline import DeadlineExceeded, wait_for
from .monitor import ExecuteError, QMPTimeout
from .result import Sample
from .verdict import Status
from .vm import VM

log = logging.getLogger(__name__)

FINAL_STATES = {"completed", "failed", "cancelled"}
# Before "migrate" and after "migrate_cancel" has been answered.
ACTIVE_STATES = {"setup", "active", "pre-switchover", "device", "postcopy-active",
                 "wait-unplug", "cancelling"}
# The migration parameters of the patches: the declared switchover
# bandwidth (0002) and QEMU's own automatic mode (0003, patched builds
# only). The latter exists only downstream, so it has QAPI's downstream
# name; should upstream QEMU take it without the x-, both names work.
PARAM = "avail-switchover-bandwidth"
TCP_PARAMS = ("x-tcp-switchover-bandwidth", "tcp-switchover-bandwidth")
TCP_PARAM = TCP_PARAMS[0]
SAMPLE_INTERVAL_S = 0.2
# QEMU's migration thread says "completed" a moment before it computes
# total-time and downtime (7.2: migration_iteration_finish, under the
# iothread lock): query-migrate in between reads 0 for both. Seen once in
# about 40 runs here; asked again until they are there.
COMPLETION_FIGURES_TIMEOUT_S = 5.0
CANCEL_TIMEOUT_S = 30.0


@dataclass
class MigrationSettings:
    downtime_limit_ms: int = 300
    max_bandwidth_bytes_per_s: int | None = None  # None leaves QEMU's default
    # None never mentions the parameter (so stock QEMU works)
    avail_switchover_bandwidth_bytes_per_s: int | None = None
    # QEMU's own switchover bandwidth from TCP (our patches); False never mentions it
    tcp_switchover_bandwidth: bool = False
    capabilities: dict[str, bool] = field(default_factory=dict)
    multifd_channels: int = 0  # 0: multifd off

    def both_sides(self) -> tuple[dict[str, bool], dict[str, int]]:
        """Capabilities and parameters both ends must agree on."""
        caps = dict(self.capabilities)
        params = {}
        if self.multifd_channels:
            caps["multifd"] = True
            params["multifd-channels"] = self.multifd_channels
        return caps, params

    def parameters(self) -> dict[str, int | bool]:
        out: dict[str, int | bool] = {"downtime-limit": self.downtime_limit_ms}
        if self.max_bandwidth_bytes_per_s is not None:
            out["max-bandwidth"] = self.max_bandwidth_bytes_per_s
        if self.avail_switchover_bandwidth_bytes_per_s is not None:
            out[PARAM] = self.avail_switchover_bandwidth_bytes_per_s
        if self.tcp_switchover_bandwidth:
            out[TCP_PARAM] = True
        return out


@dataclass
class Outcome:
    status: Status
    samples: list[Sample]
    downtime_ms: int | None = None
    total_time_ms: int | None = None
    error: str | None = None
    ended_at: float = 0.0


Query = Callable[[], dict[str, Any]]


def known_name(names: tuple[str, ...], known: Iterable[str]) -> str | None:
    """The first of @names (a member's spellings) that is among @known."""
    have = set(known)
    return next((n for n in names if n in have), None)


def configure(src: VM, dst: VM, settings: MigrationSettings) -> None:
    capabilities, shared = settings.both_sides()
    caps = [{"capability": k, "state": v} for k, v in capabilities.items()]
    for vm in (src, dst):
        if caps:
            vm.command("migrate-set-capabilities", capabilities=caps)
        if shared:
            vm.command("migrate-set-parameters", **shared)
    # the source announces each change of status: follow() waits on them
    src.command("migrate-set-capabilities",
                capabilities=[{"capability": "events", "state": True}])
    params = settings.parameters()
    if TCP_PARAM in params:  # under the name this QEMU knows (QEMU refuses neither)
        name = known_name(TCP_PARAMS, src.command("query-migrate-parameters")) or TCP_PARAM
        params[name] = params.pop(TCP_PARAM)
    src.command("migrate-set-parameters", **params)


def start(src: VM, dst: VM, uri: str) -> float:
    dst.command("migrate-incoming", uri=uri)
    started = time.monotonic()
    src.command("migrate", uri=uri)
    return started


def follow(query: Query, started: float, deadline_s: float | None,
           samples: list[Sample], on_sample: Callable[[Sample], None] | None = None,
           interval_s: float = SAMPLE_INTERVAL_S,
           wait: Callable[[float], object] = time.sleep) -> dict[str, Any]:
    """Sample query-migrate into @samples until a final state (or the migration
    has gone, status "none" after it was seen), or @deadline_s seconds after
    @started; returns the last answer. Errors of the monitor propagate.

    Between samples it calls @wait(@interval_s): run() passes a wait that a
    MIGRATION event ends at once, so a final status is sampled when QEMU
    announces it, not up to an interval later."""
    seen = False
    while True:
        info = query()
        sample = Sample.from_query(time.monotonic() - started, info)
        samples.append(sample)
        if on_sample:
            on_sample(sample)
        seen = seen or sample.status in ACTIVE_STATES
        if sample.status == "completed":
            return completion_figures(query, info)
        if sample.status in FINAL_STATES or (seen and sample.status == "none"):
            return info
        if deadline_s is not None and sample.t_s >= deadline_s:
            return info
        wait(interval_s)


def completion_figures(query: Query, info: dict[str, Any]) -> dict[str, Any]:
    """@info of a completed migration, asked again until it has its total-time;
    without one after COMPLETION_FIGURES_TIMEOUT_S, both figures are dropped."""
    if info.get("total-time"):
        return info
    try:
        return wait_for(lambda: (i if (i := query()).get("total-time") else None),
                        COMPLETION_FIGURES_TIMEOUT_S, "query-migrate's total-time", 0.02)
    except DeadlineExceeded:
        log.warning("QEMU gave no total-time or downtime for a completed migration")
        return {k: v for k, v in info.items() if k not in ("total-time", "downtime")}


def wait_for_status(query: Query, states: set[str], timeout_s: float,
                    interval_s: float = 0.2) -> str:
    """Wait until query-migrate's status is one of @states; returns it."""
    return wait_for(lambda: (s if (s := query().get("status", "none")) in states else None),
                    timeout_s, f"migration status {' or '.join(sorted(states))}", interval_s)


def decide(samples: list[Sample], info: dict, ended: float) -> Outcome:
    last = samples[-1]
    if last.status == "completed":
        return Outcome(Status.COMPLETED, samples, downtime_ms=info.get("downtime"),
                       total_time_ms=info.get("total-time"), ended_at=ended)
    if last.status in ("failed", "cancelled"):
        return Outcome(Status.FAILED, samples, error=info.get("error-desc", last.status),
                       ended_at=ended)
    return Outcome(Status.NOT_CONVERGED, samples, ended_at=ended)


def cancel(src: VM, timeout_s: float = CANCEL_TIMEOUT_S) -> str:
    """Cancel a migration that is still running and wait until the source runs again."""
    src.command("migrate_cancel")
    try:
        return wait_for_status(lambda: src.command("query-migrate"), FINAL_STATES, timeout_s,
                               interval_s=0.1)
    except DeadlineExceeded:
        return "cancelling"


def _exited(vm: VM) -> str | None:
    """"NAME QEMU exited (code N): its last stderr line", if it has exited."""
    if vm.exitcode is None:
        return None
    last = vm.stderr_tail(1)
    return f"{vm.name} QEMU exited (code {vm.exitcode})" + (f": {last}" if last else "")


def _failure(src: VM, dst: VM, err: Exception) -> str:
    """What to tell the user when the source's monitor failed mid-migration."""
    if exited := _exited(src) or _exited(dst):
        return exited
    if isinstance(err, QMPTimeout):
        return f"source QEMU stopped answering: {err}"
    return f"source QEMU monitor failed: {type(err).__name__}: {err}"


def run(src: VM, dst: VM, settings: MigrationSettings, uri: str, deadline_s: float,
        on_sample: Callable[[Sample], None] | None = None,
        during: Callable[[float], contextlib.AbstractContextManager[object]] | None = None
        ) -> Outcome:
    """@during(started), if given, is entered once the migration started and
    left when it ended (say, a thread that watches the connection).

    A source QEMU that dies or stops answering makes a failed Outcome that
    says so (with its last stderr line), not an exception."""
    configure(src, dst, settings)
    started = start(src, dst, uri)
    samples: list[Sample] = []
    try:
        with during(started) if during else contextlib.nullcontext():
            info = follow(lambda: src.command("query-migrate"), started, deadline_s,
                          samples, on_sample,
                          wait=lambda timeout_s: src.wait_event({"MIGRATION"}, timeout_s))
    except ExecuteError:
        raise
    except Exception as err:  # the monitor's errors: timeout, EOF, connection reset
        log.warning("following the migration: %s", err)
        return Outcome(Status.FAILED, samples, error=_failure(src, dst, err),
                       ended_at=time.monotonic())
    outcome = decide(samples, info, time.monotonic())
    if outcome.status == Status.NOT_CONVERGED:
        cancel(src)
    elif outcome.status == Status.FAILED and (exited := _exited(dst)):
        outcome.error = f"{outcome.error}; {exited}"
    return outcome
