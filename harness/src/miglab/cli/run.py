"""miglab run: one scenario, start to verdict."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .. import ownership, preflight, report, scenario, verdict
from .common import KEPT_LOGS, run_one, scenario_of


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="migrate a guest over a shaped link and judge it",
                         allow_abbrev=False)
    run.add_argument("--scenario", type=Path, help="YAML file with the options below as keys")
    for option, field in scenario.FIELDS.items():
        run.add_argument(f"--{option}", help=field.help)
    run.add_argument("--json", type=Path, help="write the full result here")
    run.add_argument("--logs", type=Path,
                     help="keep QEMU logs and serial consoles here (default: next to --json)")


def cmd(args: argparse.Namespace) -> int:
    s = scenario_of(args)
    # the machine's checks (binaries, outputs, memory, root, netem), before anything is made
    preflight.check(s, files={"--json": args.json}, directories={"--logs": args.logs})
    ownership.reap_dead_runs()  # what SIGKILLed runs left, before we make anything

    logs = args.logs or (args.json.with_name(args.json.stem + "-logs") if args.json else None)
    record = ownership.current()
    tmp = None
    if logs is None:  # nowhere to keep them: a private directory, recorded, removed after
        logs, tmp = record.directory(Path(tempfile.gettempdir()), "miglab-logs-", "run logs")
    live = report.LiveProgress()
    if not tmp:
        KEPT_LOGS.append(logs)
    try:
        result = run_one(s, logs, live, record)
    finally:
        if tmp:
            record.release(tmp)
    if result is None:
        return 2
    live.stage("done")
    print(report.summary(result))
    if args.json:
        result.write_json(args.json)
    where = [f"result: {args.json}"] if args.json else []
    where.append(f"logs: {logs}" if not tmp else
                 "logs: not kept (give --json FILE or --logs DIR to keep them)")
    print("; ".join(where))
    if not verdict.passed(result):
        return 1
    return 3 if result.paused_over_limit else 0
