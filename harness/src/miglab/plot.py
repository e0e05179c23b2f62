"""PNG plots of a Result (matplotlib, loaded only here): one figure per run.

Panels: data still pending over time; QEMU's bandwidth estimate against the
measured link rate and the declared switchover bandwidth; expected downtime
against the limit (and the downtime ramp's limit over time), with the actual
downtime and the guest's pause seen from outside; where the pause went, when
QEMU traced its downtime checkpoints (phases.py).
"""
from __future__ import annotations

from pathlib import Path

from .result import Result

MIB = 1024 * 1024


def _in_force_at(changes: list[dict], key: str, t_s: float, before: float) -> float:
    """@key of the last change made at or before @t_s; @before if none was."""
    value = before
    for change in changes:
        if change["t_s"] <= t_s:
            value = change[key]
    return value


def _declared_at(result: Result, t_s: float) -> float:
    """The automatic switchover bandwidth in force at @t_s, in bits/s (0 before any)."""
    return _in_force_at(result.autotune, "bytes_per_s", t_s, 0) * 8


def plot_run(result: Result, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    samples = [s for s in result.samples if s.status in ("active", "completed")]
    t = [s.t_s for s in samples]
    phases = result.pause_phases
    fig, axes = plt.subplots(4 if phases else 3, 1, figsize=(8, 11 if phases else 9),
                             gridspec_kw={"height_ratios": [3, 3, 3, 1.2] if phases else None})
    pending, bandwidth, downtime = axes[:3]
    for axis in (bandwidth, downtime):
        axis.sharex(pending)
    fig.suptitle(title or f"{result.qemu.split('/')[-2] if '/' in result.qemu else result.qemu}:"
                 f" {result.status}")

    pending.plot(t, [s.remaining_bytes / MIB for s in samples], color="tab:blue")
    pending.set_ylabel("pending (MiB)")
    pending.grid(alpha=0.3)

    bandwidth.plot(t, [s.mbps for s in samples], label="QEMU's estimate", color="tab:red")
    if result.link_rate_bps:
        bandwidth.axhline(result.link_rate_bps / 1e6, label="link (measured)",
                          color="tab:green", linestyle="--")
    if result.autotune:
        declared = [_declared_at(result, x) / 1e6 for x in t]
        bandwidth.step(t, declared, where="post", label="automatic switchover",
                       color="tab:purple")
    elif result.switchover_bandwidth_source:  # qemu-auto: what QEMU said it used
        said = [s for s in samples if s.switchover_bandwidth_bps is not None]
        bandwidth.step([s.t_s for s in said], [(s.switchover_bandwidth_bps or 0) / 1e6
                                                for s in said],
                       where="post", label="QEMU's switchover (x-tcp-switchover-bandwidth)",
                       color="tab:purple")
    elif result.switchover_bandwidth_bps:
        bandwidth.axhline(result.switchover_bandwidth_bps / 1e6, label="declared switchover",
                          color="tab:purple", linestyle=":")
    bandwidth.set_ylabel("Mbit/s")
    bandwidth.legend(loc="best", fontsize="small")
    bandwidth.grid(alpha=0.3)

    downtime.plot(t, [s.expected_downtime_ms for s in samples], label="expected downtime",
                  color="tab:orange")
    downtime.axhline(result.downtime_limit_ms, label="downtime limit", color="black",
                     linestyle="--")
    if ramp := result.downtime_ramp:
        downtime.step(t, [ramp.limit_at(x) for x in t], where="post",
                      label="downtime ramp's limit", color="tab:brown")
    if result.downtime_ms is not None:
        downtime.axhline(result.downtime_ms, label="actual downtime", color="tab:olive",
                         linestyle=":")
    if result.observed_blackout_ms is not None:
        downtime.axhline(result.observed_blackout_ms, label="guest's pause seen from outside",
                         color="tab:red", linestyle="-.")
    downtime.set_ylabel("ms")
    downtime.set_yscale("symlog", linthresh=100)
    downtime.set_xlabel("seconds since the migration started")
    downtime.legend(loc="best", fontsize="small")
    downtime.grid(alpha=0.3)

    if phases:  # where the pause went, QEMU's checkpoints on the host's clock
        where = axes[3]
        left = 0.0
        for i, phase in enumerate(phases):
            where.barh(0, phase["ms"], left=left, label=f"{phase['name']} ({phase['ms']:.0f} ms)",
                       color=matplotlib.colormaps["tab10"](i))
            left += phase["ms"]
        where.set_yticks([])
        where.set_xlabel("ms of the guest's pause")
        where.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6), fontsize="x-small", ncol=2)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_comparison(rows: list[tuple[str, Result]], path: Path) -> Path:
    """All runs of a comparison on shared axes: pending data and expected downtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pending, downtime) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for name, result in rows:
        samples = [s for s in result.samples if s.status in ("active", "completed")]
        t = [s.t_s for s in samples]
        label = f"{name}: {result.status}"
        pending.plot(t, [s.remaining_bytes / MIB for s in samples], label=label)
        downtime.plot(t, [max(s.expected_downtime_ms, 1) for s in samples], label=label)
    limits = {r.downtime_limit_ms for _, r in rows}
    for limit in limits:
        downtime.axhline(limit, color="black", linestyle="--", label=f"limit {limit} ms")
    pending.set_ylabel("pending (MiB)")
    pending.legend(fontsize="small")
    pending.grid(alpha=0.3)
    downtime.set_ylabel("expected downtime (ms)")
    downtime.set_yscale("log")
    downtime.set_xlabel("seconds since the migration started")
    downtime.legend(fontsize="small")
    downtime.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
