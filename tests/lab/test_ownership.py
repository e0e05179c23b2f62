"""Safe on a host that carries other people's VMs: ownership, no orphans, deadlines.

Everything here runs `miglab` as a user would and kills it as a user
would; the run's own record in /run/miglab tells the test which QEMUs and
namespaces were the run's.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CAPPED_YAML, ctrl_c_reaches_it, miglab_namespaces

from miglab import ownership
from miglab.deadline import wait_for

MIGLAB = [sys.executable, "-m", "miglab.cli"]
# Iterates for as long as it is let: stock QEMU on the capped scenario (a
# hot set above what its 8 MB/s cap moves), a smaller hot set for a short bulk pass.
ITERATING = ["run", "--scenario", str(CAPPED_YAML), "--qemu", "stock", "--hot-set", "16M",
             "--accel", "tcg"]
NO_ORPHAN_WITHIN_S = 5.0


def start_run(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*MIGLAB, *ITERATING, *extra, "--logs", str(tmp_path / "logs")],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_reaches_it)


def wait_until_migrating(proc: subprocess.Popen[str], mark: str = "migrating") -> list[str]:
    """Read miglab's progress until a line with @mark ("migrating"; " active " for a
    migration QEMU has started)."""
    assert proc.stderr
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        seen.append(line)
        if mark in line:
            return seen
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError("miglab ended before migrating: " + "".join(seen))


def record_of(pid: int) -> ownership.Record:
    found = list(ownership.STATE_DIR.glob(f"run-{pid}-*.json"))
    assert len(found) == 1, found
    return ownership.Record.load(found[0])


def entries_left(pid: int) -> list[ownership.Entry]:
    """What the run's record still names (nothing once it removed its record)."""
    found = list(ownership.STATE_DIR.glob(f"run-{pid}-*.json"))
    try:  # written atomically (ownership._write_private)
        return ownership.Record.load(found[0]).entries if found else []
    except ownership.OwnershipError:  # removed between the glob and the read
        return []


def qemus(record: ownership.Record) -> list[ownership.ProcessId]:
    return [ownership.ProcessId(int(e.name), e.start_ticks or 0) for e in record.entries
            if e.kind == "process" and e.program == "qemu"]


@pytest.fixture
def host_lookalikes(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A namespace with a process in it and a directory of the host's own, named
    the way miglab once matched by pattern (a dead pid in the name)."""
    dead_pid = 4_000_000  # above pid_max: no live process has it
    ns = f"miglab-{dead_pid}-{secrets.token_hex(3)}-src"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "600"])
    folder = Path("/tmp") / f"miglab-{dead_pid}-src-{secrets.token_hex(3)}"
    folder.mkdir()
    (folder / "results.json").write_text("{}\n")
    try:
        yield ns, proc, folder
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "netns", "del", ns])
        for f in folder.glob("*"):
            f.unlink()
        folder.rmdir()


def test_sigkill_mid_migration_leaves_no_qemu_and_cleanup_removes_the_rest(
        tmp_path: Path, host_lookalikes: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    ns, sleeper, folder = host_lookalikes
    proc = start_run(tmp_path, "--timeout", "300")
    try:
        wait_until_migrating(proc)
        record = record_of(proc.pid)
        started = qemus(record)
        assert len(started) == 2 and all(q.alive() for q in started), record.entries
        proc.kill()
        proc.wait()
        killed_at = time.monotonic()
        wait_for(lambda: not any(q.alive() for q in started), NO_ORPHAN_WITHIN_S,
                 "the run's QEMUs to die with it", interval_s=0.05)
        print(f"QEMUs gone {time.monotonic() - killed_at:.2f}s after SIGKILL")
    finally:
        proc.kill()
    ours = {e.name for e in record.entries if e.kind == "namespace"}
    assert ours and ours <= miglab_namespaces()  # the rest waits for cleanup

    out = subprocess.run([*MIGLAB, "cleanup"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ours:
        assert f"removed namespace {name}" in out.stdout, out.stdout
    assert not ours & miglab_namespaces()
    assert not record.path.exists()
    # The host's own lookalikes are untouched by the run and by cleanup.
    assert ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True).stdout
    assert sleeper.poll() is None
    assert (folder / "results.json").exists()


def test_second_ctrl_c_during_teardown_leaves_nothing(tmp_path: Path) -> None:
    proc = start_run(tmp_path, "--timeout", "300")
    wait_until_migrating(proc)
    record = record_of(proc.pid)
    made = len(record.entries)
    proc.send_signal(signal.SIGINT)
    # inside the teardown: something it made is released (how far it got by
    # the second Ctrl-C varies: it must leave nothing wherever it is)
    wait_for(lambda: len(entries_left(proc.pid)) < made, 30,
             "the teardown to release something it made", interval_s=0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "nothing it started is left" in err, err
    assert not any(q.alive() for q in qemus(record))
    assert not {e.name for e in record.entries if e.kind == "namespace"} & miglab_namespaces()
    assert not record.path.exists()


def test_qemu_that_stops_answering_ends_the_run_with_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = start_run(tmp_path, "--timeout", "300", "--json", str(out))
    wait_until_migrating(proc, " active ")
    src = next(ownership.ProcessId(int(e.name), e.start_ticks or 0)
               for e in record_of(proc.pid).entries
               if e.kind == "process" and e.what == "src QEMU")
    stopped_at = time.monotonic()
    os.kill(src.pid, signal.SIGSTOP)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if src.alive():
            os.kill(src.pid, signal.SIGKILL)
    took = time.monotonic() - stopped_at
    assert out.exists(), err
    result = json.loads(out.read_text())
    assert result["status"] == "failed"
    assert "stopped answering" in result["error"] and "query-migrate" in result["error"]
    assert proc.returncode == 1
    assert not src.alive()
    # the QMP deadline (10 s), a look for the guest (3 s), the kill: well inside 60 s
    assert took < 60, took


def descendants(pid: int) -> list[ownership.ProcessId]:
    """@pid's children, theirs, and so on, as the kernel lists them now."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if (ident := ownership.ProcessId.of(child)) is not None:
                out += [ident, *descendants(child)]
    return out


def test_sigkill_of_a_libvirt_run_leaves_no_libvirtd_or_qemu(tmp_path: Path) -> None:
    """Each lab host's libvirtd is PID 1 of its own PID namespace under
    `unshare --kill-child`: the harness's death ends the namespace, and with
    it libvirtd and every QEMU libvirt started (daemonized, so not our
    children); what the record names is then cleanup's."""
    proc = start_run(tmp_path, "--via", "libvirt", "--timeout", "300")
    try:
        wait_until_migrating(proc, " active ")
        record = record_of(proc.pid)
        hosts = [e for e in record.entries if e.kind == "process" and "libvirtd" in e.what]
        assert len(hosts) == 2, record.entries
        started = [p for e in hosts for p in descendants(int(e.name))]
        comms = [Path(f"/proc/{p.pid}/comm").read_text().strip() for p in started]
        assert comms.count("libvirtd") == 2 and comms.count("qemu-system-x86") == 2, comms
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(p.alive() for p in started), NO_ORPHAN_WITHIN_S,
                 "the hosts' libvirtd and QEMUs to die with the run", interval_s=0.05)
    finally:
        proc.kill()
    made = {e.name for e in record.entries if e.kind in ("namespace", "directory")}
    assert any("miglab-libvirt-" in name for name in made), made
    out = subprocess.run([*MIGLAB, "cleanup"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in made:
        assert name in out.stdout, out.stdout
    assert not record.path.exists()
