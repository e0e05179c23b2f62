"""The shaped link: made, measured and removed for real, with tc in namespaces."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import miglab_namespaces

from miglab.link import Link, LinkConfig, LinkError
from miglab.ownership import Record


def test_link_is_removed_with_its_namespaces_on_exit(run_record: Record) -> None:
    before = miglab_namespaces()
    with Link(LinkConfig(200_000_000), record=run_record) as link:
        assert {link.src_ns, link.dst_ns} <= miglab_namespaces()
        assert "tbf" in link.qdiscs()
    assert miglab_namespaces() == before


def test_link_is_removed_when_the_body_fails(run_record: Record) -> None:
    before = miglab_namespaces()
    with pytest.raises(ZeroDivisionError), Link(LinkConfig(200_000_000), record=run_record):
        1 / 0  # noqa: B018
    assert miglab_namespaces() == before


@pytest.mark.parametrize("rate", [200_000_000, 1_000_000_000])
def test_link_check_measures_about_the_configured_rate(rate: int, run_record: Record) -> None:
    with Link(LinkConfig(rate), record=run_record) as link:
        check = link.measure(seconds=2)
    assert check.ok, check.describe()


def test_delay_needs_netem_and_says_so_when_missing(run_record: Record) -> None:
    before = miglab_namespaces()
    try:
        with Link(LinkConfig(1_000_000_000, delay_ms=5), record=run_record) as link:
            assert "netem" in link.qdiscs()  # this kernel has netem
    except LinkError as err:
        assert "netem" in str(err) and "only a rate work" in str(err)
    assert miglab_namespaces() == before


def test_namespaces_of_a_killed_run_are_removed_by_cleanup() -> None:
    # A process that makes a link and dies by SIGKILL: no cleanup runs.
    code = ("import os, signal; from miglab import ownership;"
            " from miglab.link import Link, LinkConfig;"
            " link = Link(LinkConfig(10**8), record=ownership.current()); link.setup();"
            " print(link.src_ns, flush=True);"
            " os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    orphan = proc.stdout.split()[0]
    assert orphan in miglab_namespaces()
    out = subprocess.run([sys.executable, "-m", "miglab.cli", "cleanup"], capture_output=True,
                         text=True, check=True).stdout
    assert f"removed namespace {orphan}" in out, out
    assert orphan not in miglab_namespaces()
