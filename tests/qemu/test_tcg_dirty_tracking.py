"""The first patch of the series: TCG writes are tracked while migrating.

Debian's 7.2 loses writes a TCG guest makes during migration (upstream
fixed it in QEMU 9.0): the fast path of the dirty-bitmap sync clears a page's dirty
bit but leaves the TLB entry that lets the guest write the page without
trapping, so once the page has been sent, stores through that entry set
no dirty bit and the destination keeps the stale copy.  Each sync
followed by more pre-copy is a chance: pages sent after it and written
again before the switchover are lost.  The guest's kernel, whose timer
queues and lists are written all the time through long-lived TLB
entries, is what usually breaks; now and then the workload reports its
own stale pages first.

So the migration here iterates for FORCED_SYNCS syncs whatever QEMU
estimates, its pending data never dropping under the threshold: a 16 MiB
hot set rewritten at 80 MiB/s (about 5 MiB of it dirty again at each
sync, on stock as on patched) against 10 ms of downtime-limit at
max-bandwidth's 60 MB/s.  Then downtime-limit goes up to 300 ms and it
converges at the next sync (22 syncs in all, 4.5 s).

What counts as the bug: only positive evidence on the destination, a
page that failed its check, a kernel error, or a guest that stopped
sending heartbeats (verdict.alive) while its QEMU runs.  A destination
that is alive but has finished no verification pass yet (a slow guest on
a busy host) is no evidence either way: for the stock test it is a miss,
for the patched one a failure.

Odds, from RECORD (data/tcg-dirty-tracking-runs.jsonl: independent runs,
each a fresh guest pair in a fresh process, written by
`python tests/qemu/test_tcg_dirty_tracking.py record N BUILD`; its README
says when and on what): the stock destination showed the bug in every
recorded run, so the per-run miss rate is below 1 - 0.05^(1/n) for n
runs (95% one-sided).  The stock test migrates up to attempts() times and
passes at the first evidence; attempts() is the fewest runs that bring the
odds of missing in all of them under MISS_BUDGET, computed from RECORD.
The patched test migrates as many times and must find every destination
intact and verified: the positive control gets the same number of runs.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from conftest import GuestPair

from miglab import artifacts, migration, odds, ownership, verdict
from miglab.console import Console
from miglab.deadline import DeadlineExceeded, wait_for
from miglab.guest import Workload, read_console, wait_for_checked_pass
from miglab.migration import MigrationSettings
from miglab.ownership import Record
from miglab.result import Sample
from miglab.verdict import Integrity, Status

# A verification pass takes 0.5 s (16 MiB at 32 MiB/s): one on the
# destination means half a second and more of a live guest.
WORKLOAD = Workload(hot_set_mib=16, dirty_rate_mib=80, verify_rate_mib=32)
ITERATING = MigrationSettings(downtime_limit_ms=10, max_bandwidth_bytes_per_s=60_000_000)
FORCED_SYNCS = 20
CONVERGING_DOWNTIME_LIMIT_MS = 300
RECORD = Path(__file__).parent / "data" / "tcg-dirty-tracking-runs.jsonl"
MISS_BUDGET = 1e-3  # the stock test may miss a present bug once in a thousand runs


@dataclass(frozen=True)
class Destination:
    """What one migration left on the destination, and whether it shows the bug."""

    build: str
    alive: bool
    verify_passes: int
    bad_pages: int
    kernel_errors: list[str]
    integrity: Integrity  # verdict.integrity, as a run's verdict judges it

    @property
    def evidence(self) -> str | None:
        """The bug's positive evidence, or None."""
        if self.bad_pages:
            return f"{self.bad_pages} bad pages"
        if self.kernel_errors:
            return f"kernel: {self.kernel_errors[0]}"
        if not self.alive:
            return f"no heartbeat in the last {verdict.ALIVE_WITHIN_S:g} s"
        return None

    @property
    def intact(self) -> bool:
        return self.integrity == Integrity.OK


def recorded_runs(build: str) -> list[dict]:
    return [r for r in map(json.loads, RECORD.read_text().splitlines()) if r["build"] == build]


def attempts_for(runs: list[dict]) -> int:
    """Fewest stock runs whose chance of all missing is under MISS_BUDGET (odds.py)."""
    misses = sum(1 for r in runs if r["evidence"] is None)
    return odds.attempts(len(runs), misses, MISS_BUDGET, f"{RECORD.name}, stock")


def attempts() -> int:
    """How many migrations each test makes (the module's docstring says why)."""
    return attempts_for(recorded_runs("stock"))


def wait_for_verdict(console: Console, after: float) -> None:
    """Until a verification pass that started after @after has ended, or the
    kernel has said it is dying (no pass can clear the guest then), or the
    verify deadline."""
    with contextlib.suppress(DeadlineExceeded):  # the verdict then says what is missing
        wait_for(lambda: wait_for_checked_pass(console, after, 0.0)
                 or bool(read_console(console.lines()).kernel_errors),
                 WORKLOAD.verify_deadline_s, "a verification pass, or a dying kernel", 0.25)


def migrate_and_watch_destination(build: str, workdir: Path, record: Record) -> Destination:
    workdir.mkdir(parents=True, exist_ok=True)
    with GuestPair(artifacts.qemu_binary(build), workdir, WORKLOAD, record) as pair:
        converging = False

        def converge_after_forced_syncs(sample: Sample) -> None:
            nonlocal converging
            if not converging and sample.dirty_sync_count >= FORCED_SYNCS:
                pair.src.command("migrate-set-parameters",
                                 **{"downtime-limit": CONVERGING_DOWNTIME_LIMIT_MS})
                converging = True

        outcome = migration.run(pair.src, pair.dst, ITERATING, pair.uri, deadline_s=40,
                                on_sample=converge_after_forced_syncs)
        assert outcome.status == Status.COMPLETED, outcome.samples[-1]
        assert pair.dst.console
        wait_for_verdict(pair.dst.console, time.monotonic())
        # Everything the destination printed came after it resumed.
        report = read_console(pair.dst.console.lines())
        alive = verdict.alive(report.heartbeats, time.monotonic())
        return Destination(build, alive, report.verify_passes,
                           report.bad_pages + len(report.corrupt_pages), report.kernel_errors,
                           verdict.integrity(report, alive))


def test_patched_destination_guest_survives_with_memory_verified(tmp_path: Path,
                                                                 run_record: Record) -> None:
    runs = attempts()
    for run in range(1, runs + 1):
        dst = migrate_and_watch_destination("patched", tmp_path / f"run{run}", run_record)
        assert dst.intact, f"run {run} of {runs}: {dst}"


def test_stock_destination_guest_dies_or_is_corrupt(
        tmp_path: Path, record_property: Callable[[str, object], None],
        run_record: Record) -> None:
    runs, intact = attempts(), []
    for run in range(1, runs + 1):
        dst = migrate_and_watch_destination("stock", tmp_path / f"run{run}", run_record)
        record_property("retries", run - 1)
        if dst.evidence:
            return
        intact.append(f"run {run}: {dst}")
    pytest.fail(f"stock 7.2 showed no sign of the bug in {runs} migrations"
                f" ({'; '.join(intact)}); is the bug gone?")


if __name__ == "__main__":
    if sys.argv[1:2] == ["once"]:
        result = migrate_and_watch_destination(sys.argv[2], Path(sys.argv[3]),
                                               ownership.current())
        print(json.dumps(dict(asdict(result), evidence=result.evidence)))
    elif sys.argv[1:2] == ["record"] and len(sys.argv) == 4:
        odds.record(RECORD, [sys.executable, __file__, "once", sys.argv[3]], int(sys.argv[2]),
                    lambda row: row["evidence"] or "intact")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} record RUNS stock|patched")
