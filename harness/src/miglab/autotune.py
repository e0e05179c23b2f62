"""Automatic switchover bandwidth from the kernel's TCP delivery-rate samples.

The kernel samples each TCP connection's delivery rate and flags samples
taken while the sender was application-limited. During a capped pre-copy
they read about the link rate while QEMU's own estimate reads the cap. But
single samples are wild: up to 25 times the link while the tbf bucket
drains, down to a few Mbit/s after a pause (tests/unit/data). So:

- app-limited samples are dropped: the sender did not fill the pipe then,
  and in the recorded series their median was 5-6 Gbit/s on 0.5-1 Gbit/s
  links (bursts);
- what is left still has two kinds of outliers: bursts through the tbf
  bucket (up to 25 times the link) and samples taken while TCP ramps up
  again after the rate limiter left the connection idle (slow start after
  idle; down to a few Mbit/s, not flagged app-limited). On a capped
  migration the ramp-up samples can be a third of all, or most of a
  window, and they bunch up themselves (around 75-80% of the link), so
  neither a quantile nor the densest cluster is safe: a median sat 12%
  under the link at 500 Mbit/s here, an upper quartile 11% over it in one
  run and at 47% of it in another, the densest cluster at 80% in a third,
  and the fastest rate 6 samples of 3 s agreed on at 69% in a fourth
  (upstream 10.0). What holds is that samples which saw a full pipe all
  read the bottleneck, so they agree with one another, while bursts are
  scattered and ramp-ups are slower. The estimate is the fastest rate that
  at least 8 samples of the last 8 s agree on within +-3% (the median of
  those); the link's rate does not change faster than that here;
- a reading with no ACK since the one before (tcpi_delivered unchanged)
  is the same sample read again, not a new one: an idle connection
  repeats its last sample, once a burst at the link's rate 33 times;
  equal readings that ACKs brought are new ones;
- a connection held back by the receiver's window or its own send buffer
  for at least half the time since the reading before was bound by the
  destination, not the network: its samples rate the bursts each window
  update lets through (9 times what a destination paced at 40 MB/s
  took; 130-1370 Mbit/s for a destination QEMU held to 5% of a CPU that
  took 100 Mbit/s), so that reading brings no sample; and a connection
  held back so for half of a window of at least 7 s is measured by what
  it delivered over the window (bytes_acked): what the destination took;
- nothing is declared before the window holds enough samples (10);
- with several busy connections (multifd) the estimate is the sum of their
  windows' lower terciles instead (Autotuner.measured_bps says why);
- the declared value is that estimate times a safety margin (0.92: at
  2 Gbit/s the samples agreed on up to 10% above the goodput a link check
  measured, and 0.95 then declared 5.1% above it);
- the parameter is only rewritten when the value moves by more than 5%.

On the eight recorded series in tests/unit/data (two from the design
brief, six recorded by miglab) this declares 92-103% of the link's TCP
goodput as the run's own link check measured it, at every point where it
declares anything.
"""
from __future__ import annotations

import csv
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import migration, tcpdiag
from .deadline import DeadlineExceeded
from .errors import InputError
from .migration import PARAM
from .result import Sample

WINDOW_S = 8.0
MIN_SAMPLES = 10
AGREEMENT = 0.03  # samples within +-3% of one another read the same rate
MIN_AGREEING = 8
MARGIN = 0.92
CHANGE_THRESHOLD = 0.05
RECEIVER_BOUND = 0.5  # share of the time held back by the receiver (or the send buffer)
# What a receiver takes depends on what it receives (zero pages cost it
# little: a destination held to 5% of a CPU took 28 MB in the first second
# and 12.3 MB/s after), so it is measured over nearly all of the window.
RECEIVER_SPAN_S = 7.0


@dataclass(frozen=True)
class TcpSample:
    """One reading of a connection's TCP_INFO (the fields the filter uses)."""

    t_s: float
    delivery_rate_bps: float
    app_limited: bool
    rtt_ms: float | None = None
    delivered: int = 0  # tcpi_delivered: segments ACKed so far
    bytes_acked: int = 0
    limited_ms: float = 0.0  # tcpi_rwnd_limited + tcpi_sndbuf_limited so far


def sample_of(info: tcpdiag.TcpInfo, t_s: float) -> TcpSample:
    """The filter's sample of a connection's tcp_info read at @t_s."""
    return TcpSample(t_s, info.delivery_rate_bytes_per_s * 8, info.app_limited,
                     info.rtt_us / 1000 if info.rtt_us else None, info.delivered,
                     info.bytes_acked, (info.rwnd_limited_us + info.sndbuf_limited_us) / 1000)


def _held_back(first: TcpSample, last: TcpSample) -> bool:
    """Whether the connection spent RECEIVER_BOUND of the time between two
    readings held back by the receiver's window or its own send buffer."""
    return last.limited_ms - first.limited_ms >= RECEIVER_BOUND * (last.t_s - first.t_s) * 1000


def _new_sample(last: TcpSample | None, reading: TcpSample) -> TcpSample | None:
    """The sample @reading brings after @last, or None when it brings none
    that stands for the connection's bandwidth."""
    # The kernel takes a sample when an ACK delivers data: with none since
    # the reading before, this is the same sample read again.
    if last is None or reading.delivered == last.delivered or reading.t_s <= last.t_s:
        return None
    # Held back by the receiver: the sample rates a burst
    if _held_back(last, reading):
        return None
    # The sender did not fill the pipe: the sample says nothing of it
    if reading.app_limited or reading.delivery_rate_bps <= 0:
        return None
    return reading


class RateFilter:
    """The fastest rate enough samples of a sliding window agree on (app-limited dropped)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[TcpSample] = deque()
        self._readings: deque[TcpSample] = deque()  # every reading, for receiver_bound_bps
        self._last: TcpSample | None = None

    def add(self, sample: TcpSample) -> None:
        # Every reading ages the window, the dropped ones too: a connection
        # whose samples are all app-limited from some point on (multifd's
        # main one) must not keep its last kept ones for ever.
        # Ages in whole milliseconds, as QEMU's filter does (its clock is in
        # ms): in seconds, 16.577 - 8.577 is 8.000000000000002, over 8.
        for queue in (self._samples, self._readings):
            while queue and round((sample.t_s - queue[0].t_s) * 1000) > self.window_s * 1000:
                queue.popleft()
        self._readings.append(sample)
        last, self._last = self._last, sample
        if (kept := _new_sample(last, sample)) is not None:
            self._samples.append(kept)

    @property
    def samples(self) -> int:
        """Samples in the window (app-limited ones were never kept)."""
        return len(self._samples)

    def receiver_bound_bps(self) -> float | None:
        """What the connection delivered over the window, when its receiver
        (or its send buffer) held it back for RECEIVER_BOUND of a window of
        at least RECEIVER_SPAN_S; otherwise None."""
        if not self._readings:
            return None
        first, last = self._readings[0], self._readings[-1]
        # in whole ms, as QEMU's filter does
        span_s = round((last.t_s - first.t_s) * 1000) / 1000
        if span_s < RECEIVER_SPAN_S or not _held_back(first, last):
            return None
        return (last.bytes_acked - first.bytes_acked) * 8 / span_s

    def lower_tercile_bps(self) -> float:
        return statistics.quantiles([s.delivery_rate_bps for s in self._samples], n=3)[0]

    def estimate_bps(self) -> float | None:
        if len(self._samples) < MIN_SAMPLES:
            return None
        rates = [s.delivery_rate_bps for s in self._samples]
        for r in sorted(rates, reverse=True):  # ~30 samples: quadratic is fine
            agreeing = [x for x in rates if r / (1 + AGREEMENT) <= x <= r * (1 + AGREEMENT)]
            if len(agreeing) >= MIN_AGREEING:
                return statistics.median(agreeing)
        return None


def read_csv(path: Path) -> list[tuple[str, TcpSample]]:
    """The samples of a series Autotuner.write_csv wrote, (connection, sample)
    in order; also the older series of tests/unit/data.

    Series recorded before the sampler kept tcpi_delivered lack it (and the
    first two lack the connection): a reading equal to the one before was
    then taken as no new ACK, as the filter itself did, and so it is here."""
    out: list[tuple[str, TcpSample]] = []
    last: dict[str, TcpSample] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            conn = row.get("connection", "c")
            rate, app_limited = float(row["delivery_rate_bps"]), row["app_limited"] == "1"
            rtt_ms = float(row["rtt_ms"]) if row.get("rtt_ms") else None
            if "delivered" in row:
                sample = TcpSample(float(row["t_s"]), rate, app_limited, rtt_ms,
                                   int(row["delivered"]), int(row["bytes_acked"]),
                                   float(row["limited_ms"]))
            else:
                before = last.get(conn)
                delivered = 0 if before is None else before.delivered + (
                    (rate, app_limited) != (before.delivery_rate_bps, before.app_limited))
                sample = TcpSample(float(row["t_s"]), rate, app_limited, rtt_ms, delivered)
            last[conn] = sample
            out.append((conn, sample))
    return out


@dataclass
class Change:
    t_s: float
    bytes_per_s: int
    reason: str
    measured_bps: float = 0.0  # what the connections' samples read when it was set


@dataclass
class Autotuner:
    """Turns samples of one or more connections into avail-switchover-bandwidth values."""

    margin: float = MARGIN
    change_threshold: float = CHANGE_THRESHOLD
    declared_bytes_per_s: int = 0  # currently set; 0 = QEMU's own estimate
    changes: list[Change] = field(default_factory=list)
    history: list[tuple[str, TcpSample]] = field(default_factory=list)  # every sample seen
    _filters: dict[str, RateFilter] = field(default_factory=dict)
    # a Sampler thread adds while the migration driver decides
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, samples: dict[str, TcpSample]) -> None:
        with self._lock:
            for conn, sample in samples.items():
                self.history.append((conn, sample))
                self._filters.setdefault(conn, RateFilter()).add(sample)

    def write_csv(self, path: Path) -> None:
        """The samples seen, in the columns of the recorded series in tests/unit/data."""
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t_s", "connection", "delivery_rate_bps", "app_limited", "rtt_ms",
                          "delivered", "bytes_acked", "limited_ms"])
            for conn, s in self.history:
                out.writerow([f"{s.t_s:.3f}", conn, int(s.delivery_rate_bps),
                              int(s.app_limited), "" if s.rtt_ms is None else s.rtt_ms,
                              s.delivered, s.bytes_acked, s.limited_ms])

    @property
    def connections(self) -> int:
        """How many connections it has seen samples of (multifd: one per channel)."""
        with self._lock:
            return len(self._filters)

    def measured_bps(self) -> float | None:
        """The link's rate as the migration's connections saw it.

        One busy connection: its filter's estimate. Several (multifd
        channels): the sum of their lower terciles. Channels sharing a
        bottleneck trade shares from one sample to the next (on 2 channels
        of 1 Gbit/s one read 170-970 Mbit/s, and no 8 of its samples agreed
        within 3% in 8 s), so the agreement filter finds nothing, or a
        moment when the other channel idled and this one had the whole
        link; those moments also lift a channel's median (the medians
        summed to up to 118% of the link). The lower third of a channel's
        samples are the ones taken while every channel sent, each at its
        share: summed, 76-97% of the link on the three recorded series (so
        69-90% declared: under the link always, by up to a third).

        A connection with fewer than MIN_SAMPLES samples in its window is
        left out: it carries too little to count (multifd's main
        connection), or has only just started, when leaving it out reads
        less than the link, never more. (Holding the estimate back until it
        had enough, as this did before, held it for good when multifd's
        main connection kept 5-9 samples: tcpinfo-miglab-multifd2-quiet-main.csv.)"""
        return self._measure()[0]

    def _measure(self) -> tuple[float | None, int, int]:
        """measured_bps(), how many busy connections it came from, and how
        many of them were held back by their receiver."""
        with self._lock:
            by_receiver = [(f, f.receiver_bound_bps()) for f in self._filters.values()]
            bound = [bps for _, bps in by_receiver if bps is not None]
            sampled = [f for f, bps in by_receiver if bps is None and f.samples >= MIN_SAMPLES]
            busy = len(bound) + len(sampled)
            if not busy:
                return None, 0, 0
            if busy == 1 and sampled:
                return sampled[0].estimate_bps(), 1, 0
            return sum(bound) + sum(f.lower_tercile_bps() for f in sampled), busy, len(bound)

    def decide(self, t_s: float) -> int | None:
        """A new value to set (bytes/s), or None to leave the parameter as it is."""
        measured, busy, bound = self._measure()
        if measured is None:
            return None
        target = int(measured * self.margin / 8)
        if self.declared_bytes_per_s and abs(target - self.declared_bytes_per_s) <= \
                self.change_threshold * self.declared_bytes_per_s:
            return None
        if bound == busy == 1:
            how = f"what it delivered in the last {WINDOW_S:.0f} s, held back by the receiver"
        elif busy == 1:
            how = f"the fastest that {MIN_AGREEING} samples of the last {WINDOW_S:.0f} s agree on"
        else:
            how = (f"the lower terciles of {busy} busy connections' last {WINDOW_S:.0f} s, summed"
                   + (f", {bound} of them by what they delivered" if bound else ""))
        reason = (f"TCP delivery rate {measured / 1e6:.0f} Mbit/s ({how}) over"
                  f" {len(self._filters)} connection(s) x {self.margin}")
        self.changes.append(Change(round(t_s, 3), target, reason, round(measured)))
        self.declared_bytes_per_s = target
        return target


class Sampler:
    """Reads the samples into a tuner every @interval_s, in a thread, until stopped.

    Ten readings a second, as in the recorded series: the filter's window
    then holds about 30 samples; at the driver's five a second a single
    noisy window moved the estimate by 10%."""

    def __init__(self, tuner: Autotuner, read: Callable[[float], dict[str, TcpSample]],
                 started: float, interval_s: float = 0.1) -> None:
        self._tuner, self._read, self._started = tuner, read, started
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._tuner.add(self._read(time.monotonic() - self._started))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _key(sock: tcpdiag.TcpSocket) -> str:
    return f"{sock.local}->{sock.peer}"


def read_samples(diag: tcpdiag.DiagSocket, t_s: float, port: int | None = None,
                 pid: int | None = None) -> dict[str, TcpSample]:
    """The samples of the established connections to @port, or of process
    @pid, or both, keyed by "local->peer"; a connection without a delivery
    rate yet has none."""
    return {_key(sock): sample_of(sock.info, t_s) for sock in diag.tcp(pid=pid)
            if sock.info and sock.info.delivery_rate_bytes_per_s
            and (port is None or sock.peer_port == port)}


def find_qmp_owner(socket_path: str, netns: str | None = None) -> int | None:
    """PID of the process listening on a unix socket (QEMU's QMP server),
    looked up in @netns: unix sockets are listed in the namespace they were
    made in."""
    with tcpdiag.DiagSocket(netns) as diag:
        listeners = diag.unix_listeners()
    inode = listeners.get(socket_path, listeners.get(os.path.abspath(socket_path)))
    return tcpdiag.socket_owner(inode) if inode is not None else None


def _local_port(conn: str) -> int:
    return int(conn.split("->", 1)[0].rsplit(":", 1)[-1])


class MigrationConnections:
    """The TCP connections of a QEMU process that belong to its migration.

    Without a port to go by, a production VM's other traffic (VNC, an NBD
    server for storage migration, guest networking through the host) must
    not count. The migration's connections are the ones QEMU opens itself
    (outgoing: their local port is none of the ports QEMU listens on, so a
    client of one of its servers never counts) after the migration starts
    (so its outgoing connections opened before, such as a drive-mirror's
    NBD client, never count). query() records what exists before the
    migration: the connections seen just before a query-migrate that said
    no migration was running.
    """

    def __init__(self, diag: tcpdiag.DiagSocket, pid: int) -> None:
        self.diag, self.pid = diag, pid
        self.before: set[str] | None = None  # None until a query confirmed it
        self.listening: set[int] = set()

    def _listening_ports(self) -> set[int]:
        return {sock.local_port for sock in self.diag.tcp((tcpdiag.TCP_LISTEN,), self.pid)}

    def query(self, command: Callable[..., Any]) -> dict[str, Any]:
        """query-migrate through @command, learning the connections that predate it."""
        listening = self._listening_ports()
        existing = {_key(sock) for sock in self.diag.tcp(pid=self.pid)}
        info = command("query-migrate")
        if info.get("status", "none") not in migration.ACTIVE_STATES:
            self.before, self.listening = existing, listening
        elif self.before is None:
            raise AlreadyMigrating(
                "a migration was already running when autotune attached, so its"
                " connections cannot be told from the VM's other traffic; give --port")
        return info

    def read(self, t_s: float) -> dict[str, TcpSample]:
        before = self.before or set()
        return {conn: sample for conn, sample in read_samples(self.diag, t_s, pid=self.pid).items()
                if conn not in before and _local_port(conn) not in self.listening}


def apply(tuner: Autotuner, command: Callable[..., Any], sample: Sample) -> int | None:
    """What @tuner decides after @sample, set on the source QEMU through
    @command (a QMP command); the value set, or None. Only while active."""
    if sample.status != "active" or (value := tuner.decide(sample.t_s)) is None:
        return None
    command("migrate-set-parameters", **{PARAM: value})
    return value


def restore(command: Callable[..., Any], value: int) -> None:
    """The parameter set back to @value, what it was before the tuning."""
    command("migrate-set-parameters", **{PARAM: value})


class AlreadyMigrating(InputError):
    """A migration was under way before we attached: its connections are not known."""


def follow(command: Callable[..., Any], read: Callable[[float], dict[str, TcpSample]],
           tuner: Autotuner, log: Callable[[str], None], interval_s: float = 0.2,
           wait_s: float = 60.0, sample_interval_s: float = 0.1,
           query: Callable[[], dict[str, Any]] | None = None) -> str:
    """Tune the parameter of a running source QEMU for one migration.

    @command runs a QMP command; @read returns the TCP samples of the migration
    connection(s); @query, if given, replaces query-migrate while waiting for
    the migration (MigrationConnections.query learns what predates it).
    Waits up to @wait_s for a migration to start, tunes while it runs, and
    returns its final status ("none" if none started). The caller restores
    the parameter.
    """
    ask = query or (lambda: command("query-migrate"))
    try:
        migration.wait_for_status(ask, migration.ACTIVE_STATES, wait_s)
    except DeadlineExceeded:
        return "none"

    def on_sample(sample: Sample) -> None:
        if (value := apply(tuner, command, sample)) is not None:
            log(f"{sample.t_s:7.1f}s set {PARAM} {value} B/s: {tuner.changes[-1].reason}")

    started = time.monotonic()
    samples: list[Sample] = []
    with Sampler(tuner, read, started, sample_interval_s):
        info = migration.follow(lambda: command("query-migrate"), started, None, samples,
                                on_sample, interval_s)
    return str(info.get("status", "none"))
