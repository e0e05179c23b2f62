"""Parsing the workload's console lines into facts about the guest."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miglab.console import Console, ConsoleLine
from miglab.deadline import wait_for
from miglab.guest import (
    VERIFY_SLACK_S,
    CorruptPage,
    GuestLineError,
    ThreadShare,
    Workload,
    blackout_ms,
    kernel_command_line,
    parse_corrupt,
    parse_ready,
    read_console,
    ready_info,
    thread_shares,
    wait_for_checked_pass,
)


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


HOT_C = ("ml:C set=hot page=5 paddr=0x1a2b5000 want_gen=3 got_index=5 got_gen=2"
         " by=sweep")
ZERO_C = "ml:C set=zero page=7 paddr=0x2c007000 nonzero_word=3 got=0xdeadbeef by=rewrite"


def test_bad_pages_in_any_pass_mean_corrupt() -> None:
    report = read_console(lines((1.0, "ml:V 1 pages=8 bad=2"),
                                (1.1, HOT_C),
                                (2.0, "ml:V 2 pages=8 bad=1")))
    # The "C" line belongs to pass 2, whose bad=1 counts it already.
    assert report.bad_pages == 3
    assert not report.memory_verified


def test_corrupt_lines_are_listed_with_their_addresses() -> None:
    report = read_console(lines((1.0, HOT_C), (1.1, ZERO_C),
                                (2.0, "ml:V 1 pages=16 bad=2")))
    assert report.corrupt_pages == [
        CorruptPage("hot", 5, 0x1A2B5000, "want_gen=3 got_index=5 got_gen=2 by=sweep"),
        CorruptPage("zero", 7, 0x2C007000, "nonzero_word=3 got=0xdeadbeef by=rewrite"),
    ]
    assert report.bad_pages == 2  # counted once, through their pass's bad=


def test_corrupt_lines_of_a_pass_not_ended_still_count() -> None:
    # The guest died (or the console was read) before the pass's "V" line.
    report = read_console(lines((1.0, "ml:V 1 pages=8 bad=0"),
                                (2.0, "ml:V 2 pages=8 bad=0"),
                                (2.5, HOT_C)))
    assert report.verify_passes == 1
    assert report.bad_pages == 1
    assert not report.memory_verified


def test_corrupt_lines_before_the_moment_are_ignored() -> None:
    report = read_console(lines((1.0, HOT_C), (1.2, "ml:V 1 pages=8 bad=1"),
                                (2.0, "ml:V 2 pages=8 bad=0"),
                                (3.0, "ml:V 3 pages=8 bad=0")), after=1.5)
    assert report.corrupt_pages == []
    assert report.memory_verified


def test_corrupt_line_in_an_unknown_format_still_counts() -> None:
    report = read_console(lines((1.0, "ml:V 1 pages=8 bad=0"),
                                (1.5, "ml:C 5 want_gen=3 got_index=5 got_gen=2")))
    assert report.bad_pages == 1
    assert report.corrupt_pages[0].set_name == "unparsed"


def test_parse_corrupt_refuses_other_lines() -> None:
    with pytest.raises(GuestLineError):
        parse_corrupt("ml:V 1 pages=8 bad=0")


def test_ready_line_gives_the_physical_addresses() -> None:
    info = parse_ready(READY_LINE)
    assert info.hot_paddr0 == 0x1368D0000
    assert info.zero_paddr0 == 0
    assert info.fields["hot_mib"] == 8


READY_LINE = ("ml:READY hot_mib=8 dirty_rate_mib=4 zero_mib=0 zero_rate_mib=0 heartbeat_ms=10"
              " verify_rate_mib=64 threads=2 cpus=2 hot_paddr0=0x1368d0000 zero_paddr0=0x0")


def test_ready_line_gives_the_threads_and_the_cpus_the_guest_saw() -> None:
    info = parse_ready(READY_LINE.replace("cpus=2", "cpus=4"))
    assert (info.threads, info.cpus) == (2, 4)


def test_ready_line_of_an_older_workload_is_refused() -> None:
    with pytest.raises(GuestLineError, match="zero_paddr0"):
        parse_ready("ml:READY hot_mib=8 hot_paddr0=0x1000 threads=1 cpus=1")
    with pytest.raises(GuestLineError, match="threads, cpus"):
        parse_ready("ml:READY hot_mib=8 hot_paddr0=0x1000 zero_paddr0=0x0")
    with pytest.raises(GuestLineError):
        parse_ready("ml:V 1 pages=8 bad=0")


def test_ready_info_is_the_first_ready_line_of_a_console() -> None:
    assert ready_info(lines((1.0, "ml:H 1"))) is None
    info = ready_info(lines((0.5, "booting"), (1.0, READY_LINE),
                            (2.0, READY_LINE.replace("threads=2", "threads=3"))))
    assert info and info.threads == 2
    # an older workload's line is no fact, and no traceback either
    assert ready_info(lines((1.0, "ml:READY hot_mib=8 hot_paddr0=0x0 zero_paddr0=0x0"))) is None


def test_thread_shares_are_read_from_the_t_lines() -> None:
    shares = thread_shares(lines(
        (1.0, "ml:T 0 cpu=0 first=0 pages=128 rate_pages=5120 paddr=0x1a000"),
        (1.1, "ml:T 1 cpu=1 first=128 pages=128 rate_pages=5120 paddr=0x2b000"),
        (1.2, READY_LINE)))
    assert shares == [ThreadShare(0, 0, 0, 128, 5120, 0x1A000),
                      ThreadShare(1, 1, 128, 128, 5120, 0x2B000)]
    assert thread_shares(lines((1.0, READY_LINE))) == []


def test_threads_reach_the_kernel_command_line() -> None:
    assert "miglab.threads=1" in kernel_command_line(Workload()).split()
    assert "miglab.threads=4" in kernel_command_line(Workload(threads=4)).split()


def test_sweep_covers_hot_and_zero_sets_at_the_verify_rate() -> None:
    workload = Workload(hot_set_mib=32, zero_set_mib=32, verify_rate_mib=64)
    assert workload.owned_pages == 64 * 256
    assert workload.sweep_s == pytest.approx(1.0)
    assert Workload(hot_set_mib=0, zero_set_mib=0).sweep_s == 0.0
    with pytest.raises(ValueError):
        _ = Workload(verify_rate_mib=0).sweep_s


def test_verify_deadline_is_two_sweeps_plus_slack() -> None:
    # 8 + 8 MiB at 64 MiB/s: 0.25 s a sweep; 2x4 + 64 MiB/s asked, within a
    # slow TCG guest's 100 MiB/s, so not stretched.
    light = Workload(hot_set_mib=8, dirty_rate_mib=4, zero_set_mib=8, verify_rate_mib=64)
    assert light.verify_deadline_s == pytest.approx(0.5 + VERIFY_SLACK_S)
    # The showcase's guest asks 2x40 + 64 = 144 MiB/s: sweeps stretched 1.44x.
    showcase = Workload(hot_set_mib=32, dirty_rate_mib=40, verify_rate_mib=64)
    assert showcase.verify_deadline_s == pytest.approx(2 * 0.5 * 1.44 + VERIFY_SLACK_S)
    # A big hot set gets the time it needs (a fixed 2 s could never do).
    big = Workload(hot_set_mib=256, dirty_rate_mib=10, verify_rate_mib=64)
    assert big.verify_deadline_s > 2 * 4.0


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
    assert report.dirty_bytes_per_s == [41943040]


def test_blackout_is_source_last_to_destination_first() -> None:
    assert blackout_ms([1.0, 2.0], [2.3, 2.4]) == pytest.approx(300.0)
    assert blackout_ms([], [2.3]) is None


class FakeGuest:
    """The QEMU end of a Console: connects to its socket and prints lines."""

    def __init__(self, tmp_path: Path) -> None:
        self.console = Console.listening(tmp_path / "c.sock", tmp_path / "c.log")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(tmp_path / "c.sock"))

    def say(self, *texts: str) -> float:
        """Send @texts; return once the console has them, with the time they arrived."""
        count = len(self.console.lines())
        self._sock.sendall("".join(t + "\r\n" for t in texts).encode())
        wait_for(lambda: len(self.console.lines()) >= count + len(texts), 5.0,
                 "the console to read what was sent", interval_s=0.005)
        return self.console.lines()[-1].host_time

    def close(self) -> None:
        self._sock.close()
        self.console.close()


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[FakeGuest]:
    fake = FakeGuest(tmp_path)
    yield fake
    fake.close()


def test_checked_pass_is_the_second_verify_line_after_the_moment(guest: FakeGuest) -> None:
    guest.say("ml:V 4 pages=8 bad=0", "ml:H 1")
    after = time.monotonic()
    guest.say("ml:V 5 pages=8 bad=0")
    later = threading.Timer(0.2, guest.say, ("ml:H 2", "ml:V 6 pages=8 bad=0"))
    later.start()
    try:
        started = time.monotonic()
        assert wait_for_checked_pass(guest.console, after, deadline_s=5.0)
        assert 0.15 < time.monotonic() - started < 2.0  # woken by pass 6, not the deadline
    finally:
        later.join()


def test_checked_pass_times_out_with_one_verify_line(guest: FakeGuest) -> None:
    guest.say("ml:V 4 pages=8 bad=0")
    after = time.monotonic()
    guest.say("ml:V 5 pages=8 bad=0", "ml:H 1")
    # Only pass 5 arrived after the moment: it began before it.
    assert not wait_for_checked_pass(guest.console, after, deadline_s=0.5)
    assert time.monotonic() - after == pytest.approx(0.5, abs=0.3)


def test_checked_pass_deadline_counts_from_the_moment(guest: FakeGuest) -> None:
    after = time.monotonic()
    guest.say("ml:V 1 pages=8 bad=0", "ml:V 2 pages=8 bad=0")
    time.sleep(0.2)
    # Past the deadline: what is in still counts, nothing is waited for.
    assert wait_for_checked_pass(guest.console, after, deadline_s=0.1)
    started = time.monotonic()
    assert not wait_for_checked_pass(guest.console, time.monotonic() - 0.15, deadline_s=0.1)
    assert time.monotonic() - started < 0.1
