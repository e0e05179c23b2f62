"""A TCG guest whose RAM spans two NUMA memory backends of growing size.

Upstream's fix of TCG dirty tracking during migration (03bfc2188f06, QEMU
9.0) resets TCG's dirty state for the *offset inside* the RAM block that
the fast path of the bitmap sync cleared, where tlb_reset_dirty_range_all()
takes a ram_addr_t. The guest's RAM here is two blocks: node 0's 128 MiB
at ram_addr 0, node 1's 384 MiB after it. Syncing node 1's block whole
(offset 0, 384 MiB) then resets [0, 384 MiB), which runs past the end of
node 0's block: QEMU asserts and the source dies, with the guest.

The migration iterates so that the sync runs more than once: the guest
rewrites a 200 MiB hot set, interleaved over both nodes, at 10 MiB/s;
max-bandwidth 30 MB/s makes the bulk pass take about 8 s, and the link's
rate declared as the switchover bandwidth (threshold 37.5 MB) lets it
switch over once the dirty pages fit: after about 3 syncs, a few seconds
after the bulk pass. A build with the bug aborts at the sync after the
bulk pass; a fixed one completes with every page of the hot set, on both
nodes, verified on the destination.

:avocado: tags=upstream-bug,numa
"""
from __future__ import annotations

from labtest import LabTest

from miglab import artifacts
from miglab.verdict import Integrity, Status

ASSERTION = "tlb_reset_dirty_range_all: Assertion `block == qemu_get_ram_block(end - 1)' failed"


class UnequalNuma(LabTest):
    """
    :avocado: tags=upstream-bug,numa
    """

    def test_unequal_numa_nodes_migrate(self) -> None:
        qemu = self.params.get("qemu", default="patched")
        survives = bool(self.params.get("source_survives", default=True))
        artifacts.qemu_binary(qemu)  # a build that is missing is an error, not a skip
        s = self.scenario(**{"qemu": qemu, "numa-nodes": "128M,384M", "hot-set": "200M",
                             "dirty-rate": "10M", "max-bandwidth": "30M",
                             "switchover-bandwidth": "125M", "downtime-limit": 300,
                             "timeout": 90, "accel": "tcg"})
        result = self.run_scenario(s)
        self.assertEqual(len(result.pages_per_node.get("hot", [])), 2, result.pages_per_node)
        self.assertTrue(all(n > 0 for n in result.pages_per_node["hot"]),
                        f"the hot set is not on both nodes: {result.pages_per_node}")
        if survives:
            self.assertEqual(result.status, Status.COMPLETED, result.reasons)
            self.assertEqual(result.integrity, Integrity.OK, result.reasons)
            self.assertTrue(result.destination_alive, result.reasons)
            # it iterated: the sync that aborts the unfixed builds ran
            self.assertGreaterEqual(max(x.dirty_sync_count for x in result.samples), 3)
        else:
            self.assertEqual(result.status, Status.FAILED, result.reasons)
            self.assertIn(ASSERTION, result.error or "", result.reasons)
            self.assertFalse(result.source_alive, result.reasons)
