"""The link check's rule for a low reading (the transfers themselves are in tests/lab)."""
from __future__ import annotations

from pathlib import Path

import pytest

from miglab import ownership
from miglab.link import Link, LinkCheck, LinkConfig
from miglab.ownership import ProcessId, Record

RATE_BPS = 1_000_000_000


def check_with_readings(monkeypatch: pytest.MonkeyPatch, *ratios: float) -> tuple[LinkCheck, int]:
    """What measure() returns when the transfers read @ratios of the rate, in turn,
    and how many transfers it made."""
    readings = iter(ratios)
    made = []

    def goodput(seconds: float, port: int) -> LinkCheck:
        made.append(port)
        return LinkCheck(RATE_BPS, next(readings) * RATE_BPS)

    # nothing is made before setup(): a record that is never written
    unused = Record(Path("/nonexistent/miglab-unused.json"), ProcessId.self(),
                    ownership.pid_namespace())
    link = Link(LinkConfig(RATE_BPS), record=unused)
    monkeypatch.setattr(link, "_goodput", goodput)
    return link.measure(), len(made)


def test_a_usual_reading_is_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    check, transfers = check_with_readings(monkeypatch, 0.96)
    assert (check.ratio, transfers) == (0.96, 1)


def test_a_low_reading_is_taken_again_and_the_better_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    check, transfers = check_with_readings(monkeypatch, 0.82, 0.96)
    assert (check.ratio, transfers) == (0.96, 2)
    # a second low reading does not replace a better first one
    check, transfers = check_with_readings(monkeypatch, 0.85, 0.84)
    assert (check.ratio, transfers) == (0.85, 2)
