"""The two switchover bandwidth filters agree: miglab's (autotune.py) and QEMU's.

`--switchover-bandwidth auto` runs the filter in Python, `qemu-auto` runs
it in C inside our patched QEMU (migration/switchover-bw.c, from the
patches). They are meant to be one filter. Every recorded series of
tests/unit/data is replayed, reading by reading, through both: the C file
taken from each patched tree of scripts/build-qemu and built alone with
filter/replay.c, the Python one from the harness. Both are fed the same
readings, rates in whole bytes/s (QEMU's unit), so the only difference
left is rounding: C floors each step in whole bytes/s, Python does not.
"""
from __future__ import annotations

import itertools
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from miglab import artifacts, autotune
from miglab.autotune import MARGIN, Autotuner, TcpSample

DATA = Path(__file__).parent.parent / "unit" / "data"
REPLAY = Path(__file__).parent / "filter"
SERIES = sorted(p.name for p in DATA.glob("tcpinfo-*.csv"))
# C floors the median of two samples, a tercile's interpolation and the
# margin's product: a few bytes/s, whatever the rate.
ROUNDING_BYTES_PER_S = 4

Reading = tuple[int, list[tuple[int, TcpSample]]]  # time_ms, [(channel, sample)]


def readings(name: str) -> list[Reading]:
    """A recorded series as readings of every connection, rates in whole bytes/s."""
    channels: dict[str, int] = {}
    out = []
    for t_s, group in itertools.groupby(autotune.read_csv(DATA / name),
                                        key=lambda row: row[1].t_s):
        out.append((round(t_s * 1000), [
            (channels.setdefault(conn, len(channels)),
             replace(s, t_s=round(t_s * 1000) / 1000,
                     delivery_rate_bps=int(s.delivery_rate_bps) // 8 * 8.0))
            for conn, s in group]))
    return out


def python_filter(series: list[Reading]) -> list[float | None]:
    tuner, out = Autotuner(), []
    for _, samples in series:
        tuner.add({str(ch): s for ch, s in samples})
        measured = tuner.measured_bps()
        out.append(None if measured is None else measured / 8 * MARGIN)
    return out


@pytest.fixture(scope="module", params=["patched", "upstream-patched"])
def c_filter(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QEMU's filter of one patched tree, built alone beside replay.c."""
    source = artifacts.qemu_binary(request.param).parent.parent / "src" / "migration"
    binary = tmp_path_factory.mktemp(request.param) / "replay"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-I", str(REPLAY), "-I", str(source),
                    "-o", str(binary), str(REPLAY / "replay.c"),
                    str(source / "switchover-bw.c")], check=True)
    return binary


def qemu_filter(binary: Path, series: list[Reading]) -> list[float | None]:
    stdin = "".join(f"{t_ms},{ch},{int(s.delivery_rate_bps) // 8},{int(s.app_limited)},"
                    f"{s.delivered},{s.bytes_acked},{round(s.limited_ms * 1000)}\n"
                    for t_ms, samples in series for ch, s in samples)
    out = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return [None if v == "-" else float(v) for v in (line.split(",")[1] for line in out)]


@pytest.mark.parametrize("name", SERIES)
def test_qemu_and_miglab_filters_give_the_same_value_at_every_reading(
        c_filter: Path, name: str) -> None:
    series = readings(name)
    python, qemu = python_filter(series), qemu_filter(c_filter, series)
    assert len(python) == len(qemu) == len(series)
    differ = [(series[i][0], p, q) for i, (p, q) in enumerate(zip(python, qemu, strict=True))
              if (p is None) != (q is None)
              or (p is not None and q is not None and abs(p - q) > ROUNDING_BYTES_PER_S)]
    assert not differ, f"{len(differ)} readings differ (time_ms, python, qemu): {differ[:5]}"
    assert any(v is not None for v in qemu), "neither filter ever had an estimate"
