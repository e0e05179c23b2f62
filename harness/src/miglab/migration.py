"""The migration driver: configure, start, monitor, decide.

Each step is a small function over two running VMs; run() strings them
together and returns the outcome with the time series it sampled. What the
guests say about it (alive, memory intact) is checked by the caller, which
owns the guests.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .result import Sample
from .vm import VM

FINAL_STATES = {"completed", "failed", "cancelled"}
SAMPLE_INTERVAL_S = 0.2


@dataclass
class MigrationSettings:
    downtime_limit_ms: int = 300
    max_bandwidth: int | None = None  # bytes/s; None leaves QEMU's default
    # bytes/s; None never mentions the parameter (so stock QEMU works)
    avail_switchover_bandwidth: int | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)

    def parameters(self) -> dict[str, int]:
        out = {"downtime-limit": self.downtime_limit_ms}
        if self.max_bandwidth is not None:
            out["max-bandwidth"] = self.max_bandwidth
        if self.avail_switchover_bandwidth is not None:
            out["avail-switchover-bandwidth"] = self.avail_switchover_bandwidth
        return out


@dataclass
class Outcome:
    status: str  # completed, not-converged, failed
    samples: list[Sample]
    downtime_ms: int | None = None
    total_time_ms: int | None = None
    error: str | None = None
    started_at: float = 0.0  # host monotonic time
    ended_at: float = 0.0


def configure(src: VM, dst: VM, settings: MigrationSettings) -> None:
    caps = [{"capability": k, "state": v} for k, v in settings.capabilities.items()]
    if caps:
        for vm in (src, dst):
            vm.command("migrate-set-capabilities", capabilities=caps)
    src.command("migrate-set-parameters", **settings.parameters())


def start(src: VM, dst: VM, uri: str) -> float:
    dst.command("migrate-incoming", uri=uri)
    started = time.monotonic()
    src.command("migrate", uri=uri)
    return started


def sample(src: VM, started: float) -> tuple[Sample, dict]:
    info = src.command("query-migrate")
    return Sample.from_query(time.monotonic() - started, info), info


def monitor(src: VM, started: float, deadline_s: float,
            on_sample: Callable[[Sample], None] | None = None) -> tuple[list[Sample], dict]:
    """Sample query-migrate until a final state or the deadline; return the series."""
    samples: list[Sample] = []
    info: dict = {}
    while True:
        s, info = sample(src, started)
        samples.append(s)
        if on_sample:
            on_sample(s)
        if s.status in FINAL_STATES or s.t_s >= deadline_s:
            return samples, info
        time.sleep(SAMPLE_INTERVAL_S)


def decide(samples: list[Sample], info: dict, ended: float, started: float) -> Outcome:
    last = samples[-1]
    if last.status == "completed":
        return Outcome("completed", samples, downtime_ms=info.get("downtime"),
                       total_time_ms=info.get("total-time"), started_at=started, ended_at=ended)
    if last.status in ("failed", "cancelled"):
        return Outcome("failed", samples, error=info.get("error-desc", last.status),
                       started_at=started, ended_at=ended)
    return Outcome("not-converged", samples, started_at=started, ended_at=ended)


def cancel(src: VM, timeout_s: float = 30.0) -> str:
    """Cancel a migration that is still running and wait until the source runs again."""
    src.command("migrate_cancel")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = src.command("query-migrate").get("status", "none")
        if status in FINAL_STATES:
            return status
        time.sleep(0.1)
    return "cancelling"


def run(src: VM, dst: VM, settings: MigrationSettings, uri: str, deadline_s: float,
        on_sample: Callable[[Sample], None] | None = None,
        during: Callable[[float], contextlib.AbstractContextManager[object]] | None = None
        ) -> Outcome:
    """@during(started), if given, is entered once the migration started and
    left when it ended (say, a thread that watches the connection)."""
    configure(src, dst, settings)
    started = start(src, dst, uri)
    with during(started) if during else contextlib.nullcontext():
        samples, info = monitor(src, started, deadline_s, on_sample)
    outcome = decide(samples, info, time.monotonic(), started)
    if outcome.status == "not-converged":
        cancel(src)
    return outcome
