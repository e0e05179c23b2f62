#!/usr/bin/env python3
"""The test command's suites, run and counted: the one table of what runs.

Every suite the test command runs is a row of SUITES, with the number of
tests it must report. `scripts/test` runs them all; meson's test targets
run one each (`testsuites.py run NAME`). For each suite the outcome of
every test is read from the runner's own record (pytest's JUnit XML,
avocado's JSON results, the TAP of scripts/qemu-selftest), never from its
exit status or its text alone, and counted as:

- passed;
- failed: a failure, an error, avocado's WARN, CANCEL or INTERRUPTED, a
  TAP "not ok"; and the whole suite once more when the runner exited
  non-zero with no failure recorded, when it wrote no record, or when its
  record holds fewer tests than expected (a YAML filter's typo, a test
  that silently vanished; more than expected means the table is stale);
- skipped: with its reason, printed in the summary (a test that needs
  what this host lacks, such as netem);
- retried: the runs beyond the first that a test made, as it reported
  them (a JUnit property "retries", or avocado's whiteboard
  {"retries": N}); each test that retries says why in its docstring.

The closing line is the plain one CI reads: "N passed, N failed, N skipped".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AT = ROOT / "avocado-tests"
VENV = ROOT / ".venv" / "bin"


@dataclass(frozen=True)
class Suite:
    name: str
    kind: str  # "pytest", "avocado", "tap" or "ruff"
    args: tuple[str, ...]
    expected: int  # tests the record must hold


def avocado(name: str, tests: str, yaml: str | None, expected: int) -> Suite:
    args = [str(AT / t) for t in tests.split()]
    if yaml:
        args += ["-m", str(AT / yaml)]
    return Suite(name, "avocado", tuple(args), expected)


SUITES = [
    Suite("ruff", "ruff", (str(ROOT),), 1),
    Suite("unit", "pytest", (str(ROOT / "tests" / "unit"),), 345),
    Suite("qemu", "pytest", (str(ROOT / "tests" / "qemu"),), 132),
    Suite("lab", "pytest", (str(ROOT / "tests" / "lab"),), 57),
    Suite("selftest", "tap", (str(ROOT / "scripts" / "qemu-selftest"),), 18),
    avocado("api", "api.py", "api.yaml", 10),
    avocado("fault", "fault.py overdeclared.py libvirtfault.py", None, 6),
    avocado("convergence", "convergence.py:CappedPrecopy", "convergence.yaml", 4),
    avocado("auto", "convergence.py:CappedPrecopy", "auto.yaml", 3),
    avocado("qemu-auto", "convergence.py:CappedPrecopy", "qemu-auto.yaml", 4),
    avocado("multifd", "convergence.py:CappedPrecopy", "multifd.yaml", 5),
    avocado("shapes", "convergence.py:CappedPrecopy", "shapes.yaml", 2),
    avocado("shared-link", "convergence.py:SharedLink", "shared-link.yaml", 4),
    avocado("ramp-capped", "ramp.py:DowntimeRampVsBandwidth.test_capped",
            "ramp-capped.yaml", 2),
    avocado("ramp-near-link", "ramp.py:DowntimeRampVsBandwidth.test_near_link",
            "ramp-near-link.yaml", 2),
    avocado("numa", "numa.py", "numa.yaml", 4),
    avocado("libvirt", "convergence.py:CappedPrecopy", "libvirt.yaml", 5),
]
BY_NAME = {s.name: s for s in SUITES}


@dataclass
class Count:
    suite: str
    expected: int
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    warned: int = 0
    cancelled: int = 0
    interrupted: int = 0
    retried: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # failures, with their reason
    skips: list[str] = field(default_factory=list)  # skipped tests, with their reason

    @property
    def recorded(self) -> int:
        return (self.passed + self.failed + self.skipped + self.warned + self.cancelled
                + self.interrupted)

    @property
    def bad(self) -> int:
        """Every outcome that is not a pass or a skip, and the suite's own failure."""
        return self.failed + self.warned + self.cancelled + self.interrupted

    def fail_suite(self, why: str) -> None:
        self.failed += 1
        self.problems.append(f"(the suite) {why}")


def short(text: str | None, limit: int = 200) -> str:
    one = " ".join((text or "").split())
    return one if len(one) <= limit else one[:limit - 3] + "..."


def count_junit(xml: Path, c: Count) -> None:
    root = ET.parse(xml).getroot()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for prop in case.iter("property"):
            if prop.get("name") == "retries":
                c.retried += int(prop.get("value", "0"))
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            c.failed += 1
            c.problems.append(f"{name}: {short(bad.get('message'))}")
        elif skipped is not None:
            c.skipped += 1
            known = "known failure (strict xfail): " if skipped.get("type") == "pytest.xfail" \
                else ""
            c.skips.append(f"{name}: {known}{short(skipped.get('message'))}")
        else:
            c.passed += 1


AVOCADO_BAD = {"FAIL": "failed", "ERROR": "failed", "WARN": "warned", "CANCEL": "cancelled",
               "INTERRUPTED": "interrupted"}


def count_avocado(results: Path, c: Count) -> None:
    for test in json.loads(results.read_text())["tests"]:
        status, name = test["status"], test.get("name") or test.get("id", "?")
        if whiteboard := test.get("whiteboard"):
            try:
                c.retried += int(json.loads(whiteboard).get("retries", 0))
            except (ValueError, AttributeError):
                pass  # a whiteboard that is not ours
        if status == "PASS":
            c.passed += 1
        elif status == "SKIP":
            c.skipped += 1
            c.skips.append(f"{name}: {short(test.get('fail_reason'))}")
        elif status in AVOCADO_BAD:
            setattr(c, AVOCADO_BAD[status], getattr(c, AVOCADO_BAD[status]) + 1)
            c.problems.append(f"{name}: {status} {short(test.get('fail_reason'))}")
        else:
            c.failed += 1
            c.problems.append(f"{name}: unknown status {status!r}")


_TAP_RESULT = re.compile(r"^(ok|not ok) (\d+)(?: - ([^#]*))?(?:#\s*(SKIP|TODO)\b(.*))?$")
_TAP_PLAN = re.compile(r"^1\.\.(\d+)$")
# qemu-selftest repeats the result lines of the qtests it runs as comments.
_NESTED_SKIP = re.compile(r"^# ([\w.-]+): ok \d+ (\S+) # SKIP ?(.*)$")


def count_tap(text: str, c: Count) -> None:
    plan, numbers = None, []
    for line in text.splitlines():
        if m := _TAP_PLAN.match(line):
            plan = int(m.group(1))
        elif m := _NESTED_SKIP.match(line):
            c.skips.append(f"{m.group(1)} {m.group(2)} (inside a check): {short(m.group(3))}")
        elif m := _TAP_RESULT.match(line):
            numbers.append(int(m.group(2)))
            name = (m.group(3) or "").strip()
            if m.group(4) == "SKIP":
                c.skipped += 1
                c.skips.append(f"{name}: {short(m.group(5))}")
            elif m.group(1) == "ok":
                c.passed += 1
            else:
                c.failed += 1
                c.problems.append(name)
    if plan is None:
        c.fail_suite("its TAP has no plan (1..N): it stopped before the end")
    elif numbers != list(range(1, plan + 1)):
        c.fail_suite(f"its TAP plans 1..{plan} but holds results {numbers[:3]}..."
                     f" ({len(numbers)} in all)")


def run_suite(suite: Suite, results: Path, progress: str = "") -> Count:
    c = Count(suite.name, suite.expected)
    started = time.monotonic()
    record = results / f"{suite.name}.record"
    if suite.kind == "pytest":
        # xunit1: the JUnit flavour that keeps a test's properties (its retries)
        cmd = [str(VENV / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-o", "junit_family=xunit1", f"--junitxml={record}", *suite.args]
    elif suite.kind == "avocado":
        cmd = [str(VENV / "avocado"), "run", "--max-parallel-tasks", "1",
               "--job-results-dir", str(results / "avocado"), "--json", str(record),
               *suite.args]
    elif suite.kind == "tap":
        cmd = list(suite.args)
    else:
        cmd = [str(VENV / "ruff"), "check", *suite.args]
    env = dict(os.environ, MIGLAB_LOGS=str(results / suite.name))
    print(f"--- {progress}{suite.name}: {' '.join(cmd)}", flush=True)
    log = results / f"{suite.name}.log"
    output = []
    # streamed as it comes: a suite can take minutes
    with subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc, log.open("w") as f:
        assert proc.stdout
        for line in proc.stdout:
            f.write(line)
            output.append(line)
            if shown(suite.kind, line.rstrip("\n")):
                print(line, end="", flush=True)
    text = "".join(output)
    if suite.kind == "tap":
        record.write_text(text)
    try:
        if suite.kind == "pytest":
            count_junit(record, c)
        elif suite.kind == "avocado":
            count_avocado(record, c)
        elif suite.kind == "tap":
            count_tap(text, c)
        elif proc.returncode == 0:
            c.passed += 1
    except (OSError, ValueError, KeyError, ET.ParseError) as e:
        c.fail_suite(f"no readable record of its tests ({e})")
    if proc.returncode != 0 and c.bad == 0:
        c.fail_suite(f"the runner exited {proc.returncode} with no failure recorded"
                     f" (log: {log})")
    if c.recorded != suite.expected:
        c.fail_suite(f"{c.recorded} tests recorded, {suite.expected} expected"
                     " (tests/testsuites.py's table)")
    c.seconds = time.monotonic() - started
    return c


def shown(kind: str, line: str) -> bool:
    """Whether a person watching the run needs this line of a runner's output."""
    if kind == "avocado":
        return bool(re.match(r"^ \(\d+/\d+\)", line)) and ": STARTED" not in line or \
            line.startswith(("RESULTS", "JOB TIME"))
    return kind != "tap" or not line.startswith("#   ")


COLUMNS = ("passed", "failed", "skipped", "warned", "cancelled", "interrupted", "retried")


def summary(counts: list[Count]) -> str:
    width = max(len(c.suite) for c in counts)
    head = f"{'suite':<{width}}  {'expected':>8}  " + "  ".join(f"{h:>11}" for h in COLUMNS)
    lines = ["", "summary of the test command", head]
    for c in counts:
        lines.append(f"{c.suite:<{width}}  {c.expected:>8}  "
                     + "  ".join(f"{getattr(c, h):>11}" for h in COLUMNS)
                     + f"  ({c.seconds:.0f} s)")
    for c in counts:
        lines += [f"FAILED {c.suite}: {p}" for p in c.problems]
    for c in counts:
        lines += [f"SKIPPED {c.suite}: {s}" for s in c.skips]
    passed = sum(c.passed for c in counts)
    failed = sum(c.bad for c in counts)
    skipped = sum(c.skipped for c in counts)
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("names", help="print the suites' names, one a line")
    run = sub.add_parser("run", help="run suites (all by default) and print the summary")
    run.add_argument("names", nargs="*", metavar="SUITE", help="suites to run")
    run.add_argument("--results", type=Path, default=ROOT / "build" / "test-results",
                     help="directory for the records and logs (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "names":
        print("\n".join(BY_NAME))
        return 0
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; the suites: {', '.join(BY_NAME)}")
    args.results.mkdir(parents=True, exist_ok=True)
    counts: list[Count] = []
    chosen = [BY_NAME[n] for n in args.names] or SUITES
    for i, suite in enumerate(chosen, 1):
        counts.append(run_suite(suite, args.results, f"[{i}/{len(chosen)}] "))
        (args.results / "summary.json").write_text(
            json.dumps([asdict(c) for c in counts], indent=1) + "\n")
    print(summary(counts))
    return 1 if any(c.bad for c in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
