"""Parsing the workload's console lines into facts about the guest."""
from __future__ import annotations

import pytest

from miglab.console import ConsoleLine
from miglab.guest import Workload, blackout_ms, kernel_command_line, read_console


def lines(*items: tuple[float, str]) -> list[ConsoleLine]:
    return [ConsoleLine(t, text) for t, text in items]


def test_kernel_command_line_carries_the_workload() -> None:
    cmdline = kernel_command_line(Workload(hot_set_mib=16, dirty_rate_mib=30))
    assert "console=ttyS0" in cmdline.split()
    assert "miglab.hot_mib=16" in cmdline.split()
    assert "miglab.dirty_rate_mib=30" in cmdline.split()


def test_first_verify_pass_after_the_moment_is_not_counted() -> None:
    # The first "V" after the moment closes a pass that began before it.
    report = read_console(lines((1.0, "ml:V 1 pages=8 bad=0"),
                                (2.0, "ml:V 2 pages=8 bad=0"),
                                (3.0, "ml:V 3 pages=8 bad=0")), after=1.5)
    assert report.verify_passes == 1
    assert report.memory_verified


def test_bad_pages_in_any_pass_mean_corrupt() -> None:
    report = read_console(lines((1.0, "ml:V 1 pages=8 bad=2"),
                                (1.1, "ml:C 5 want_gen=3 got_index=5 got_gen=2"),
                                (2.0, "ml:V 2 pages=8 bad=0")))
    assert report.bad_pages == 2
    assert not report.memory_verified


def test_no_complete_pass_is_not_verified() -> None:
    assert not read_console(lines((1.0, "ml:V 1 pages=8 bad=0"))).memory_verified


def test_kernel_panic_is_not_verified_even_with_clean_passes() -> None:
    report = read_console(lines((1.0, "ml:V 1 pages=8 bad=0"),
                                (1.5, "[    6.2] list_add corruption. next->prev should be"),
                                (2.0, "ml:V 2 pages=8 bad=0")))
    assert report.kernel_errors
    assert not report.memory_verified


def test_heartbeats_and_rates_are_collected() -> None:
    report = read_console(lines((1.0, "ml:H 1"), (1.01, "ml:H 2"),
                                (1.5, "ml:R 1 dirty_bps=41943040 zero_bps=0"),
                                (1.6, "ml:H x")))  # malformed: ignored
    assert report.heartbeats == [1.0, 1.01]
    assert report.dirty_bps == [41943040]


def test_blackout_is_source_last_to_destination_first() -> None:
    assert blackout_ms([1.0, 2.0], [2.3, 2.4]) == pytest.approx(300.0)
    assert blackout_ms([], [2.3]) is None
