"""The workload's checker against faults it did not make itself.

One guest (our patched 7.2, TCG) owns a hot set and a zero set; QEMU's
gdbstub writes garbage into page 0 of each, at the guest-physical address
the workload printed in its READY line, from outside the guest.  Each page
must be reported with that address within the verify deadline.  Before
anything is injected, the same guest must complete a clean pass (the
negative control).

With two vCPUs the workload rewrites from two threads, one per vCPU, and
the hot page injected is the first of the second thread's share (where its
"ml:T" line says it is): the check before a rewrite must work on every
thread, and the sweep, which reads that thread's pages while it rewrites
them, must not call a clean pass corrupt.

The sweep is slow on purpose (1 MiB/s over 4 MiB: 4 s a pass) and the hot
set small and rewritten fast (page 0 about 4 times a second), so that a
corrupt hot page injected just after the sweep passed page 0 is rewritten
long before the sweep comes back: only the check made before each rewrite
can catch it, as it must catch a page corrupted in transit.  The zero set
is never rewritten: only the sweep can catch that one.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import guest_config, wait_ready

from miglab import gdbstub
from miglab.console import Console, ConsoleLine
from miglab.guest import (
    READY,
    ReadyInfo,
    Workload,
    parse_corrupt,
    parse_ready,
    read_console,
    thread_shares,
)
from miglab.ownership import Record
from miglab.vm import VM

log = logging.getLogger(__name__)

WORKLOAD = Workload(hot_set_mib=1, dirty_rate_mib=4, zero_set_mib=3, zero_rate_mib=0,
                    verify_rate_mib=1)
PAGE_BYTES = 4096
HOT_GARBAGE = b"\xa5" * PAGE_BYTES
ZERO_GARBAGE_OFFSET = 1024  # word 128: the checker must look past word 0
ZERO_GARBAGE = b"\x5a" * 64
VERIFY = r"^ml:V (\d+) pages=(\d+) bad=(\d+)$"


@dataclass
class Injection:
    at: float  # host time the write was done
    report: ConsoleLine | None  # the "C" line for the page, None if none in the deadline
    closing: ConsoleLine | None  # the "V" line of the pass that reported it


@dataclass
class Scenario:
    vcpus: int
    console_path: Path | None
    ready_line: ConsoleLine
    ready: ReadyInfo
    hot_page: int  # the hot page injected: the first of the last thread's share
    hot_paddr: int
    control_pass: ConsoleLine | None  # first "V" after READY: nothing injected yet
    lines_before_injection: list[ConsoleLine]
    hot: Injection
    zero: Injection
    lines: list[ConsoleLine]  # everything, once both reporting passes ended


def _inject(console: Console, gdb_socket: Path, paddr: int, data: bytes,
            report_pattern: str) -> Injection:
    since = len(console.lines())
    gdbstub.write_guest_physical(gdb_socket, paddr, data, timeout_s=10.0)
    at = time.monotonic()
    report = console.wait_for(report_pattern, WORKLOAD.verify_deadline_s, since)
    closing = None
    if report:
        log.info("reported %.2f s after the injection: %s", report.host_time - at, report.text)
        after = next(i for i, line in enumerate(console.lines()) if line is report)
        closing = console.wait_for(VERIFY, WORKLOAD.verify_deadline_s, after)
    return Injection(at, report, closing)


@pytest.fixture(scope="module", params=[1, 2], ids=["1vcpu", "2vcpus"])
def scenario(patched_bin: Path, tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest, run_record: Record) -> Iterator[Scenario]:
    vcpus = request.param
    workload = replace(WORKLOAD, threads=vcpus)
    workdir = tmp_path_factory.mktemp("integrity")
    gdb_socket = workdir / "gdb.sock"
    config = guest_config(patched_bin, workload, workdir, "guest")
    config.vcpus = vcpus
    # QEMU 7.2 parses -gdb as a chardev, so the legacy "unix:" spelling works.
    config.extra_args = ["-gdb", f"unix:{gdb_socket},server=on,wait=off"]
    with VM(config, "guest", workdir, record=run_record) as vm:
        console = vm.console
        assert console
        wait_ready(vm)
        ready_line = console.wait_for(READY, 0.0)
        assert ready_line
        ready = parse_ready(ready_line.text)
        assert (ready.threads, ready.cpus) == (vcpus, vcpus), ready_line.text
        shares = thread_shares(console.lines())
        if vcpus == 1:
            hot_page, hot_paddr = 0, ready.hot_paddr0
        else:  # the last thread's first page: neither the main thread's nor page 0
            assert [s.cpu for s in shares] == list(range(vcpus)), shares
            hot_page, hot_paddr = shares[-1].first, shares[-1].paddr
            assert hot_page > 0 and hot_paddr, shares
        # The pass that starts at READY: the sweep has just left page 0 when
        # its "V" line comes, and comes back to it one sweep later.
        control = console.wait_for(VERIFY, WORKLOAD.verify_deadline_s,
                                   console.lines().index(ready_line))
        before = console.lines()
        # No line marks the sweep leaving page 0; at 1 MiB/s it is 25 pages
        # past it after 0.1 s, and 3.9 s from coming back to it (4 MiB owned).
        time.sleep(0.1)
        hot = _inject(console, gdb_socket, hot_paddr, HOT_GARBAGE,
                      rf"^ml:C set=hot page={hot_page} paddr=0x{hot_paddr:x} ")
        zero = _inject(console, gdb_socket, ready.zero_paddr0 + ZERO_GARBAGE_OFFSET,
                       ZERO_GARBAGE, rf"^ml:C set=zero page=0 paddr=0x{ready.zero_paddr0:x} ")
        # The guest ran on through the gdb attaches and detaches.
        assert console.wait_for(r"^ml:H ", 5.0, len(console.lines())), "guest stopped"
        yield Scenario(vcpus, vm.console_path, ready_line, ready, hot_page, hot_paddr,
                       control, before, hot, zero, console.lines())


def test_ready_gives_distinct_page_aligned_addresses(scenario: Scenario) -> None:
    hot, zero = scenario.ready.hot_paddr0, scenario.ready.zero_paddr0
    assert hot and zero and hot != zero, scenario.ready
    assert hot % PAGE_BYTES == 0 and zero % PAGE_BYTES == 0, scenario.ready


def test_untouched_guest_completes_a_clean_pass(scenario: Scenario) -> None:
    assert scenario.control_pass, f"no verify pass (console log: {scenario.console_path})"
    m = re.match(VERIFY, scenario.control_pass.text)
    assert m and int(m.group(2)) == WORKLOAD.owned_pages and m.group(3) == "0", m
    report = read_console(scenario.lines_before_injection, after=scenario.ready_line.host_time)
    assert report.bad_pages == 0 and report.corrupt_pages == [], report
    assert not report.kernel_errors, report


def check_injection(injection: Injection, set_name: str, index: int, paddr: int,
                    detail: str) -> None:
    assert injection.report, (f"no ml:C line for {set_name} page {index} within"
                              f" {WORKLOAD.verify_deadline_s:.1f} s")
    page = parse_corrupt(injection.report.text)
    assert (page.set_name, page.page, page.paddr) == (set_name, index, paddr)
    assert detail in page.detail, page
    assert injection.report.host_time - injection.at < WORKLOAD.verify_deadline_s
    # The pass that found the page counts it.
    assert injection.closing, "the pass that reported the page never ended"
    m = re.match(VERIFY, injection.closing.text)
    assert m and int(m.group(3)) >= 1, injection.closing


def test_corrupt_hot_page_is_caught_before_its_rewrite(scenario: Scenario) -> None:
    # Rewritten before the sweep came back: caught by the check before the rewrite.
    garbage = 0xA5A5A5A5A5A5A5A5
    check_injection(scenario.hot, "hot", scenario.hot_page, scenario.hot_paddr,
                    f"got_index={garbage} got_gen={garbage} by=rewrite")


def test_nonzero_zero_page_is_caught_by_the_sweep(scenario: Scenario) -> None:
    check_injection(scenario.zero, "zero", 0, scenario.ready.zero_paddr0,
                    "nonzero_word=128 got=0x5a5a5a5a5a5a5a5a by=sweep")


def test_corrupt_pages_make_the_console_report_corrupt(scenario: Scenario) -> None:
    report = read_console(scenario.lines, after=scenario.hot.at)
    assert {(p.set_name, p.page) for p in report.corrupt_pages} >= {
        ("hot", scenario.hot_page), ("zero", 0)}
    assert report.bad_pages >= 2
    assert not report.memory_verified



# Rewrites and sweeps as fast as a TCG guest here keeps up with, on a hot set
# small enough that the sweep meets a page its owner is rewriting on the other
# vCPU many times a second. With the sweep's retry taken out of the workload
# (sweep_hot without its sequence-count checks), 20 s of this reported 62
# false corruptions, pages read half in one generation and half in the next;
# with it, none.
RACE_WORKLOAD = Workload(hot_set_mib=2, dirty_rate_mib=200, verify_rate_mib=200, threads=2)
RACE_S = 15.0


def test_the_sweep_raises_no_false_alarm_on_pages_another_vcpu_rewrites(
        patched_bin: Path, tmp_path: Path, run_record: Record) -> None:
    config = guest_config(patched_bin, RACE_WORKLOAD, tmp_path, "race")
    config.vcpus = 2
    with VM(config, "race", tmp_path, record=run_record) as vm:
        assert vm.console
        wait_ready(vm)
        ready = vm.console.wait_for(READY, 0.0)
        assert ready and parse_ready(ready.text).threads == 2
        time.sleep(RACE_S)
        report = read_console(vm.console.lines(), after=ready.host_time)
    assert report.bad_pages == 0 and report.corrupt_pages == [], report.corrupt_pages[:4]
    assert not report.kernel_errors, report.kernel_errors
    # The race was run, with enough power to catch a broken retry: at the
    # pace asked (2 MiB at 200 MiB/s) RACE_S allows 1500 passes, and without
    # the retry false alarms came at 62 in 20 s. At a fifth of that pace (a
    # busy host) 300 passes still expect 62 x 15/20 x 0.2 = 9 false alarms
    # from a broken retry: the chance of none is e^-9, about 1e-4.
    assert report.verify_passes >= 300, report.verify_passes
    rates = sorted(report.dirty_bytes_per_s)
    assert rates and rates[len(rates) // 2] >= 0.2 * 200 * 2**20, rates
