"""One QEMU process and everything made for it.

Like QEMU's own python/qemu/machine: launch() and shutdown() are the only
ways in and out, the object is a context manager, and shutdown() is
idempotent and runs on every path. The QEMU process and its private
directory are recorded in the run's record (ownership.py) before they
exist; QEMU gets PR_SET_PDEATHSIG, so it dies with the harness however the
harness dies, and it enters its network namespace with setns(), not
through a wrapper process.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts, ownership
from .console import Console
from .errors import LabError
from .monitor import ExecuteError, Monitor, QMPError, QMPTimeout

log = logging.getLogger(__name__)

ACCELS = ("tcg", "kvm")
TMP_PREFIX = "miglab-"
QUIT_TIMEOUT_S = 10.0  # "quit" to exit: QEMU flushes and stops its threads
KILL_TIMEOUT_S = 5.0


class VMError(LabError):
    """QEMU did not start, died, or stopped answering."""


class VMLaunchError(VMError):
    """QEMU exited (or never answered) while starting; carries the evidence."""

    def __init__(self, name: str, reason: str, command: list[str], exitcode: int | None,
                 stderr_tail: str) -> None:
        self.name, self.reason, self.command = name, reason, command
        self.exitcode, self.stderr_tail = exitcode, stderr_tail
        text = f"{name}: {reason}"
        if exitcode is not None:
            text += f" (exit code {exitcode})"
        super().__init__(f"{text}: {stderr_tail}" if stderr_tail else text,
                         evidence=f"command: {shlex.join(command)}")


@dataclass
class VMConfig:
    binary: Path
    memory_mib: int = 512
    machine: str = "q35"  # with a kernel; a versioned type (pc-q35-7.2) across versions
    numa_nodes_mib: tuple[int, ...] = ()  # one RAM backend and NUMA node each; sum = memory
    vcpus: int = 1
    accel: str = "tcg"
    kernel: Path | None = None
    initramfs: Path | None = None
    kernel_append: str = ""  # the kernel's command line (the workload's: guest.py)
    incoming: bool = False  # destination: wait for "migrate-incoming"
    extra_args: list[str] = field(default_factory=list)
    firmware_dirs: list[Path] = field(default_factory=list)  # -L, searched first
    env: dict[str, str] = field(default_factory=dict)  # added to QEMU's environment

    @classmethod
    def for_binary(cls, binary: Path, **kwargs: Any) -> VMConfig:
        """A config with what @binary needs to run from the cache (firmware, modules)."""
        firmware, env = artifacts.qemu_runtime(binary)
        return cls(binary, firmware_dirs=firmware, env=env, **kwargs)

    def command(self, qmp_path: Path, console_path: Path) -> list[str]:
        if self.accel not in ACCELS:
            raise ValueError(f"accel {self.accel!r}: accepted {', '.join(ACCELS)}")
        cmd = [
            str(self.binary),
            "-machine", self.machine if self.kernel else "none",
            "-accel", self.accel,
            "-m", f"{self.memory_mib}M",
            # Under TCG each vCPU is a host thread of its own (MTTCG, QEMU's
            # default for x86 guests on x86 hosts): the vCPUs really run at once.
            "-smp", str(self.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"socket,id=qmp,path={qmp_path}",
            "-mon", "chardev=qmp,mode=control",
        ]
        # Each node's RAM is a RAM block of its own, in order: the shape that
        # makes dirty-bitmap code see blocks that do not start at ram_addr 0.
        # vCPUs go round-robin over the nodes (vCPU i on node i % nodes), every
        # one named, as QEMU wants once any is; nodes beyond the vCPUs have
        # memory only. With one vCPU that is QEMU's own default mapping.
        nodes = len(self.numa_nodes_mib)
        for node, size_mib in enumerate(self.numa_nodes_mib):
            cpus = "".join(f",cpus={cpu}" for cpu in range(node, self.vcpus, nodes))
            cmd += ["-object", f"memory-backend-ram,id=ram-node{node},size={size_mib}M",
                    "-numa", f"node,nodeid={node}{cpus},memdev=ram-node{node}"]
        for directory in self.firmware_dirs:
            cmd += ["-L", str(directory)]
        if self.accel == "kvm":
            cmd += ["-cpu", "host"]
        if self.kernel:
            cmd += [
                "-chardev", f"socket,id=console,path={console_path}",
                "-serial", "chardev:console",
                "-kernel", str(self.kernel), "-append", self.kernel_append,
            ]
            if self.initramfs:
                cmd += ["-initrd", str(self.initramfs)]
        if self.incoming:
            cmd += ["-incoming", "defer"]
        return cmd + self.extra_args


class VM:
    def __init__(self, config: VMConfig, name: str, log_dir: Path | None = None,
                 netns: str | None = None, *, record: ownership.Record) -> None:
        """QEMU as @config says, named @name, its logs in @log_dir, run inside
        network namespace @netns if given; what it makes goes into @record."""
        self.config = config
        self._record = record
        self.name = name
        self.netns = netns
        self._log_dir = log_dir
        self._tmpdir: Path | None = None
        self._made: list[ownership.Entry] = []  # tmpdir, process
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: Monitor | None = None
        self.console: Console | None = None
        self.stderr_path: Path | None = None
        self.console_path: Path | None = None
        self.command_line: list[str] = []

    # -- lifecycle -------------------------------------------------------
    def launch(self, timeout: float = 30.0) -> None:
        if self._process is not None:
            raise VMError(f"{self.name}: already launched")  # would orphan the first QEMU
        try:
            self._tmpdir, entry = self._record.directory(Path(tempfile.gettempdir()),
                                                   f"{TMP_PREFIX}{self.name}-",
                                                   f"{self.name} QEMU sockets")
            self._made.append(entry)
            logs = self._log_dir or self._tmpdir
            logs.mkdir(parents=True, exist_ok=True)
            self.stderr_path = logs / f"{self.name}-qemu.log"
            self.console_path = logs / f"{self.name}-console.log"
            qmp_path = self._tmpdir / "qmp.sock"
            console_sock = self._tmpdir / "console.sock"
            self._qmp = Monitor(str(qmp_path), server=True, nickname=self.name)
            if self.config.kernel:
                self.console = Console.listening(console_sock, self.console_path)
            self.command_line = self.config.command(qmp_path, console_sock)
            with ownership.open_log(self.stderr_path, "wb") as err:
                err.write((" ".join(self.command_line) + "\n").encode())
                err.flush()
                # Its own session: the terminal's Ctrl-C goes to the harness,
                # which then shuts QEMU down in order.
                self._process, entry = self._record.spawn(
                    self.command_line, f"{self.name} QEMU", self.netns, program="qemu",
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                    env={**os.environ, **self.config.env}, start_new_session=True)
                self._made.append(entry)
            log.debug("%s: pid %d: %s", self.name, self._process.pid,
                      " ".join(self.command_line))
            self._accept_qmp(timeout)
        except BaseException:
            self.shutdown()
            raise

    def _launch_error(self, reason: str) -> VMLaunchError:
        code = self._process.poll() if self._process else None
        return VMLaunchError(self.name, reason, self.command_line, code, self.stderr_tail())

    def _accept_qmp(self, timeout: float) -> None:
        assert self._qmp and self._process
        process = self._process
        try:
            self._qmp.accept(timeout=timeout, alive=lambda: process.poll() is None)
        except Exception as exc:  # a timeout, QEMU gone, or a broken negotiation
            if process.poll() is not None:
                raise self._launch_error("QEMU exited while starting") from None
            raise self._launch_error(f"no QMP connection in {timeout:.0f}s ({exc})") from exc

    def shutdown(self, timeout: float = QUIT_TIMEOUT_S) -> ownership.Removal:
        """Stop QEMU ("quit"; SIGKILL if it does not answer or exit) and remove
        what was made for it. A second Ctrl-C waits until this is done."""
        with ownership.signals_held():
            if self._process and self._process.poll() is None:
                self._quit(timeout)
            if self._qmp:
                self._qmp.close()
                self._qmp = None
            if self.console:
                self.console.close()
            done = ownership.Removal()
            while self._made:
                done.extend(self._record.release(self._made.pop()))
            self._tmpdir = None
            return done

    def _quit(self, timeout: float) -> None:
        assert self._process
        answered = False
        if self._qmp:
            try:
                self._qmp.cmd("quit", timeout_s=2.0)
                answered = True
            except Exception as err:  # hung, or gone already
                log.info("%s: quit: %s", self.name, err)
        try:
            # A QEMU that does not answer QMP will not act on SIGTERM either.
            self._process.wait(timeout=timeout if answered else 0.1)
        except subprocess.TimeoutExpired:
            log.warning("%s: QEMU pid %d did not exit; killing it", self.name,
                        self._process.pid)
            self._process.kill()
            self._process.wait(timeout=KILL_TIMEOUT_S)

    def kill(self) -> None:
        """Kill QEMU abruptly (as a crashed host would); shutdown() still cleans up."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> VM:
        self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- state -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exitcode(self) -> int | None:
        return self._process.poll() if self._process else None

    def stderr_tail(self, lines: int = 5) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[1:][-lines:])  # line 0 is the command line

    # -- QMP -------------------------------------------------------------
    @property
    def qmp(self) -> Monitor:
        if not self._qmp:
            raise VMError(f"{self.name}: not running")
        return self._qmp

    def command(self, name: str, timeout_s: float | None = None, **args: Any) -> Any:
        """Run a QMP command; QEMU's own error text is raised as ExecuteError,
        no answer within the deadline as QMPTimeout."""
        return self.qmp.cmd(name, timeout_s=timeout_s, **args)

    def hmp(self, command_line: str) -> str:
        return str(self.command("human-monitor-command", **{"command-line": command_line}))

    def wait_event(self, names: set[str], timeout: float) -> dict[str, Any] | None:
        """Next event whose name is in @names, or None after @timeout seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.qmp.pull_event(wait=left)
            except TimeoutError:
                return None
            if event and event.get("event") in names:
                return event
        return None


__all__ = ["VM", "VMConfig", "VMError", "VMLaunchError", "ExecuteError", "QMPError",
           "QMPTimeout", "ACCELS"]
