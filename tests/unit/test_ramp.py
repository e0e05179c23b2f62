"""KubeVirt's downtime ramp (VEP 291) as miglab drives it: when it raises, to what."""
from __future__ import annotations

import pytest

from miglab import ramp, scenario
from miglab.ramp import DowntimeRamp, RampDriver
from miglab.result import RampRecord, RampStep, Sample


def active(t_s: float, iteration: int) -> Sample:
    return Sample(t_s=t_s, status="active", dirty_sync_count=iteration)


def test_the_vep_defaults_climb_150_to_1050_in_7_equal_steps() -> None:
    r = DowntimeRamp()
    assert [r.limit_ms(i) for i in range(9)] == [150, 279, 407, 536, 664, 793, 921, 1050, 1050]


def test_it_waits_for_the_start_iteration_then_for_each_cooldown() -> None:
    driver = RampDriver(DowntimeRamp())
    decided = [driver.decide(active(t / 10, 1 if t < 50 else 2 if t < 80 else 3 + t // 50))
               for t in range(0, 700)]
    raises = [(i / 10, v) for i, v in enumerate(decided) if v is not None]
    # iteration 3 at 8.0 s; then every 10 s until the ceiling, never beyond
    assert raises == [(8.0, 279), (18.0, 407), (28.0, 536), (38.0, 664), (48.0, 793),
                      (58.0, 921), (68.0, 1050)]
    assert [c.iteration for c in driver.changes][:2] == [4, 6]
    record = RampRecord(150, [RampStep(c.t_s, c.iteration, c.limit_ms) for c in driver.changes])
    assert record.limit_at(20.0) == 407 and record.limit_at(1.0) == 150


def test_nothing_happens_outside_an_active_migration() -> None:
    driver = RampDriver(DowntimeRamp())
    assert driver.decide(Sample(t_s=30, status="completed", dirty_sync_count=9)) is None
    assert driver.limit_ms == 150


def test_the_scenario_starts_at_the_ramps_initial_limit_and_keeps_the_users() -> None:
    s = scenario.parse({"downtime-ramp": "on", "downtime-limit": "300"})
    assert s.migration().downtime_limit_ms == 150
    assert s.downtime_limit_ms == 300
    assert scenario.parse({}).downtime_ramp is None
    assert scenario.parse({"downtime-ramp": "steps=4,ceiling_ms=700"}).downtime_ramp == \
        DowntimeRamp(steps=4, ceiling_ms=700)


@pytest.mark.parametrize("text,why", [
    ("sometimes", "expected off, on"),
    ("steps=two", "steps takes a number"),
    ("initial_ms=900,ceiling_ms=800", "at most ceiling_ms 800"),
    ("cooldown_s=inf", "must be finite"),
    ("ceiling_ms=3000000", "above QEMU's downtime-limit maximum"),
    ("steps=3,steps=4", "expected off, on"),
])
def test_bad_ramps_are_refused_naming_the_input(text: str, why: str) -> None:
    with pytest.raises(scenario.ScenarioError, match=f"--downtime-ramp '{text}'.*{why}"):
        scenario.parse({"downtime-ramp": text})


def test_off_is_no_ramp() -> None:
    assert ramp.parse("off", "--downtime-ramp") is None
