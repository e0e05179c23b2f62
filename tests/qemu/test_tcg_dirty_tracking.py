"""The first patch of the series: TCG writes are tracked while migrating.

Debian's 7.2 loses pages a fast-writing TCG guest rewrites during migration
(design.md section 3), so the destination guest crashes or holds corrupt
memory. A migration of the 40 MiB/s hot-set guest that iterates a few
times before it converges shows it: with max-bandwidth 60 MB/s it completes
in about 2.4 s after 6 dirty-bitmap syncs; stock's destination panicked
(list_add corruption, invalid opcode) in 2 of 2 runs, patched's survived
with its memory verified in 2 of 2.
"""
from __future__ import annotations

import time
from pathlib import Path

from conftest import GuestPair

from miglab import migration
from miglab.guest import GuestReport, Workload, read_console, wait_for_checked_pass
from miglab.migration import MigrationSettings
from miglab.verdict import Status

WORKLOAD = Workload(hot_set_mib=32, dirty_rate_mib=40)
# Uncapped over a unix socket, QEMU switches over right after the bulk pass,
# leaving no time for a page to be sent and then written again.
ITERATING = MigrationSettings(downtime_limit_ms=300, max_bandwidth_bytes_per_s=60_000_000)


def migrate_and_watch_destination(binary: Path, workdir: Path) -> GuestReport:
    with GuestPair(binary, workdir, WORKLOAD) as pair:
        outcome = migration.run(pair.src, pair.dst, ITERATING, pair.uri, deadline_s=60)
        assert outcome.status == Status.COMPLETED, outcome.samples[-1]
        assert pair.dst.console
        # a whole verification pass that started after the switchover; a
        # kernel that trips meanwhile never completes one (then: the deadline)
        wait_for_checked_pass(pair.dst.console, time.monotonic(), WORKLOAD.verify_deadline_s)
        # Everything the destination printed came after it resumed.
        return read_console(pair.dst.console.lines())


def test_patched_destination_guest_survives_with_memory_verified(
        patched_bin: Path, tmp_path: Path) -> None:
    report = migrate_and_watch_destination(patched_bin, tmp_path)
    assert not report.kernel_errors, report.kernel_errors
    assert report.memory_verified, report
    assert len(report.heartbeats) > 50  # alive: a pass or more of 10 ms heartbeats


def test_stock_destination_guest_dies_or_is_corrupt(stock_bin: Path, tmp_path: Path) -> None:
    report = migrate_and_watch_destination(stock_bin, tmp_path)
    assert not report.memory_verified, "stock 7.2 kept the guest intact; is the bug gone?"
