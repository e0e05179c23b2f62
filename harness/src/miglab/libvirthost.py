"""A hypervisor host of the lab: its own libvirtd, as a real host runs one.

Each side of a libvirt run is the link's network namespace plus a mount,
UTS and PID namespace of its own, in which a libvirtd runs with private
state: its /run, /var/lib, /var/cache and /etc directories are bind mounts
of a directory made for the run, its logs go to the run's log folder. The
host's own libvirtd (if any), its sockets, domains and configuration are
never seen: the namespace sees only what was mounted for it.

Nothing outlives the run. libvirtd is PID 1 of its PID namespace, started
by `unshare --kill-child`, which is spawned like every other process
(recorded, PR_SET_PDEATHSIG): when the harness dies, unshare dies, its
child is killed, and the kernel kills every process of the namespace with
it, the domains' QEMUs included; the mounts go with the mount namespace.
The harness reaches the daemon through the unix socket in the run's
directory; the other host reaches it over the lab link (qemu+tcp, no
authentication, listening only on the lab address inside the namespace).
"""
from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from . import artifacts, ownership
from .deadline import DeadlineExceeded, wait_for
from .errors import LabError

log = logging.getLogger(__name__)

LIBVIRTD = "/usr/sbin/libvirtd"
# libvirt resolves this user before it reads qemu.conf (which says root):
# Debian's libvirt-daemon-system makes it, scripts/setup makes it otherwise.
QEMU_USER = "libvirt-qemu"
START_TIMEOUT_S = 30.0
# PID 1 of a host's PID namespace: it starts libvirtd and reaps every
# process that ends there. libvirt daemonizes QEMU, so a QEMU that exits
# becomes PID 1's child; unreaped, it would stay a zombie that libvirt
# takes for a QEMU that ignores SIGKILL (and waits on for 40 s). SIGUSR2
# kills libvirtd alone, as `kill -9` of the daemon on a real host (its
# QEMUs run on); SIGUSR1 starts it again. libvirtd ending otherwise ends
# the host.
INIT = """\
import os, signal, sys
state = {"child": 0, "killed": False}
def start():
    state["child"] = os.fork()
    if state["child"] == 0:
        os.execv(sys.argv[1], sys.argv[1:])
def kill(*_):
    state["killed"] = True
    os.kill(state["child"], signal.SIGKILL)
def restart(*_):
    if state["killed"]:
        state["killed"] = False
        start()
signal.signal(signal.SIGUSR2, kill)
signal.signal(signal.SIGUSR1, restart)
start()
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        signal.pause()
        continue
    if pid == state["child"] and not state["killed"]:
        sys.exit(os.waitstatus_to_exitcode(status))
"""
# libvirt's own mount points (Debian's paths), each given a private directory.
MOUNTS = {"lib": "/var/lib/libvirt", "cache": "/var/cache/libvirt", "etc": "/etc/libvirt"}

# What lets libvirt run QEMU in a namespace it does not manage: no cgroups,
# no security driver, no per-domain mount namespace, no virtlogd.
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


class LibvirtHostError(LabError):
    """A lab host's libvirtd could not be started or reached."""


def quiet_libvirt() -> None:
    """libvirt prints every error to stderr by default; miglab's callers
    handle them (and log them with -v)."""
    import libvirt

    def handler(_ctx: object, err: tuple[Any, ...]) -> None:
        log.debug("libvirt: %s", err[2] if len(err) > 2 else err)
    libvirt.registerErrorHandler(handler, None)


def missing() -> str | None:
    """What this machine lacks for libvirt runs, in words, or None."""
    if not Path(LIBVIRTD).exists():
        return f"{LIBVIRTD} is missing (Debian's libvirt-daemon-driver-qemu): run scripts/setup"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt's Python binding is missing (libvirt-python): run scripts/setup"
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return f"user {QEMU_USER} is missing (libvirt asks for it): run scripts/setup"
    for point in [*MOUNTS.values(), "/var/log/libvirt"]:
        if not Path(point).is_dir():
            return f"{point} is missing (libvirt's mount point): run scripts/setup"
    return None


def _libvirtd_conf(listen_addr: str, host_uuid: str) -> str:
    return "\n".join([
        "listen_tls = 0", "listen_tcp = 1", f'listen_addr = "{listen_addr}"',
        'auth_tcp = "none"', 'auth_unix_rw = "none"', 'unix_sock_rw_perms = "0700"',
        f'host_uuid = "{host_uuid}"',
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"', ""])


class LibvirtHost:
    """One lab host: start() it, use .uri (from here) and .tcp_uri (from the
    other host), stop() it. A context manager; stop() is idempotent."""

    def __init__(self, name: str, netns: str, listen_addr: str, logs: Path, *,
                 record: ownership.Record) -> None:
        self.name, self.netns, self.listen_addr = name, netns, listen_addr
        self._record = record
        self.log_dir = logs / f"{name}-libvirt"
        self._dir: Path | None = None
        self._made: list[ownership.Entry] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Any = None

    @property
    def socket(self) -> Path:
        assert self._dir
        return self._dir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """How the harness reaches this host's libvirtd (its unix socket)."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def tcp_uri(self) -> str:
        """How the other lab host's libvirtd reaches this one, over the link."""
        return f"qemu+tcp://{self.listen_addr}/system"

    def start(self) -> None:
        try:
            self._dir, entry = self._record.directory(Path(tempfile.gettempdir()),
                                                f"miglab-libvirt-{self.name}-",
                                                f"{self.name} libvirt host")
            self._made.append(entry)
            for sub in ["run", *MOUNTS]:
                (self._dir / sub).mkdir()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self._dir / "etc" / "libvirtd.conf").write_text(
                _libvirtd_conf(self.listen_addr, str(uuid.uuid4())))
            (self._dir / "etc" / "qemu.conf").write_text(QEMU_CONF)
            binds = [(self._dir / "run", "/run/libvirt"), (self.log_dir, "/var/log/libvirt")]
            binds += [(self._dir / sub, point) for sub, point in MOUNTS.items()]
            script = ("set -e; mount -t tmpfs -o mode=0755 miglab /run;"
                      " mkdir /run/libvirt /run/lock /run/sshd; ")
            script += "".join(f"mount --bind {shlex.quote(str(a))} {b}; " for a, b in binds)
            script += (f"hostname {shlex.quote(self.name)}; exec {shlex.quote(sys.executable)}"
                       f" -c {shlex.quote(INIT)} {LIBVIRTD} --listen")
            with ownership.open_log(self.log_dir / "start.log", "wb") as out:
                self._process, entry = self._record.spawn(
                    ["unshare", "--mount", "--uts", "--pid", "--kill-child", "--mount-proc",
                     "--propagation", "private", "--", "sh", "-c", script],
                    f"{self.name} libvirtd", self.netns, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=out, start_new_session=True)
            self._made.append(entry)
            self._conn = self._connect()
        except BaseException:
            self.stop()
            raise

    def _connect(self) -> Any:
        import libvirt

        def attempt() -> Any:
            if self._process and self._process.poll() is not None:
                raise LibvirtHostError(f"{self.name} libvirtd exited while starting: "
                                       f"{self._tail()}")
            if not self.socket.exists():
                return None
            try:
                return libvirt.open(self.uri)
            except libvirt.libvirtError:
                return None
        try:
            return wait_for(attempt, START_TIMEOUT_S, f"{self.name} libvirtd's socket", 0.05)
        except DeadlineExceeded as err:
            raise LibvirtHostError(f"{err}: {self._tail()}") from None

    def _tail(self) -> str:
        lines: list[str] = []
        for name in ("start.log", "libvirtd.log"):
            path = self.log_dir / name
            if path.exists():
                lines += path.read_text(errors="replace").strip().splitlines()[-3:]
        return " | ".join(lines) or "no output"

    def _init_pid(self) -> int:
        """PID 1 of the host's PID namespace (unshare's one child), in ours."""
        assert self._process
        children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children")
        return int(children.read_text().split()[0])

    def kill_daemon(self) -> None:
        """Kill libvirtd alone (SIGKILL), as a host's daemon dies; its QEMUs run on."""
        os.kill(self._init_pid(), signal.SIGUSR2)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def restart_daemon(self) -> None:
        """Start libvirtd again after kill_daemon() and connect to it."""
        os.kill(self._init_pid(), signal.SIGUSR1)
        self._conn = self._connect()

    def start_sshd(self, authorized_keys: Path) -> None:
        """An sshd in this host's namespaces, on its lab address, for those
        whose key is in @authorized_keys: the host reached as a remote one is
        (qemu+ssh). It ends with the host."""
        assert self._dir
        key = self._dir / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, capture_output=True)
        options = {"ListenAddress": self.listen_addr, "HostKey": str(key),
                   "AuthorizedKeysFile": str(authorized_keys), "PidFile": "none",
                   "PermitRootLogin": "prohibit-password", "UsePAM": "no",
                   "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no",
                   "StrictModes": "no"}
        command = ["nsenter", "--target", str(self._init_pid()), "--mount", "--uts", "--pid",
                   "--", str(artifacts.sshd()), "-D", "-e", "-f", "/dev/null"]
        command += [arg for k, v in options.items() for arg in ("-o", f"{k}={v}")]
        with ownership.open_log(self.log_dir / "sshd.log", "wb") as out:
            process, entry = self._record.spawn(command, f"{self.name} sshd", self.netns,
                                             stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=out, start_new_session=True)
        self._made.insert(0, entry)  # released after the host's libvirtd

        def listening() -> bool | None:
            if process.poll() is not None:
                raise LibvirtHostError(f"{self.name} sshd exited: "
                                       f"{(self.log_dir / 'sshd.log').read_text()[-300:]}")
            return "Server listening" in (self.log_dir / "sshd.log").read_text() or None
        wait_for(listening, START_TIMEOUT_S, f"{self.name} sshd", 0.05)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise LibvirtHostError(f"{self.name}: libvirtd not running")
        return self._conn

    def stop(self) -> ownership.Removal:
        """Close the connection, end the namespace (libvirtd and every QEMU it
        started with it), remove the directory."""
        with ownership.signals_held():
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception as err:  # a daemon gone already
                    log.debug("%s: closing the connection: %s", self.name, err)
                self._conn = None
            done = ownership.Removal()
            while self._made:
                done.extend(self._record.release(self._made.pop()))
            if self._process:
                self._process.wait(timeout=5)
                self._process = None
            self._dir = None
            return done

    def __enter__(self) -> LibvirtHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RemoteHost:
    """A libvirt host of the user's, given by URI: nothing is made on it but
    what a run records (ownership.py, kind "libvirt") and removes."""

    def __init__(self, name: str, uri: str) -> None:
        self.name, self.uri, self.tcp_uri = name, uri, uri
        self.log_dir: Path | None = None  # its logs stay on the host
        self._conn: Any = None

    def start(self) -> None:
        import libvirt

        quiet_libvirt()
        try:
            self._conn = libvirt.open(self.uri)
        except libvirt.libvirtError as err:
            raise LibvirtHostError(f"--{self.name}-uri {self.uri}: {err.get_error_message()}"
                                   ) from None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise LibvirtHostError(f"{self.uri}: not connected")
        return self._conn

    def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> RemoteHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
