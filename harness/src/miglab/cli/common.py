"""What the commands share: running one scenario to a result, the scenario
from the options, and the log directories an interruption must name."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .. import ownership, report, runner, scenario
from ..errors import LabError
from ..lab import Progress
from ..result import Result
from ..vm import ExecuteError

# Log directories the user asked for, named after an interruption: they
# hold what the run logged until then, and no result.
KEPT_LOGS: list[Path] = []


def scenario_of(args: argparse.Namespace, **extra: str) -> scenario.Scenario:
    base = scenario.load_yaml(args.scenario) if args.scenario else None
    given = {opt: getattr(args, opt.replace("-", "_"), None) for opt in scenario.FIELDS}
    given.update(extra)
    return scenario.parse({k: v for k, v in given.items() if v is not None}, base)


def run_one(s: scenario.Scenario, logs: Path, live: report.LiveProgress,
            record: ownership.Record) -> Result | None:
    progress = Progress(stage=live.stage, sample=live.sample)
    try:
        return runner.run(s, logs, record, progress,
                          on_link_measured=lambda bps: setattr(live, "link_bps", bps))
    except LabError as err:
        live.stage(f"error: {err}")
        if err.evidence:
            print(textwrap.indent(err.evidence, "    "), file=sys.stderr)
        return None
    except ExecuteError as err:  # QEMU refused a command; its own words
        live.stage(f"error: QEMU: {err}")
        return None
