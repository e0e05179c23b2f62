"""The parameter drives QEMU's switchover decision during a real migration.

The capped pre-copy scenario (scenarios/capped-precopy.yaml), over a unix socket: a
512 MiB TCG guest rewriting a 32 MiB hot set at 40 MiB/s, max-bandwidth
8 MB/s, downtime-limit 300 ms. QEMU's estimate is then about the cap
(8000 bytes/ms), so the 32 MiB still dirty after each pass looks like
about 4 s of downtime and the migration never switches over.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from conftest import GuestPair

from miglab import migration, scenario, verdict
from miglab.deadline import wait_for
from miglab.guest import read_console, wait_for_checked_pass
from miglab.ownership import Record
from miglab.result import Sample
from miglab.verdict import Integrity, Status, within_limit
from miglab.vm import VM

SCENARIO = scenario.load_yaml(Path(__file__).resolve().parents[2] / "scenarios"
                              / "capped-precopy.yaml")
HOT_SET_BYTES = SCENARIO.hot_set_mib << 20
WORKLOAD = SCENARIO.workload()
CAPPED = SCENARIO.migration()


def sample(src: VM, started: float) -> Sample:
    return Sample.from_query(time.monotonic() - started, src.command("query-migrate"))


def wait_for_dirty_sync(src: VM, started: float, syncs: int = 2, timeout: float = 90) -> Sample:
    """Wait until QEMU has synced the dirty bitmap @syncs times (the bulk pass is over)."""
    def synced() -> Sample | None:
        s = sample(src, started)
        assert s.status in ("setup", "active"), f"migration ended early: {s.status}"
        # expected-downtime starts as downtime-limit and is only computed in
        # the window after a sync has measured a dirty rate
        if (s.dirty_sync_count >= syncs and s.expected_downtime_ms > 0
                and s.expected_downtime_ms != CAPPED.downtime_limit_ms):
            return s
        return None
    return wait_for(synced, timeout, f"dirty sync #{syncs}", interval_s=0.2)


def settled_sample(src: VM, started: float, set_at_s: float) -> Sample:
    """The first sample after QEMU had several 100 ms windows with the new value."""
    return wait_for(lambda: s if (s := sample(src, started)).t_s >= set_at_s + 0.5 else None,
                    5, "a settled sample", interval_s=0.05)


def test_stock_capped_precopy_keeps_iterating(stock_bin: Path, tmp_path: Path,
                                            run_record: Record) -> None:
    with GuestPair(stock_bin, tmp_path, WORKLOAD, run_record) as pair:
        migration.configure(pair.src, pair.dst, CAPPED)
        started = migration.start(pair.src, pair.dst, pair.uri)
        wait_for_dirty_sync(pair.src, started)
        # 20 s in: well after the bulk pass, still iterating
        samples: list[Sample] = []
        migration.follow(lambda: pair.src.command("query-migrate"), started, 20, samples)
        s = samples[-1]
        assert s.status == "active"
        # The hot set at the capped estimate: far above the 300 ms limit.
        assert s.expected_downtime_ms > 3 * CAPPED.downtime_limit_ms


def test_declared_bandwidth_replaces_the_estimate_in_expected_downtime(
        patched_bin: Path, tmp_path: Path, run_record: Record) -> None:
    with GuestPair(patched_bin, tmp_path, WORKLOAD, run_record) as pair:
        migration.configure(pair.src, pair.dst, CAPPED)
        started = migration.start(pair.src, pair.dst, pair.uri)
        before = wait_for_dirty_sync(pair.src, started)
        assert before.expected_downtime_ms > 3 * CAPPED.downtime_limit_ms

        # 50 MB/s: threshold 15 MB, below the 32 MiB hot set, so it still iterates.
        declared = 50_000_000
        pair.src.command("migrate-set-parameters", **{"avail-switchover-bandwidth": declared})
        after = settled_sample(pair.src, started, time.monotonic() - started)
        assert after.status == "active", after
        predicted_ms = after.remaining_bytes / (declared / 1000)
        # QEMU computes it from the pending of its own last update, which a
        # sync may have moved since (once 28% above ours); QEMU's estimate,
        # the cap, would give 6.25 times the prediction.
        assert 0.5 * predicted_ms <= after.expected_downtime_ms <= 2 * predicted_ms, after
        # mbps still reports QEMU's own measurement: about the 64 Mbit/s cap.
        assert after.mbps < 2 * CAPPED.max_bandwidth_bytes_per_s * 8 / 1e6, after


def test_declared_link_rate_set_during_migration_makes_it_converge(
        patched_bin: Path, tmp_path: Path, run_record: Record) -> None:
    with GuestPair(patched_bin, tmp_path, WORKLOAD, run_record) as pair:
        migration.configure(pair.src, pair.dst, CAPPED)
        started = migration.start(pair.src, pair.dst, pair.uri)
        wait_for_dirty_sync(pair.src, started)
        # 125 MB/s (1 Gbit/s): threshold 37.5 MB holds the 32 MiB hot set.
        pair.src.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 125_000_000})
        samples: list[Sample] = []
        info = migration.follow(lambda: pair.src.command("query-migrate"), time.monotonic(),
                                30, samples)
        assert samples[-1].status == Status.COMPLETED, samples[-1]
        assert within_limit(info["downtime"], CAPPED.downtime_limit_ms), info
        assert pair.dst.console
        assert wait_for_checked_pass(pair.dst.console, time.monotonic(),
                                     WORKLOAD.verify_deadline_s)
        report = read_console(pair.dst.console.lines())
        assert verdict.integrity(report, verdict.alive(report.heartbeats, time.monotonic())) \
            == Integrity.OK, report


def test_negative_one_switches_over_at_once(patched_bin: Path, tmp_path: Path,
                                            run_record: Record) -> None:
    # -1 wraps to 2^64-1 bytes/s (as upstream): the threshold saturates.
    with GuestPair(patched_bin, tmp_path, WORKLOAD, run_record) as pair:
        settings = dataclasses.replace(CAPPED, avail_switchover_bandwidth_bytes_per_s=-1)
        outcome = migration.run(pair.src, pair.dst, settings, pair.uri, deadline_s=60)
        assert outcome.status == "completed", outcome.samples[-1]
        # At 8 MB/s the bulk pass alone (about 80 MB that are not zero) takes
        # 10 s; switching over at once finishes far sooner.
        assert outcome.total_time_ms is not None and outcome.total_time_ms < 5000, outcome
