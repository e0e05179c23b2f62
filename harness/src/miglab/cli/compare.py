"""miglab compare: one scenario on several QEMU variants, side by side."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import artifacts, ownership, preflight, report, scenario, units
from ..artifacts import MissingArtifact
from ..plot import plot_comparison, plot_run
from ..result import Result
from .common import KEPT_LOGS, run_one, scenario_of

DEFAULT_VARIANTS = ["stock:none", "patched:none", "patched:link", "patched:auto",
                    "patched:qemu-auto", "upstream:none", "upstream:link", "upstream:auto",
                    "upstream-patched:link", "upstream-patched:qemu-auto"]


VARIANT_WORDS = ("none", "link", "auto", "qemu-auto")
# A variant's time beyond its migration: two guests booted, the link checked,
# the guests verified, the plots drawn (50-55 s with TCG guests on 2 cores:
# docs/measurements.md, the showcase).
VARIANT_OVERHEAD_S = 60


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    compare = sub.add_parser(
        "compare", help="run one scenario on several QEMU variants, side by side",
        allow_abbrev=False)
    compare.add_argument("--scenario", type=Path, help="YAML file with the options below as keys")
    for option, field in scenario.FIELDS.items():
        if option not in ("qemu", "dst-qemu", "switchover-bandwidth", "name"):
            compare.add_argument(f"--{option}", help=field.help)
    compare.add_argument(
        "--variant", action="append", metavar="QEMU:BANDWIDTH[+ramp]",
        help="a variant to run, e.g. stock:none, patched:125M, patched:link (the"
             " configured link rate, in bytes/s), upstream:auto, patched:qemu-auto,"
             " patched:auto+ramp (with KubeVirt's downtime ramp, as --downtime-ramp on);"
             " repeatable (default: stock; patched 7.2 with none, link, auto and"
             " qemu-auto; upstream 10.0 with none, link and auto; upstream-patched"
             " 10.2.2 with link and qemu-auto)")
    compare.add_argument("--out", type=Path, default=Path("miglab-results"),
                         help="directory for the JSON of every run, logs and table.md;"
                              " created if missing, in a directory that exists"
                              " (default ./miglab-results)")


def _variants(args: argparse.Namespace) -> list[scenario.Scenario]:
    """Each QEMU:BANDWIDTH variant as a scenario; 'link' means the link's own rate."""
    out = []
    for text in args.variant or DEFAULT_VARIANTS:
        qemu, sep, bandwidth = text.rpartition(":")
        bandwidth, plus, extra = bandwidth.partition("+")
        if not sep or not qemu or (plus and extra != "ramp"):
            raise scenario.ScenarioError(
                f"--variant {text!r}: expected QEMU:BANDWIDTH or QEMU:BANDWIDTH+ramp, such as"
                " patched:125M or patched:auto+ramp")
        ramped = {"downtime-ramp": "on"} if plus else {}
        if bandwidth not in VARIANT_WORDS:
            try:
                units.parse_bytes_per_s(bandwidth, "BANDWIDTH")
            except units.UnitError as err:
                raise scenario.ScenarioError(
                    f"--variant {text!r}: {err}; or one of {', '.join(VARIANT_WORDS)}"
                    " (link: the link's own rate)") from None
        base = scenario_of(args, qemu=qemu)
        if bandwidth == "link":
            bandwidth = str(base.link_rate_bps // 8)
        try:
            artifacts.qemu_binary(qemu)
        except MissingArtifact as err:
            raise scenario.ScenarioError(f"--variant {text!r}: {err}") from None
        out.append(scenario_of(args, qemu=qemu, name=text,
                             **{"switchover-bandwidth": bandwidth, **ramped}))
    return out


def cmd(args: argparse.Namespace) -> int:
    variants = _variants(args)
    # the machine's checks (binaries, outputs, memory, root, netem), before anything is made
    preflight.check(variants, directories={"--out": args.out}, variants=True)
    ownership.reap_dead_runs()  # what SIGKILLed runs left, before we make anything
    record = ownership.current()  # this command's: every variant's lab is recorded in it
    args.out.mkdir(parents=True, exist_ok=True)
    KEPT_LOGS.append(args.out)
    live = report.LiveProgress()
    rows: list[tuple[str, Result]] = []
    # at most: a variant that never converges runs to its timeout
    most_s = [s.timeout_s + VARIANT_OVERHEAD_S for s in variants]
    live.stage(f"{len(variants)} variant(s), at most about {sum(most_s) / 60:.0f} min;"
               f" results in {args.out}/")
    started = time.monotonic()
    for i, s in enumerate(variants, 1):
        elapsed_s = time.monotonic() - started
        live.stage(f"[{i}/{len(variants)}] {s.name} ({elapsed_s / 60:.0f} min so far, at most"
                   f" about {sum(most_s[i - 1:]) / 60:.0f} min left)")
        slug = report.slug(s.name)
        result = run_one(s, args.out / f"{slug}-logs", live, record)
        if result is None:
            return 2
        result.write_json(args.out / f"{slug}.json")
        plot_run(result, args.out / f"{slug}.png", s.name)
        rows.append((s.name, result))
    live.stage("done")
    text = report.table(rows)
    (args.out / "table.md").write_text(text + "\n")
    plot_comparison(rows, args.out / "comparison.png")
    (args.out / "summary.md").write_text(report.comparison_summary(rows, variants[0]))
    print(text)
    print(f"results: {args.out}/summary.md (the table, the plots, every run's reasons;"
          " per run: JSON, PNG, logs)")
    return 0
