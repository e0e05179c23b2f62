"""A run through libvirt: the lab's two hosts each run a libvirtd, the guest
is a libvirt domain, and the migration goes through libvirt's API, peer to
peer, as Nova and virsh drive it (virDomainMigrateToURI3).

What a libvirt 9.0 user can set, and how it is set here:
- the cap: VIR_MIGRATE_PARAM_BANDWIDTH, whole MiB/s (libvirt multiplies by
  2^20); the cap applied is recorded, and the run says when it is not the
  scenario's;
- the downtime limit: virDomainMigrateSetMaxDowntime before the migration
  (libvirt sets downtime-limit; it saves it and restores it only when a
  migration fails);
- the switchover bandwidth, which libvirt does not know: declared or
  qemu-auto as -global properties of QEMU's migration object in the
  domain's <qemu:commandline> (libvirt copies it to the destination and
  never reads, sets or resets a parameter it does not know); `auto` through
  libvirt's QEMU monitor passthrough, which libvirt allows during a
  migration (a query job; the domain is marked tainted: custom-monitor).

The migration is followed with query-migrate through the same passthrough
(the samples of a QMP run); the downtime judged is libvirt's own, from the
destination's completed job: from the source's pause (QEMU's STOP event) to
the destination's resume, as libvirt reports it to its users. QEMU's own
downtime is recorded beside it when the last sample caught it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from . import artifacts, migration, ownership, phases, preflight
from .console import Console
from .deadline import DeadlineExceeded, wait_for
from .guest import kernel_command_line
from .lab import (
    MIGRATION_PORT,
    Progress,
    RunError,
    accel_trials,
    builds,
    checked_link,
    give_up,
    machine_type,
    reached_workload,
)
from .libvirtdomain import MIB, DomainSpec, applied_cap_mib_per_s, domain_xml, migration_globals
from .libvirthost import LibvirtHost, RemoteHost, quiet_libvirt
from .link import DST_ADDR, SRC_ADDR, Link, LinkCheck
from .migration import PARAM, TCP_PARAM, MigrationSettings, Outcome
from .monitor import ExecuteError
from .result import LibvirtRecord, Sample
from .scenario import Scenario
from .verdict import Status

log = logging.getLogger(__name__)

DOMAIN = "miglab-guest"
# After the migration's own end (completed, failed, aborted) libvirt still
# runs its Finish and Confirm phases: resuming or killing a QEMU, seconds.
FINISH_TIMEOUT_S = 60.0
# Where a run's storage pool goes on a host given by URI (libvirt's own
# directory for images, there on every host libvirt's packages set up).
POOL_PARENT = "/var/lib/libvirt/images"

quiet_libvirt()


def _qmp(dom: Any, name: str, **args: Any) -> Any:
    """A QMP command through libvirt's monitor passthrough; QEMU's error as ExecuteError."""
    command: dict[str, Any] = {"execute": name}
    if args:
        command["arguments"] = args
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(command), 0))
    if "error" in reply:
        raise ExecuteError(reply, command, reply["error"].get("desc", str(reply["error"])))
    return reply.get("return")


def _stream_console(conn: Any, dom: Any, path: Path, name: str) -> Console:
    """The domain's serial console through libvirt's console stream."""
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)

    def source() -> bytes | None:
        try:
            data = stream.recv(65536)
        except libvirt.libvirtError:
            return b""
        return data if isinstance(data, bytes) else None  # -2: nothing yet

    def close() -> None:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
    return Console(source, path, name, close)


@dataclass
class LibvirtGuest:
    """One side's domain, as the runner's checks see a guest: its console,
    QMP (through libvirt), whether it runs."""

    name: str
    host: LibvirtHost | RemoteHost
    logs: Path
    dom: Any = None
    console: Console | None = None

    @property
    def console_path(self) -> Path:
        return self.logs / f"{self.name}-console.log"

    def attach(self, dom: Any) -> None:
        self.dom = dom
        self.console = _stream_console(self.host.conn, dom, self.console_path, self.name)

    @property
    def running(self) -> bool:
        try:
            return bool(self.dom and self.dom.isActive())
        except libvirt.libvirtError:
            return False

    exitcode = None

    def command(self, name: str, timeout_s: float | None = None, **args: Any) -> Any:
        return _qmp(self.dom, name, **args)

    @property
    def qemu_log(self) -> Path | None:
        """The domain's log, where libvirt puts its QEMU's stderr (and so the
        trace events it logs); None on a host given by URI, which keeps its logs."""
        return self.host.log_dir / "qemu" / f"{DOMAIN}.log" if self.host.log_dir else None

    def stderr_tail(self, lines: int = 5) -> str:
        path = self.qemu_log
        if path is None or not path.exists():
            return ""
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])

    def shutdown(self) -> None:
        if self.console:
            self.console.close()
        if self.running:
            with contextlib.suppress(libvirt.libvirtError):
                self.dom.destroy()


@dataclass
class LibvirtLab:
    """Two hosts with their libvirtd, the source domain at work: the lab's own
    (a link, checked) or two given by URI (no link made: @link and @check None)."""

    scenario: Scenario
    link: Link | None
    check: LinkCheck | None
    src_host: LibvirtHost | RemoteHost
    dst_host: LibvirtHost | RemoteHost
    src: LibvirtGuest
    dst: LibvirtGuest
    accel: str
    spec: DomainSpec
    binary: Path
    dst_binary: Path
    logs: Path
    qemu_label: str
    libvirt: LibvirtRecord  # the result's "libvirt"
    migrate_address: str = DST_ADDR

    @property
    def trace_logs(self) -> list[Path]:
        """Where both domains' QEMUs logged their downtime checkpoints: the
        domain logs of the lab's own hosts (none from hosts given by URI)."""
        return [path for path in (self.src.qemu_log, self.dst.qemu_log) if path]

    def new_destination(self) -> LibvirtGuest:
        """A fresh destination side for a retry (the last one is let go)."""
        self.dst.shutdown()
        self.dst = LibvirtGuest("dst-retry", self.dst_host, self.logs)
        return self.dst


@dataclass(frozen=True)
class GuestFiles:
    """Where each host has the guest's kernel and initramfs."""

    kernel: Path
    initramfs: Path

    @classmethod
    def local(cls) -> GuestFiles:
        return cls(artifacts.kernel(), artifacts.initramfs())


def domain_spec(s: Scenario, binary: Path, accel: str, files: GuestFiles,
                uuid: str | None = None) -> DomainSpec:
    """The scenario's guest as a domain; the switchover bandwidth as -global."""
    firmware, env = artifacts.qemu_runtime(binary)
    properties = {}
    if s.switchover.bytes_per_s is not None:
        properties[PARAM] = str(s.switchover.bytes_per_s)
    if s.switchover.qemu_auto:  # under the name this QEMU knows
        properties[preflight.tcp_param(binary) or TCP_PARAM] = "on"
    # QEMUs that trace the downtime's checkpoints log them to their stderr,
    # which libvirt keeps in the domain's log
    traced = tuple(phases.trace_args(None)) \
        if preflight.has_parameter(binary, preflight.CHECKPOINTS) else ()
    return DomainSpec(DOMAIN, binary, files.kernel, files.initramfs,
                      kernel_command_line(s.workload()), uuid=uuid, memory_mib=s.memory_mib,
                      vcpus=s.vcpus, numa_nodes_mib=s.numa_nodes_mib, machine=machine_type(s),
                      accel=accel, qemu_args=migration_globals(properties) + traced,
                      qemu_env=tuple(env.items()), firmware_dirs=tuple(firmware))


@contextlib.contextmanager
def _booted_source(s: Scenario, binary: Path, host: LibvirtHost | RemoteHost, logs: Path,
                   progress: Progress, files: GuestFiles, uuid: str | None = None
                   ) -> Iterator[tuple[LibvirtGuest, DomainSpec, str]]:
    """The source domain at its workload, KVM when it works (lab.accel_trials())."""
    # a remote host's KVM is tried, whatever this one's is
    trials = accel_trials(s.accel, s.remote or os.path.exists("/dev/kvm"), progress,
                          local=not s.remote)
    for accel, _ in trials:
        last = accel == trials[-1][0]
        spec = domain_spec(s, binary, accel, files, uuid)
        guest = LibvirtGuest("src", host, logs)
        progress.stage(f"starting the source domain through libvirt ({accel})")
        (logs / "src-domain.xml").write_text(domain_xml(spec))
        try:
            guest.attach(host.conn.createXML(domain_xml(spec), 0))
        except libvirt.libvirtError as err:
            if last:
                raise RunError(f"libvirt could not start the domain ({accel}):"
                               f" {err.get_error_message()}") from None
            give_up(accel, err.get_error_message(), trials[-1][0], progress, not s.remote)
            continue
        try:
            assert guest.console
            if reached_workload(guest.console, "source domain", accel, trials, progress,
                                not s.remote):
                yield guest, spec, accel
                return
        finally:
            guest.shutdown()


@contextlib.contextmanager
def lab(s: Scenario, logs: Path, record: ownership.Record, progress: Progress | None = None,
        on_link_measured: Callable[[float], None] | None = None) -> Iterator[LibvirtLab]:
    """The link, checked; a libvirtd on each side; the source domain at work
    (all of it recorded in @record)."""
    progress = progress or Progress.silent()
    binary, dst_binary, label = builds(s)
    logs.mkdir(parents=True, exist_ok=True)
    with checked_link(s, progress, record, on_link_measured) as (link, check):
        progress.stage("starting a libvirtd on each host")
        with LibvirtHost("src", link.src_ns, SRC_ADDR, logs, record=record) as src_host, \
                LibvirtHost("dst", link.dst_ns, DST_ADDR, logs, record=record) as dst_host, \
                _booted_source(s, binary, src_host, logs, progress,
                               GuestFiles.local()) as (src, spec, accel):
            dst = LibvirtGuest("dst", dst_host, logs)
            info = LibvirtRecord(_version(src_host.conn.getLibVersion()), src_host.uri,
                                 dst_host.tcp_uri)
            env = LibvirtLab(s, link, check, src_host, dst_host, src, dst, accel, spec,
                             binary, dst_binary, logs, label, libvirt=info)
            try:
                yield env
            finally:
                dst.shutdown()


@contextlib.contextmanager
def _uploaded(host: RemoteHost, token: str, record: ownership.Record) -> Iterator[GuestFiles]:
    """The guest's kernel and initramfs put on @host through libvirt itself: a
    directory storage pool made for the run (recorded before it is defined;
    removed with its volumes and directory on the way out), its volumes
    uploaded through libvirt streams. The same path on every host, so the
    destination's QEMU finds the files where the source's did."""
    pool_uuid = str(uuid_module.uuid4())
    path = Path(POOL_PARENT) / f"miglab-{token}"
    entry = record.add(ownership.Entry("libvirt", f"pool:{pool_uuid}",
                                       f"storage pool miglab-{token}", uri=host.uri))
    try:
        pool = host.conn.storagePoolDefineXML(
            f"<pool type='dir'><name>miglab-{token}</name><uuid>{pool_uuid}</uuid>"
            f"<target><path>{path}</path></target></pool>", 0)
        pool.build(0)
        pool.create(0)
        local = GuestFiles.local()
        for source in (local.kernel, local.initramfs):
            size = source.stat().st_size
            volume = pool.createXML(
                f"<volume><name>{source.name}</name><capacity unit='bytes'>{size}</capacity>"
                "<target><format type='raw'/></target></volume>", 0)
            stream = host.conn.newStream(0)
            volume.upload(stream, 0, size, 0)
            with source.open("rb") as f:
                stream.sendAll(lambda _stream, nbytes, f: f.read(nbytes), f)
            stream.finish()
        yield GuestFiles(path / local.kernel.name, path / local.initramfs.name)
    except libvirt.libvirtError as err:
        raise RunError(f"{host.uri}: putting the guest's files there:"
                       f" {err.get_error_message()}") from None
    finally:
        record.release(entry)


def _check_emulator(host: RemoteHost, binary: Path) -> None:
    try:
        host.conn.getDomainCapabilities(str(binary), "x86_64", None, "qemu", 0)
    except libvirt.libvirtError as err:
        raise RunError(f"{host.uri}: no usable QEMU at {binary}: {err.get_error_message()}"
                       ) from None


@contextlib.contextmanager
def remote_lab(s: Scenario, logs: Path, record: ownership.Record,
               progress: Progress | None = None) -> Iterator[LibvirtLab]:
    """Two libvirt hosts given by URI: no link or namespace is made; the
    guest's files are uploaded to each, the domain (a UUID made for the run,
    recorded on both hosts before it exists) started on the source."""
    progress = progress or Progress.silent()
    binary, dst_binary, label = builds(s)
    logs.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    dom_uuid = str(uuid_module.uuid4())
    with RemoteHost("src", s.src_uri) as src_host, RemoteHost("dst", s.dst_uri) as dst_host:
        progress.stage(f"hosts {s.src_uri} and {s.dst_uri}")
        _check_emulator(src_host, binary)
        _check_emulator(dst_host, dst_binary)
        progress.stage("putting the guest's kernel and initramfs on both hosts")
        domains = [record.add(ownership.Entry("libvirt", f"domain:{dom_uuid}",
                                              f"domain {DOMAIN}", uri=uri))
                   for uri in (s.src_uri, s.dst_uri)]
        try:
            with _uploaded(src_host, token, record) as files, \
                    _uploaded(dst_host, token, record) as dst_files, \
                    _booted_source(s, binary, src_host, logs, progress, files,
                                   dom_uuid) as (src, spec, accel):
                assert files == dst_files
                dst = LibvirtGuest("dst", dst_host, logs)
                info = LibvirtRecord(_version(src_host.conn.getLibVersion()), s.src_uri,
                                     s.dst_uri, s.migrate_address)
                env = LibvirtLab(s, None, None, src_host, dst_host, src, dst, accel, spec,
                                 binary, dst_binary, logs, label,
                                 migrate_address=s.migrate_address, libvirt=info)
                try:
                    yield env
                finally:
                    dst.shutdown()
        finally:
            for entry in domains:
                record.release(entry)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _watch_destination(env: LibvirtLab, until: threading.Event) -> threading.Thread:
    """Opens the destination domain's console as soon as libvirt has made it
    (its Prepare phase, before any RAM is sent), so its first line is seen."""
    def watch() -> None:
        def attached() -> bool | None:
            if until.is_set() and env.dst.dom is None:
                return True  # the migration ended before it could be seen
            try:
                # the domain exists from Prepare on; its console once QEMU runs
                env.dst.attach(env.dst_host.conn.lookupByName(DOMAIN))
                return True
            except libvirt.libvirtError:
                env.dst.dom = None
                return None
        with contextlib.suppress(DeadlineExceeded):
            wait_for(attached, env.scenario.timeout_s + FINISH_TIMEOUT_S,
                     "the destination domain's console", 0.02)
    thread = threading.Thread(target=watch, name="libvirt-dst-watch", daemon=True)
    thread.start()
    return thread


def migrate(env: LibvirtLab, settings: MigrationSettings, deadline_s: float,
            on_sample: Callable[[Sample], None] | None = None,
            during: Callable[[float], contextlib.AbstractContextManager[object]] | None = None
            ) -> Outcome:
    """The migration through virDomainMigrateToURI3, followed until it ends."""
    dom = env.src.dom
    dom.migrateSetMaxDowntime(settings.downtime_limit_ms, 0)
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI:
                              f"tcp://{env.migrate_address}:{MIGRATION_PORT}"}
    cap = settings.max_bandwidth_bytes_per_s
    if cap is not None:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = applied_cap_mib_per_s(cap)
        env.libvirt.max_bandwidth_mib_per_s = applied_cap_mib_per_s(cap)
        env.libvirt.max_bandwidth_bytes_per_s = applied_cap_mib_per_s(cap) * MIB
    if settings.multifd_channels:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = settings.multifd_channels
    if env.dst_binary != env.binary:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = domain_xml(env.spec, env.dst_binary)
    if settings.avail_switchover_bandwidth_bytes_per_s == 0:  # auto starts from QEMU's estimate
        env.src.command("migrate-set-parameters", **{PARAM: 0})
    env.libvirt.parameters = env.src.command("query-migrate-parameters")

    done = threading.Event()
    failure: list[str] = []

    def perform() -> None:
        try:
            dom.migrateToURI3(env.dst_host.tcp_uri, params, flags)
        except libvirt.libvirtError as err:
            failure.append(err.get_error_message() or str(err))
        finally:
            done.set()

    watcher = _watch_destination(env, done)
    started = time.monotonic()
    performer = threading.Thread(target=perform, name="libvirt-migrate", daemon=True)
    performer.start()
    qemu_final: dict[str, Any] = {}

    def query() -> dict[str, Any]:
        if not done.is_set():
            try:
                info = _qmp(dom, "query-migrate")
                if info.get("status") in migration.FINAL_STATES:
                    qemu_final.update(info)
                    done.wait(FINISH_TIMEOUT_S)  # libvirt's Finish and Confirm
                else:
                    return info
            except libvirt.libvirtError:  # the source QEMU is gone: libvirt ended it
                done.wait(FINISH_TIMEOUT_S)
        if not done.is_set():
            return {"status": "active"}
        if failure:
            return {"status": "failed", "error-desc": failure[0]}
        # (libvirt's own figures replace these below)
        return {"status": "completed", "total-time": round((time.monotonic() - started) * 1000)}

    samples: list[Sample] = []
    with during(started) if during else contextlib.nullcontext():
        info = migration.follow(query, started, deadline_s, samples, on_sample)
    ended = time.monotonic()
    status = info.get("status")
    if status not in migration.FINAL_STATES:
        dom.abortJob()
        done.wait(FINISH_TIMEOUT_S)
        performer.join(1)
        return Outcome(Status.NOT_CONVERGED, samples, ended_at=ended)
    performer.join(1)
    watcher.join(FINISH_TIMEOUT_S)
    if failure:
        return Outcome(Status.FAILED, samples, error=f"libvirt: {failure[0]}",
                       ended_at=ended)
    job = env.dst.dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED) if env.dst.dom else {}
    env.libvirt.job = job
    env.libvirt.qemu_downtime_ms = qemu_final.get("downtime")
    return Outcome(Status.COMPLETED, samples, downtime_ms=job.get("downtime"),
                   total_time_ms=job.get("time_elapsed"), ended_at=ended)
