"""Ownership records: only what a record names, and only while it still matches."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from miglab import ownership
from miglab.deadline import wait_for
from miglab.ownership import Entry, ProcessId, Record


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setattr(ownership, "STATE_DIR", directory)
    return directory


def dead_record(state: Path, entries: list[Entry], pid_ns: int | None = None) -> Record:
    state.mkdir(mode=0o700, exist_ok=True)
    # this very pid with another start time: a process that is gone
    owner = ProcessId(os.getpid(), ProcessId.self().start_ticks + 1)
    record = Record(state / "run-1-dead.json", owner,
                    pid_ns if pid_ns is not None else ownership.pid_namespace(), entries)
    record.update()
    return record


def test_a_process_is_its_pid_and_start_time() -> None:
    me = ProcessId.self()
    assert me.alive()
    assert not ProcessId(me.pid, me.start_ticks + 1).alive()
    assert ProcessId.of(4_000_000) is None  # above pid_max


def test_process_name_with_spaces_and_parentheses_parses(tmp_path: Path) -> None:
    # The kernel names a process after the file it executed; dash's exec has
    # no -a (its sh exited at once and was a zombie by the check, by chance).
    odd = tmp_path / "a) (b"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"])
    try:
        # Popen may return before the exec has renamed the child (vfork)
        wait_for(lambda: Path(f"/proc/{proc.pid}/comm").read_text() == "a) (b\n", 5,
                 "the child's exec")
        ident = ProcessId.of(proc.pid)
        assert ident is not None and ident.alive()
    finally:
        proc.kill()
        proc.wait()


def test_record_round_trips(state_dir: Path) -> None:
    record = dead_record(state_dir, [Entry("directory", "/nonexistent", "x", inode=[1, 2])])
    loaded = Record.load(record.path)
    assert loaded.owner == record.owner and loaded.entries == record.entries
    assert loaded.owner_dead


def test_a_dead_runs_directory_is_removed(state_dir: Path, tmp_path: Path) -> None:
    live = Record(state_dir / "x.json", ProcessId.self(), ownership.pid_namespace())
    ownership.state_dir()
    path, entry = live.directory(tmp_path, "miglab-")
    (path / "file").write_text("x")
    record = dead_record(state_dir, [entry])
    done = ownership.reap_dead()[record.path]
    assert done.removed == [f"directory {path}"] and not path.exists()
    assert not record.path.exists()


def test_a_directory_replaced_under_the_same_name_is_not_ours(
        state_dir: Path, tmp_path: Path) -> None:
    live = Record(state_dir / "x.json", ProcessId.self(), ownership.pid_namespace())
    ownership.state_dir()
    path, entry = live.directory(tmp_path, "miglab-")
    # someone else's now: made while ours still existed elsewhere, so it has
    # another inode (rmdir then mkdir may get the same inode back)
    moved = path.rename(tmp_path / "ours-moved")
    path.mkdir()
    moved.rmdir()
    (path / "theirs").write_text("keep")
    dead_record(state_dir, [entry])
    ownership.reap_dead()
    assert (path / "theirs").read_text() == "keep"


def test_a_pid_reused_by_another_process_is_never_killed(state_dir: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        ident = ProcessId.of(proc.pid)
        assert ident
        # recorded with another start time: the pid now belongs to someone else
        dead_record(state_dir, [Entry("process", str(proc.pid), "old QEMU",
                                      start_ticks=ident.start_ticks - 1)])
        ownership.reap_dead()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_recorded_process_of_a_dead_run_is_killed(state_dir: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    ident = ProcessId.of(proc.pid)
    assert ident
    dead_record(state_dir, [Entry("process", str(proc.pid), "src QEMU",
                                  start_ticks=ident.start_ticks)])
    done = ownership.reap_dead()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert [f"src QEMU (pid {proc.pid})"] == [r for d in done.values() for r in d.removed]


def test_records_of_another_pid_namespace_are_left_alone(state_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    record = dead_record(state_dir, [Entry("directory", str(folder), inode=None)],
                         pid_ns=ownership.pid_namespace() + 1)
    assert not record.owner_dead
    assert ownership.reap_dead() == {}
    assert folder.exists() and record.path.exists()


def test_the_state_directory_must_be_private(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o777)
    os.chmod(state_dir, 0o777)
    with pytest.raises(ownership.OwnershipError, match="writable by others"):
        ownership.state_dir()


def test_the_state_directory_is_never_a_link(state_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    state_dir.symlink_to(target)
    with pytest.raises(ownership.OwnershipError, match="not a directory"):
        ownership.state_dir()


def test_log_files_are_not_written_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "src-qemu.log").symlink_to(victim)
    with pytest.raises(OSError):
        ownership.open_log(tmp_path / "src-qemu.log")
    assert victim.read_text() == "precious"


def test_signals_are_held_until_teardown_ends() -> None:
    arrived = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: arrived.append("late"))
    try:
        held = ownership._HELD
        ownership._HELD = (signal.SIGUSR1,)
        try:
            with ownership.signals_held():
                os.kill(os.getpid(), signal.SIGUSR1)
                arrived.append("teardown done")
        finally:
            ownership._HELD = held
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert arrived == ["teardown done", "late"]
