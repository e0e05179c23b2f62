"""The advised downtime-limit, tried by running with it.

After a completed run miglab says which part of the guest's pause
downtime-limit does not bound and which limit keeps the pause within the
one asked for (verdict.pause_advice). Here, on upstream QEMU 10.0, which
traces its downtime checkpoints (RAM's last pass is measured, not taken
from QEMU's downtime): no cap, 400 MiB of a 512 MiB guest rewritten at
8 MiB/s over 1 Gbit/s, the link's 125 MB/s declared, so QEMU switches over
as soon as what is left fits the limit and its downtime follows the limit.

One try is two runs:
1. at downtime-limit WANTED_MS, the negative control: the guest's pause
   seen from outside is longer than QEMU's downtime by more than the
   pause's error bound (the part the limit does not count is there), and
   the advice is a limit below WANTED_MS;
2. at the advised limit: the pause as measured (the blackout, an upper
   bound of the true pause) is within WANTED_MS.

Odds, from RECORD (data/pause-advice-runs.jsonl: independent tries, each
in a process of its own, written by `python tests/lab/test_pause_advice.py
record N`; data/README.md says when and on what): the test tries up to
odds.attempts() times, at the first try that holds both it passes, and
reports the tries beyond the first as retries (the test command's summary
shows them), each try's figures in its log.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miglab import odds, ownership, runner, scenario
from miglab.ownership import Record
from miglab.result import Result
from miglab.verdict import Integrity, Status

WANTED_MS = 300
SCENARIO = {"qemu": "upstream", "link-rate": "1gbit", "memory": "512M", "hot-set": "400M",
            "dirty-rate": "8M", "max-bandwidth": "10G", "switchover-bandwidth": "125M",
            "accel": "tcg", "timeout": "60"}
RECORD = Path(__file__).parent / "data" / "pause-advice-runs.jsonl"
FAIL_BUDGET = 1e-3  # the test may fail by chance once in a thousand runs

log = logging.getLogger(__name__)


def figures(r: Result) -> dict[str, Any]:
    return {"limit_ms": r.downtime_limit_ms, "status": str(r.status),
            "integrity": str(r.integrity), "downtime_ms": r.downtime_ms,
            "blackout_ms": r.observed_blackout_ms, "error_ms": r.blackout_error_ms,
            "unbounded_ms": r.pause_unbounded_ms, "advised_ms": r.advised_downtime_limit_ms}


def why_not(r: Result) -> str | None:
    if r.status != Status.COMPLETED or r.integrity != Integrity.OK:
        return f"at {r.downtime_limit_ms} ms: {r.status}, {r.integrity}"
    if r.observed_blackout_ms is None or r.blackout_error_ms is None:
        return f"at {r.downtime_limit_ms} ms: no pause seen"
    return None


def one_try(workdir: Path, record: Record) -> dict[str, Any]:
    """Both runs of a try; "failed" says what did not hold (None: both did)."""
    def run(limit_ms: int, name: str) -> Result:
        s = scenario.parse({**SCENARIO, "downtime-limit": str(limit_ms)})
        return runner.run(s, workdir / name, record)
    asked = run(WANTED_MS, "asked")
    out: dict[str, Any] = {"asked": figures(asked), "advised": None}
    failed = why_not(asked)
    if not failed:
        assert asked.observed_blackout_ms and asked.blackout_error_ms and asked.downtime_ms
        if asked.observed_blackout_ms - asked.blackout_error_ms <= asked.downtime_ms:
            failed = "control: the pause was not certainly longer than QEMU's downtime"
        elif not asked.advised_downtime_limit_ms or \
                asked.advised_downtime_limit_ms >= WANTED_MS:
            failed = f"control: advised {asked.advised_downtime_limit_ms}, not below {WANTED_MS}"
    if not failed:
        assert asked.advised_downtime_limit_ms
        advised = run(asked.advised_downtime_limit_ms, "advised")
        out["advised"] = figures(advised)
        failed = why_not(advised)
        if not failed and advised.observed_blackout_ms > WANTED_MS:  # type: ignore[operator]
            failed = (f"paused {advised.observed_blackout_ms} ms at the advised"
                      f" {advised.downtime_limit_ms} ms, more than {WANTED_MS} ms")
    out["failed"] = failed
    return out


def attempts() -> int:
    rows = [json.loads(line) for line in RECORD.read_text().splitlines()]
    return odds.attempts(len(rows), sum(1 for r in rows if r["failed"]), FAIL_BUDGET,
                         RECORD.name)


def test_the_advised_limit_keeps_the_pause_within_the_one_asked_for(
        tmp_path: Path, run_record: Record,
        record_property: Callable[[str, object], None]) -> None:
    tries, seen = attempts(), []
    for n in range(1, tries + 1):
        row = one_try(tmp_path / f"try{n}", run_record)
        log.info("try %d of %d: %s", n, tries, json.dumps(row))
        record_property("retries", n - 1)
        if not row["failed"]:
            return
        seen.append(f"try {n}: {row['failed']}")
    raise AssertionError(f"no try of {tries} held: {'; '.join(seen)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["once"] and len(sys.argv) == 3:
        print(json.dumps(one_try(Path(sys.argv[2]), ownership.current())))
    elif sys.argv[1:2] == ["record"] and len(sys.argv) == 3:
        odds.record(RECORD, [sys.executable, __file__, "once"], int(sys.argv[2]),
                    lambda row: row["failed"] or "held")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} record TRIES")
