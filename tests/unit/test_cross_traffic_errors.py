"""A competing flow that fails: a clear error before the migration, and a
result kept after one that completed."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from miglab import cli, ownership, report, runner, scenario, verdict
from miglab.ownership import ProcessId, Record
from miglab.result import CrossTrafficRecord
from miglab.traffic import FlowError


def test_a_flow_that_fails_ends_the_run_with_one_clear_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def run(*args: object, **kwargs: object) -> None:
        raise FlowError("cross-traffic flow 1: the receiver did not listen on port 5301"
                        " within 15s")
    monkeypatch.setattr(runner, "run", run)
    out = io.StringIO()
    live = report.LiveProgress(out)
    unused = Record(tmp_path / "record.json", ProcessId.self(), ownership.pid_namespace())
    assert cli.common.run_one(scenario.parse({"cross-traffic": "1"}), tmp_path, live,
                              unused) is None
    assert out.getvalue() == ("miglab: error: cross-traffic flow 1: the receiver did not"
                              " listen on port 5301 within 15s\n")


class FlowsThatCannotReport:
    def stop(self) -> list:
        raise FlowError("cross-traffic flow 2: no report within 15s")


def test_flows_that_cannot_report_leave_the_migration_result_standing() -> None:
    env = SimpleNamespace(scenario=scenario.parse({"cross-traffic": "3"}))
    cross = runner._stopped_flows_report(env, FlowsThatCannotReport(), None)  # type: ignore
    assert cross == CrossTrafficRecord(3, error="cross-traffic flow 2: no report within 15s")
    assert verdict.cross_traffic_reasons(cross) == [
        "3 competing flow(s): what they delivered is unknown (cross-traffic flow 2: no"
        " report within 15s)"]
