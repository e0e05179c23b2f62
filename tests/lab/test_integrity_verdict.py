"""The harness's integrity verdict against a fault it did not make itself.

A capped migration that completes (the link rate declared); right after
the switchover, QEMU's gdbstub on the destination writes garbage into hot
page 0 at the guest-physical address the workload printed when it started
(memory migrates as it is, so the address holds on the destination),
once the destination guest is seen at work. The
verdict must be `corrupt`, naming the page and its address. The negative
control is test_miglab_run's declared-link run: the same migration with no
fault is `ok`.
"""
from __future__ import annotations

import time
from pathlib import Path

from miglab import gdbstub, migration, runner, scenario
from miglab.guest import HEARTBEAT, READY, parse_ready, wait_for_checked_pass
from miglab.lab import lab
from miglab.ownership import Record
from miglab.verdict import Integrity, Status

PAGE = b"\xa5" * 4096


def test_a_page_corrupted_on_the_destination_is_reported_with_its_address(
        tmp_path: Path, run_record: Record) -> None:
    s = scenario.parse({"qemu": "patched", "hot-set": "12M", "switchover-bandwidth": "125M",
                        "accel": "tcg", "timeout": "60"})
    gdb = tmp_path / "dst-gdb.sock"
    with lab(s, tmp_path, run_record, dst_extra_args=["-gdb", f"unix:{gdb},server=on,wait=off"]
                    ) as env:
        assert env.src.console
        started = env.src.console.wait_for(READY, 0)
        assert started
        hot_page0 = parse_ready(started.text).hot_paddr0
        outcome = migration.run(env.src, env.dst, s.migration(), env.uri, s.timeout_s)
        assert outcome.status == Status.COMPLETED, outcome.error
        # The source says completed before the destination has loaded the
        # last of the stream and resumed: a write (and the detach's
        # resume) before then races the load.  A heartbeat is the guest at
        # work on the destination.
        assert env.dst.console
        assert env.dst.console.wait_for(
            HEARTBEAT, runner.FIRST_HEARTBEAT_TIMEOUT_S,
            since=env.dst.console.index_after(outcome.ended_at))
        gdbstub.write_guest_physical(gdb, hot_page0, PAGE)
        # The harness checks from the migration's end: a verification pass
        # that began between it and the write may have read page 0 before it
        # was overwritten, and the guest's own check before a rewrite may come
        # later than the harness looks (so it failed by chance). A whole pass
        # that started after the write reads page 0: the verdict then cannot
        # miss it.
        written = time.monotonic()
        assert wait_for_checked_pass(env.dst.console, written, s.workload().verify_deadline_s)
        result = runner.judge(env, outcome)
    assert result.integrity == Integrity.CORRUPT, result.reasons
    assert any(f"page 0 at guest-physical {hot_page0:#x}" in p
               for p in result.corrupt_pages), result.corrupt_pages
