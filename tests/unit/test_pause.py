"""The guest's pause: the blackout's error bound, the verdict on it, and its
phases from QEMU's downtime checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest

from miglab import phases, verdict
from miglab.guest import Blackout, blackout


def test_the_error_bound_is_the_heartbeats_spacing_on_each_side() -> None:
    before = [0.00, 0.01, 0.02, 0.045]  # the source's: gaps 10, 10, 25 ms
    after = [0.400, 0.412, 0.422]  # the destination's: gaps 12, 10 ms
    seen = blackout(before, after, 10)
    assert seen is not None
    assert seen.ms == pytest.approx(355.0)
    assert seen.error_ms == pytest.approx(25.0 + 12.0)
    assert seen.at_least_ms == pytest.approx(318.0)
    assert (seen.last_before_s, seen.first_after_s) == (0.045, 0.400)


def test_the_error_bound_is_at_least_the_heartbeat_period_each_side() -> None:
    seen = blackout([1.0], [1.3], 10)
    assert seen is not None and seen.error_ms == pytest.approx(20.0)
    assert blackout([], [1.3], 10) is None


@pytest.mark.parametrize("ms,error,limit,over", [
    (362.0, 40.0, 300, True),  # at least 322 ms
    (333.0, 40.0, 300, False),  # at least 293 ms: not certainly over
    (300.0, 0.0, 300, False),  # at the limit is within it
    (None, None, 300, None),  # no blackout seen
])
def test_paused_over_limit_only_when_certain(ms: float | None, error: float | None,
                                             limit: int, over: bool | None) -> None:
    assert verdict.paused_over_limit(ms, error, limit) is over


def trace(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_checkpoints_read_on_the_monotonic_clock(tmp_path: Path) -> None:
    path = trace(tmp_path, "src-trace.log", [
        "1234@1000.100000:vmstate_downtime_checkpoint src-downtime-start",
        "1234@1000.350500:vmstate_downtime_checkpoint src-iterable-saved",
        "1234@1000.999999:other_event x=1",
        "not a trace line",
        "1234@1001.000000:vmstate_downtime_checkpoint src-iterable-saved",  # a second one
    ])
    found = phases.read_checkpoints(path, wall_minus_monotonic_s=900.0)
    assert found == {"src-downtime-start": pytest.approx(100.1),
                     "src-iterable-saved": pytest.approx(100.3505)}
    assert phases.read_checkpoints(tmp_path / "none.log", 0.0) == {}


def test_checkpoints_read_in_the_stamp_of_qemu_10_2(tmp_path: Path) -> None:
    # 1000.1 s after the epoch, in UTC, as QEMU 10.2.2 stamps its log lines
    path = trace(tmp_path, "dst-trace.log", [
        "1970-01-01T00:16:40.100000Z vmstate_downtime_checkpoint dst-precopy-loadvm-completed",
        "1970-01-01T00:16:40.350500Z other_event x=1",
    ])
    assert phases.read_checkpoints(path, wall_minus_monotonic_s=900.0) == \
        {"dst-precopy-loadvm-completed": pytest.approx(100.1)}


def test_the_phases_add_up_to_the_blackout() -> None:
    points = {"src-downtime-start": 10.005, "src-iterable-saved": 10.205,
              "src-non-iterable-saved": 10.215, "dst-precopy-loadvm-completed": 10.230,
              "dst-precopy-bh-vm-started": 10.260}
    cut = phases.cut(10.0, 10.270, points)
    assert [p.name for p in cut] == [name for _, name in phases.PHASES] + [phases.LAST_PHASE]
    assert [p.ms for p in cut] == pytest.approx([5.0, 200.0, 10.0, 15.0, 30.0, 10.0])
    assert sum(p.ms for p in cut) == pytest.approx(270.0)


def test_no_phases_without_every_checkpoint() -> None:
    assert phases.cut(10.0, 10.3, {"src-downtime-start": 10.1}) == []


# The phases of a traced run (upstream 10.0, docs/usage.md): 234 ms of
# pause, QEMU's downtime 178 ms, RAM's last pass 177 ms of it.
TRACED = [phases.Phase("guest's last heartbeat to the source stopping it", 9.0),
          phases.Phase(phases.RAM_PHASE, 177.0),
          phases.Phase("source: device state", 1.0),
          phases.Phase("destination: the rest of the stream loaded", 26.0),
          phases.Phase("destination: resuming the guest (announce, VM start)", 0.2),
          phases.Phase(phases.LAST_PHASE, 20.8)]


def test_the_advice_takes_what_the_limit_does_not_bound_off_the_pause_asked_for() -> None:
    # traced: all but RAM's last pass; the error bound kept free; the
    # link's rate declared (1 Gbit/s) for 950 Mbit/s carried: the RAM part
    # may run 5% over the limit: (300 - 57 - 24) / 1.0526 = 208.05
    a = verdict.pause_advice(Blackout(234.0, 24.0, 0, 0), 178, phases.ram_pass_ms(TRACED), 300,
                             950e6, 1e9)
    assert a is not None
    assert (a.unbounded_ms, a.margin_ms, a.overassumed, a.advised_limit_ms) == \
        (57.0, 24.0, 1.053, 208)
    assert "set downtime-limit to 208 ms" in verdict.advice_reason(a)
    # 7.2, no checkpoints: the pause less QEMU's downtime; an automatic
    # mode's value under the link scales nothing: 300 - 35 - 20
    a = verdict.pause_advice(Blackout(290.0, 20.0, 0, 0), 255, phases.ram_pass_ms([]), 300,
                             957e6, 884e6)
    assert a is not None and (a.unbounded_ms, a.advised_limit_ms) == (35.0, 245)


def test_no_limit_is_advised_when_the_rest_of_the_pause_alone_fills_it() -> None:
    # the destination held 1.2 s after the source completed (test_pause_verdict.py)
    a = verdict.pause_advice(Blackout(1450.0, 25.0, 0, 0), 190, None, 600, 950e6, 1e9)
    assert a is not None and a.advised_limit_ms is None
    assert "no downtime-limit keeps the pause within 600 ms" in verdict.advice_reason(a)
    assert verdict.pause_advice(None, 190, None, 300, 950e6, 1e9) is None
