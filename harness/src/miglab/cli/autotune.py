"""miglab autotune: the automatic switchover bandwidth for a QEMU of yours."""
from __future__ import annotations

import argparse
import functools
import os
import stat
from collections.abc import Callable

from .. import autotune, ownership, tcpdiag
from ..errors import InputError
from ..migration import PARAM
from ..monitor import Monitor, QMPError


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tune = sub.add_parser(
        "autotune", help="set avail-switchover-bandwidth of a running source QEMU from the"
                         " kernel's TCP samples of its migration connection(s)",
        allow_abbrev=False)
    tune.add_argument("--qmp", required=True,
                      help="QMP unix socket of the source QEMU (it must listen: server=on)")
    tune.add_argument("--pid", type=int,
                      help="QEMU's pid (default: the process listening on --qmp)")
    tune.add_argument("--port", type=int,
                      help="the destination's migration port (default: the connections the"
                           " QEMU process opens after miglab attaches, so start it before"
                           " the migration, or give --port)")
    tune.add_argument("--netns", help="network namespace of the source QEMU, if any")
    tune.add_argument("--wait", type=float, default=60.0,
                      help="seconds to wait for a migration to start (default 60)")


def _target(args: argparse.Namespace) -> int:
    """The checked options of `miglab autotune`; returns QEMU's pid."""
    if not 0 < args.wait < float("inf"):
        raise InputError(f"--wait {args.wait}: expected a number of seconds above 0")
    if args.port is not None and not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: expected a TCP port, 1 to 65535")
    if args.netns is not None and not (ownership.NETNS_DIR / args.netns).exists():
        raise InputError(f"--netns {args.netns!r}: no such network namespace"
                         " (see 'ip netns list')")
    if not stat.S_ISSOCK(_mode(args.qmp)):
        raise InputError(f"--qmp {args.qmp}: not a unix socket")
    if args.pid is not None:
        if args.pid <= 0 or ownership.ProcessId.of(args.pid) is None:
            raise InputError(f"--pid {args.pid}: no such process")
        return int(args.pid)
    pid = autotune.find_qmp_owner(args.qmp, args.netns)
    if pid is None:
        raise InputError(f"--qmp {args.qmp}: no process listens there (in"
                         f" {'network namespace ' + args.netns if args.netns else 'this'}"
                         " network namespace); give --pid")
    return pid


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def cmd(args: argparse.Namespace) -> int:
    pid = _target(args)
    qmp = Monitor(args.qmp)
    try:
        qmp.connect()
    except (QMPError, OSError) as err:
        raise InputError(f"--qmp {args.qmp}: {err}") from None

    def log(text: str) -> None:
        print(f"miglab autotune: {text}", flush=True)

    with qmp:
        original = qmp.cmd("query-migrate-parameters").get(PARAM)
        if original is None:
            raise InputError(f"this QEMU has no {PARAM} (it needs upstream 8.2+"
                             " or our patched 7.2)")
        tuner = autotune.Autotuner()
        with tcpdiag.DiagSocket(args.netns) as diag:
            if args.port is not None:
                conns = None
                read = functools.partial(autotune.read_samples, diag, port=args.port, pid=pid)
                how = f"connections to port {args.port}"
            else:
                conns = autotune.MigrationConnections(diag, pid)
                read = conns.read
                how = "the connections QEMU opens for the migration"
            try:
                if conns:  # what exists now predates the migration; refused if one runs
                    conns.query(qmp.cmd)
                log(f"attached to pid {pid}; {PARAM} was {original}; tuning from {how}")
                status = autotune.follow(qmp.cmd, read, tuner, log, wait_s=args.wait,
                                         query=functools.partial(conns.query, qmp.cmd)
                                         if conns else None)
            finally:
                restored = restore(qmp, original, log)
        log(f"migration {status}; {len(tuner.changes)} change(s)")
        if not restored:
            return 1
        return 0 if status == "completed" else 1


def restore(qmp: Monitor, original: int, log: Callable[[str], None]) -> bool:
    try:
        autotune.restore(qmp.cmd, original)
    except Exception as err:  # any failure must be seen: the user's value is lost
        log(f"error: could not restore {PARAM} to {original}: {err}")
        return False
    log(f"{PARAM} restored to {original}")
    return True
