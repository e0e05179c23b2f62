"""The automatic switchover bandwidth: reading TCP_INFO, and the filter on recorded series.

data/ holds real sample series of migration connections, with the TCP
goodput of their links (see data/README.md).
"""
from __future__ import annotations

import csv
import itertools
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from miglab import autotune, cli, tcpdiag
from miglab.autotune import (
    MARGIN,
    MIN_SAMPLES,
    Autotuner,
    RateFilter,
    TcpSample,
    follow,
    read_csv,
    sample_of,
)
from miglab.migration import PARAM

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Bounds:
    """A row of data/bounds.csv: what the filter must declare on a recorded series."""

    file: str
    # alone (one connection), shared (with competing flows), multifd, or
    # receiver (one connection to a destination slower than the link)
    shape: str
    # what the run's link check measured alone; receiver: what the
    # destination took (bytes_acked over the series)
    goodput_bps: float
    flows: int  # competing flows (shared)
    channels: int  # multifd channels (multifd)
    low: float  # every declared value, as a share of the reference
    high: float
    known: str  # a series known to miss its bounds, and how; empty if none

    @property
    def reference_bps(self) -> float:
        """The link's goodput; on a shared link the fair share, goodput / (N + 1)."""
        return self.goodput_bps / (self.flows + 1)


with open(DATA / "bounds.csv") as f:
    BOUNDS = [Bounds(r["file"], r["shape"], float(r["goodput_bps"]), int(r["flows"]),
                     int(r["channels"]), float(r["low"]), float(r["high"]), r["known"])
              for r in csv.DictReader(f)]


def bounded(b: Bounds) -> object:
    """A test parameter of @b, a strict expected failure when it is known to miss."""
    marks = [pytest.mark.xfail(strict=True, reason=b.known)] if b.known else []
    return pytest.param(b, id=b.file, marks=marks)


def load(name: str) -> list[TcpSample]:
    return [s for _, s in read_csv(DATA / name)]


def test_a_samples_fields_come_from_tcp_info_in_its_units() -> None:
    info = tcpdiag.TcpInfo(delivery_rate_bytes_per_s=120_041_450, app_limited=True,
                           rtt_us=2719, bytes_acked=123456, delivered=85,
                           rwnd_limited_us=600_000, sndbuf_limited_us=100_000)
    s = sample_of(info, 1.5)
    assert (s.t_s, s.delivery_rate_bps, s.app_limited, s.rtt_ms) == (1.5, 960331600, True, 2.719)
    assert (s.delivered, s.bytes_acked, s.limited_ms) == (85, 123456, 700.0)


def test_nothing_is_declared_before_the_window_has_enough_samples() -> None:
    tuner = Autotuner()
    for s in load("tcpinfo-capped-1gbit.csv")[:5]:
        tuner.add({"c": s})
        assert tuner.decide(s.t_s) is None


def busy(i: int, rate_bps: float) -> TcpSample:
    """Reading i (every 100 ms) of a connection that keeps the pipe full: a
    new sample each time (an ACK came since the reading before), equal to
    the one before."""
    return TcpSample(i * 0.1, rate_bps, False, delivered=i + 1)


def readings_by_connection(name: str) -> list[tuple[float, dict[str, TcpSample]]]:
    """A recorded series of every connection by name (the multifd ones),
    reading by reading: each holds every connection's sample of that instant."""
    return [(t_s, dict(group)) for t_s, group in itertools.groupby(
        read_csv(DATA / name), key=lambda row: row[1].t_s)]


def replay(name: str, by_connection: bool = False) -> tuple[Autotuner, list[float]]:
    """A tuner fed a recorded series reading by reading, and what it declared
    (bits/s). By connection: see readings_by_connection; otherwise one
    connection's samples."""
    readings = (readings_by_connection(name) if by_connection
                else [(s.t_s, {"c": s}) for s in load(name)])
    tuner = Autotuner()
    declared = []
    for t_s, samples in readings:
        tuner.add(samples)
        if (value := tuner.decide(t_s)) is not None:
            declared.append(value * 8)
    return tuner, declared


def test_every_recorded_series_has_its_bounds() -> None:
    assert {b.file for b in BOUNDS} == {p.name for p in DATA.glob("tcpinfo-*.csv")}


@pytest.mark.parametrize("b", [bounded(b) for b in BOUNDS])
def test_every_declared_value_is_within_the_bounds_of_its_shape(b: Bounds) -> None:
    """Alone on the link, 85-105% of its goodput (the accuracy asked of the
    automatic modes; 105%: the overdeclaration rule); multifd channels,
    60-105% (their lower terciles summed read less: Autotuner.measured_bps);
    on a shared link, never the link: at most 105% of the fair share, and
    at least 40% of it; to a destination slower than the link, at most 105%
    of what it took, at least 80% (92% of its slowest 8 s, 11.31 MB/s, is
    83% of the 12.53 MB/s it took over the series)."""
    tuner, declared = replay(b.file, by_connection=b.shape == "multifd")
    assert declared, "never declared anything"
    shares = [round(d / b.reference_bps, 3) for d in declared]
    assert all(b.low <= x <= b.high for x in shares), shares
    if b.shape == "alone":  # a steady link is declared a few times, not at every sample
        assert len(tuner.changes) <= 5
    if b.shape == "multifd":  # the main connection and every channel
        assert len({conn for conn, _ in tuner.history}) == b.channels + 1


def test_connections_share_the_link_so_their_rates_add_up() -> None:
    tuner = Autotuner()
    for i in range(20):
        tuner.add({"a": busy(i, 300e6), "b": busy(i, 200e6)})
    assert tuner.measured_bps() == pytest.approx(500e6)


def test_channels_trading_shares_add_up_to_the_link() -> None:
    # Two multifd channels on a 900 Mbit/s link: their shares swing from one
    # sample to the next (no 8 of either agree within 3%), the sum does not.
    tuner = Autotuner()
    for i in range(30):
        swing = (i * 7 % 11 - 5) * 40e6
        tuner.add({"a": TcpSample(i * 0.1, 450e6 + swing, False, delivered=i + 1),
                   "b": TcpSample(i * 0.1, 450e6 - swing, False, delivered=i + 1)})
    assert 0.8 * 900e6 <= tuner.measured_bps() <= 900e6


def test_a_channel_with_too_few_samples_yet_is_left_out() -> None:
    tuner = Autotuner()
    for i in range(12):
        samples = {"a": busy(i, 450e6)}
        if i >= 4:  # b started later: 7 samples after its first reading, not yet measured
            samples["b"] = busy(i, 450e6)
        tuner.add(samples)
    assert tuner.measured_bps() == pytest.approx(450e6)  # less than the link, never more
    for i in range(12, 15):
        tuner.add({"a": busy(i, 450e6), "b": busy(i, 450e6)})
    assert tuner.measured_bps() == pytest.approx(900e6)


def test_dropped_readings_still_age_the_window() -> None:
    f = RateFilter()
    for i in range(7):
        f.add(busy(i, 100e6))
    for i in range(7, 107):
        f.add(TcpSample(i * 0.1, 3e9, True))
    assert f.samples == 0


def test_a_sample_read_again_is_not_a_new_one() -> None:
    # An idle connection's TCP_INFO repeats its last sample until an ACK
    # comes: multifd's main one repeated a 969 Mbit/s burst 33 times.
    tuner = Autotuner()
    for i in range(40):
        tuner.add({"main": TcpSample(i * 0.1, 969e6, False, delivered=7),
                   "a": busy(i, 450e6), "b": busy(i, 450e6)})
    assert tuner.measured_bps() == pytest.approx(900e6)


def test_equal_samples_that_acks_brought_are_new_ones() -> None:
    # At a steady bottleneck two readings in a row can rate the same; only
    # tcpi_delivered tells a new sample from one read again.
    f = RateFilter()
    for i in range(MIN_SAMPLES + 1):
        f.add(busy(i, 950e6))
    assert f.samples == MIN_SAMPLES  # the first reading is the baseline
    assert f.estimate_bps() == pytest.approx(950e6)


def receiver_bound(i: int, limited_share: float) -> TcpSample:
    """Reading i of a connection that sends bursts the kernel rates at
    2.8 Gbit/s while 4 MB are delivered every 100 ms (320 Mbit/s), held back
    by the receiver's window for @limited_share of the time."""
    return TcpSample(i * 0.1, 2.8e9, False, delivered=i + 1, bytes_acked=4_000_000 * i,
                     limited_ms=100 * limited_share * i)


def test_a_receiver_bound_connection_is_measured_by_what_it_delivered() -> None:
    bound, free = Autotuner(), Autotuner()
    for i in range(70):  # 6.9 s
        bound.add({"c": receiver_bound(i, 0.8)})
        free.add({"c": receiver_bound(i, 0.1)})
    assert bound.measured_bps() is None  # not yet over RECEIVER_SPAN_S: nothing
    bound.add({"c": receiver_bound(70, 0.8)})
    assert bound.measured_bps() == pytest.approx(320e6)
    assert free.measured_bps() == pytest.approx(2.8e9)  # the control: not held back


def test_a_quiet_main_connection_does_not_hold_the_estimate_back() -> None:
    # Recorded on a busy host: multifd's main connection kept 7 samples from
    # 8 s on; waiting for it to have enough left nothing declared from then.
    tuner, measured = Autotuner(), []
    for _, samples in readings_by_connection("tcpinfo-miglab-multifd2-quiet-main.csv"):
        tuner.add(samples)
        measured.append(tuner.measured_bps())
    first = next(i for i, m in enumerate(measured) if m is not None)
    assert None not in measured[first:]


def test_a_connection_that_carries_little_does_not_hold_the_sum_back() -> None:
    # multifd's main connection: a few samples, never enough to agree on
    tuner = Autotuner()
    for i in range(20):
        samples = {"a": busy(i, 450e6), "b": busy(i, 450e6)}
        if i % 5 == 0:
            samples["main"] = TcpSample(i * 0.1, 10e6 * (i + 1), False, delivered=i + 1)
        tuner.add(samples)
    assert tuner.measured_bps() == pytest.approx(900e6)


def test_follow_tunes_only_while_active_and_returns_the_final_status() -> None:
    # A scripted QEMU: no migration yet, then active for a while, then completed.
    statuses = iter(["none"] * 3 + ["active"] * 25 + ["completed"])
    calls: list[tuple[str, dict]] = []

    def command(name: str, **args: object) -> dict:
        calls.append((name, args))
        if name != "query-migrate":
            return {}
        status = next(statuses)
        return {"status": status, "total-time": 1} if status == "completed" else {
            "status": status}

    readings = itertools.count()

    def read(t: float) -> dict[str, TcpSample]:
        return {"c": TcpSample(t, 900e6, False, delivered=next(readings))}

    log: list[str] = []
    status = follow(command, read, Autotuner(), log.append, interval_s=0.02, wait_s=5,
                    sample_interval_s=0.005)
    sets = [args for name, args in calls if name == "migrate-set-parameters"]
    assert status == "completed"
    assert sets and all(a[PARAM] == int(900e6 * MARGIN / 8) for a in sets)
    assert len(sets) == len(log) == 1


def test_follow_gives_up_when_no_migration_starts() -> None:
    status = follow(lambda name, **a: {"status": "none"}, lambda t: {}, Autotuner(),
                    lambda text: None, interval_s=0.01, wait_s=0.05)
    assert status == "none"


class FakeDiag:
    """Stands for the kernel's socket list: established and listening sockets."""

    def __init__(self) -> None:
        self.sockets: list[tcpdiag.TcpSocket] = []

    def add(self, conn: str, rate_bps: float, state: int = tcpdiag.TCP_ESTABLISHED) -> None:
        local, peer = conn.split("->")
        info = tcpdiag.TcpInfo(int(rate_bps / 8), False, 1000, 0, len(self.sockets) + 1, 0, 0)
        self.sockets.append(tcpdiag.TcpSocket(local, peer, state, len(self.sockets) + 1, info))

    def tcp(self, states: tuple[int, ...] = (tcpdiag.TCP_ESTABLISHED,),
            pid: int | None = None) -> list[tcpdiag.TcpSocket]:
        return [s for s in self.sockets if s.state in states]  # every one QEMU's


def test_without_a_port_only_connections_qemu_opened_after_the_migration_count() -> None:
    # QEMU listens on 5900 (VNC) and has an NBD client connection open before
    # the migration; then the migration opens its own, and a VNC viewer connects.
    diag = FakeDiag()
    diag.add("198.18.0.1:5900->0.0.0.0:0", 0, tcpdiag.TCP_LISTEN)
    diag.add("198.18.0.1:40000->198.18.0.2:10809", 5e9)  # NBD
    selector = autotune.MigrationConnections(diag, 1234)  # type: ignore[arg-type]
    selector.query(lambda name: {"status": "none"})
    diag.add("198.18.0.1:41000->198.18.0.2:4444", 900e6)  # the migration
    diag.add("198.18.0.1:5900->10.0.0.9:50000", 3e9)  # a VNC viewer
    selector.query(lambda name: {"status": "active"})
    assert set(selector.read(1.0)) == {"198.18.0.1:41000->198.18.0.2:4444"}


def test_without_a_port_a_migration_already_running_is_refused() -> None:
    selector = autotune.MigrationConnections(FakeDiag(), 1234)  # type: ignore[arg-type]
    with pytest.raises(autotune.AlreadyMigrating, match="give --port"):
        selector.query(lambda name: {"status": "active"})


def test_a_failed_restore_is_reported_and_fails_the_command() -> None:
    class Broken:
        def cmd(self, name: str, **args: object) -> None:
            raise ConnectionResetError("QEMU went away")

    said: list[str] = []
    assert not cli.autotune.restore(Broken(), 0, said.append)  # type: ignore[arg-type]
    assert said and "could not restore" in said[0] and "QEMU went away" in said[0]


@pytest.mark.parametrize("args, named", [
    (["--port", "0"], "--port 0"),
    (["--port", "70000"], "--port 70000"),
    (["--wait", "nan"], "--wait nan"),
    (["--wait", "-1"], "--wait -1"),
    (["--pid", "4000000"], "--pid 4000000"),
    (["--netns", "no-such-ns-here"], "--netns 'no-such-ns-here'"),
])
def test_autotune_options_are_checked_before_it_attaches(
        tmp_path: Path, args: list[str], named: str) -> None:
    sock = tmp_path / "qmp.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    proc = subprocess.run([sys.executable, "-m", "miglab.cli", "autotune", "--qmp", str(sock),
                           *args], capture_output=True, text=True, timeout=30)
    listener.close()
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr


def test_the_qmp_socket_owner_is_found_by_its_path_only(tmp_path: Path) -> None:
    sock, other = tmp_path / "qmp.sock", tmp_path / "other.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen()
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(other))  # bound, not listening: no server there
    try:
        assert autotune.find_qmp_owner(str(sock)) == os.getpid()
        assert autotune.find_qmp_owner(str(other)) is None
        assert autotune.find_qmp_owner(str(tmp_path / "absent.sock")) is None
    finally:
        listener.close()
        bound.close()
