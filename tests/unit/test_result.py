"""The result model and the driver's verdict logic (no QEMU involved)."""
from __future__ import annotations

from pathlib import Path

import pytest

from miglab import lab, report, runner, scenario
from miglab.migration import MigrationSettings, decide
from miglab.result import (
    CrossTrafficRecord,
    LibvirtRecord,
    RampRecord,
    RampStep,
    Result,
    Sample,
)


def query(status: str, **extra: object) -> dict:
    info = {"status": status, "expected-downtime": 4196,
            "ram": {"remaining": 33554432, "transferred": 9_000_000, "mbps": 64.2,
                    "dirty-pages-rate": 10240, "dirty-sync-count": 3}}
    info.update(extra)
    return info


def test_sample_reads_query_migrate() -> None:
    s = Sample.from_query(1.23456, query("active"))
    assert (s.t_s, s.status, s.remaining_bytes, s.mbps) == (1.235, "active", 33554432, 64.2)
    assert (s.expected_downtime_ms, s.dirty_sync_count) == (4196, 3)


def test_completed_carries_downtime_and_total_time() -> None:
    info = query("completed", downtime=276, **{"total-time": 12400})
    outcome = decide([Sample.from_query(12.4, info)], info, 2.0)
    assert (outcome.status, outcome.downtime_ms, outcome.total_time_ms) == ("completed", 276, 12400)


def test_still_active_at_the_deadline_is_not_converged() -> None:
    info = query("active")
    outcome = decide([Sample.from_query(60, info)], info, 61.0)
    assert outcome.status == "not-converged" and outcome.downtime_ms is None


def test_failed_carries_qemu_error_text() -> None:
    info = query("failed", **{"error-desc": "Unable to write to socket: Broken pipe"})
    outcome = decide([Sample.from_query(3, info)], info, 4.0)
    assert outcome.status == "failed"
    assert outcome.error == "Unable to write to socket: Broken pipe"


def test_settings_leave_the_parameter_out_unless_given() -> None:
    assert "avail-switchover-bandwidth" not in MigrationSettings().parameters()
    params = MigrationSettings(300, 8_000_000, 125_000_000).parameters()
    assert params == {"downtime-limit": 300, "max-bandwidth": 8_000_000,
                      "avail-switchover-bandwidth": 125_000_000}


def test_qemu_auto_turns_on_qemus_tcp_mode_and_declares_nothing() -> None:
    s = scenario.parse({"switchover-bandwidth": "qemu-auto"})
    assert (s.switchover.qemu_auto, s.switchover.auto) == (True, False)
    assert s.switchover.bytes_per_s is None
    params = s.migration().parameters()
    assert params["x-tcp-switchover-bandwidth"] is True
    assert "avail-switchover-bandwidth" not in params
    assert "x-tcp-switchover-bandwidth" not in scenario.parse({}).migration().parameters()


def test_what_qemu_used_at_switchover_is_its_last_word() -> None:
    # QEMU reports it (bytes/s) only with x-tcp-switchover-bandwidth on; the
    # completed answer holds the last update before the switchover. Read
    # under the downstream names, and without the x- (should upstream take it).
    samples = [Sample.from_query(0.2, query("active")),
               Sample.from_query(0.4, query("active", **{
                   "switchover-bandwidth": 1_000_000, "switchover-bandwidth-source": "estimate"})),
               Sample.from_query(2.0, query("completed", **{
                   "x-switchover-bandwidth": 110_000_000,
                   "x-switchover-bandwidth-source": "tcp"}))]
    assert samples[0].switchover_bandwidth_bps is None
    assert runner.qemu_switchover(samples) == (880e6, "tcp")
    assert runner.qemu_switchover(samples[:2]) == (8e6, "estimate")
    assert runner.qemu_switchover(samples[:1]) == (0.0, None)


def test_the_table_says_where_qemus_own_value_came_from() -> None:
    r = Result(status="completed", integrity="ok", downtime_ms=120, observed_blackout_ms=150.0,
               downtime_limit_ms=300, total_time_ms=15000, link_rate_bps=955e6,
               estimated_bandwidth_bps=64e6, switchover_bandwidth_bps=880e6,
               switchover_bandwidth_source="tcp")
    assert "| 880 Mbit/s (QEMU: tcp) |" in report.table([("patched:qemu-auto", r)])
    assert "declared 880 Mbit/s (QEMU: tcp)" in report.summary(r)


def test_result_round_trips_through_json(tmp_path: Path) -> None:
    result = Result(status="completed", integrity="ok", downtime_ms=276,
                    observed_blackout_ms=318.5, downtime_limit_ms=300, total_time_ms=12400,
                    link_rate_bps=955e6, estimated_bandwidth_bps=73e6,
                    switchover_bandwidth_bps=1e9,
                    avail_switchover_bandwidth_bytes_per_s=125_000_000,
                    corrupt_pages=["hot-set page 3 at guest-physical 0x1000 (want_gen=2)"],
                    samples=[Sample.from_query(0.2, query("active"))])
    path = tmp_path / "r.json"
    result.write_json(path)
    assert Result.read_json(path) == result


def test_the_table_shows_shares_only_when_flows_shared_the_link() -> None:
    from miglab import report
    alone = Result(status="completed", integrity="ok", downtime_ms=120,
                   observed_blackout_ms=180.0, downtime_limit_ms=300, total_time_ms=15000,
                   link_rate_bps=950e6, estimated_bandwidth_bps=64e6,
                   switchover_bandwidth_bps=1e9)
    assert "share" not in report.table([("alone", alone)])
    shared = Result(**{**alone.to_dict(), "samples": [], "switchover_bandwidth_bps": 152e6,
                       "cross_traffic": CrossTrafficRecord(3, migration_tcp_bps=162e6)})
    rows = report.table([("alone", alone), ("shared", shared)]).splitlines()
    assert rows[0].endswith("| flows | declared share | migration's TCP share |")
    assert rows[2].endswith("| 0 | 105% | - |")
    assert rows[3].endswith("| 3 | 16% | 17% |")


def _completed(**extra: object) -> Result:
    return Result(status="completed", integrity="ok", downtime_ms=178,
                  observed_blackout_ms=231.0, downtime_limit_ms=300, total_time_ms=11100,
                  link_rate_bps=955e6, estimated_bandwidth_bps=64e6,
                  switchover_bandwidth_bps=1e9, qemu="QEMU 7.2", accel="tcg", **extra)


def test_vcpus_and_what_the_guest_saw_are_in_the_json_and_the_summary(tmp_path: Path) -> None:
    result = _completed(scenario={"vcpus": 2}, guest_threads=2, guest_cpus=2)
    path = tmp_path / "r.json"
    result.write_json(path)
    assert Result.read_json(path) == result
    assert "(QEMU 7.2, tcg, 2 vCPUs, the guest saw 2 and rewrote from 2 threads)" in (
        report.summary(result))
    # one vCPU: the summary as it always was
    assert "(QEMU 7.2, tcg)\n" in report.summary(_completed(scenario={"vcpus": 1},
                                                            guest_threads=1, guest_cpus=1))


def test_the_progress_line_shows_no_expected_downtime_in_the_first_pass() -> None:
    # QEMU reports the downtime limit there: it has measured no dirty rate yet
    first = Sample(t_s=1.0, status="active", expected_downtime_ms=300, dirty_sync_count=1)
    later = Sample(t_s=9.0, status="active", expected_downtime_ms=1573, dirty_sync_count=3)
    assert "expected downtime         -" in report.progress_line(first, 1e9)
    assert "expected downtime   1573 ms" in report.progress_line(later, 1e9)


def test_the_cross_traffic_ramp_and_libvirt_records_come_back_typed_from_json(
        tmp_path: Path) -> None:
    r = Result(status="completed", integrity="ok", downtime_ms=280, observed_blackout_ms=None,
               downtime_limit_ms=300, total_time_ms=9000, link_rate_bps=955e6,
               estimated_bandwidth_bps=64e6, switchover_bandwidth_bps=0,
               cross_traffic=CrossTrafficRecord(3, 955e6, 700e6, [233e6] * 3, 230e6, 0.241),
               downtime_ramp=RampRecord(150, [RampStep(8.0, 4, 279)], 279, {"steps": 7}),
               via="libvirt", libvirt=LibvirtRecord("9.0.0", "qemu:///system", "qemu+tcp://d",
                                                    max_bandwidth_mib_per_s=8,
                                                    job={"downtime": 281}))
    r.write_json(tmp_path / "r.json")
    back = Result.read_json(tmp_path / "r.json")
    assert back == r and back.downtime_ramp and back.downtime_ramp.limit_at(9.0) == 279
    # a result written before the records were typed: {} for none
    old = {**r.to_dict(), "cross_traffic": {}, "downtime_ramp": {}, "libvirt": {}}
    assert Result.from_dict(old).cross_traffic is None and Result.from_dict(old).libvirt is None


def test_kvm_found_unusable_here_is_not_probed_again_by_the_runs_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_local_kvm_unusable", None)

    def tried(*args: object, **kw: object) -> list[str]:
        return [accel for accel, _ in lab.accel_trials(*args, **kw)]  # type: ignore[arg-type]

    assert tried("auto", True) == ["kvm", "tcg"]
    said: list[str] = []
    progress = lab.Progress(stage=said.append, sample=lambda s: None)
    lab.give_up("kvm", "QEMU aborted", "tcg", progress)
    assert tried("auto", True, progress) == ["tcg"]
    assert said[-1] == "KVM unusable on this host (QEMU aborted, found by an earlier run);" \
                       " using TCG"
    assert tried("auto", True, local=False) == ["kvm", "tcg"]  # another host's KVM
    assert tried("kvm", True) == ["kvm"]  # asked for by name: tried, and its error said
    lab.give_up("kvm", "timeout", "tcg", progress, local=False)
    assert lab._local_kvm_unusable == "QEMU aborted"
