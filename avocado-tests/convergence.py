"""The capped pre-copy scenario over a matrix of links, limits and builds.

The physics each variant is checked against (design.md section 2): the
guest rewrites a HOT-set of 12 MiB at 40 MiB/s, faster than the 8 MB/s
max-bandwidth, so after every pass the whole hot set is dirty again.

- QEMU's own estimate is about the cap, so it predicts a downtime of
  hot / cap = 12.58 MB / 8 MB/s = 1573 ms: above both limits (300, 600 ms),
  so stock and patched-unset never switch over;
- with the parameter = the link rate (or "auto", which measures about 96%
  of it and declares 92% of that), the threshold is rate x limit,
  at least 62.5 MB/s x 300 ms = 18.75 MB > 12.58 MB: it switches over, and
  sending the hot set at the link's real rate takes at most 12.58 MB / 60 MB/s
  = 210 ms, within both limits.

:avocado: tags=convergence
"""
from __future__ import annotations

import math
import re

from labtest import LabTest

from miglab import runner, units
from miglab.result import Result
from miglab.scenario import Scenario
from miglab.verdict import Integrity, Status, within_limit

HOT_SET_BYTES = 12 * 1024 * 1024
CAP_BYTES_PER_S = 8_000_000
DEADLINE_S = 20  # the bulk pass at the cap takes about 11 s; then it iterates
SHAPE_KEYS = ("dst-qemu", "multifd-channels", "vcpus")


class CappedPrecopy(LabTest):
    """
    :avocado: tags=convergence
    """

    def test_capped_precopy(self) -> None:
        link_rate = self.params.get("link_rate", default="1gbit")
        limit_ms = int(self.params.get("downtime_limit", default=300))
        declared = self.params.get("switchover", default="none")
        values = {"qemu": self.params.get("qemu", default="patched"), "link-rate": link_rate,
                  "hot-set": "12M", "dirty-rate": "40M", "max-bandwidth": CAP_BYTES_PER_S,
                  "downtime-limit": limit_ms, "timeout": DEADLINE_S, "accel": "tcg"}
        # The shapes (multifd.yaml, shapes.yaml): none of them changes the
        # physics above; multifd's channels share the cap and the link.
        for key in SHAPE_KEYS:
            if (value := self.params.get(key.replace("-", "_"))) is not None:
                values[key] = value
        if declared in ("link", "auto", "qemu-auto"):
            values["switchover-bandwidth"] = (
                units.parse_bits_per_s(link_rate) // 8 if declared == "link" else declared)
            values["timeout"] = 60
        s = self.scenario(**values)
        estimated_ms = HOT_SET_BYTES / (CAP_BYTES_PER_S / 1000)
        result = self.run_scenario(s)

        if s.switchover_auto:
            link_bps = result.link_rate_bps
            # What auto declares (TCP delivery rate x 0.92; multifd: the
            # channels' lower terciles): typically 92-102% of the link on one
            # connection and 69-90% on multifd; once 80%, late
            # (tests/unit/data/README.md).
            self.assertTrue(result.autotune, "autotune never declared a bandwidth")
            # every multifd channel counts (the main connection too, with little on it)
            summed = re.search(r"summed (\d+) migration connection", " ".join(result.reasons))
            self.assertTrue(summed, result.reasons)
            self.assertGreaterEqual(int(summed.group(1)), max(1, s.multifd_channels))
            for change in result.autotune:
                self.assert_measured_bandwidth("auto declared", change["bytes_per_s"] * 8,
                                               link_bps, limit_ms)
            self.assert_converged(result, limit_ms)
        elif s.switchover_qemu_auto:
            # QEMU's own TCP mode runs the same filter as auto inside QEMU:
            # the same physics bound, and what it used at switchover came
            # from TCP (not its estimate, which could never converge here).
            self.assertEqual(result.switchover_bandwidth_source, "tcp", result.reasons)
            self.assert_measured_bandwidth("QEMU used", result.switchover_bandwidth_bps,
                                           result.link_rate_bps, limit_ms)
            self.assert_converged(result, limit_ms)
        elif s.switchover_bandwidth_bytes_per_s is None:
            # The matrix's own premise: QEMU's prediction is above the limit.
            self.assertGreater(estimated_ms, 2 * limit_ms)
            self.assertEqual(result.status, Status.NOT_CONVERGED, result.reasons)
            last = [x for x in result.samples if x.status == "active"][-1]
            self.assertGreater(last.expected_downtime_ms, 0.7 * estimated_ms)
            self.assertEqual(result.source_alive, True)
            self.assertEqual(result.integrity, Integrity.OK, result.reasons)
        else:
            threshold_bytes = s.switchover_bandwidth_bytes_per_s * limit_ms / 1000
            self.assertGreater(threshold_bytes, 1.4 * HOT_SET_BYTES)  # premise
            self.assert_converged(result, limit_ms)

    def assert_measured_bandwidth(self, what: str, bandwidth_bps: float, link_bps: float,
                                  limit_ms: int) -> None:
        """A measured switchover bandwidth (auto's or QEMU's own) is never more
        than 5% above the measured link, and at least what makes a threshold
        10% above the hot set: the physics of convergence."""
        needed = 1.1 * HOT_SET_BYTES / (link_bps / 8 * limit_ms / 1000)
        share = bandwidth_bps / link_bps
        self.log.info("%s %.0f%% of the link (at least %.0f%% needed)",
                      what, share * 100, needed * 100)
        self.assertGreaterEqual(share, needed)
        self.assertLessEqual(share, 1.05)

    def assert_converged(self, result: Result, limit_ms: int) -> None:
        self.assert_completed(result)
        self.assertTrue(within_limit(result.downtime_ms, limit_ms), result.reasons)


SHARED_HOT_SET_BYTES = 32 * 1024 * 1024
SHARED_DIRTY_BYTES_PER_S = 6 * 1024 * 1024
ATTEMPTS = 3  # runs an automatic mode gets on a shared link (SharedLink says why)


class SharedLink(LabTest):
    """
    The link shared with N bulk TCP flows (shared-link.yaml: 3 flows;
    shared-link-full.yaml: 1 and 3; the link's rate declared, auto and
    qemu-auto; 1 Gbit/s, 300 ms).

    The guest rewrites a 32 MiB hot set at 6 MiB/s, slower than the 8 MB/s
    cap, so the dirty set shrinks from one pass to the next (random
    rewrites: after a pass of t s, 32 MiB x (1 - exp(-6t/32)) is dirty) and
    a migration switches over as soon as its threshold admits what is left.
    At the switchover the cap is lifted and TCP gives the migration about
    a fair share of the link, F = goodput / (N + 1):

    - the link's rate declared: threshold 125 MB/s x 300 ms = 37.5 MB, above
      the whole hot set (33.5 MB), so it switches over at the first sync
      after the bulk pass. That pass sends the hot set at the cap, at least
      33.5 MB / 8 MB/s = 4.2 s, while 25 MiB of rewrites land on it: at
      least 54% of it, 18 MB, is dirty, and takes 18 MB / F to send. With
      three flows F is about 30 MB/s: at least 600 ms, twice the limit.
      (With one flow the bound, 300 ms, does not prove an overshoot; the
      run says what happened.)
    - auto: the migration connection's own delivery-rate samples read its
      share (they are taken under the same competition), so it declares
      F x 0.92 or less and switches over only once the dirty set fits its
      threshold. Less, in practice: while capped, the connection reads
      less than F, the share its smaller congestion window gets beside
      bulk flows (in the 8 automatic runs of shared-link-full.yaml of
      2026-12-01, QEMU used 50-68% of F, auto declared 53-104%).

    What the final stage gets is not F, though, but whatever share TCP
    gives a connection that starts sending at once into the bulk flows:
    the pending bytes over the downtime read 0.5-1.2 F on record. So within
    the limit is a likelihood, not a certainty: of 24 runs of the automatic
    modes with three flows on record (2026-11-28 to 2026-12-01: CI,
    showcase, shared-link.yaml and shared-link-full.yaml), one went over
    (401 ms, auto on 7.2). An automatic mode therefore gets up to ATTEMPTS
    runs and must switch over within the limit in one of them, every run
    meeting everything else: at 1 in 24 per run, a wrong failure comes
    about once in 14,000 variants, while "= link", which never switched
    over within the limit with three flows (10 of 10 runs on record,
    3.6-8.5 times over), would fail every attempt.

    :avocado: tags=convergence,shared-link
    """

    def test_shared_link(self) -> None:
        link_rate = self.params.get("link_rate", default="1gbit")
        limit_ms = int(self.params.get("downtime_limit", default=300))
        flows = int(self.params.get("cross_traffic", default=3))
        mode = self.params.get("switchover", default="auto")
        s = self.scenario(qemu=self.params.get("qemu", default="patched"),
                          **{"link-rate": link_rate, "hot-set": "32M", "dirty-rate": "6M",
                             "max-bandwidth": CAP_BYTES_PER_S, "downtime-limit": limit_ms,
                             "cross-traffic": flows, "timeout": 60, "accel": "tcg",
                             "switchover-bandwidth": mode if mode in ("auto", "qemu-auto")
                             else units.parse_bits_per_s(link_rate) // 8})
        if s.switchover_auto or s.switchover_qemu_auto:
            for attempt in range(1, ATTEMPTS + 1):
                result = self.run_automatic(s, flows, attempt)
                if within_limit(result.downtime_ms, limit_ms):
                    break
                self.log.warning("attempt %d of %d: downtime %s ms over the limit",
                                 attempt, ATTEMPTS, result.downtime_ms)
            self.assertTrue(within_limit(result.downtime_ms, limit_ms), result.reasons)
            return
        result = self.run_scenario(s)
        fair_bytes_per_s = self.fair_share(result, flows)
        threshold_bytes = s.switchover_bandwidth_bytes_per_s * limit_ms / 1000
        self.assertGreater(threshold_bytes, SHARED_HOT_SET_BYTES)  # premise
        dirty_bytes = SHARED_HOT_SET_BYTES * (1 - math.exp(
            -SHARED_DIRTY_BYTES_PER_S / CAP_BYTES_PER_S))
        bound_ms = dirty_bytes / fair_bytes_per_s * 1000
        self.log.info("declared = link: downtime at least %.0f ms by the physics", bound_ms)
        if bound_ms > 2 * limit_ms:
            self.assertFalse(within_limit(result.downtime_ms, limit_ms), result.reasons)

    def run_automatic(self, s: Scenario, flows: int, attempt: int) -> Result:
        """One run of an automatic mode, with every check but the downtime's."""
        logs = self.logs / f"attempt-{attempt}"
        logs.mkdir()
        result = self.record(runner.run(s, logs), f"result-{attempt}")
        fair_bytes_per_s = self.fair_share(result, flows)
        if s.switchover_auto:
            self.assertTrue(result.autotune, "autotune never declared a bandwidth")
            what, used = "auto declared", [change["bytes_per_s"] for change in result.autotune]
        else:
            # the same filter inside QEMU, on the same samples
            self.assertEqual(result.switchover_bandwidth_source, "tcp", result.reasons)
            what, used = "QEMU used", [result.switchover_bandwidth_bps / 8]
        for bytes_per_s in used:
            # its share, never the link (10%: the link check itself moves
            # by up to 14% on a busy host, and F is computed from it)
            self.log.info("%s %.0f%% of the fair share", what,
                          bytes_per_s / fair_bytes_per_s * 100)
            self.assertLessEqual(bytes_per_s, 1.1 * fair_bytes_per_s)
        return result

    def fair_share(self, result: Result, flows: int) -> float:
        """F in bytes/s, once the run's premises are checked: it completed with
        memory verified, and the competing flows took most of the link."""
        cross = result.cross_traffic
        self.assertEqual(cross["flows"], flows)
        self.assertGreater(cross["flows_goodput_bps"], 0.5 * cross["link_goodput_alone_bps"])
        self.assert_completed(result)
        return cross["link_goodput_alone_bps"] / 8 / (flows + 1)
