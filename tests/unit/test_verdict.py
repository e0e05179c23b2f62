"""The verdict rules, one module for the CLI, the runner, reports and tests."""
from __future__ import annotations

from dataclasses import replace

from miglab import verdict
from miglab.guest import CorruptPage, GuestReport
from miglab.result import CrossTrafficRecord, RampRecord, Result
from miglab.verdict import Integrity, Status


def report(passes: int = 1, bad: int = 0, corrupt: list[CorruptPage] | None = None,
           kernel: list[str] | None = None) -> GuestReport:
    return GuestReport([1.0], passes, bad, [], [], kernel or [], corrupt or [])


def result(status: Status, integrity: Integrity, downtime_ms: int | None) -> Result:
    return Result(status=status, integrity=integrity, downtime_ms=downtime_ms,
                  observed_blackout_ms=None, downtime_limit_ms=300, total_time_ms=None,
                  link_rate_bps=None, estimated_bandwidth_bps=None, switchover_bandwidth_bps=0)


def test_ok_needs_a_whole_checked_pass_no_bad_page_and_a_live_guest() -> None:
    assert verdict.integrity(report(), True) == Integrity.OK
    assert verdict.integrity(report(passes=0), True) == Integrity.NOT_CHECKED
    assert verdict.integrity(report(), False) == Integrity.NOT_CHECKED


def test_any_sign_of_corruption_is_corrupt_even_without_a_pass() -> None:
    page = CorruptPage("hot", 3, 0x1000, "want_gen=2 got_gen=1")
    assert verdict.integrity(report(passes=0, corrupt=[page]), True) == Integrity.CORRUPT
    assert verdict.integrity(report(bad=1), True) == Integrity.CORRUPT
    assert verdict.integrity(report(kernel=["Kernel panic"]), False) == Integrity.CORRUPT


def test_the_downtime_allowance_is_ten_percent() -> None:
    assert verdict.within_limit(330, 300) and not verdict.within_limit(331, 300)


def test_a_run_passes_only_completed_intact_and_within_the_limit() -> None:
    assert verdict.passed(result(Status.COMPLETED, Integrity.OK, 300))
    assert not verdict.passed(result(Status.COMPLETED, Integrity.OK, 400))
    assert not verdict.passed(result(Status.COMPLETED, Integrity.NOT_CHECKED, 100))
    assert not verdict.passed(result(Status.NOT_CONVERGED, Integrity.OK, None))


def test_statuses_read_back_from_json_compare_equal() -> None:
    # results written by older runs hold plain strings
    assert verdict.passed(result("completed", "ok", 100))  # type: ignore[arg-type]
    assert str(Status.NOT_CONVERGED) == "not-converged"


def test_corrupt_pages_are_named_with_their_address() -> None:
    page = CorruptPage("zero", 7, 0x2a000, "nonzero_word=3")
    reasons = verdict.guest_reasons(report(corrupt=[page]), "destination", True)
    assert any("zero-set page 7 at guest-physical 0x2a000" in r for r in reasons), reasons


def test_cross_traffic_reasons_give_the_share_against_a_fair_one() -> None:
    cross = CrossTrafficRecord(3, link_goodput_alone_bps=955e6, flows_goodput_bps=883e6,
                               migration_tcp_bps=230e6, migration_share=0.241)
    reasons = verdict.cross_traffic_reasons(cross)
    assert reasons[0] == ("3 competing flow(s) carried 883 Mbit/s on a link that carried"
                          " 955 Mbit/s alone")
    assert reasons[1].endswith("is 24% of the link alone (1/4 would be 25%)")
    assert verdict.cross_traffic_reasons(replace(cross, migration_tcp_bps=None))[1] == (
        "the migration connection's TCP samples agreed on no rate")


def test_a_ramped_run_is_judged_against_the_limit_in_force_and_says_the_users() -> None:
    reasons = verdict.ramp_reasons(640, 664, 300, 4)
    assert reasons == [
        "downtime 640 ms within the limit in force at switchover, 664 ms (the downtime"
        " ramp's, after 4 raise(s))",
        "downtime 640 ms exceeds the --downtime-limit asked for, 300 ms"]
    r = Result(status="completed", integrity="ok", downtime_ms=640, observed_blackout_ms=700.0,
               downtime_limit_ms=300, total_time_ms=40000, link_rate_bps=500e6,
               estimated_bandwidth_bps=480e6, switchover_bandwidth_bps=0,
               downtime_ramp=RampRecord(150, limit_at_switchover_ms=664))
    assert verdict.limit_in_force_ms(r) == 664 and verdict.passed(r)
    r.downtime_ramp = None
    assert not verdict.passed(r)
