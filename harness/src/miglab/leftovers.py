"""What miglab runs leave on the machine: for checking that they leave nothing.

A snapshot before and after a run; what is new afterwards was left behind.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .link import NETNS_PREFIX, existing_namespaces
from .vm import TMP_PREFIX


@dataclass(frozen=True)
class Snapshot:
    namespaces: frozenset[str]
    qemu_pids: frozenset[int]
    tmpdirs: frozenset[str]

    def new_since(self, before: Snapshot) -> dict[str, set]:
        """What exists now and did not before, by kind; empty when nothing was left."""
        found = {
            "network namespaces": set(self.namespaces - before.namespaces),
            "QEMU processes": set(self.qemu_pids - before.qemu_pids),
            "temp directories": set(self.tmpdirs - before.tmpdirs),
        }
        return {kind: items for kind, items in found.items() if items}


def snapshot() -> Snapshot:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64"], capture_output=True, text=True)
    return Snapshot(
        frozenset(ns for ns in existing_namespaces() if ns.startswith(NETNS_PREFIX)),
        frozenset(int(p) for p in out.stdout.split()),
        frozenset(str(p) for p in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*")),
    )
