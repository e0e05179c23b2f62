"""What miglab runs leave on the machine: for checking that they leave nothing.

Only what the runs' own records (ownership.py) name, and only while it
still matches, counts: a host's own VMs, namespaces and temp directories,
whatever their names, are none of our business. A snapshot before and
after a run; what is new afterwards was left behind.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ownership


@dataclass(frozen=True)
class Snapshot:
    namespaces: frozenset[str]
    processes: frozenset[str]  # "what (pid N)"
    directories: frozenset[str]
    qemu_pids: frozenset[int]  # of the processes above, the QEMUs

    def new_since(self, before: Snapshot) -> dict[str, set[str]]:
        """What exists now and did not before, by kind; empty when nothing was left."""
        found = {
            "network namespaces": set(self.namespaces - before.namespaces),
            "processes": set(self.processes - before.processes),
            "directories": set(self.directories - before.directories),
        }
        return {kind: items for kind, items in found.items() if items}


def snapshot() -> Snapshot:
    live = [e for record in ownership.records() for e in record.live_entries()]
    return Snapshot(
        frozenset(e.name for e in live if e.kind == "namespace"),
        frozenset(e.describe() for e in live if e.kind == "process"),
        frozenset(e.name for e in live if e.kind == "directory"),
        frozenset(int(e.name) for e in live if e.kind == "process" and e.program == "qemu"),
    )
