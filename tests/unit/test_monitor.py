"""Every QMP wait has a deadline: a silent or hung peer is an error, not a hang."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from miglab.monitor import Monitor, QMPTimeout

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                "package": ""}, "capabilities": []}}


def serve(path: Path, greet: bool) -> socket.socket:
    """A peer that accepts; greets and negotiates if @greet, then never answers."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        if greet:
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            request = json.loads(conn.recv(4096))
            conn.sendall(json.dumps({"return": {}, "id": request.get("id")}).encode() + b"\r\n")
        time.sleep(30)  # then silence, like a QEMU stopped with SIGSTOP

    threading.Thread(target=run, daemon=True).start()
    return listener


def test_a_socket_that_never_greets_times_out_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    serve(path, greet=False)
    began = time.monotonic()
    with pytest.raises(QMPTimeout, match=f"QMP {path}: no answer to the greeting"):
        Monitor(str(path)).connect(timeout_s=1.0)
    assert time.monotonic() - began < 3


def test_a_command_that_gets_no_answer_times_out_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    serve(path, greet=True)
    monitor = Monitor(str(path), command_timeout_s=0.5)
    monitor.connect()
    with pytest.raises(QMPTimeout, match="no answer to query-migrate within 0.5s"):
        monitor.cmd("query-migrate")
    monitor.close()


def test_autotune_on_a_monitor_held_by_someone_else_fails_within_its_deadline(
        tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    serve(path, greet=False)
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "miglab.cli", "autotune", "--qmp", str(path),
                           "--pid", str(os.getpid()), "--port", "4444"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"--qmp {path}" in proc.stderr and "greeting" in proc.stderr
    assert time.monotonic() - began < 30
