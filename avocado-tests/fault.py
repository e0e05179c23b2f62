"""Faults in the middle of a migration: the source guest must come through.

Each test starts the capped pre-copy scenario with the parameter unset, so
the migration is still iterating when the fault comes (3 s in).

:avocado: tags=fault
"""
from __future__ import annotations

import time

from labtest import LabTest

from miglab import migration, runner
from miglab.deadline import wait_for
from miglab.lab import Lab, lab
from miglab.migration import MigrationSettings
from miglab.verdict import Integrity, Status
from miglab.vm import ExecuteError

FAULT_AFTER_S = 3.0


class MidMigrationFault(LabTest):
    """
    :avocado: tags=fault
    """

    def setUp(self) -> None:
        super().setUp()
        self.s = self.scenario("capped-precopy", **{"qemu": "patched", "hot-set": "12M",
                                                    "accel": "tcg"})

    def _start(self, env: Lab) -> float:
        migration.configure(env.src, env.dst, self.s.migration())
        started = migration.start(env.src, env.dst, env.uri)
        # well inside the bulk pass: the migration has been active for a while
        wait_for(lambda: time.monotonic() - started >= FAULT_AFTER_S and
                 env.src.command("query-migrate")["status"] == "active",
                 FAULT_AFTER_S + 10, "the migration to be active")
        return started

    def _assert_source_intact(self, result) -> None:
        self.assertEqual(result.source_alive, True, result.reasons)
        self.assertEqual(result.integrity, Integrity.OK, result.reasons)

    def test_link_cut_fails_the_migration_and_a_retry_completes(self) -> None:
        with lab(self.s, self.logs, self.run_record) as env:
            started = self._start(env)
            env.link.set_up(False)
            outcome = self.watch(env, started, deadline_s=90)
            result = self.record(runner.judge(env, outcome), "cut")
            self.assertEqual(result.status, Status.FAILED, result.reasons)
            self.assertTrue(result.error)
            self._assert_source_intact(result)

            env.link.set_up(True)
            env.new_destination()
            retry = MigrationSettings(300, 8_000_000,
                                      avail_switchover_bandwidth_bytes_per_s=125_000_000)
            outcome = migration.run(env.src, env.dst, retry, env.uri, deadline_s=60)
            result = self.record(runner.judge(env, outcome), "retry")
            self.assert_completed(result)

    def test_destination_killed_source_keeps_running(self) -> None:
        with lab(self.s, self.logs, self.run_record) as env:
            started = self._start(env)
            env.dst.kill()
            outcome = self.watch(env, started, deadline_s=60)
            result = self.record(runner.judge(env, outcome))
            self.assertEqual(result.status, Status.FAILED, result.reasons)
            self._assert_source_intact(result)

    def test_cancel_resumes_the_source(self) -> None:
        with lab(self.s, self.logs, self.run_record) as env:
            started = self._start(env)
            self.assertEqual(migration.cancel(env.src), "cancelled")
            outcome = self.watch(env, started, deadline_s=1)
            result = self.record(runner.judge(env, outcome))
            self.assertEqual(env.src.command("query-status")["status"], "running")
            self._assert_source_intact(result)

    def test_destination_not_listening_fails_at_once(self) -> None:
        with lab(self.s, self.logs, self.run_record) as env:
            migration.configure(env.src, env.dst, self.s.migration())
            started = time.monotonic()
            try:
                env.src.command("migrate", uri=env.uri)  # no migrate-incoming on dst
                outcome = self.watch(env, started, deadline_s=30)
                error = outcome.error or ""
                self.assertEqual(outcome.status, Status.FAILED)
            except ExecuteError as err:  # some QEMUs refuse it synchronously
                error = str(err)
            self.assertIn("refused", error.lower())
            self.assertLess(time.monotonic() - started, 10, "took long to fail")
            self.assertEqual(env.src.command("query-status")["status"], "running")
