"""miglab cleanup: what dead runs left, removed as their records name it."""
from __future__ import annotations

import argparse
import os

from .. import ownership
from ..errors import InputError


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub.add_parser("cleanup", help="remove what miglab runs that died left behind (their"
                                   " namespaces, QEMUs, directories), as their records name"
                                   " it; never anything else", allow_abbrev=False)


def cmd(args: argparse.Namespace) -> int:
    """Remove what dead runs left, as their records name it; say what."""
    if os.geteuid() != 0:
        raise InputError("needs root (the runs' records are in /run/miglab)")
    found = False
    for record in ownership.records():
        if record.path == getattr(ownership.current_or_none(), "path", None):
            continue
        if not record.owner_dead:
            live = record.live_entries()
            where = ("another PID namespace" if record.pid_ns != ownership.pid_namespace()
                     else f"pid {record.owner.pid}")
            print(f"{record.path.name}: run still alive ({where}); left alone:"
                  f" {', '.join(e.describe() for e in live) or 'nothing live'}")
            continue
        found = True
        done = record.release_all()
        for item in done.removed:
            print(f"{record.path.name}: removed {item}")
        for item in done.not_removed:
            print(f"{record.path.name}: could NOT remove {item}")
        if not done.removed and not done.not_removed:
            print(f"{record.path.name}: nothing of it was left; record removed")
    if not found:
        print("miglab cleanup: no dead run has left anything")
    return 0
