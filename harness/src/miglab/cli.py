"""The miglab command line.

    miglab run [--scenario FILE.yaml] [--qemu stock|patched|PATH] [--link-rate 1gbit] ...

Exit statuses: EXIT_STATUS below, which `miglab --help` prints.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn

from . import (
    artifacts,
    autotune,
    ownership,
    preflight,
    report,
    runner,
    scenario,
    units,
    verdict,
)
from .artifacts import MissingArtifact
from .link import LinkError
from .migration import PARAM
from .monitor import Monitor, QMPError
from .plot import plot_comparison, plot_run
from .result import Result
from .traffic import FlowError
from .vm import ExecuteError, VMError

SCENARIO_OPTIONS = {
    "qemu": "a build: "
            + "; ".join(f"{name}, {b.description}" for name, b in artifacts.BUILDS.items())
            + "; or a qemu-system-x86_64 command on PATH, or a path to one (default patched)",
    "dst-qemu": "the destination's QEMU, when it differs from --qemu (same choices)",
    "link-rate": "rate of the link, both ways, e.g. 1gbit, 500mbit (default 1gbit)",
    "link-delay": "one-way delay on each end, e.g. 5ms (needs netem)",
    "link-jitter": "delay jitter, e.g. 1ms (needs netem and --link-delay)",
    "link-loss": "packet loss on each end, e.g. 0.1%% (needs netem)",
    "memory": "guest RAM, e.g. 512M (default 512M)",
    "numa-nodes": "guest NUMA nodes, the memory of each, e.g. 128M,384M (the sum is the"
                  " guest's memory; its working sets are interleaved over all nodes)",
    "vcpus": "guest vCPUs; the workload rewrites its hot set from as many threads, one"
             " pinned to each vCPU, each with its share of the set and of the rate"
             " (default 1)",
    "hot-set": "memory the guest rewrites with random data, e.g. 32M (default 32M)",
    "dirty-rate": "how fast it rewrites the hot set, MiB/s, e.g. 40M (default 40M)",
    "zero-set": "memory the guest rewrites with zeros, e.g. 64M (default 0)",
    "zero-rate": "how fast it rewrites the zero set, MiB/s (default 0)",
    "max-bandwidth": "QEMU's max-bandwidth in bytes/s, e.g. 8M, or none (default 8M)",
    "downtime-limit": "QEMU's downtime-limit, ms (default 300)",
    "switchover-bandwidth": "avail-switchover-bandwidth in bytes/s, e.g. 125M; none (not"
                            " set, the default); auto (miglab sets it from the kernel's"
                            " TCP samples of the migration connections); or qemu-auto"
                            " (QEMU takes it from its channels' TCP samples itself:"
                            " x-tcp-switchover-bandwidth, in miglab's patched builds)",
    "multifd-channels": "migrate over N multifd channels (TCP connections), 0 for one"
                        " connection without multifd (default 0)",
    "cross-traffic": "N bulk TCP flows from the source to the destination namespace over"
                     " the same link, from before the migration until it ends (default 0)",
    "downtime-ramp": "KubeVirt's downtime ramp (VEP 291): off (default), on (start at 150 ms;"
                     " from iteration 3, every 10 s, one of 7 steps up to 1050 ms), or"
                     " KEY=VALUE pairs over those: initial_ms, steps, start_iteration,"
                     " cooldown_s, ceiling_ms",
    "timeout": "seconds to wait for convergence before cancelling (default 60)",
    "accel": "auto, tcg or kvm (default auto: KVM only if a guest boots under it)",
    "via": "qmp (default: miglab drives QEMU's monitor) or libvirt (a libvirtd on each"
           " lab host runs the guest as a domain and migrates it through libvirt's API,"
           " peer to peer, as Nova and virsh do)",
    "src-uri": "with --via libvirt, between two libvirt hosts of yours instead of the lab's"
               " own: the source's URI, e.g. qemu+ssh://root@host1/system (with --dst-uri"
               " and --migrate-address; no link or namespace is made, the guest's kernel"
               " and initramfs are uploaded through libvirt, the QEMU --qemu names must be"
               " at the same path on the hosts)",
    "dst-uri": "the destination host's libvirt URI, as the harness and the source's libvirtd"
               " reach it (peer to peer)",
    "migrate-address": "the destination's address on the network the migration's data"
                       " should take",
    "name": "a name for the run, used in reports",
}


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
    run = sub.add_parser("run", help="migrate a guest over a shaped link and judge it",
                         allow_abbrev=False)
    run.add_argument("--scenario", type=Path, help="YAML file with the options below as keys")
    for option, text in SCENARIO_OPTIONS.items():
        run.add_argument(f"--{option}", help=text)
    run.add_argument("--json", type=Path, help="write the full result here")
    run.add_argument("--logs", type=Path,
                     help="keep QEMU logs and serial consoles here (default: next to --json)")

    compare = sub.add_parser(
        "compare", help="run one scenario on several QEMU variants, side by side",
        allow_abbrev=False)
    compare.add_argument("--scenario", type=Path, help="YAML file with the options below as keys")
    for option, text in SCENARIO_OPTIONS.items():
        if option not in ("qemu", "dst-qemu", "switchover-bandwidth", "name"):
            compare.add_argument(f"--{option}", help=text)
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
    sub.add_parser("cleanup", help="remove what miglab runs that died left behind (their"
                                   " namespaces, QEMUs, directories), as their records name"
                                   " it; never anything else", allow_abbrev=False)
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
    return parser


def _autotune_target(args: argparse.Namespace) -> int:
    """The checked options of `miglab autotune`; returns QEMU's pid."""
    if not 0 < args.wait < float("inf"):
        raise UsageError(f"--wait {args.wait}: expected a number of seconds above 0")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: expected a TCP port, 1 to 65535")
    if args.netns is not None and not (ownership.NETNS_DIR / args.netns).exists():
        raise UsageError(f"--netns {args.netns!r}: no such network namespace"
                         " (see 'ip netns list')")
    if not stat.S_ISSOCK(_mode(args.qmp)):
        raise UsageError(f"--qmp {args.qmp}: not a unix socket")
    if args.pid is not None:
        if args.pid <= 0 or ownership.ProcessId.of(args.pid) is None:
            raise UsageError(f"--pid {args.pid}: no such process")
        return int(args.pid)
    pid = autotune.find_qmp_owner(args.qmp, args.netns)
    if pid is None:
        raise UsageError(f"--qmp {args.qmp}: no process listens there (in"
                         f" {'network namespace ' + args.netns if args.netns else 'this'}"
                         " network namespace); give --pid")
    return pid


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def cmd_autotune(args: argparse.Namespace) -> int:
    pid = _autotune_target(args)
    qmp = Monitor(args.qmp)
    try:
        qmp.connect()
    except (QMPError, OSError) as err:
        raise UsageError(f"--qmp {args.qmp}: {err}") from None

    def log(text: str) -> None:
        print(f"miglab autotune: {text}", flush=True)

    with qmp:
        original = qmp.cmd("query-migrate-parameters").get(PARAM)
        if original is None:
            raise UsageError(f"this QEMU has no {PARAM} (it needs upstream 8.2+"
                             " or our patched 7.2)")
        tuner = autotune.Autotuner()
        if args.port is not None:
            conns = None
            read = functools.partial(autotune.read_ss, args.netns, args.port, pid=pid)
            how = f"connections to port {args.port}"
        else:
            conns = autotune.MigrationConnections(args.netns, pid)
            read = conns.read
            how = "the connections QEMU opens for the migration"
        try:
            if conns:  # what exists now predates the migration; refused if one runs
                conns.query(qmp.cmd)
            log(f"attached to pid {pid}; {PARAM} was {original}; tuning from {how}")
            status = autotune.follow(qmp.cmd, read, tuner, log, wait_s=args.wait,
                                     query=functools.partial(conns.query, qmp.cmd)
                                     if conns else None)
        except autotune.AlreadyMigrating as err:
            raise UsageError(str(err)) from None
        finally:
            restored = _restore(qmp, original, log)
        log(f"migration {status}; {len(tuner.changes)} change(s)")
        if not restored:
            return 1
        return 0 if status == "completed" else 1


def _restore(qmp: Monitor, original: int, log: Callable[[str], None]) -> bool:
    try:
        qmp.cmd("migrate-set-parameters", **{PARAM: original})
    except Exception as err:  # any failure must be seen: the user's value is lost
        log(f"error: could not restore {PARAM} to {original}: {err}")
        return False
    log(f"{PARAM} restored to {original}")
    return True


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into the same unwinding Ctrl-C gets: every `with`
    # block (link, VMs) tears down on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def _scenario(args: argparse.Namespace, **extra: str) -> scenario.Scenario:
    base = scenario.load_yaml(args.scenario) if args.scenario else None
    given = {opt: getattr(args, opt.replace("-", "_"), None) for opt in SCENARIO_OPTIONS}
    given.update(extra)
    return scenario.parse({k: v for k, v in given.items() if v is not None}, base)


DEFAULT_VARIANTS = ["stock:none", "patched:none", "patched:link", "patched:auto",
                    "patched:qemu-auto", "upstream:none", "upstream:link", "upstream:auto",
                    "upstream-patched:link", "upstream-patched:qemu-auto"]


VARIANT_WORDS = ("none", "link", "auto", "qemu-auto")
# A variant's time beyond its migration: two guests booted, the link checked,
# the guests verified, the plots drawn (50-55 s with TCG guests on 2 cores,
# the showcase of 2026-12-04).
VARIANT_OVERHEAD_S = 60


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
        base = _scenario(args, qemu=qemu)
        if bandwidth == "link":
            bandwidth = str(base.link_rate_bps // 8)
        try:
            artifacts.qemu_binary(qemu)
        except MissingArtifact as err:
            raise scenario.ScenarioError(f"--variant {text!r}: {err}") from None
        out.append(_scenario(args, qemu=qemu, name=text,
                             **{"switchover-bandwidth": bandwidth, **ramped}))
    return out


class UsageError(Exception):
    """Bad arguments, or a machine the lab cannot run on: exit 2, start nothing."""


def _run_one(s: scenario.Scenario, logs: Path, live: report.LiveProgress) -> Result | None:
    progress = runner.Progress(stage=live.stage, sample=live.sample)
    try:
        return runner.run(s, logs, progress,
                          on_link_measured=lambda bps: setattr(live, "link_bps", bps))
    except (runner.RunError, LinkError, VMError, QMPError, MissingArtifact,
            ownership.OwnershipError, FlowError) as err:
        live.stage(f"error: {err}")
        return None
    except ExecuteError as err:  # QEMU refused a command; its own words
        live.stage(f"error: QEMU: {err}")
        return None


def cmd_compare(args: argparse.Namespace) -> int:
    variants = _variants(args)
    # the machine's checks (binaries, outputs, memory, root, netem), before anything is made
    preflight.check(variants, directories={"--out": args.out}, variants=True)
    args.out.mkdir(parents=True, exist_ok=True)
    _KEPT_LOGS.append(args.out)
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
        result = _run_one(s, args.out / f"{slug}-logs", live)
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


def cmd_run(args: argparse.Namespace) -> int:
    s = _scenario(args)
    # the machine's checks (binaries, outputs, memory, root, netem), before anything is made
    preflight.check(s, files={"--json": args.json}, directories={"--logs": args.logs})

    logs = args.logs or (args.json.with_name(args.json.stem + "-logs") if args.json else None)
    record = ownership.current()
    tmp = None
    if logs is None:  # nowhere to keep them: a private directory, recorded, removed after
        logs, tmp = record.directory(Path(tempfile.gettempdir()), "miglab-logs-", "run logs")
    live = report.LiveProgress()
    if not tmp:
        _KEPT_LOGS.append(logs)
    try:
        result = _run_one(s, logs, live)
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


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove what dead runs left, as their records name it; say what."""
    if os.geteuid() != 0:
        raise UsageError("needs root (the runs' records are in /run/miglab)")
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


# Log directories the user asked for, named after an interruption: they
# hold what the run logged until then, and no result.
_KEPT_LOGS: list[Path] = []


def _exit_report() -> str:
    """What this process removed, and what it could not, after an interruption."""
    kept = "".join(f"; what it wrote until then is in {p}/ (the interrupted run has no"
                   " result)" for p in _KEPT_LOGS if p.is_dir())
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
        commands = {"run": cmd_run, "compare": cmd_compare, "autotune": cmd_autotune,
                    "cleanup": cmd_cleanup}
        return commands[args.command](args)
    except (UsageError, scenario.ScenarioError) as err:
        print(f"miglab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmiglab: interrupted; {_exit_report()}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
