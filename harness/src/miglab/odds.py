"""How many times a check that can fail by chance is tried, from recorded runs.

A check whose outcome varies from run to run (a bug that shows in most
runs, a pause that lands within a bound in most) is recorded over
independent runs first. With none of n recorded runs failing, the per-run
failure rate is below 1 - 0.05^(1/n) at 95% confidence (one-sided); a
test then tries up to the fewest times that bring the odds of all its
tries failing under its budget, and says how many it used.
"""
from __future__ import annotations

import math

from .errors import LabError

MIN_RUNS = 30  # fewer recorded runs bound the rate too loosely to be worth a retry count


class OddsError(LabError):
    """The record cannot support a retry count: too few runs, or a failure in it."""


def attempts(runs: int, failures: int, budget: float, what: str) -> int:
    """Tries that keep the chance of all failing under @budget, from @runs
    recorded runs of which @failures failed (@what names the record)."""
    if failures or runs < MIN_RUNS:
        raise OddsError(f"{what}: {runs} recorded runs, {failures} failed: a retry count"
                        f" needs {MIN_RUNS} or more, none failed")
    rate = 1 - 0.05 ** (1 / runs)
    return math.ceil(math.log(budget) / math.log(rate))
