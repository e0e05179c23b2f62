"""One QEMU process and everything made for it.

Like QEMU's own python/qemu/machine: launch() and shutdown() are the only
ways in and out, the object is a context manager, and shutdown() is
idempotent and runs on every path, so a failure or Ctrl-C never leaves a
QEMU process, socket or temp directory behind.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from . import artifacts
from .console import Console
from .guest import Workload, kernel_command_line

ACCELS = ("tcg", "kvm")


TMP_PREFIX = "miglab-"


def _reap_stale_tmpdirs() -> None:
    """Private directories of VMs whose process was killed outright (pid in the name)."""
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*-*"):
        pid = path.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


class VMError(RuntimeError):
    """QEMU did not start, or died; carries the tail of its stderr."""


@dataclass
class VMConfig:
    binary: Path
    memory_mib: int = 512
    accel: str = "tcg"
    kernel: Path | None = None
    initramfs: Path | None = None
    workload: Workload | None = None
    incoming: bool = False  # destination: wait for "migrate-incoming"
    netns: str | None = None  # run inside this network namespace
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
            "-machine", "q35" if self.kernel else "none",
            "-accel", self.accel,
            "-m", f"{self.memory_mib}M",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"socket,id=qmp,path={qmp_path}",
            "-mon", "chardev=qmp,mode=control",
        ]
        for directory in self.firmware_dirs:
            cmd += ["-L", str(directory)]
        if self.accel == "kvm":
            cmd += ["-cpu", "host"]
        if self.kernel:
            cmd += [
                "-chardev", f"socket,id=console,path={console_path}",
                "-serial", "chardev:console",
                "-kernel", str(self.kernel),
                "-append", kernel_command_line(self.workload or Workload()),
            ]
            if self.initramfs:
                cmd += ["-initrd", str(self.initramfs)]
        if self.incoming:
            cmd += ["-incoming", "defer"]
        cmd += self.extra_args
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd


class VM:
    def __init__(self, config: VMConfig, name: str, log_dir: Path | None = None) -> None:
        self.config = config
        self.name = name
        self._log_dir = log_dir
        self._tmpdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self.console: Console | None = None
        self.stderr_path: Path | None = None
        self.console_path: Path | None = None

    # -- lifecycle -------------------------------------------------------
    def launch(self, timeout: float = 30.0) -> None:
        if self._process is not None:
            raise VMError(f"{self.name}: already launched")  # would orphan the first QEMU
        _reap_stale_tmpdirs()
        # mkdtemp makes the directory mode 0700: the QMP socket is private.
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{self.name}-"))
        logs = self._log_dir or self._tmpdir
        logs.mkdir(parents=True, exist_ok=True)
        self.stderr_path = logs / f"{self.name}-qemu.log"
        self.console_path = logs / f"{self.name}-console.log"
        qmp_path = self._tmpdir / "qmp.sock"
        console_sock = self._tmpdir / "console.sock"
        try:
            self._qmp = QEMUMonitorProtocol(str(qmp_path), server=True, nickname=self.name)
            if self.config.kernel:
                self.console = Console(console_sock, self.console_path)
            cmd = self.config.command(qmp_path, console_sock)
            with open(self.stderr_path, "wb") as err:
                err.write((" ".join(cmd) + "\n").encode())
                err.flush()
                self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                 stdout=err, stderr=err,
                                                 env={**os.environ, **self.config.env},
                                                 start_new_session=True)
            self._accept_qmp(timeout)
        except BaseException:
            self.shutdown()
            raise

    def _accept_qmp(self, timeout: float) -> None:
        assert self._qmp and self._process
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._qmp.accept(timeout=1.0)
                return
            except Exception as exc:  # qemu.qmp raises several types here
                if self._process.poll() is not None:
                    raise VMError(f"{self.name}: QEMU exited with {self._process.returncode}:"
                                  f" {self.stderr_tail()}") from None
                if time.monotonic() > deadline:
                    raise VMError(f"{self.name}: no QMP connection in {timeout:.0f}s") from exc

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop QEMU (quit, then SIGTERM, then SIGKILL) and remove what was made for it."""
        if self._process and self._process.poll() is None:
            if self._qmp:
                try:
                    self._qmp.settimeout(2.0)
                    self._qmp.cmd("quit")
                except Exception:
                    pass
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        if self._qmp:
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        if self.console:
            self.console.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

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

    def stderr_tail(self, lines: int = 5) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[1:][-lines:])  # line 0 is the command line

    # -- QMP -------------------------------------------------------------
    @property
    def qmp(self) -> QEMUMonitorProtocol:
        if not self._qmp:
            raise VMError(f"{self.name}: not running")
        return self._qmp

    def command(self, name: str, **args: Any) -> Any:
        """Run a QMP command; QEMU's own error text is raised as ExecuteError."""
        return self.qmp.cmd(name, **args)

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


__all__ = ["VM", "VMConfig", "VMError", "ExecuteError", "ACCELS"]
