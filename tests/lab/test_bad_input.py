"""Every bad input exits 2 with one line naming it, and changes nothing.

Each case runs `miglab run` (or `compare`) as a user would and compares
the machine before and after: network namespaces, /run/miglab, miglab's
entries in /tmp (and the private TMPDIR the command is given), the --json
path, and QEMU processes. Nothing may be started, so each case is quick.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from miglab import artifacts, link

MIGLAB = [sys.executable, "-m", "miglab.cli"]
STATE_DIR = Path("/run/miglab")
CASE_LIMIT_S = 5.0


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # after `miglab`; {tmp} is the test's directory
    needle: str  # what the error line must say (the input, named)
    command: str = "run"
    needs: str = ""  # "stock", "upstream": that build; "no-netem": a kernel without netem


CASES = {
    # "6Mb": 6 megabits to a network engineer, 6 megabytes to QEMU
    "max-bandwidth-bits-or-bytes": Case(("--max-bandwidth", "6Mb"),
                                        "--max-bandwidth '6Mb' is ambiguous: write 6mbit"),
    "compare-variant-misspelt": Case(("--variant", "patched:lnk", "--out", "{tmp}/out"),
                                     "--variant 'patched:lnk': BANDWIDTH 'lnk'",
                                     command="compare"),
    # a prefix of --downtime-limit (or of --downtime-ramp): never taken for one
    "option-prefix": Case(("--downtime", "300"), "unrecognized arguments: --downtime"),
    "via-unknown": Case(("--via", "virsh"), "--via 'virsh': accepted qmp, libvirt"),
    "via-libvirt-ramp": Case(("--via", "libvirt", "--downtime-ramp", "on"),
                             "--via libvirt: --downtime-ramp"),
    "via-libvirt-cross-traffic": Case(("--via", "libvirt", "--cross-traffic", "2"),
                                      "--via libvirt: --cross-traffic"),
    "timeout-nan": Case(("--timeout", "nan"), "--timeout 'nan'"),
    "timeout-inf": Case(("--timeout", "inf"), "--timeout 'inf'"),
    "yaml-timeout-nan": Case(("--scenario", "{tmp}/nan.yaml"), "--timeout 'nan'"),
    "qemu-directory": Case(("--qemu", "/etc"), "--qemu '/etc': /etc is a directory"),
    "qemu-not-qemu": Case(("--qemu", "/bin/true"), "--qemu '/bin/true': /bin/true is not a QEMU"),
    # ./miglab-test-qemu exists in the working directory: a bare name is PATH only
    "qemu-bare-name-not-on-path": Case(("--qemu", "miglab-test-qemu"),
                                       "--qemu 'miglab-test-qemu': not a build"),
    "scenario-not-utf8": Case(("--scenario", "{tmp}/latin1.yaml"), "not UTF-8 text"),
    "scenario-missing": Case(("--scenario", "{tmp}/none.yaml"), "no such file"),
    "scenario-directory": Case(("--scenario", "{tmp}"), "is a directory"),
    "memory-beyond-host": Case(("--memory", "100000G"), "--memory '100000G': the source and"
                                                        " destination guests both run on this"
                                                        " host"),
    "dirty-rate-beyond-32-bit": Case(("--dirty-rate", "5000000G"),
                                     "--dirty-rate '5000000G': expected whole MiB/s from 0 to"
                                     " 65536"),
    "switchover-auto-on-stock": Case(("--qemu", "stock", "--switchover-bandwidth", "auto"),
                                     "--switchover-bandwidth auto with --qemu 'stock'",
                                     needs="stock"),
    "qemu-auto-on-upstream-10.0": Case(("--qemu", "upstream", "--switchover-bandwidth",
                                        "qemu-auto"),
                                       "--switchover-bandwidth qemu-auto with --qemu 'upstream'",
                                       needs="upstream"),
    "switchover-125M-on-stock": Case(("--qemu", "stock", "--switchover-bandwidth", "125M"),
                                     "--switchover-bandwidth 125000000 (bytes/s) with --qemu"
                                     " 'stock'", needs="stock"),
    "compare-switchover-on-stock": Case(("--variant", "stock:125M", "--out", "{tmp}/out"),
                                        "with --variant 'stock:125M'", command="compare",
                                        needs="stock"),
    "link-delay-without-netem": Case(("--link-delay", "5ms"),
                                     "--link-delay 5ms: link delay, jitter and loss need the"
                                     " netem qdisc", needs="no-netem"),
    "json-into-missing-directory": Case(("--json", "{tmp}/missing/result.json"),
                                        "--json '{tmp}/missing/result.json': directory"
                                        " '{tmp}/missing' does not exist"),
    "logs-into-missing-directory": Case(("--logs", "{tmp}/missing/logs"),
                                        "--logs '{tmp}/missing/logs': directory"),
    "compare-out-into-missing-directory": Case(
        ("--variant", "patched:none", "--out", "{tmp}/missing/out"),
        "--out '{tmp}/missing/out': directory '{tmp}/missing' does not exist",
        command="compare"),
    "downtime-limit-beyond-qemu": Case(("--downtime-limit", "99999999"),
                                       "--downtime-limit '99999999': expected whole"
                                       " milliseconds from 0 to 2000000"),
    "cross-traffic-too-many": Case(("--cross-traffic", "17"),
                                   "--cross-traffic '17': expected a whole number from 0 to 16"),
    "vcpus-zero": Case(("--vcpus", "0"), "--vcpus '0': expected a whole number from 1 to 8"),
    "yaml-vcpus-nine": Case(("--scenario", "{tmp}/vcpus.yaml"),
                            "--vcpus '9': expected a whole number from 1 to 8"),
    # one more than this host gives: refused by the machine's checks, not the range
    "vcpus-beyond-host": Case(("--vcpus", str(min(len(os.sched_getaffinity(0)) + 1, 8))),
                              "--vcpus {vcpus}: every vCPU is a host thread", needs="few-cpus"),
    "downtime-ramp-ceiling-under-start": Case(
        ("--downtime-ramp", "initial_ms=900,ceiling_ms=800"),
        "--downtime-ramp 'initial_ms=900,ceiling_ms=800': initial_ms 900 must be above 0"),
    "compare-variant-unknown-suffix": Case(("--variant", "patched:auto+rmp", "--out", "{tmp}/o"),
                                           "--variant 'patched:auto+rmp': expected"
                                           " QEMU:BANDWIDTH or QEMU:BANDWIDTH+ramp",
                                           command="compare"),
    "max-bandwidth-beyond-qemu": Case(("--max-bandwidth", "18446744073709551616"),
                                      "--max-bandwidth '18446744073709551616': expected"),
}


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def _carries(pid: int, tag: str) -> bool:
    try:
        return tag.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


@dataclass(frozen=True)
class Machine:
    """What a miglab command could have changed."""

    namespaces: str
    state: tuple[str, ...] | None  # /run/miglab's entries, None if it does not exist
    tmp: frozenset[str]  # miglab's entries of /tmp
    qemu_pids: frozenset[int]

    @classmethod
    def now(cls) -> Machine:
        state = tuple(sorted(os.listdir(STATE_DIR))) if STATE_DIR.is_dir() else None
        tmp = frozenset(name for name in os.listdir("/tmp") if name.startswith("miglab"))
        return cls(_namespaces(), state, tmp, frozenset(_qemu_pids()))


def _skip_unless(needs: str) -> None:
    if needs in ("stock", artifacts.UPSTREAM) and not artifacts.build_binary(needs).is_file():
        pytest.skip(f"the {needs} build is missing: run {artifacts.BUILDS[needs].made_by}")
    if needs == "no-netem" and link.netem_available():
        pytest.skip("this kernel has netem: delay and loss are accepted here")
    if needs == "few-cpus" and len(os.sched_getaffinity(0)) >= 8:
        pytest.skip("this host gives 8 CPUs or more: every --vcpus in range fits")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "nan.yaml").write_text("timeout: .nan\n")
    (tmp_path / "vcpus.yaml").write_text("vcpus: 9\n")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    # were `--qemu miglab-test-qemu` run from the working directory, this would mark it
    local = tmp_path / "miglab-test-qemu"
    local.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran\n# QEMU emulator version\n")
    local.chmod(0o755)
    (tmp_path / "private-tmp").mkdir()
    return tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_and_changes_nothing(name: str, workdir: Path) -> None:
    case = CASES[name]
    _skip_unless(case.needs)
    args = [arg.replace("{tmp}", str(workdir)) for arg in case.args]
    json_path = workdir / "result.json"
    if case.command == "run" and "--json" not in args:
        args += ["--json", str(json_path)]
    tag = uuid.uuid4().hex
    env = {**os.environ, "TMPDIR": str(workdir / "private-tmp"), "MIGLAB_TEST_TAG": tag,
           # an empty PATH entry is "the current directory" to a shell; not to miglab
           "PATH": os.pathsep + os.environ.get("PATH", os.defpath)}
    files_before = sorted(workdir.rglob("*"))
    before = Machine.now()
    started = time.monotonic()
    proc = subprocess.run([*MIGLAB, case.command, *args], capture_output=True, text=True,
                          cwd=workdir, env=env, timeout=30)
    elapsed = time.monotonic() - started
    after = Machine.now()

    needle = case.needle.replace("{tmp}", str(workdir)).replace(
        "{vcpus}", str(len(os.sched_getaffinity(0)) + 1))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("miglab: error: "), proc.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert proc.stdout == ""
    # nothing changed
    assert after.namespaces == before.namespaces
    assert after.state == before.state
    assert after.tmp == before.tmp
    assert not os.listdir(workdir / "private-tmp")
    assert sorted(workdir.rglob("*")) == files_before  # no --json, --out, logs; ./NAME not run
    assert not json_path.exists()
    # QEMUs of this command would carry its tag; other users' may come and go meanwhile
    tagged = f"MIGLAB_TEST_TAG={tag}"
    assert not {pid for pid in after.qemu_pids - before.qemu_pids if _carries(pid, tagged)}
    assert elapsed < CASE_LIMIT_S, f"{elapsed:.1f}s: something was started"
