"""Tests of the lab itself: namespaces, tc and whole miglab runs (need root)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from miglab import leftovers, ownership
from miglab.ownership import Record

# the shipped capped scenario, which the lab tests run with a few keys changed
CAPPED_YAML = Path(__file__).resolve().parents[2] / "scenarios" / "capped-precopy.yaml"


@pytest.fixture(scope="session")
def run_record() -> Record:
    """This test process's ownership record, handed to all it makes."""
    return ownership.current()


@pytest.fixture(autouse=True)
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab creates network namespaces")


def qemu_pids() -> set[int]:
    return set(leftovers.snapshot().qemu_pids)


def miglab_namespaces() -> set[str]:
    return set(leftovers.snapshot().namespaces)


def ctrl_c_reaches_it() -> None:
    """Popen's preexec_fn for a miglab the test interrupts: SIGINT back to its
    default. A shell starts background jobs with SIGINT ignored, and children
    inherit that (a CI run started with '&' ignored every Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
