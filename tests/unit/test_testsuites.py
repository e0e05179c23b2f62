"""How the test command counts: every outcome of every runner's record."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testsuites  # noqa: E402
from testsuites import Count  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="t" name="ok"/>
<testcase classname="t" name="bad"><failure message="assert 1 == 2"/></testcase>
<testcase classname="t" name="boom"><error message="fixture broke"/></testcase>
<testcase classname="t" name="netem"><skipped message="this kernel lacks netem"/></testcase>
<testcase classname="t" name="weak"><skipped type="pytest.xfail" message="reads 80%"/></testcase>
<testcase classname="t" name="retried"><properties>
  <property name="retries" value="2"/></properties></testcase>
</testsuite></testsuites>
"""


def test_junit_counts_failures_errors_skips_and_retries(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(JUNIT)
    c = Count("unit", 6)
    testsuites.count_junit(tmp_path / "r.xml", c)
    assert (c.passed, c.failed, c.skipped, c.retried) == (2, 2, 2, 2)
    assert c.skips == ["t::netem: this kernel lacks netem",
                       "t::weak: known failure (strict xfail): reads 80%"]
    assert c.bad == 2


def test_avocado_warn_cancel_and_interrupt_are_failures(tmp_path: Path) -> None:
    statuses = ["PASS", "WARN", "CANCEL", "INTERRUPTED", "SKIP", "ERROR", "FAIL"]
    tests = [{"name": f"t{i}", "status": s, "fail_reason": s.lower()}
             for i, s in enumerate(statuses)]
    tests[0]["whiteboard"] = json.dumps({"retries": 1})
    (tmp_path / "r.json").write_text(json.dumps({"tests": tests}))
    c = Count("auto", 7)
    testsuites.count_avocado(tmp_path / "r.json", c)
    assert (c.passed, c.skipped, c.retried) == (1, 1, 1)
    assert (c.failed, c.warned, c.cancelled, c.interrupted) == (2, 1, 1, 1)
    assert c.bad == 5 and len(c.problems) == 5


@pytest.mark.parametrize("tap, bad, why", [
    ("ok 1 - a\nok 2 - b\n1..2\n", 0, None),
    ("ok 1 - a\nok 2 - b\n", 1, "no plan"),  # cut short
    ("ok 1 - a\n1..2\n", 1, "plans 1..2"),  # a check missing
    ("ok 1 - a\nnot ok 2 - b (log: x)\n1..2\n", 1, None),
])
def test_tap_needs_its_plan_and_every_result(tap: str, bad: int, why: str | None) -> None:
    c = Count("selftest", 2)
    testsuites.count_tap(tap, c)
    assert c.bad == bad
    assert why is None or why in c.problems[0]


def test_tap_skips_inside_a_check_are_listed() -> None:
    c = Count("selftest", 1)
    testsuites.count_tap("# migration-test: ok 4 /x86_64/migration/a # SKIP no KVM\n"
                         "ok 1 - migration-test\n1..1\n", c)
    assert c.passed == 1 and c.skips == ["migration-test /x86_64/migration/a (inside a check):"
                                         " no KVM"]


def test_the_closing_line_counts_every_bad_outcome_and_the_skips() -> None:
    a, b = Count("a", 3, passed=2, skipped=1), Count("b", 2, passed=1, warned=1)
    assert testsuites.summary([a, b]).splitlines()[-1] == "3 passed, 1 failed, 1 skipped"


def test_every_suite_expects_tests_and_has_a_unique_name() -> None:
    assert len(testsuites.BY_NAME) == len(testsuites.SUITES)
    assert all(s.expected > 0 for s in testsuites.SUITES)
