"""Faults of a libvirt run, after tp-libvirt's "kill libvirt daemon" cases.

The capped scenario through libvirt (--via libvirt), with the link's rate
declared so that a retry converges (convergence.py's physics: threshold
125 MB/s x 300 ms = 37.5 MB, above the 12 MiB hot set). The destination
host's libvirtd is killed (SIGKILL, the daemon alone: the host and its
QEMUs stay) 3 s into the migration, well inside the bulk pass, which at
8 MiB/s takes about 10 s.

:avocado: tags=libvirt,fault
"""
from __future__ import annotations

from labtest import LabTest

from miglab import libvirtlab, runner
from miglab.result import Sample
from miglab.verdict import Integrity, Status

FAULT_AFTER_S = 3.0
DEADLINE_S = 60.0


class LibvirtDaemonKilled(LabTest):
    """
    :avocado: tags=libvirt,fault
    """

    def test_destination_libvirtd_killed_then_a_retry_completes(self) -> None:
        s = self.scenario("capped-precopy", **{"qemu": "patched", "via": "libvirt",
                                               "hot-set": "12M", "switchover-bandwidth": "125M",
                                               "accel": "tcg"})
        with libvirtlab.lab(s, self.logs, self.run_record) as env:
            killed_at: list[float] = []

            def kill_once(sample: Sample) -> None:
                if not killed_at and sample.status == "active" and \
                        sample.t_s >= FAULT_AFTER_S:
                    env.dst_host.kill_daemon()
                    killed_at.append(sample.t_s)
            outcome = libvirtlab.migrate(env, s.migration(), DEADLINE_S, kill_once)
            result = self.record(runner.judge(env, outcome, libvirt=env.libvirt), "killed")
            self.assertTrue(killed_at, "the migration was never active long enough")
            self.assertEqual(result.status, Status.FAILED, result.reasons)
            self.assertTrue(result.error, result.reasons)
            self.assertEqual(result.source_alive, True, result.reasons)
            self.assertEqual(result.integrity, Integrity.OK, result.reasons)
            self.assertTrue(env.src.running, "the source domain is gone")

            env.dst_host.restart_daemon()
            env.new_destination()
            outcome = libvirtlab.migrate(env, s.migration(), DEADLINE_S)
            result = self.record(runner.judge(env, outcome, libvirt=env.libvirt), "retry")
            self.assert_completed(result)
