"""The miglab command line.

    miglab run [--scenario FILE.yaml] [--qemu stock|patched|PATH] [--link-rate 1gbit] ...

Exit statuses: EXIT_STATUS below, which `miglab --help` prints.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import textwrap
from types import FrameType
from typing import NoReturn

from .. import ownership
from ..errors import MiglabError
from ..vm import ExecuteError
from . import autotune, cleanup, compare, run
from .common import KEPT_LOGS


class _Parser(argparse.ArgumentParser):
    """argparse's errors in miglab's one-line form, with where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"miglab: error: {message} (see '{self.prog} --help')\n")


EXIT_STATUS = """exit status:
  0    run: the migration passed its verdict; compare: every variant ran to a
       verdict (a variant that fails its verdict is a row of the table, not
       an error); cleanup, autotune: done
  1    run: it ran, and did not pass its verdict (the summary says why)
  3    run: it passed its verdict on QEMU's downtime, but the guest was seen
       paused longer than the limit (its blackout, less the error bound)
  2    bad input, or an error that stopped the command (nothing is left behind)
  130  interrupted (Ctrl-C): everything it started is removed"""


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev off: "--downtime" must not quietly mean "--downtime-limit"
    parser = _Parser(prog="miglab", description=__doc__.split("\n\n")[0], allow_abbrev=False,
                     epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what miglab does (QEMU command lines, cleanup) to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (run, compare, cleanup, autotune):
        command.add_arguments(sub)
    return parser


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into the same unwinding Ctrl-C gets: every `with`
    # block (link, VMs) tears down on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def _exit_report() -> str:
    """What this process removed, and what it could not, after an interruption."""
    kept = "".join(f"; what it wrote until then is in {p}/ (the interrupted run has no"
                   " result)" for p in KEPT_LOGS if p.is_dir())
    record = ownership.current_or_none()
    if record is None:
        return "nothing had been started" + kept
    left = record.release_all()
    removed = record.removed
    text = f"removed {len(removed)} thing(s) it started"
    if removed:
        text += f" ({'; '.join(removed)})"
    if left.not_removed:
        text += f"; could NOT remove: {'; '.join(left.not_removed)} (see 'miglab cleanup')"
    else:
        text += "; nothing it started is left"
    return text + kept


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="miglab: %(name)s: %(message)s")
    if not args.verbose:  # its complaints about a dead peer repeat what miglab says
        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        commands = {"run": run.cmd, "compare": compare.cmd, "autotune": autotune.cmd,
                    "cleanup": cleanup.cmd}
        return commands[args.command](args)
    except MiglabError as err:  # the input's (nothing started), or autotune's lab
        print(f"miglab: error: {err}", file=sys.stderr)
        if err.evidence:
            print(textwrap.indent(err.evidence, "    "), file=sys.stderr)
        return 2
    except ExecuteError as err:  # QEMU refused a command (autotune); its own words
        print(f"miglab: error: QEMU: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmiglab: interrupted; {_exit_report()}", file=sys.stderr)
        return 130
