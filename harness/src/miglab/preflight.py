"""Checks that need the machine, made before a run creates anything.

scenario.py checks what a value means; this module checks it against what
is here: the QEMU binaries (a QEMU, for x86_64, with the parameter where it
is set), the kernel's netem qdisc, the host's memory, the directories the
outputs go to, root and iproute2. It only reads and asks (`BINARY
--version`, a tc probe in an anonymous namespace): a bad input ends the
command with exit status 2 while no namespace, guest, record or file of it
exists yet.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import artifacts, libvirthost, phases, units
from .artifacts import MissingArtifact
from .link import netem_available
from .migration import PARAM, TCP_PARAMS
from .scenario import Scenario, ScenarioError

VERSION_TIMEOUT_S = 5.0
MEMINFO = Path("/proc/meminfo")

# Byte strings looked for in a binary, without running it:
BANNER = b"QEMU emulator version"  # every QEMU's --version text
X86_64 = b"x86_64-cpu"  # the CPU type only a qemu-system-x86_64 registers (i386's is i386-cpu)
Q35 = b"q35-pcihost"  # the q35 machine's host bridge: the lab's guests are q35 (vm.py)
PARAMETER = PARAM.encode()  # the QAPI name, in the introspection data of QEMUs that have it
# likewise, QEMU's own automatic mode (our patched builds), under either
# name; the second is a substring of the first, which is looked for first
TCP_PARAMETERS = tuple(name.encode() for name in TCP_PARAMS)
# the trace event of the downtime's checkpoints (phases.py): QEMU 8.2 and later
CHECKPOINTS = phases.MARKER
_MARKERS = (BANNER, X86_64, Q35, PARAMETER, *TCP_PARAMETERS, CHECKPOINTS)
_CHUNK = 1 << 20


class PreflightError(ScenarioError):
    """This machine cannot run what was asked; the message names the input."""


@dataclass(frozen=True)
class QemuBinary:
    choice: str  # as given: a build's name, a command or a path
    path: Path
    version: str  # as --version prints it, e.g. 7.2.22
    has_switchover_bandwidth: bool  # knows avail-switchover-bandwidth
    tcp_param: str | None = None  # its name of QEMU's own automatic mode (qemu-auto), if any

    def describe(self) -> str:
        """E.g. stock (Debian 12's QEMU 7.2: 7.2.22), /usr/bin/qemu-system-x86_64 (QEMU 7.2.0)."""
        build = artifacts.BUILDS.get(self.choice)
        if build:
            return f"{self.choice} ({build.description}: {self.version})"
        return f"{self.path} (QEMU {self.version})"


def _identity(path: Path) -> tuple[str, int, int, int, int]:
    """Path and what changes when the file does: the cache key of what it holds."""
    st = path.stat()
    return str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _markers(identity: tuple[str, int, int, int, int]) -> frozenset[bytes]:
    """Which of _MARKERS the file holds, read in chunks (QEMUs are 50-100 MB)."""
    found: set[bytes] = set()
    keep = max(len(m) for m in _MARKERS) - 1  # a marker may straddle two chunks
    tail = b""
    with open(identity[0], "rb") as f:
        while len(found) < len(_MARKERS) and (chunk := f.read(_CHUNK)):
            window = tail + chunk
            found.update(m for m in _MARKERS if m in window)
            tail = window[-keep:]
    return frozenset(found)


def has_parameter(path: Path, marker: bytes = PARAMETER) -> bool:
    """Whether the QEMU at @path has a parameter (@marker: avail-switchover-bandwidth
    unless said), without starting it."""
    return marker in _markers(_identity(path))


@functools.lru_cache(maxsize=32)
def _version(identity: tuple[str, int, int, int, int]) -> tuple[str | None, str]:
    """(version, "") from `BINARY --version`, or (None, what went wrong)."""
    path = Path(identity[0])
    _, env = artifacts.qemu_runtime(path)
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              errors="replace", stdin=subprocess.DEVNULL,
                              timeout=VERSION_TIMEOUT_S, env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        return None, f"'{path} --version' did not answer within {VERSION_TIMEOUT_S:.0f} s"
    except OSError as err:
        return None, f"'{path} --version' could not run ({err.strerror or err})"
    if m := re.search(r"QEMU emulator version (\S+)", proc.stdout):
        return m.group(1), ""
    said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return None, (f"'{path} --version' printed {said[0][:80]!r}" if said else
                  f"'{path} --version' printed nothing (exit status {proc.returncode})")


def check_qemu(choice: str, where: str) -> QemuBinary:
    """The QEMU @choice names, checked: an executable regular file that is a
    qemu-system-x86_64 and answers --version. @where names the input in errors."""
    accepted = "expected qemu-system-x86_64"
    try:
        path = artifacts.qemu_binary(choice)
        st = path.stat()  # follows links, as exec does
    except MissingArtifact as err:
        raise PreflightError(f"{where}: {err}") from None
    except (OSError, ValueError) as err:
        raise PreflightError(f"{where}: {getattr(err, 'strerror', None) or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise PreflightError(f"{where}: {path} is a directory; {accepted}")
    if not stat.S_ISREG(st.st_mode):
        raise PreflightError(f"{where}: {path} is not a regular file; {accepted}")
    if not os.access(path, os.X_OK):
        raise PreflightError(f"{where}: {path} is not executable; {accepted}")
    try:
        markers = _markers(_identity(path))
    except OSError as err:
        raise PreflightError(f"{where}: {path} cannot be read ({err.strerror})") from None
    # Looked for before running it: miglab runs as root, and runs only QEMUs.
    if BANNER not in markers:
        raise PreflightError(f"{where}: {path} is not a QEMU (no"
                             f" {BANNER.decode()!r} in it); {accepted}")
    version, problem = _version(_identity(path))
    if version is None:
        raise PreflightError(f"{where}: {path} is not a QEMU that runs here ({problem});"
                             f" {accepted}")
    if X86_64 not in markers:
        raise PreflightError(f"{where}: {path} is QEMU {version} but not for x86_64 (no"
                             f" {X86_64.decode()} in it); {accepted}: the guest is an"
                             " x86_64 kernel")
    if Q35 not in markers:  # Debian's qemu-system-x86_64-microvm, say
        raise PreflightError(f"{where}: {path} is QEMU {version} for x86_64 but without the"
                             f" q35 machine the lab's guests run on; {accepted} with q35")
    return QemuBinary(choice, path, version, PARAMETER in markers, _tcp_param(markers))


def _tcp_param(markers: frozenset[bytes]) -> str | None:
    return next((m.decode() for m in TCP_PARAMETERS if m in markers), None)


def tcp_param(path: Path) -> str | None:
    """The name the QEMU at @path knows QEMU's own automatic mode by, or None."""
    return _tcp_param(_markers(_identity(path)))


def _builds_with(marker: bytes) -> list[str]:
    """The builds here whose binary has a parameter (@marker), for an error message."""
    out = []
    for name in artifacts.BUILDS:
        path = artifacts.build_binary(name)
        try:
            if path.is_file() and has_parameter(path, marker):
                out.append(name)
        except OSError:
            continue
    return out


def _check_qemus(s: Scenario, where: str) -> None:
    src = check_qemu(s.qemu, where)
    if s.dst_qemu and s.dst_qemu != s.qemu:
        check_qemu(s.dst_qemu, f"--dst-qemu {s.dst_qemu!r}")
    # The parameter is set on the source only (migration.configure), whenever
    # it is given: auto starts it at 0, and QEMUs without it refuse even 0.
    if s.switchover.qemu_auto and not src.tcp_param:
        builds = _builds_with(TCP_PARAMETERS[-1])  # a substring of both names
        having = (f"builds here that have it: {', '.join(builds)}" if builds else
                  "miglab's patched builds have it (scripts/build-qemu)")
        raise PreflightError(f"--switchover-bandwidth qemu-auto with {where}: {src.describe()}"
                             f" has no {TCP_PARAMS[0]} parameter; {having}")
    if s.switchover.initial_parameter() is None or src.has_switchover_bandwidth:
        return
    value = "auto" if s.switchover.auto else f"{s.switchover.bytes_per_s} (bytes/s)"
    builds = _builds_with(PARAMETER)
    having = (f"builds here that have it: {', '.join(builds)}" if builds else
              "QEMU 8.2 and later, and miglab's patched 7.2, have it")
    raise PreflightError(f"--switchover-bandwidth {value} with {where}: {src.describe()}"
                         f" has no {PARAM} parameter; {having}")


def host_memory_available_mib() -> int | None:
    """MemAvailable of /proc/meminfo in MiB; None where it cannot be read."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(scenarios: Sequence[Scenario]) -> None:
    available = host_memory_available_mib()
    mib = max(s.memory_mib for s in scenarios)
    # Both guests live on this host for the whole migration.
    if available is not None and 2 * mib > available:
        raise PreflightError(
            f"--memory {units.human_mib(mib)!r}: the source and destination guests both run"
            f" on this host and need 2 x {units.human_mib(mib)}, but it has"
            f" {available / 1024:.1f}G available (MemAvailable in {MEMINFO}); accepted"
            f" at most {units.human_mib(available // 2)}")


def host_cpus() -> int:
    """The CPUs this process may run on (a cpuset or taskset counted, not the machine's)."""
    return len(os.sched_getaffinity(0))


def _check_cpus(scenarios: Sequence[Scenario]) -> None:
    available = host_cpus()
    vcpus = max(s.vcpus for s in scenarios)
    # Under TCG every vCPU is a host thread; with more of them than CPUs they
    # take turns, and the guest's threads would neither run at once nor at
    # the rates asked.
    if vcpus > available:
        raise PreflightError(
            f"--vcpus {vcpus}: every vCPU is a host thread, and this host gives miglab"
            f" {available} CPU(s) (sched_getaffinity); accepted at most {available}")


def _check_output(option: str, path: Path, directory: bool) -> None:
    where = f"{option} {str(path)!r}"
    parent = path.parent  # "." for a bare name
    if not parent.exists():
        raise PreflightError(f"{where}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise PreflightError(f"{where}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"{where}: directory {str(parent)!r} is not writable")
    if directory and path.exists() and not path.is_dir():
        raise PreflightError(f"{where}: exists and is not a directory")
    if not directory and path.is_dir():
        raise PreflightError(f"{where}: is a directory; expected a file name")


def check_outputs(files: Mapping[str, Path | None] | None = None,
                  directories: Mapping[str, Path | None] | None = None) -> None:
    """Each output's parent directory exists and is writable, so a result is
    never lost at the end of a run. Keys are the options, for the errors."""
    for outputs, directory in ((files or {}, False), (directories or {}, True)):
        for option, path in outputs.items():
            if path is not None:
                _check_output(option, path, directory)


def check_host() -> None:
    """Root and iproute2: what every lab run needs."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise PreflightError(f"needs iproute2's 'ip' and 'tc' (not found: {', '.join(missing)})")
    if os.geteuid() != 0:
        raise PreflightError("needs root (it creates network namespaces)")


def _check_netem(scenarios: Sequence[Scenario]) -> None:
    for s in scenarios:
        if not s.link().needs_netem:
            continue
        given = [f"--link-{key} {value:g}{unit}" for key, value, unit in
                 (("delay", s.link_delay_ms, "ms"), ("jitter", s.link_jitter_ms, "ms"),
                  ("loss", s.link_loss_pct, "%")) if value]
        if not netem_available():
            raise PreflightError(
                f"{' '.join(given)}: link delay, jitter and loss need the netem qdisc, which"
                " this kernel does not have; links with only a rate work")


def _check_libvirt(scenarios: Sequence[Scenario]) -> None:
    if any(s.via == "libvirt" for s in scenarios) and (lacking := libvirthost.missing()):
        raise PreflightError(f"--via libvirt: {lacking}")


def check(scenarios: Scenario | Sequence[Scenario],
          files: Mapping[str, Path | None] | None = None,
          directories: Mapping[str, Path | None] | None = None,
          variants: bool = False) -> None:
    """Everything this machine must offer for @scenarios, checked before
    anything is made; PreflightError names the input that cannot be run.

    @files and @directories: the outputs by option (--json; --logs, --out).
    @variants: the scenarios are compare's --variant QEMU:BANDWIDTH (named so
    in errors) rather than --qemu.
    """
    runs = [scenarios] if isinstance(scenarios, Scenario) else list(scenarios)
    for s in runs:
        _check_qemus(s, f"--variant {s.name!r}" if variants else f"--qemu {s.qemu!r}")
    check_outputs(files, directories)
    local = [r for r in runs if not r.remote]  # the others' guests run on their hosts
    if local:
        _check_memory(local)
        _check_cpus(local)
    check_host()
    _check_netem(runs)  # its probe needs root
    _check_libvirt(runs)
