"""What this process created on the host, recorded before it is created.

miglab runs as root on hosts that carry other people's VMs and namespaces,
so it never acts on a name pattern. Each miglab process keeps one record,
`/run/miglab/<run-id>.json`, of the network namespaces, processes and
directories it makes: an entry is written before the thing exists and
removed after the thing is gone. Cleanup (teardown, `miglab cleanup`, the
reaping of dead runs at the start of a run, the leftover checks of the
tests) acts only on what such a record names and only while it still
matches: a process by pid *and* start time, a namespace and a directory
by the inode recorded when they were made.

A run is dead when its owner (pid and start time, in this PID namespace)
is gone; records of another PID namespace are never touched, since their
owners cannot be seen from here.

Processes are started through Record.spawn(): they get PR_SET_PDEATHSIG (SIGKILL),
so they die with the thread that started them however the harness dies,
and enter their network namespace with setns() directly rather than
through a wrapper process.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .deadline import DeadlineExceeded, wait_for
from .errors import LabError

log = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("MIGLAB_STATE_DIR", "/run/miglab"))
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1


class OwnershipError(LabError):
    """The state directory or a record is not what miglab made."""


# -- identities -------------------------------------------------------------
@dataclass(frozen=True)
class ProcessId:
    """A process as the kernel knows it: a pid alone is reused, pid + start time is not."""

    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: start time since boot, clock ticks

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # comm (field 2) may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":  # a zombie has exited: nothing left to kill
            return None
        return cls(pid, int(fields[19]))

    @classmethod
    def self(cls) -> ProcessId:
        me = cls.of(os.getpid())
        assert me is not None
        return me

    def alive(self) -> bool:
        return ProcessId.of(self.pid) == self


def pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# -- the state directory ----------------------------------------------------
def state_dir() -> Path:
    """/run/miglab, made 0700 by root; refused if it is a link or someone else's."""
    try:
        STATE_DIR.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = os.lstat(STATE_DIR)
    if not os.path.isdir(STATE_DIR) or os.path.islink(STATE_DIR) or st.st_uid != os.geteuid():
        raise OwnershipError(f"{STATE_DIR}: not a directory owned by uid {os.geteuid()};"
                             " miglab keeps its records there and will not use it")
    if st.st_mode & 0o022:
        raise OwnershipError(f"{STATE_DIR}: writable by others; miglab will not use it")
    return STATE_DIR


def _write_private(path: Path, text: str) -> None:
    """Write @path atomically, never through a link an attacker planted."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def open_log(path: Path, mode: str = "w", **kwargs: Any) -> Any:
    """A log file opened for writing, never through a link planted in its place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, mode, **kwargs)


@contextlib.contextmanager
def lab_lock() -> Iterator[None]:
    """Serialises lab tests across processes (a lock file in the private state dir)."""
    import fcntl

    fd = os.open(state_dir() / "lab.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- signals held off while tearing down -------------------------------------
_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM/SIGHUP until the block ends.

    Teardown is bounded (every wait in it has a deadline), so holding a
    second Ctrl-C until it finishes costs seconds and guarantees that no
    namespace loses its name while a process of ours still runs inside.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: pending.append(s)) for sig in _HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


# -- the record ---------------------------------------------------------------
@dataclass
class Entry:
    kind: str  # "process", "namespace", "directory" or "libvirt"
    # pid, namespace name, path, or for an object on a libvirt host
    # "domain:UUID" / "pool:UUID" (a UUID made for the run)
    name: str
    what: str = ""  # for people: "src QEMU", "link probe", ...
    program: str = ""  # processes, for programs: "qemu", or the command's name
    start_ticks: int | None = None  # processes
    inode: list[int] | None = None  # namespaces and directories: [dev, ino] once made
    uri: str | None = None  # libvirt objects: the host's URI

    def describe(self) -> str:
        if self.kind == "process":
            return f"{self.what or 'process'} (pid {self.name})"
        if self.kind == "libvirt":
            return f"{self.what or self.name} on {self.uri}"
        return f"{self.kind} {self.name}"


@dataclass
class Removal:
    """What a cleanup removed, and what it could not, in words for people."""

    removed: list[str] = field(default_factory=list)
    not_removed: list[str] = field(default_factory=list)

    def extend(self, other: Removal) -> None:
        self.removed += other.removed
        self.not_removed += other.not_removed


class Record:
    """The record of one miglab process. Use current() for this process's own;
    what makes things on the host (a Link, a VM, ...) is handed it."""

    def __init__(self, path: Path, owner: ProcessId, pid_ns: int,
                 entries: list[Entry] | None = None) -> None:
        self.path = path
        self.owner = owner
        self.pid_ns = pid_ns
        self.entries: list[Entry] = entries or []
        self.removed: list[str] = []  # what this process removed so far, for its exit message
        self._lock = threading.RLock()

    # persistence
    def _save(self) -> None:
        data = {"owner": asdict(self.owner), "pid_namespace": self.pid_ns,
                "entries": [asdict(e) for e in self.entries]}
        _write_private(self.path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            data = json.loads(path.read_text())
            return cls(path, ProcessId(**data["owner"]), int(data["pid_namespace"]),
                       [Entry(**e) for e in data["entries"]])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OwnershipError(f"{path}: not a miglab record ({err})") from None

    @property
    def owner_dead(self) -> bool:
        return self.pid_ns == pid_namespace() and not self.owner.alive()

    # what it holds
    def add(self, entry: Entry) -> Entry:
        with self._lock:
            self.entries.append(entry)
            self._save()
        return entry

    def update(self) -> None:
        with self._lock:
            self._save()

    def forget(self, entry: Entry) -> None:
        with self._lock:
            if entry in self.entries:
                self.entries.remove(entry)
                self._save()

    def live_entries(self) -> list[Entry]:
        return [e for e in list(self.entries) if _matches(e)]

    # the things themselves
    def namespace(self, name: str, what: str = "") -> Entry:
        """Record, then create, a network namespace."""
        entry = self.add(Entry("namespace", name, what))
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True,
                       text=True)
        entry.inode = list(_inode(NETNS_DIR / name) or (0, 0))
        self.update()
        return entry

    def directory(self, parent: Path, prefix: str, what: str = "") -> tuple[Path, Entry]:
        """Record, then create, a private (0700) directory with a unique name."""
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        entry = self.add(Entry("directory", str(path), what))
        path.mkdir(mode=0o700)  # fails if anything is there already
        entry.inode = list(_inode(path) or (0, 0))
        self.update()
        return path, entry

    def release(self, entry: Entry) -> Removal:
        """Remove one thing this record names (if it still matches), then forget it."""
        with signals_held():
            done = _remove(entry)
            if not done.not_removed:
                self.forget(entry)
            self.removed += done.removed
            return done

    def release_all(self) -> Removal:
        """Processes first, so that no namespace loses its name with one of ours inside."""
        # objects on libvirt hosts first, while the way to them still stands
        order = {"libvirt": 0, "process": 1, "namespace": 2, "directory": 3}
        done = Removal()
        with signals_held():
            for entry in sorted(list(self.entries), key=lambda e: order[e.kind]):
                done.extend(self.release(entry))
            if not self.entries:
                self.path.unlink(missing_ok=True)
        return done

    def spawn(self, cmd: list[str], what: str, netns: str | None = None,
              program: str = "", **popen: Any) -> tuple[subprocess.Popen[Any], Entry]:
        """Start @cmd as a recorded child that dies with this thread, in @netns if
        given; @program names it in the record (default: its command's name).

        The entry is recorded as soon as the pid exists (before that nothing of
        it can outlive us: PR_SET_PDEATHSIG is set before exec).
        """
        _libc()  # loaded here: not between fork and exec
        netns_fd = os.open(NETNS_DIR / netns, os.O_RDONLY) if netns else None
        parent = os.getpid()
        try:
            proc = subprocess.Popen(
                cmd, preexec_fn=lambda: _child_setup(netns_fd, parent),
                pass_fds=(netns_fd,) if netns_fd is not None else (), **popen)
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
        ident = ProcessId.of(proc.pid)
        entry = self.add(Entry("process", str(proc.pid), what,
                               program=program or Path(cmd[0]).name,
                               start_ticks=ident.start_ticks if ident else None))
        return proc, entry


def _libvirt_object(entry: Entry) -> Any:
    """The domain or storage pool @entry names, None if its host has none by
    that UUID; OSError if the host cannot be reached (so it is not taken
    for gone)."""
    import libvirt

    from .libvirthost import quiet_libvirt

    quiet_libvirt()
    kind, _, uuid = entry.name.partition(":")
    try:
        conn = libvirt.open(entry.uri)
    except libvirt.libvirtError as err:
        raise OSError(f"{entry.uri}: {err.get_error_message()}") from None
    try:
        return conn.lookupByUUIDString(uuid) if kind == "domain" \
            else conn.storagePoolLookupByUUIDString(uuid)
    except libvirt.libvirtError:
        conn.close()
        return None


def _remove_libvirt(entry: Entry) -> None:
    import libvirt

    thing = _libvirt_object(entry)
    if thing is None:
        return
    conn = thing.connect()
    try:
        if entry.name.startswith("domain:"):
            if thing.isActive():
                thing.destroy()
            if thing.isPersistent():
                thing.undefine()
            return
        if not thing.isActive():
            thing.create()
        thing.refresh()
        for volume in thing.listAllVolumes():
            volume.delete()
        thing.destroy()
        thing.delete()  # the directory made for it
        thing.undefine()
    except libvirt.libvirtError as err:
        log.warning("%s: %s", entry.describe(), err.get_error_message())
    finally:
        conn.close()


def _matches(entry: Entry) -> bool:
    if entry.kind == "libvirt":
        try:
            thing = _libvirt_object(entry)
        except OSError:
            return True  # unreachable: kept in the record, named as not removed
        if thing is not None:
            thing.connect().close()
        return thing is not None
    if entry.kind == "process":
        return entry.start_ticks is not None and \
            ProcessId(int(entry.name), entry.start_ticks).alive()
    path = NETNS_DIR / entry.name if entry.kind == "namespace" else Path(entry.name)
    found = _inode(path)
    if found is None:
        return False
    # Made and recorded: the inode must be the same. Recorded and not known to
    # be made (a crash in between): the name carries 48 random bits, so only
    # we can have made it.
    return entry.inode is None or entry.inode == [0, 0] or list(found) == entry.inode


def _remove(entry: Entry) -> Removal:
    done = Removal()
    if not _matches(entry):
        return done  # gone already, or no longer ours: nothing to do
    if entry.kind == "libvirt":
        with contextlib.suppress(OSError):
            _remove_libvirt(entry)
    elif entry.kind == "process":
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry.name), signal.SIGKILL)
        # SIGKILL is not ignorable; wait briefly for the kernel to reap it
        with contextlib.suppress(DeadlineExceeded):
            wait_for(lambda: not _matches(entry), 1.0, f"{entry.describe()} to die",
                     interval_s=0.02)
    elif entry.kind == "namespace":
        subprocess.run(["ip", "netns", "del", entry.name], capture_output=True)
    else:
        shutil.rmtree(entry.name, ignore_errors=True)
    (done.not_removed if _matches(entry) else done.removed).append(entry.describe())
    return done


_current: Record | None = None
_current_lock = threading.Lock()


def _release_at_exit() -> None:
    # Everything is normally released by the `with` blocks that made it;
    # this catches what an unexpected path left and removes the empty record.
    if _current is not None and _current.owner == ProcessId.of(os.getpid()):
        done = _current.release_all()
        for item in done.removed:
            log.warning("removed at exit: %s", item)


def current() -> Record:
    """This process's record, created on first use (and released at exit)."""
    global _current
    with _current_lock:
        me = ProcessId.self()
        if _current is None or _current.owner != me:  # new after a fork
            if _current is None:  # a forked child inherits the registration
                atexit.register(_release_at_exit)
            _current = Record(state_dir() / f"run-{me.pid}-{secrets.token_hex(4)}.json",
                              me, pid_namespace())
            _current._save()
        return _current


def current_or_none() -> Record | None:
    """This process's record if it has made one (nothing started: no record)."""
    return _current if _current is not None and _current.owner == ProcessId.self() else None


def records() -> list[Record]:
    """Every record in the state directory (readable ones)."""
    if not STATE_DIR.is_dir():
        return []
    out = []
    for path in sorted(STATE_DIR.glob("run-*.json")):
        try:
            out.append(Record.load(path))
        except OwnershipError as err:
            log.warning("%s", err)
    return out


def reap_dead() -> dict[Path, Removal]:
    """Remove what runs whose owner is dead left behind, as their records name it."""
    done = {}
    for record in records():
        if record.owner_dead:
            done[record.path] = record.release_all()
    return done


def reap_dead_runs() -> None:
    """reap_dead(), each thing removed or not said in a warning: what a run
    does before it makes anything (the records left by runs that were
    SIGKILLed or lost their host)."""
    for path, done in reap_dead().items():
        for item in done.removed:
            log.warning("removed what dead run %s left: %s", path.name, item)
        for item in done.not_removed:
            log.warning("could not remove what dead run %s left: %s", path.name, item)


# -- starting processes ---------------------------------------------------------
@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(netns_fd: int) -> None:
    if _libc().setns(netns_fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace @name."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def _child_setup(netns_fd: int | None, parent: int) -> None:
    """Runs in the child between fork and exec; an exception here fails Popen."""
    if _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise OSError("the harness exited while starting this process")
    if netns_fd is not None:
        _setns(netns_fd)
