"""Base class of the avocado suites: the lab's leftover check and record keeping.

Not a test file itself. Every test records its result JSON, QEMU's stderr
and both serial logs in its output directory (the lab's log directory is
self.outputdir), and after every test the suite checks that nothing it
started is left: no miglab network namespace (and so no veth or qdisc),
no QEMU process, no private temp directory.
"""
from __future__ import annotations

import fcntl
import time
from pathlib import Path

from avocado import Test

from miglab import artifacts, leftovers, migration, runner, scenario
from miglab.migration import Outcome
from miglab.result import Result

# Lab tests measure time and bandwidth on a 2-core machine and check for
# leftovers: they must not overlap, even when avocado runs tasks in parallel.
LOCK_PATH = "/run/lock/miglab-lab.lock"


class LabTest(Test):
    def setUp(self) -> None:
        self._lock = open(LOCK_PATH, "w")  # noqa: SIM115 (held until tearDown)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._before = leftovers.snapshot()
        for choice in ("stock", "patched"):
            artifacts.qemu_binary(choice)  # a missing build is an error, not a skip
        self.logs = Path(self.outputdir)

    def tearDown(self) -> None:
        left = leftovers.snapshot().new_since(self._before)
        self._lock.close()  # releases the lab for the next test
        if left:
            self.fail(f"left behind: {left}")

    def scenario(self, **values: object) -> scenario.Scenario:
        return scenario.parse({k: str(v) for k, v in values.items()})

    def record(self, result: Result, name: str = "result") -> Result:
        result.write_json(self.logs / f"{name}.json")
        self.log.info("%s: %s", name, "; ".join([result.status, result.integrity,
                                                  *result.reasons]))
        return result

    def run_scenario(self, s: scenario.Scenario) -> Result:
        return self.record(runner.run(s, self.logs))

    def watch(self, env: runner.Lab, started: float, deadline_s: float) -> Outcome:
        """Monitor a migration started by the test until it ends or the deadline."""
        samples, info = migration.monitor(env.src, started, deadline_s)
        return migration.decide(samples, info, time.monotonic(), started)
