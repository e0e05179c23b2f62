"""The parameter's interface on both builds (variants in api.yaml).

The patched build behaves as upstream QEMU 8.2+; the stock one refuses the
parameter everywhere, so the same test fails if a build behaves otherwise.

:avocado: tags=api
"""
from __future__ import annotations

from labtest import LabTest

from miglab import artifacts, migration, runner
from miglab.deadline import wait_for
from miglab.lab import lab
from miglab.verdict import within_limit
from miglab.vm import VM, ExecuteError, VMConfig, VMError

PARAM = "avail-switchover-bandwidth"


class SwitchoverBandwidthInterface(LabTest):
    """
    :avocado: tags=api
    """

    def setUp(self) -> None:
        super().setUp()
        self.build = self.params.get("qemu", default="patched")
        self.has_param = bool(self.params.get("has_parameter", default=True))
        self.binary = artifacts.qemu_binary(self.build)

    def _vm(self, *extra: str) -> VM:
        return VM(VMConfig(self.binary, extra_args=list(extra)), self.build, self.logs,
                  record=self.run_record)

    def test_qmp_set_and_query(self) -> None:
        """:avocado: tags=api,fast"""
        with self._vm() as vm:
            if self.has_param:
                self.assertEqual(vm.command("query-migrate-parameters")[PARAM], 0)
                vm.command("migrate-set-parameters", **{PARAM: 125_000_000})
                self.assertEqual(vm.command("query-migrate-parameters")[PARAM], 125_000_000)
            else:
                self.assertNotIn(PARAM, vm.command("query-migrate-parameters"))
                with self.assertRaises(ExecuteError):
                    vm.command("migrate-set-parameters", **{PARAM: 125_000_000})

    def test_hmp_set_and_info(self) -> None:
        """:avocado: tags=api,fast"""
        with self._vm() as vm:
            out = vm.hmp(f"migrate_set_parameter {PARAM} 1G")
            info = vm.hmp("info migrate_parameters")
            if self.has_param:
                self.assertEqual(out.strip(), "")
                self.assertIn(f"{PARAM}: {1 << 30} bytes/second", info)
            else:
                self.assertIn(PARAM, out)
                self.assertNotIn(PARAM, info)

    def test_global_sets_the_default(self) -> None:
        """:avocado: tags=api,fast"""
        vm = self._vm("-global", f"migration.{PARAM}=62500000")
        if not self.has_param:
            with self.assertRaises(VMError):
                vm.launch(timeout=10)
            vm.shutdown()
            return
        with vm:
            self.assertEqual(vm.command("query-migrate-parameters")[PARAM], 62_500_000)

    def test_bad_values_change_no_parameter(self) -> None:
        """:avocado: tags=api,fast"""
        with self._vm() as vm:
            before = vm.command("query-migrate-parameters")
            for bad in ("fast", 2.5, 2**64):
                with self.assertRaises(ExecuteError) as err:
                    vm.command("migrate-set-parameters", **{"downtime-limit": 1234, PARAM: bad})
                self.assertIn(PARAM, str(err.exception))
            self.assertEqual(vm.command("query-migrate-parameters"), before)

    def test_change_during_active_migration_takes_effect(self) -> None:
        """:avocado: tags=api"""
        s = self.scenario("capped-precopy", **{"qemu": self.build, "hot-set": "12M",
                                               "accel": "tcg"})
        with lab(s, self.logs, self.run_record) as env:
            migration.configure(env.src, env.dst, s.migration())
            started = migration.start(env.src, env.dst, env.uri)
            # mid-migration: its bulk pass done, iterating on the cap's estimate
            wait_for(lambda: env.src.command("query-migrate").get("ram", {})
                     .get("dirty-sync-count", 0) >= 2, 30, "the migration's second dirty sync")
            if not self.has_param:
                with self.assertRaises(ExecuteError):
                    env.src.command("migrate-set-parameters", **{PARAM: 125_000_000})
                outcome = self.watch(env, started, deadline_s=20)
                self.assertEqual(outcome.status, "not-converged")
                migration.cancel(env.src)
                return
            env.src.command("migrate-set-parameters", **{PARAM: 125_000_000})
            outcome = self.watch(env, started, deadline_s=60)
            result = self.record(runner.judge(env, outcome))
            self.assertEqual(result.status, "completed", result.reasons)
            # 12.58 MB at the link's 119 MB/s: 105 ms of the limit's 300
            self.assertTrue(within_limit(result.downtime_ms, 300), result.reasons)
            self.assertEqual(result.integrity, "ok")
