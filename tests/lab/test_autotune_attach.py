"""`miglab autotune` attached to a running source QEMU, as an operator would use it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from miglab import migration, scenario
from miglab.lab import lab
from miglab.ownership import Record


def test_autotune_attached_to_the_source_makes_a_capped_migration_converge(
        tmp_path: Path, run_record: Record) -> None:
    s = scenario.parse({"qemu": "patched", "hot-set": "12M", "accel": "tcg"})
    qmp = tmp_path / "tune.sock"
    with lab(s, tmp_path, run_record, src_extra_args=["-qmp", f"unix:{qmp},server=on,wait=off"]
                    ) as env:
        tune = subprocess.Popen([sys.executable, "-m", "miglab.cli", "autotune", "--qmp", str(qmp),
                                 "--netns", env.link.src_ns, "--wait", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # it learns which connections predate the migration before saying so
            assert tune.stdout
            attached = tune.stdout.readline()
            assert "attached to pid" in attached, attached
            outcome = migration.run(env.src, env.dst, s.migration(), env.uri, deadline_s=60)
            out, _ = tune.communicate(timeout=30)
            out = attached + out
        finally:
            tune.kill()
        final = env.src.command("query-migrate-parameters")["avail-switchover-bandwidth"]
    assert outcome.status == "completed", out
    assert "set avail-switchover-bandwidth" in out, out
    assert "restored to 0" in out and final == 0, out
    assert tune.returncode == 0, out
