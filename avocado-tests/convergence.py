"""The capped pre-copy scenario over a matrix of links, limits and builds.

The physics each variant is checked against: the
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

from labtest import LabTest

from miglab import artifacts, preflight, units
from miglab.result import Result
from miglab.verdict import Integrity, Status, within_limit

HOT_SET_BYTES = 12 * 1024 * 1024
CAP_BYTES_PER_S = 8_000_000  # the scenario's (checked below)
DEADLINE_S = 20  # the bulk pass at the cap takes about 11 s; then it iterates
# scenarios/capped-precopy.yaml with a smaller hot set, so that a run
# takes seconds, not minutes; without KVM's probe (45 s where it fails)
CI_CAPPED = {"hot-set": "12M", "timeout": DEADLINE_S, "accel": "tcg"}
SINGLE_FLOOR, MULTIFD_FLOOR, CEILING = 0.85, 0.60, 1.05  # of the measured goodput
SHAPE_KEYS = ("dst-qemu", "multifd-channels", "vcpus", "via")


class CappedPrecopy(LabTest):
    """
    :avocado: tags=convergence
    """

    def test_capped_precopy(self) -> None:
        link_rate = self.params.get("link_rate", default="1gbit")
        limit_ms = int(self.params.get("downtime_limit", default=300))
        declared = self.params.get("switchover", default="none")
        values = {"qemu": self.params.get("qemu", default="patched"), "link-rate": link_rate,
                  "downtime-limit": limit_ms, **CI_CAPPED}
        # The shapes (multifd.yaml, shapes.yaml): none of them changes the
        # physics above; multifd's channels share the cap and the link.
        for key in SHAPE_KEYS:
            if (value := self.params.get(key.replace("-", "_"))) is not None:
                values[key] = value
        if declared in ("link", "auto", "qemu-auto"):
            values["switchover-bandwidth"] = (
                units.parse_bits_per_s(link_rate) // 8 if declared == "link" else declared)
            values["timeout"] = 60
        s = self.scenario("capped-precopy", **values)
        self.assertEqual((s.max_bandwidth_bytes_per_s, s.hot_set_mib << 20),
                         (CAP_BYTES_PER_S, HOT_SET_BYTES))
        result = self.run_scenario(s)
        cap_bytes_per_s = CAP_BYTES_PER_S
        if s.via == "libvirt":
            cap_bytes_per_s = self.assert_libvirt(result)
        estimated_ms = HOT_SET_BYTES / (cap_bytes_per_s / 1000)

        if s.switchover.automatic:
            # Accuracy: what the automatic mode used at the switchover, against
            # the goodput this run's own link check measured. One connection
            # alone on the link reads the link: 85-105% of it (85: the margin
            # 0.92 times a filter that reads at least 93% of the goodput;
            # 105: the overdeclaration rule). Multifd's channels trade shares
            # from one sample to the next, and their lower terciles summed
            # read less: at least 60% (tests/unit/data/README.md).
            floor = MULTIFD_FLOOR if s.multifd_channels else SINGLE_FLOOR
            used_bps = self.used_at_switchover_bps(result)
            share = used_bps / result.link_rate_bps
            self.log.info("%s used %.0f%% of the link's measured goodput (%.0f-%.0f%% asked)",
                          declared, share * 100, floor * 100, CEILING * 100)
            self.assertGreaterEqual(share, floor)
            self.assertLessEqual(share, CEILING)
            # and the physics of convergence: a threshold 10% above the hot set
            self.assertGreater(used_bps / 8 * limit_ms / 1000, 1.1 * HOT_SET_BYTES)
            self.assert_converged(result, limit_ms)
        elif s.switchover.bytes_per_s is None:
            # The matrix's own premise: QEMU's prediction is above the limit.
            self.assertGreater(estimated_ms, 2 * limit_ms)
            self.assertEqual(result.status, Status.NOT_CONVERGED, result.reasons)
            last = [x for x in result.samples if x.status == "active"][-1]
            self.assertGreater(last.expected_downtime_ms, 0.7 * estimated_ms)
            self.assertEqual(result.source_alive, True)
            self.assertEqual(result.integrity, Integrity.OK, result.reasons)
        else:
            threshold_bytes = s.switchover.bytes_per_s * limit_ms / 1000
            self.assertGreater(threshold_bytes, 1.4 * HOT_SET_BYTES)  # premise
            self.assert_converged(result, limit_ms)

    def used_at_switchover_bps(self, result: Result) -> float:
        """The switchover bandwidth in force when QEMU switched over (bits/s):
        auto's last declaration, or what QEMU's own mode said it used."""
        if result.scenario["switchover"]["mode"] == "qemu-auto":
            # from TCP, not QEMU's estimate (which could never converge here)
            self.assertEqual(result.switchover_bandwidth_source, "tcp", result.reasons)
            return result.switchover_bandwidth_bps
        self.assertTrue(result.autotune, "auto never declared a bandwidth")
        # every multifd channel counts (the main connection too, with little on it)
        self.assertGreaterEqual(result.autotune_connections or 0,
                                max(1, result.scenario["multifd_channels"]))
        return result.autotune[-1]["bytes_per_s"] * 8

    def assert_libvirt(self, result: Result) -> int:
        """A run through libvirt says so, with the cap libvirt applied:
        8 MB/s is 7.63 MiB/s, and libvirt takes whole MiB/s, so 8 MiB/s
        (8388608 B/s). Returns that cap."""
        self.assertEqual(result.via, "libvirt")
        assert result.libvirt, "a libvirt run without its record"
        self.assertTrue(result.libvirt.libvirt_version, result.libvirt)
        self.assertEqual(result.libvirt.max_bandwidth_mib_per_s, 8)
        applied = result.libvirt.max_bandwidth_bytes_per_s
        self.assertEqual(applied, 8 << 20)
        return applied

    def assert_converged(self, result: Result, limit_ms: int) -> None:
        self.assert_completed(result)
        self.assertTrue(within_limit(result.downtime_ms, limit_ms), result.reasons)
        self.assert_phases(result)

    def assert_phases(self, result: Result) -> None:
        """The pause cut at QEMU's downtime checkpoints where both QEMUs trace
        them (upstream's builds, run through QMP or through libvirt), the
        phases adding up to the pause (each rounded to 0.1 ms); not cut where
        either does not (7.2)."""
        sides = {result.scenario["qemu"], result.scenario["dst_qemu"] or result.scenario["qemu"]}
        traced = all(preflight.has_parameter(artifacts.qemu_binary(q), preflight.CHECKPOINTS)
                     for q in sides)
        if not traced:
            self.assertEqual(result.pause_phases, [])
            return
        self.assertTrue(result.pause_phases, result.reasons)
        assert result.observed_blackout_ms is not None
        self.assertAlmostEqual(sum(p["ms"] for p in result.pause_phases),
                               result.observed_blackout_ms, delta=1.0)


# The most of a fair share F that a connection starting into the bulk flows
# may get at the switchover: 1.24 F is the most on record (docs/testing.md,
# the shared link); 1.5 F leaves room above it.
FINAL_STAGE_MAX_SHARE = 1.5


class SharedLink(LabTest):
    """
    The link shared with N bulk TCP flows (shared-link.yaml: 3 flows;
    shared-link-full.yaml: 1 and 3; the link's rate declared, auto and
    qemu-auto; 1 Gbit/s, 300 ms). One run per variant, positive and
    negative alike: no retry.

    The guest rewrites a 32 MiB hot set at 6 MiB/s, slower than the 8 MB/s
    cap, so the dirty set shrinks from one pass to the next (random
    rewrites: after a pass of t s, 32 MiB x (1 - exp(-6t/32)) is dirty) and
    a migration switches over as soon as its threshold admits what is left.
    At the switchover the cap is lifted and TCP gives the migration about
    a fair share of the link, F = goodput / (N + 1):

    - the link's rate declared (the negative control): threshold 125 MB/s
      x 300 ms = 37.5 MB, above the whole hot set (33.5 MB), so it switches
      over at the first sync after the bulk pass. That pass sends the hot
      set at the cap, at least 33.5 MB / 8 MB/s = 4.2 s, while 25 MiB of
      rewrites land on it: at least 54% of it, 18 MB, is dirty. Even at
      FINAL_STAGE_MAX_SHARE x F that takes 18 MB / (1.5 x 29.8 MB/s) =
      403 ms with three flows, over the limit with its allowance (330 ms):
      the overshoot is asserted whenever this bound, from the run's own F,
      says so. With one flow (F about 60 MB/s) the bound is 201 ms and
      proves nothing: shared-link-full.yaml leaves that variant out.
    - auto and qemu-auto: the migration connection's own delivery-rate
      samples read its share (they are taken under the same competition),
      so what they use must never be above F (by more than 10%: F comes
      from the link check), nor above the share the connection's samples
      measured by more than 5%: for auto, what they read when each value
      was set; for qemu-auto, what the harness read beside QEMU over the
      run (cross_traffic's migration_tcp_bps).

    Whether the automatic modes also switch over within the limit is not
    asserted here: the final stage gets whatever share TCP gives a
    connection that starts sending at once into bulk flows (0.48-1.24 F on
    record), so it is a likelihood (one run of 24 on record went over), and
    a retry would need its per-run odds from 30 or more independent
    recorded runs. The run's downtime against the limit is logged and kept
    in its result.

    :avocado: tags=convergence,shared-link
    """

    def test_shared_link(self) -> None:
        link_rate = self.params.get("link_rate", default="1gbit")
        limit_ms = int(self.params.get("downtime_limit", default=300))
        flows = int(self.params.get("cross_traffic", default=3))
        mode = self.params.get("switchover", default="auto")
        s = self.scenario("shared-link", qemu=self.params.get("qemu", default="patched"),
                          **{"link-rate": link_rate, "downtime-limit": limit_ms,
                             "cross-traffic": flows, "accel": "tcg",
                             "switchover-bandwidth": mode if mode in ("auto", "qemu-auto")
                             else units.parse_bits_per_s(link_rate) // 8})
        result = self.run_scenario(s)
        fair_bytes_per_s = self.fair_share(result, flows)
        self.log.info("downtime %s ms against the limit %d ms", result.downtime_ms, limit_ms)
        if s.switchover.automatic:
            if s.switchover.auto:
                # each value against what the connection's samples read when
                # it was set (the share at the end of the run can be another)
                self.assertTrue(result.autotune, "auto never declared a bandwidth")
                change = max(result.autotune, key=lambda c: c["bytes_per_s"])
                used_bytes_per_s = change["bytes_per_s"]
                measured_bytes_per_s = change["measured_bps"] / 8
            else:
                # the same filter inside QEMU, on its own reading of the
                # connection, against the harness's reading of it
                self.assertEqual(result.switchover_bandwidth_source, "tcp", result.reasons)
                used_bytes_per_s = result.switchover_bandwidth_bps / 8
                assert result.cross_traffic and result.cross_traffic.migration_tcp_bps
                measured_bytes_per_s = result.cross_traffic.migration_tcp_bps / 8
            self.log.info("%s used %.0f%% of the fair share, %.0f%% of the share its"
                          " connection's samples measured", mode,
                          used_bytes_per_s / fair_bytes_per_s * 100,
                          used_bytes_per_s / measured_bytes_per_s * 100)
            # F is computed from the link check, which reads the link within
            # about 4% on a quiet host: 10% above F still says "the link,
            # not its share" fails (that is (N + 1) x F).
            self.assertLessEqual(used_bytes_per_s, 1.1 * fair_bytes_per_s)
            self.assertLessEqual(used_bytes_per_s, CEILING * measured_bytes_per_s)
            return
        threshold_bytes = s.switchover.bytes_per_s * limit_ms / 1000
        hot_bytes, dirty_bytes_per_s = s.hot_set_mib << 20, s.dirty_rate_mib << 20
        self.assertGreater(threshold_bytes, hot_bytes)  # premise
        dirty_bytes = hot_bytes * (1 - math.exp(-dirty_bytes_per_s
                                                / s.max_bandwidth_bytes_per_s))
        bound_ms = dirty_bytes / (FINAL_STAGE_MAX_SHARE * fair_bytes_per_s) * 1000
        self.log.info("declared = link: downtime at least %.0f ms by the physics", bound_ms)
        # the variants are chosen so that the bound proves the overshoot
        self.assertFalse(within_limit(round(bound_ms), limit_ms), "premise: bound too low")
        self.assertFalse(within_limit(result.downtime_ms, limit_ms), result.reasons)

    def fair_share(self, result: Result, flows: int) -> float:
        """F in bytes/s, once the run's premises are checked: it completed with
        memory verified, and the competing flows took most of the link."""
        cross = result.cross_traffic
        assert cross and cross.flows_goodput_bps and cross.link_goodput_alone_bps, cross
        self.assertEqual(cross.flows, flows)
        self.assertGreater(cross.flows_goodput_bps, 0.5 * cross.link_goodput_alone_bps)
        self.assert_completed(result)
        return cross.link_goodput_alone_bps / 8 / (flows + 1)
