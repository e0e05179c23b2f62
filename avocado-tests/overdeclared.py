"""A user who declares ten times the link's bandwidth.

On a 200 Mbit/s link (about 24 MB/s of goodput) with a 32 MiB hot set and a
300 ms limit, declaring 250 MB/s makes the threshold 75 MB: QEMU switches
over at once, but sending 33.5 MB at 24 MB/s really takes about 1.4 s. The
migration completes, the downtime overshoots the limit, and the result has
to say that the declared bandwidth was above the measured link.
"""
from __future__ import annotations

from labtest import LabTest

from miglab import verdict
from miglab.verdict import Integrity, Status

LINK_BPS = 200_000_000
LIMIT_MS = 300
HOT_SET_BYTES = 32 * 1024 * 1024


class OverDeclared(LabTest):
    """
    :avocado: tags=convergence,overdeclared
    """

    def test_ten_times_the_link_completes_but_overshoots_the_limit(self) -> None:
        declared = 10 * LINK_BPS // 8
        s = self.scenario("capped-precopy", **{
            "qemu": "patched", "link-rate": LINK_BPS, "downtime-limit": LIMIT_MS,
            "switchover-bandwidth": declared, "timeout": 60, "accel": "tcg"})
        self.assertEqual(s.hot_set_mib << 20, HOT_SET_BYTES)
        real_ms = HOT_SET_BYTES / (0.96 * LINK_BPS / 8 / 1000)  # goodput is ~96% of tbf
        self.assertGreater(real_ms, 3 * LIMIT_MS)  # the premise
        result = self.run_scenario(s)
        self.assertEqual(result.status, Status.COMPLETED, result.reasons)
        self.assertGreater(result.downtime_ms, 2 * LIMIT_MS)
        self.assertGreater(result.downtime_ms, 0.5 * real_ms)
        self.assertEqual(result.integrity, Integrity.OK, result.reasons)
        assert result.link_rate_bps  # the verdict says so: declared above the measured link
        self.assertTrue(verdict.overdeclared(result.switchover_bandwidth_bps,
                                             result.link_rate_bps), result.reasons)
