"""Whole `miglab run`s, as a user runs them: the verdicts, the JSON, the cleanup."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import CAPPED_YAML, ctrl_c_reaches_it, miglab_namespaces, qemu_pids

from miglab.verdict import within_limit

MIGLAB = [sys.executable, "-m", "miglab.cli"]
# the shipped capped scenario, under TCG (no KVM probe: 45 s where it fails)
CAPPED = ["--scenario", str(CAPPED_YAML), "--accel", "tcg"]


def miglab_run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    rc, result, _ = miglab_run_said(tmp_path, *args)
    return rc, result


def miglab_run_said(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """Its exit status, its result and what it said on stderr."""
    out = tmp_path / "result.json"
    proc = subprocess.run([*MIGLAB, "run", *CAPPED, *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert out.exists(), proc.stderr[-2000:]
    return proc.returncode, json.loads(out.read_text()), proc.stderr


def test_patched_with_the_link_rate_declared_completes_within_the_limit(tmp_path: Path) -> None:
    # A 12 MiB hot set: sending all of it at the link's goodput (about
    # 119 MB/s) takes 12.58 MB / 119 MB/s = 105 ms, a third of the 330 ms
    # the limit allows, so a busy host cannot push it over. (The showcase's
    # 32 MiB takes 281 ms of the 330 at best.)
    rc, result = miglab_run(tmp_path, "--qemu", "patched", "--switchover-bandwidth", "125M",
                            "--hot-set", "12M", "--timeout", "60")
    assert result["status"] == "completed"
    assert result["integrity"] == "ok"
    assert within_limit(result["downtime_ms"], 300)
    assert result["destination_alive"] is True
    # The heartbeat gap seen from outside includes at least QEMU's own downtime.
    assert result["observed_blackout_ms"] >= result["downtime_ms"] * 0.9
    assert 0.8e9 <= result["link_rate_bps"] <= 1.2e9
    assert result["switchover_bandwidth_bps"] == 1e9
    # exit 0, or 3 when the guest was seen paused longer than the limit (its
    # blackout, 35-110 ms above QEMU's downtime here, can be: 322 ms once)
    assert result["samples"] and rc == (3 if result["paused_over_limit"] else 0)


def test_two_vcpus_with_the_link_rate_declared_complete_intact(tmp_path: Path) -> None:
    # The same guest and link as above, rewritten from two threads, one per vCPU.
    rc, result = miglab_run(tmp_path, "--qemu", "patched", "--vcpus", "2",
                            "--switchover-bandwidth", "125M", "--hot-set", "12M",
                            "--timeout", "60")
    assert result["status"] == "completed", result["reasons"]
    assert result["integrity"] == "ok", result["corrupt_pages"]
    assert within_limit(result["downtime_ms"], 300), result["reasons"]
    assert result["destination_alive"] is True
    assert rc == (3 if result["paused_over_limit"] else 0)  # as above
    # QEMU was given two vCPUs (the workload then pins a rewriting thread
    # to each, and refuses to start otherwise).
    logs = tmp_path / "result-logs"
    assert "-smp 2 " in (logs / "src-qemu.log").read_text().splitlines()[0]
    # The threads' shares of the rate add up to the rate asked, 40 MiB/s.
    rates = [int(m.group(1)) for m in re.finditer(r"^ml:R \d+ dirty_bps=(\d+) ",
                                                  (logs / "src-console.log").read_text(),
                                                  re.MULTILINE)]
    assert rates and abs(sorted(rates)[len(rates) // 2] - 40 * 2**20) < 2 * 2**20, rates


def test_each_side_can_run_its_own_build(tmp_path: Path) -> None:
    # patched source (it tracks TCG writes and knows the parameter) to a stock
    # destination: the same 7.2 migration stream.
    rc, result = miglab_run(tmp_path, "--qemu", "patched", "--dst-qemu", "stock",
                            "--switchover-bandwidth", "125M", "--hot-set", "12M")
    src, dst = result["qemu"].split(" -> ")
    assert "patched/build" in src and "stock/build" in dst
    assert result["status"] == "completed" and result["integrity"] == "ok", result["reasons"]


def test_stock_keeps_iterating_and_the_source_survives(tmp_path: Path) -> None:
    # --accel auto (the shipped scenarios' default): on a host whose KVM
    # cannot run the guest, one line says so, without QEMU's own words
    rc, result, said = miglab_run_said(tmp_path, "--qemu", "stock", "--timeout", "20",
                                       "--accel", "auto")
    if result["accel"] == "tcg" and os.path.exists("/dev/kvm"):
        fallback = [line for line in said.splitlines() if "KVM unusable on this host" in line]
        assert len(fallback) == 1 and "using TCG" in fallback[0], said[-2000:]
        assert "Assertion" not in said, said[-2000:]
    assert result["status"] == "not-converged"
    assert result["source_alive"] is True and result["integrity"] == "ok"
    # QEMU's estimate is about the 64 Mbit/s cap, far below the link.
    assert result["estimated_bandwidth_bps"] < 0.2 * result["link_rate_bps"]
    assert rc == 1


def test_bad_argument_is_one_line_and_starts_nothing() -> None:
    before_ns, before_qemu = miglab_namespaces(), qemu_pids()
    proc = subprocess.run([*MIGLAB, "run", "--link-rate", "fast"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--link-rate 'fast'" in proc.stderr
    assert miglab_namespaces() == before_ns and qemu_pids() == before_qemu


def test_ctrl_c_mid_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    before_ns, before_qemu = miglab_namespaces(), qemu_pids()
    proc = subprocess.Popen([*MIGLAB, "run", *CAPPED, "--qemu", "stock", "--timeout", "120",
                             "--logs", str(tmp_path)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_reaches_it)
    assert proc.stderr
    deadline = time.monotonic() + 180
    for line in proc.stderr:  # progress lines: the migration has been active a while
        if re.match(r"\s+[3-9]\.\d+s active ", line) or time.monotonic() > deadline:
            break
    assert qemu_pids() - before_qemu, "no QEMU was running mid-migration"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert miglab_namespaces() == before_ns
    assert qemu_pids() == before_qemu


def test_compare_runs_every_variant_to_a_verdict_and_exits_0(tmp_path: Path) -> None:
    # a variant that fails its verdict (stock never converges) is a row of the
    # table, not an error of the command (miglab --help's exit statuses)
    out = tmp_path / "out"
    proc = subprocess.run([*MIGLAB, "compare", *CAPPED, "--hot-set", "12M", "--timeout", "8",
                           "--variant", "stock:none", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 variant(s), at most about" in proc.stderr
    result = json.loads((out / "stock-none.json").read_text())
    assert result["status"] == "not-converged"
    assert "not-converged" in (out / "table.md").read_text()
    # readable on its own: the table, the plots and the reasons
    summary = (out / "summary.md").read_text()
    assert (out / "table.md").read_text().strip() in summary
    assert "(comparison.png)" in summary and "(stock-none.png)" in summary
    assert all(f"- {reason}" in summary for reason in result["reasons"])
