"""How many times a check that can fail by chance is tried, from recorded runs
(and the recording of those runs).

A check whose outcome varies from run to run (a bug that shows in most
runs, a pause that lands within a bound in most) is recorded over
independent runs first. With none of n recorded runs failing, the per-run
failure rate is below 1 - 0.05^(1/n) at 95% confidence (one-sided); a
test then tries up to the fewest times that bring the odds of all its
tries failing under its budget, and says how many it used.
"""
from __future__ import annotations

import datetime
import json
import math
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def record(path: Path, once: list[str], runs: int, outcome: Callable[[dict[str, Any]], str]
           ) -> None:
    """Append @runs independent runs to @path (JSON lines): each is @once with a
    fresh temporary directory appended, in a process of its own, printing its
    row as its last line; the row gets the commit and date, and @outcome's
    word for it is printed."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=path.parent).stdout.strip()
    for n in range(1, runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([*once, tmp], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"run {n} could not run: {out.stderr[-2000:]}")
        row = dict(json.loads(out.stdout.splitlines()[-1]), commit=commit,
                   date=datetime.date.today().isoformat())
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"run {n}/{runs}: {outcome(row)}", flush=True)
