"""Plain, serialisable results of a migration run (they round-trip through JSON)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# query-migrate's report of QEMU's own automatic mode (our patched builds),
# under its downstream name, and without the x- should upstream take it.
REPORTED_BANDWIDTH = ("x-switchover-bandwidth", "switchover-bandwidth")
REPORTED_SOURCE = ("x-switchover-bandwidth-source", "switchover-bandwidth-source")


def _reported(info: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((info[n] for n in names if n in info), None)


@dataclass
class Sample:
    """One query-migrate reading on the source."""

    t_s: float  # since the migration started
    status: str
    remaining_bytes: int = 0
    transferred_bytes: int = 0
    mbps: float = 0.0  # QEMU's bandwidth estimate, Mbit/s
    dirty_pages_rate: int = 0  # pages/s
    expected_downtime_ms: int = 0
    dirty_sync_count: int = 0
    # what QEMU's last switchover decision assumed, and where it came from
    # (declared, tcp or estimate); only QEMUs with x-tcp-switchover-bandwidth on say
    switchover_bandwidth_bps: float | None = None
    switchover_bandwidth_source: str | None = None

    @classmethod
    def from_query(cls, t_s: float, info: dict[str, Any]) -> Sample:
        ram = info.get("ram", {})
        return cls(
            t_s=round(t_s, 3),
            status=info.get("status", "none"),
            remaining_bytes=ram.get("remaining", 0),
            transferred_bytes=ram.get("transferred", 0),
            mbps=ram.get("mbps", 0.0),
            dirty_pages_rate=ram.get("dirty-pages-rate", 0),
            expected_downtime_ms=info.get("expected-downtime", 0),
            dirty_sync_count=ram.get("dirty-sync-count", 0),
            switchover_bandwidth_bps=None if (bw := _reported(info, REPORTED_BANDWIDTH)) is None
            else bw * 8,
            switchover_bandwidth_source=_reported(info, REPORTED_SOURCE),
        )


@dataclass
class CrossTrafficRecord:
    """--cross-traffic: what the competing flows carried and the migration got.

    The migration connection's rate is the fastest its own TCP samples agreed
    on (autotune's filter, last window), its share that rate over the
    link's goodput measured alone before the run. A flow that could not say
    what it delivered leaves only @flows and @error."""

    flows: int
    link_goodput_alone_bps: float | None = None
    flows_goodput_bps: float | None = None
    flow_goodput_bps: list[float] = field(default_factory=list)
    migration_tcp_bps: float | None = None
    migration_share: float | None = None
    error: str | None = None


@dataclass
class RampRecord:
    """--downtime-ramp as it ran: its settings, every raise, the limit QEMU
    switched over with (None: it did not complete)."""

    initial_ms: int
    changes: list[RampStep] = field(default_factory=list)
    limit_at_switchover_ms: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # ramp.DowntimeRamp's

    def limit_at(self, t_s: float) -> int:
        """The limit in force @t_s seconds after the migration started."""
        return next((c.limit_ms for c in reversed(self.changes) if c.t_s <= t_s),
                    self.initial_ms)


@dataclass
class RampStep:
    t_s: float  # since the migration started
    iteration: int  # QEMU's dirty-sync-count when it was made
    limit_ms: int


@dataclass
class LibvirtRecord:
    """--via libvirt: the version and hosts, the cap libvirt applied (whole
    MiB/s), QEMU's parameters at the start, the destination's completed job
    statistics, and QEMU's own downtime beside libvirt's (the one judged)."""

    libvirt_version: str
    src_uri: str
    dst_uri: str
    migrate_address: str | None = None  # between two hosts given by URI
    max_bandwidth_mib_per_s: int | None = None
    max_bandwidth_bytes_per_s: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # query-migrate-parameters
    job: dict[str, Any] = field(default_factory=dict)  # virDomainGetJobStats, completed
    qemu_downtime_ms: int | None = None


@dataclass
class Result:
    """Everything a run found; the verdict fields first."""

    status: str  # a verdict.Status
    integrity: str  # a verdict.Integrity
    downtime_ms: int | None
    observed_blackout_ms: float | None
    downtime_limit_ms: int
    total_time_ms: int | None
    link_rate_bps: float | None  # measured on the link before migrating (bits/s)
    estimated_bandwidth_bps: float | None  # QEMU's last estimate (bits/s)
    switchover_bandwidth_bps: float  # declared, or QEMU's own (qemu-auto) (bits/s); 0 when none
    avail_switchover_bandwidth_bytes_per_s: int | None = None  # the parameter as set
    # qemu-auto: where QEMU's last decision took its bandwidth from (declared,
    # tcp or estimate, as query-migrate says); None in the other modes
    switchover_bandwidth_source: str | None = None
    destination_alive: bool | None = None
    source_alive: bool | None = None
    error: str | None = None
    autotune: list[dict[str, Any]] = field(default_factory=list)  # changes it made
    autotune_connections: int | None = None  # connections auto summed (multifd: channels)
    qemu: str = ""
    accel: str = ""
    scenario: dict[str, Any] = field(default_factory=dict)
    # guest NUMA nodes: set -> pages on each node, all of them verified (empty: one node)
    pages_per_node: dict[str, list[int]] = field(default_factory=dict)
    # from the source's READY line: the workload's rewriting threads (one per
    # vCPU) and the CPUs its kernel had online; None if it printed none
    guest_threads: int | None = None
    guest_cpus: int | None = None
    corrupt_pages: list[str] = field(default_factory=list)  # as the guest reported them
    cross_traffic: CrossTrafficRecord | None = None  # --cross-traffic
    downtime_ramp: RampRecord | None = None  # --downtime-ramp
    # the blackout's error bound (guest.Blackout), and whether the guest was
    # certainly paused longer than the limit in force (verdict.paused_over_limit)
    blackout_error_ms: float | None = None
    # the blackout cut at QEMU's downtime checkpoints (phases.py: QEMU 8.2 and
    # later, both sides): [{"name", "ms"}] in order, adding up to it
    pause_phases: list[dict[str, Any]] = field(default_factory=list)
    paused_over_limit: bool | None = None
    # the part of the pause downtime-limit does not bound, and the limit
    # that keeps the pause within the one asked for (verdict.pause_advice)
    pause_unbounded_ms: float | None = None
    advised_downtime_limit_ms: int | None = None
    # how the lab drove QEMU (qmp or libvirt); a libvirt run's downtime_ms is
    # libvirt's own (source paused to destination resumed), its record in libvirt
    via: str = "qmp"
    libvirt: LibvirtRecord | None = None
    reasons: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["samples"] = [Sample(**s) for s in data.get("samples", [])]
        if values.get("cross_traffic"):
            values["cross_traffic"] = CrossTrafficRecord(**values["cross_traffic"])
        if values.get("libvirt"):
            values["libvirt"] = LibvirtRecord(**values["libvirt"])
        if values.get("downtime_ramp"):
            ramp = dict(values["downtime_ramp"])
            ramp["changes"] = [RampStep(**c) for c in ramp.get("changes", [])]
            values["downtime_ramp"] = RampRecord(**ramp)
        # written before the records were typed: {} for none
        return cls(**{k: v or None if k in ("cross_traffic", "downtime_ramp", "libvirt") else v
                      for k, v in values.items()})

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read_json(cls, path: Path) -> Result:
        return cls.from_dict(json.loads(path.read_text()))
