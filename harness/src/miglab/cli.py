"""The miglab command line.

    miglab run [--scenario FILE.yaml] [--qemu stock|patched|PATH] [--link-rate 1gbit] ...

Exit status: 0 when the migration completed with the destination intact,
1 for any other verdict, 2 for bad arguments or a run that could not be made.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from . import report, runner, scenario
from .artifacts import MissingArtifact
from .link import LinkError
from .vm import VMError

SCENARIO_OPTIONS = {
    "qemu": "stock, patched, or a path to qemu-system-x86_64 (default patched)",
    "link-rate": "rate of the link, both ways, e.g. 1gbit, 500mbit (default 1gbit)",
    "link-delay": "one-way delay on each end, e.g. 5ms (needs netem)",
    "link-jitter": "delay jitter, e.g. 1ms (needs netem and --link-delay)",
    "link-loss": "packet loss on each end, e.g. 0.1%% (needs netem)",
    "memory": "guest RAM, e.g. 512M (default 512M)",
    "hot-set": "memory the guest rewrites with random data, e.g. 32M (default 32M)",
    "dirty-rate": "how fast it rewrites the hot set, MiB/s, e.g. 40M (default 40M)",
    "zero-set": "memory the guest rewrites with zeros, e.g. 64M (default 0)",
    "zero-rate": "how fast it rewrites the zero set, MiB/s (default 0)",
    "max-bandwidth": "QEMU's max-bandwidth in bytes/s, e.g. 8M, or none (default 8M)",
    "downtime-limit": "QEMU's downtime-limit, ms (default 300)",
    "switchover-bandwidth": "avail-switchover-bandwidth in bytes/s, e.g. 125M, or none"
                            " (default none: not set)",
    "timeout": "seconds to wait for convergence before cancelling (default 60)",
    "accel": "auto, tcg or kvm (default auto: KVM only if a guest boots under it)",
    "name": "a name for the run, used in reports",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miglab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="migrate a guest over a shaped link and judge it")
    run.add_argument("--scenario", type=Path, help="YAML file with the options below as keys")
    for option, text in SCENARIO_OPTIONS.items():
        run.add_argument(f"--{option}", help=text)
    run.add_argument("--json", type=Path, help="write the full result here")
    run.add_argument("--logs", type=Path,
                     help="keep QEMU logs and serial consoles here (default: next to --json)")
    return parser


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into the same unwinding Ctrl-C gets: every `with`
    # block (link, VMs) tears down on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def _scenario(args: argparse.Namespace) -> scenario.Scenario:
    base = scenario.load_yaml(args.scenario) if args.scenario else None
    given = {opt: getattr(args, opt.replace("-", "_")) for opt in SCENARIO_OPTIONS}
    return scenario.parse({k: v for k, v in given.items() if v is not None}, base)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        s = _scenario(args)
    except scenario.ScenarioError as err:
        print(f"miglab: error: {err}", file=sys.stderr)
        return 2
    if shutil.which("ip") is None:
        print("miglab: error: needs iproute2's 'ip' and 'tc'", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("miglab: error: run needs root (it creates network namespaces)", file=sys.stderr)
        return 2

    logs = args.logs or (args.json.with_name(args.json.stem + "-logs") if args.json else None)
    tmp = None if logs else tempfile.mkdtemp(prefix="miglab-logs-")
    live = report.LiveProgress()
    progress = runner.Progress(stage=live.stage, sample=live.sample)
    try:
        result = runner.run(s, logs or Path(tmp or "."), progress,
                            on_link_measured=lambda bps: setattr(live, "link_bps", bps))
    except (runner.RunError, LinkError, VMError, MissingArtifact) as err:
        live.stage(f"error: {err}")
        return 2
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    live.stage("done")
    print(report.summary(result))
    if args.json:
        result.write_json(args.json)
        print(f"result: {args.json}" + (f" (logs: {logs})" if logs else ""))
    good = (result.status == "completed" and result.integrity == "ok"
            and result.downtime_ms is not None
            and result.downtime_ms <= result.downtime_limit_ms * runner.DOWNTIME_ALLOWANCE)
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        return cmd_run(args)
    except KeyboardInterrupt:
        print("\nmiglab: interrupted; everything it started has been removed",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
