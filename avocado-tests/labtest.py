"""Base class of the avocado suites: the lab's leftover check and record keeping.

Not a test file itself. Every test records its result JSON, QEMU's stderr
and both serial logs in its output directory (the lab's log directory is
self.outputdir), and after every test the suite checks that nothing it
started is left: nothing that a run's record names (network namespace,
and so no veth or qdisc; QEMU or probe process; private directory) is
still there. A host's own VMs and namespaces do not count.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from avocado import Test

from miglab import artifacts, leftovers, migration, ownership, runner, scenario
from miglab.lab import Lab
from miglab.migration import Outcome
from miglab.result import Result
from miglab.verdict import Integrity, Status

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


class LabTest(Test):
    def setUp(self) -> None:
        # Lab tests measure time and bandwidth on a 2-core machine and check
        # for leftovers: they must not overlap, even when avocado runs tasks
        # in parallel. The lock lives in miglab's private state directory.
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(ownership.lab_lock())
        self._before = leftovers.snapshot()
        self.run_record = ownership.current()  # what the test makes is recorded here
        for choice in ("stock", "patched"):
            artifacts.qemu_binary(choice)  # a missing build is an error, not a skip
        self.logs = Path(self.outputdir)

    def tearDown(self) -> None:
        left = leftovers.snapshot().new_since(self._before)
        self._lock.close()  # releases the lab for the next test
        if left:
            self.fail(f"left behind: {left}")

    def scenario(self, shipped: str | None = None, **values: object) -> scenario.Scenario:
        """scenarios/@shipped.yaml, as a user runs it, with only @values changed
        (the defaults' if no file is named)."""
        base = scenario.load_yaml(SCENARIOS / f"{shipped}.yaml") if shipped else None
        return scenario.parse({k: str(v) for k, v in values.items()}, base)

    def record(self, result: Result, name: str = "result") -> Result:
        result.write_json(self.logs / f"{name}.json")
        self.log.info("%s: %s", name, "; ".join([result.status, result.integrity,
                                                  *result.reasons]))
        return result

    def run_scenario(self, s: scenario.Scenario) -> Result:
        return self.record(runner.run(s, self.logs, self.run_record))

    def assert_completed(self, result: Result) -> None:
        """The migration completed, the destination runs, every page verified."""
        self.assertEqual(result.status, Status.COMPLETED, result.reasons)
        self.assertEqual(result.integrity, Integrity.OK, result.reasons)
        self.assertEqual(result.destination_alive, True)

    def watch(self, env: Lab, started: float, deadline_s: float) -> Outcome:
        """Follow a migration started by the test until it ends or the deadline."""
        samples: list = []
        info = migration.follow(lambda: env.src.command("query-migrate"), started,
                                deadline_s, samples)
        return migration.decide(samples, info, time.monotonic())
