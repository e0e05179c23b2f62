"""Tests of the lab itself: namespaces, tc and whole miglab runs (need root)."""
from __future__ import annotations

import os
import subprocess

import pytest


@pytest.fixture(autouse=True)
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab creates network namespaces")


def qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def miglab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("miglab-")}
