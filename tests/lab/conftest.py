"""Tests of the lab itself: namespaces, tc and whole miglab runs (need root)."""
from __future__ import annotations

import os

import pytest

from miglab import leftovers


@pytest.fixture(autouse=True)
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab creates network namespaces")


def qemu_pids() -> set[int]:
    return set(leftovers.snapshot().qemu_pids)


def miglab_namespaces() -> set[str]:
    return set(leftovers.snapshot().namespaces)
