"""The retry count of a check that can fail by chance, from recorded runs."""
from __future__ import annotations

import pytest

from miglab import odds


def test_thirty_clean_runs_give_three_tries_for_one_in_a_thousand() -> None:
    # 95% bound of the per-run rate: 1 - 0.05^(1/30) = 9.5%; 0.095^3 < 1e-3 < 0.095^2
    assert odds.attempts(30, 0, 1e-3, "r") == 3


def test_more_clean_runs_need_fewer_tries() -> None:
    assert odds.attempts(300, 0, 1e-3, "r") == 2  # 1% per run: 0.01^2 < 1e-3


@pytest.mark.parametrize("runs, failures", [(29, 0), (40, 1)])
def test_too_few_runs_or_any_failure_gives_no_count(runs: int, failures: int) -> None:
    with pytest.raises(odds.OddsError, match="r: "):
        odds.attempts(runs, failures, 1e-3, "r")
