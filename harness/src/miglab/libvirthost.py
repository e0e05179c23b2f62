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

import logging
import pwd
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from . import ownership
from .deadline import DeadlineExceeded, wait_for

log = logging.getLogger(__name__)

LIBVIRTD = "/usr/sbin/libvirtd"
# libvirt resolves this user before it reads qemu.conf (which says root):
# Debian's libvirt-daemon-system makes it, scripts/setup makes it otherwise.
QEMU_USER = "libvirt-qemu"
START_TIMEOUT_S = 30.0
# PID 1 of a host's PID namespace: it starts libvirtd and reaps every
# process that ends there. libvirt daemonizes QEMU, so a QEMU that exits
# becomes PID 1's child; unreaped, it would stay a zombie that libvirt
# takes for a QEMU that ignores SIGKILL (and waits on for 40 s).
INIT = """\
import os, sys
child = os.fork()
if child == 0:
    os.execv(sys.argv[1], sys.argv[1:])
while True:
    pid, status = os.wait()
    if pid == child:
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


class LibvirtHostError(RuntimeError):
    """A lab host's libvirtd could not be started or reached."""


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

    def __init__(self, name: str, netns: str, listen_addr: str, logs: Path) -> None:
        self.name, self.netns, self.listen_addr = name, netns, listen_addr
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
        record = ownership.current()
        try:
            self._dir, entry = record.directory(Path(tempfile.gettempdir()),
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
                      " mkdir /run/libvirt /run/lock; ")
            script += "".join(f"mount --bind {shlex.quote(str(a))} {b}; " for a, b in binds)
            script += (f"hostname {shlex.quote(self.name)}; exec {shlex.quote(sys.executable)}"
                       f" -c {shlex.quote(INIT)} {LIBVIRTD} --listen")
            with ownership.open_log(self.log_dir / "start.log", "wb") as out:
                self._process, entry = ownership.spawn(
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
            record = ownership.current()
            while self._made:
                done.extend(record.release(self._made.pop()))
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
