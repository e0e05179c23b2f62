"""A scenario: the link, the guest and the migration tunables of one run.

Built from command-line options or a YAML file with the same keys
(`link-rate: 1gbit`, ...); every value is checked up front, and a bad one
raises ScenarioError naming the key and what it accepts, before anything
is started.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from . import artifacts, ramp, units
from .errors import InputError
from .guest import Workload
from .link import LinkConfig
from .migration import MigrationSettings
from .vm import ACCELS

SWITCHOVER_MODES = ("none", "declared", "auto", "qemu-auto")
ACCEL_CHOICES = ("auto", *ACCELS)  # auto: KVM if a guest boots under it, else TCG
# How the lab drives QEMU: its own QMP socket, or libvirt on each host
# (libvirtlab.py), as the management layers users cap migrations with do.
VIA_CHOICES = ("qmp", "libvirt")

# Accepted ranges. Sizes and rates reach the guest workload as unsigned 32-bit
# MiB counts, which it would truncate silently; the host's memory bounds
# --memory much further (preflight.py), so sizes stop at the counters' limit.
MIN_MEMORY_MIB = 128
MIN_NUMA_NODE_MIB = 32
MAX_MULTIFD_CHANNELS = 255  # QEMU's limit (migrate_params_check)
MAX_CROSS_TRAFFIC_FLOWS = 16  # competing flows: beyond this each gets too little to say much
MAX_NUMA_NODES = 16  # what the workload's interleave mask covers (guest/workload.c)
# "Several vCPUs", not a big guest: under TCG every vCPU is a host thread, and
# the host's own CPUs bound it further (preflight.py). The workload takes 64.
MAX_VCPUS = 8
MAX_SIZE_MIB = (1 << 32) - 1
MAX_RATE_MIB = 65536  # MiB/s: 64G/s, far beyond what a guest rewrites
# QEMU's migrate_params_check: max-bandwidth and avail-switchover-bandwidth
# up to SIZE_MAX bytes/s (2^64 - 1 on 64-bit hosts), downtime-limit up to
# MAX_MIGRATE_DOWNTIME (2000 s). Checked here so QEMU never refuses them
# after the lab is built.
QEMU_MAX_BYTES_PER_S = (1 << 64) - 1
QEMU_MAX_DOWNTIME_MS = 2000 * 1000
MAX_TIMEOUT_S = 86400.0  # a day: a longer run is a hung run
# tc's burst (1 ms at the rate) is a 32-bit byte count, good to about
# 34 Tbit/s; a veth pair carries tens of Gbit/s, so far beyond that a link
# check could only fail after the lab was built.
MAX_LINK_RATE_BPS = 1000 * 10**9
MAX_LINK_DELAY_MS = 60_000.0  # a minute one way: no link a migration runs over


class ScenarioError(InputError, ValueError):
    """A scenario value that is not accepted."""


@dataclass(frozen=True)
class Switchover:
    """How the switchover bandwidth is given: the scenario's one choice.

    @mode is "none" (the parameter not set: QEMU's own estimate), "declared"
    (@bytes_per_s), "auto" (miglab sets the parameter from the kernel's TCP
    samples of the migration connections: autotune.py) or "qemu-auto" (QEMU
    takes it from its channels' samples itself: x-tcp-switchover-bandwidth).
    """

    mode: str = "none"
    bytes_per_s: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in SWITCHOVER_MODES or \
                (self.bytes_per_s is not None) != (self.mode == "declared"):
            raise ValueError(f"switchover {self.mode!r} with {self.bytes_per_s!r} bytes/s")

    @property
    def auto(self) -> bool:
        return self.mode == "auto"

    @property
    def qemu_auto(self) -> bool:
        return self.mode == "qemu-auto"

    @property
    def automatic(self) -> bool:
        """Either automatic mode: the connection's TCP samples decide."""
        return self.mode in ("auto", "qemu-auto")

    def initial_parameter(self) -> int | None:
        """avail-switchover-bandwidth when the migration starts: the declared
        value; for auto 0 (QEMU's estimate) until it has measured; None: not set."""
        return 0 if self.auto else self.bytes_per_s

    def __str__(self) -> str:
        """As the user writes it (--switchover-bandwidth)."""
        return str(self.bytes_per_s) if self.mode == "declared" else self.mode


@dataclass(frozen=True)
class Scenario:
    qemu: str = "patched"  # stock, patched, upstream, or a path to a binary
    dst_qemu: str = ""  # the destination's, when it differs from the source's
    link_rate_bps: int = 1_000_000_000
    link_delay_ms: float = 0.0
    link_jitter_ms: float = 0.0
    link_loss_pct: float = 0.0
    memory_mib: int = 512
    numa_nodes_mib: tuple[int, ...] = ()  # memory per guest NUMA node; () for one node
    vcpus: int = 1  # the workload rewrites from as many threads, one per vCPU
    hot_set_mib: int = 32
    dirty_rate_mib: int = 40
    zero_set_mib: int = 0
    zero_rate_mib: int = 0
    max_bandwidth_bytes_per_s: int | None = 8_000_000
    downtime_limit_ms: int = 300
    switchover: Switchover = field(default_factory=Switchover)
    multifd_channels: int = 0  # 0: one migration connection, no multifd
    cross_traffic_flows: int = 0  # bulk TCP flows sharing the link during the migration
    # KubeVirt's downtime ramp (ramp.py): it starts the migration at its own
    # initial limit; downtime_limit_ms stays the limit the user asked for
    downtime_ramp: ramp.DowntimeRamp | None = None
    timeout_s: float = 60.0
    accel: str = "auto"
    via: str = "qmp"
    # --via libvirt between two libvirt hosts of the user's (no link or
    # namespaces made): how the harness reaches each, and the destination's
    # address for the migration's data; "" for the lab's own two hosts
    src_uri: str = ""
    dst_uri: str = ""
    migrate_address: str = ""
    name: str = ""

    @property
    def remote(self) -> bool:
        """Between two hosts given by URI, not the lab's own."""
        return bool(self.src_uri)

    def link(self) -> LinkConfig:
        return LinkConfig(self.link_rate_bps, self.link_delay_ms, self.link_jitter_ms,
                          self.link_loss_pct)

    def workload(self) -> Workload:
        return Workload(hot_set_mib=self.hot_set_mib, dirty_rate_mib=self.dirty_rate_mib,
                        zero_set_mib=self.zero_set_mib, zero_rate_mib=self.zero_rate_mib,
                        numa_nodes=max(1, len(self.numa_nodes_mib)), threads=self.vcpus)

    def migration(self) -> MigrationSettings:
        limit_ms = self.downtime_ramp.initial_ms if self.downtime_ramp else self.downtime_limit_ms
        return MigrationSettings(downtime_limit_ms=limit_ms,
                                 max_bandwidth_bytes_per_s=self.max_bandwidth_bytes_per_s,
                                 avail_switchover_bandwidth_bytes_per_s=(
                                     self.switchover.initial_parameter()),
                                 tcp_switchover_bandwidth=self.switchover.qemu_auto,
                                 multifd_channels=self.multifd_channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# option/key -> (field, parser); parsers raise units.UnitError or ValueError
def _mib_in(low: int, high: int, example: str,
            per_s: str = "") -> Callable[[str, str], int]:
    """A parser of whole MiB (MiB/s with per_s="/s") from @low to @high."""
    if per_s:
        span = f"from {low} to {high} ({units.human_mib(high)})"
    elif high == MAX_SIZE_MIB:
        span = f"from {units.human_mib(low)} to {high}M (2^32 - 1 MiB)"
    else:
        span = f"from {units.human_mib(low)} to {units.human_mib(high)}"
    accepted = f"whole MiB{per_s} {span}, such as {example}"

    def parse(text: str, what: str) -> int:
        try:
            size = units.parse_size(text, what)  # it takes "40M/s" as well
        except units.UnitError:
            raise units.UnitError(f"{what} {text!r}: expected {accepted}") from None
        if size % (1 << 20) or not low <= size >> 20 <= high:
            raise units.UnitError(f"{what} {text!r}: expected {accepted}")
        return size >> 20
    return parse


def _bandwidth(words: str) -> Callable[[str, str], int | None]:
    """A parser of QEMU bandwidths (bytes/s) that also takes @words ("'none'")."""
    accepted = (f"{words} or a bandwidth from 0 to {QEMU_MAX_BYTES_PER_S} bytes/s"
                " (QEMU's limit, 2^64 - 1)")

    def parse(text: str, what: str) -> int | None:
        if str(text).strip().lower() == "none":
            return None
        if str(text).strip().startswith("-"):
            # QEMU wraps it to 2^64 minus the value ("switch over at once"); a
            # lab run never means that, so it is refused here.
            raise units.UnitError(f"{what} {text!r}: expected {accepted}")
        try:
            value = units.parse_bytes_per_s(text, what)
        except units.UnitError as err:
            raise units.UnitError(f"{err}; or {words}") from None
        if value > QEMU_MAX_BYTES_PER_S:
            raise units.UnitError(f"{what} {text!r}: expected {accepted}")
        return value
    return parse


_declared = _bandwidth("'none', 'auto', 'qemu-auto'")


def _switchover(text: str, what: str) -> Switchover:
    word = str(text).strip().lower()
    if word in ("auto", "qemu-auto"):
        return Switchover(word)
    value = _declared(text, what)
    return Switchover() if value is None else Switchover("declared", value)


def _seconds(text: str, what: str) -> float:
    accepted = f"a number of seconds above 0 and at most {MAX_TIMEOUT_S:.0f} (a day)"
    try:
        value = float(text)
    except ValueError:
        raise units.UnitError(f"{what} {text!r}: expected {accepted}") from None
    # float() takes "nan" and "inf": a NaN deadline is never reached
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise units.UnitError(f"{what} {text!r}: expected {accepted}")
    return value


def _downtime_ms(text: str, what: str) -> int:
    accepted = (f"whole milliseconds from 0 to {QEMU_MAX_DOWNTIME_MS}"
                " (QEMU's limit, 2000 s), such as 300")
    try:
        value = units.parse_ms(text, what)
    except units.UnitError:
        raise units.UnitError(f"{what} {text!r}: expected {accepted}") from None
    if value != int(value) or value > QEMU_MAX_DOWNTIME_MS:
        raise units.UnitError(f"{what} {text!r}: expected {accepted}")
    return int(value)


def _link_ms(text: str, what: str) -> float:
    value = units.parse_ms(text, what)
    if value > MAX_LINK_DELAY_MS:
        raise units.UnitError(f"{what} {text!r}: expected a duration from 0 to"
                              f" {MAX_LINK_DELAY_MS / 1000:.0f}s, such as 5ms")
    return value


def _link_rate(text: str, what: str) -> int:
    value = units.parse_bits_per_s(text, what)
    if value > MAX_LINK_RATE_BPS:
        raise units.UnitError(f"{what} {text!r}: expected a rate above 0 and at most"
                              f" {MAX_LINK_RATE_BPS // 10**9}gbit")
    return value


def _qemu(text: str, what: str) -> str:
    if not text or "\x00" in text:
        raise units.UnitError(
            f"{what} {text!r}: expected {', '.join(artifacts.BUILDS)}, a command on PATH"
            " or a path to qemu-system-x86_64")
    return text


URI_SCHEMES = ("qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+libssh2", "qemu+libssh", "qemu")


def _libvirt_uri(text: str, what: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in URI_SCHEMES or not rest.split("?")[0].endswith("/system") \
            or any(c.isspace() for c in text):
        raise units.UnitError(f"{what} {text!r}: expected a libvirt URI of a QEMU host's"
                              f" system instance, {'/'.join(URI_SCHEMES)}://HOST/system"
                              "[?PARAMS], such as qemu+ssh://root@host1/system")
    return text


def _address(text: str, what: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")
    if not text or set(text) - allowed or text.startswith("-"):
        raise units.UnitError(f"{what} {text!r}: expected the destination host's name or IP"
                              " address on the network the migration should use")
    return text


def _choice(choices: tuple[str, ...]):
    def parse(text: str, what: str) -> str:
        if text not in choices:
            raise units.UnitError(f"{what} {text!r}: accepted {', '.join(choices)}")
        return text
    return parse


def _count(low: int, high: int, example: str):
    def parse(text: str, what: str) -> int:
        # isascii: "²".isdigit() is true, and int() refuses it
        if not (text.strip().isascii() and text.strip().isdigit()) or \
                not low <= int(text) <= high:
            raise units.UnitError(f"{what} {text!r}: expected a whole number from {low} to"
                                  f" {high}, such as {example}")
        return int(text)
    return parse


def _downtime_ramp(text: str, what: str) -> ramp.DowntimeRamp | None:
    value = ramp.parse(text, what)
    if value and value.ceiling_ms > QEMU_MAX_DOWNTIME_MS:
        raise units.UnitError(f"{what} {text!r}: ceiling_ms above QEMU's downtime-limit"
                              f" maximum {QEMU_MAX_DOWNTIME_MS}")
    if value and value.cooldown_s > MAX_TIMEOUT_S:
        raise units.UnitError(f"{what} {text!r}: cooldown_s above {MAX_TIMEOUT_S:.0f}")
    return value


def _numa_nodes(text: str, what: str) -> tuple[int, ...]:
    accepted = (f"2 to {MAX_NUMA_NODES} sizes of whole MiB, each at least"
                f" {MIN_NUMA_NODE_MIB}M, separated by commas, such as 128M,384M")
    parts = [p.strip() for p in str(text).split(",")]
    if not 2 <= len(parts) <= MAX_NUMA_NODES:
        raise units.UnitError(f"{what} {text!r}: expected {accepted}")
    node = _mib_in(MIN_NUMA_NODE_MIB, MAX_SIZE_MIB, "128M")
    try:
        return tuple(node(p, what) for p in parts)
    except units.UnitError:
        raise units.UnitError(f"{what} {text!r}: expected {accepted}") from None


class Field(NamedTuple):
    """A scenario key (a --option, a YAML key): the Scenario attribute it
    sets, how its text is read, and its help (the CLI's and the docs')."""

    attr: str
    parse: Callable[[Any, str], Any]
    help: str


FIELDS: dict[str, Field] = {
    "qemu": Field("qemu", _qemu,
        "a build: "
        + "; ".join(f"{name}, {b.description}" for name, b in artifacts.BUILDS.items())
        + "; or a qemu-system-x86_64 command on PATH, or a path to one (default patched)"),
    "dst-qemu": Field("dst_qemu", _qemu,
        "the destination's QEMU, when it differs from --qemu (same choices)"),
    "link-rate": Field("link_rate_bps", _link_rate,
        "rate of the link, both ways, e.g. 1gbit, 500mbit (default 1gbit)"),
    "link-delay": Field("link_delay_ms", _link_ms,
        "one-way delay on each end, e.g. 5ms (needs netem)"),
    "link-jitter": Field("link_jitter_ms", _link_ms,
        "delay jitter, e.g. 1ms (needs netem and --link-delay)"),
    "link-loss": Field("link_loss_pct", units.parse_percent,
        "packet loss on each end, e.g. 0.1%% (needs netem)"),
    "memory": Field("memory_mib", _mib_in(MIN_MEMORY_MIB, MAX_SIZE_MIB, "512M"),
        "guest RAM, e.g. 512M (default 512M)"),
    "numa-nodes": Field("numa_nodes_mib", _numa_nodes,
        "guest NUMA nodes, the memory of each, e.g. 128M,384M (the sum is the"
        " guest's memory; its working sets are interleaved over all nodes)"),
    "vcpus": Field("vcpus", _count(1, MAX_VCPUS, "2"),
        "guest vCPUs; the workload rewrites its hot set from as many threads, one"
        " pinned to each vCPU, each with its share of the set and of the rate"
        " (default 1)"),
    "hot-set": Field("hot_set_mib", _mib_in(0, MAX_SIZE_MIB, "32M"),
        "memory the guest rewrites with random data, e.g. 32M (default 32M)"),
    "dirty-rate": Field("dirty_rate_mib", _mib_in(0, MAX_RATE_MIB, "40M", "/s"),
        "how fast it rewrites the hot set, MiB/s, e.g. 40M (default 40M)"),
    "zero-set": Field("zero_set_mib", _mib_in(0, MAX_SIZE_MIB, "64M"),
        "memory the guest rewrites with zeros, e.g. 64M (default 0)"),
    "zero-rate": Field("zero_rate_mib", _mib_in(0, MAX_RATE_MIB, "40M", "/s"),
        "how fast it rewrites the zero set, MiB/s (default 0)"),
    "max-bandwidth": Field("max_bandwidth_bytes_per_s", _bandwidth("'none'"),
        "QEMU's max-bandwidth in bytes/s, e.g. 8M, or none (default 8M)"),
    "downtime-limit": Field("downtime_limit_ms", _downtime_ms,
        "QEMU's downtime-limit, ms (default 300)"),
    "switchover-bandwidth": Field("switchover", _switchover,
        "avail-switchover-bandwidth in bytes/s, e.g. 125M; none (not"
        " set, the default); auto (miglab sets it from the kernel's"
        " TCP samples of the migration connections); or qemu-auto"
        " (QEMU takes it from its channels' TCP samples itself:"
        " x-tcp-switchover-bandwidth, in miglab's patched builds)"),
    "multifd-channels": Field("multifd_channels", _count(0, MAX_MULTIFD_CHANNELS, "4"),
        "migrate over N multifd channels (TCP connections), 0 for one"
        " connection without multifd (default 0)"),
    "cross-traffic": Field("cross_traffic_flows", _count(0, MAX_CROSS_TRAFFIC_FLOWS, "3"),
        "N bulk TCP flows from the source to the destination namespace over"
        " the same link, from before the migration until it ends (default 0)"),
    "downtime-ramp": Field("downtime_ramp", _downtime_ramp,
        "KubeVirt's downtime ramp (VEP 291): off (default), on (start at 150 ms;"
        " from iteration 3, every 10 s, one of 7 steps up to 1050 ms), or"
        " KEY=VALUE pairs over those: initial_ms, steps, start_iteration,"
        " cooldown_s, ceiling_ms"),
    "timeout": Field("timeout_s", _seconds,
        "seconds to wait for convergence before cancelling (default 60)"),
    "accel": Field("accel", _choice(ACCEL_CHOICES),
        "auto, tcg or kvm (default auto: KVM only if a guest boots under it)"),
    "via": Field("via", _choice(VIA_CHOICES),
        "qmp (default: miglab drives QEMU's monitor) or libvirt (a libvirtd on each"
        " lab host runs the guest as a domain and migrates it through libvirt's API,"
        " peer to peer, as Nova and virsh do)"),
    "src-uri": Field("src_uri", _libvirt_uri,
        "with --via libvirt, between two libvirt hosts of yours instead of the lab's"
        " own: the source's URI, e.g. qemu+ssh://root@host1/system (with --dst-uri"
        " and --migrate-address; no link or namespace is made, the guest's kernel"
        " and initramfs are uploaded through libvirt, the QEMU --qemu names must be"
        " at the same path on the hosts)"),
    "dst-uri": Field("dst_uri", _libvirt_uri,
        "the destination host's libvirt URI, as the harness and the source's libvirtd"
        " reach it (peer to peer)"),
    "migrate-address": Field("migrate_address", _address,
        "the destination's address on the network the migration's data"
        " should take"),
    "name": Field("name", lambda t, w: str(t),
        "a name for the run, used in reports"),
}


def parse(values: dict[str, Any], base: Scenario | None = None) -> Scenario:
    """A Scenario from option/key names to text values; unknown keys are errors."""
    fields: dict[str, Any] = asdict(base or Scenario())
    if isinstance(fields["downtime_ramp"], dict):  # asdict() went into them
        fields["downtime_ramp"] = ramp.DowntimeRamp(**fields["downtime_ramp"])
    fields["switchover"] = Switchover(**fields["switchover"])
    for key, text in values.items():
        if key not in FIELDS:
            raise ScenarioError(unknown_key(key))
        name, parser, _ = FIELDS[key]
        if isinstance(text, (dict, list)):  # YAML: a mapping or list where one value goes
            shown = repr(text)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ScenarioError(f"--{key} {shown}: expected one value, not a"
                                f" {'mapping' if isinstance(text, dict) else 'list'}")
        try:
            fields[name] = parser(str(text), f"--{key}")
        except ValueError as err:
            raise ScenarioError(str(err)) from None
    if "numa-nodes" in values:  # the nodes' memory is the guest's memory
        total = sum(fields["numa_nodes_mib"])
        if "memory" in values and fields["memory_mib"] != total:
            raise ScenarioError(f"--memory {values['memory']} and --numa-nodes"
                                f" {values['numa-nodes']}: the nodes add up to {total}M;"
                                " give one of them, or both adding up")
        fields["memory_mib"] = total
    scenario = Scenario(**fields)
    _check(scenario)
    return scenario


REMOTE_KEYS = ("src-uri", "dst-uri", "migrate-address")
# What a run through libvirt cannot do yet, and why (checked before anything starts).
NOT_VIA_LIBVIRT = {
    "downtime_ramp": "--downtime-ramp (the ramp's raises go through QMP only)",
    "cross_traffic_flows": "--cross-traffic (not tried through libvirt yet)",
}


def _check(s: Scenario) -> None:
    try:
        s.link()
    except ValueError as err:
        raise ScenarioError(str(err)) from None
    if s.via == "libvirt":
        for name, what in NOT_VIA_LIBVIRT.items():
            if getattr(s, name):
                raise ScenarioError(f"--via libvirt: {what} is not supported; use --via qmp")
    given = [f"--{key}" for key in REMOTE_KEYS if getattr(s, FIELDS[key].attr)]
    if given and len(given) < len(REMOTE_KEYS):
        raise ScenarioError(f"{' '.join(given)}: give all of {', '.join(REMOTE_KEYS)}"
                            " (the two hosts, and the destination's address for the data)")
    if given and s.via != "libvirt":
        raise ScenarioError(f"{' '.join(given)}: between two hosts only with --via libvirt")
    if given and s.link().needs_netem:
        raise ScenarioError("--link-delay, --link-jitter and --link-loss shape the lab's own"
                            " link; between two hosts given by URI there is none")
    if given and (s.switchover.auto or s.cross_traffic_flows):
        raise ScenarioError("--switchover-bandwidth auto reads the migration connection's"
                            " TCP samples in the lab's own source namespace; between two"
                            " hosts given by URI use qemu-auto (QEMU reads them itself)")
    if given and s.src_uri == s.dst_uri:
        raise ScenarioError(f"--src-uri and --dst-uri {s.src_uri!r}: the same host; a"
                            " migration needs two")
    if s.hot_set_mib + s.zero_set_mib > s.memory_mib - 96:
        raise ScenarioError(
            f"--hot-set {s.hot_set_mib}M + --zero-set {s.zero_set_mib}M: must leave the"
            f" guest kernel 96M of --memory {s.memory_mib}M")


MAX_SCENARIO_BYTES = 1 << 20  # a scenario is a few lines; this stops /dev/zero


def _read_scenario(path: Path) -> str:
    """The file's text, or a ScenarioError that says what is wrong with it."""
    where = f"--scenario {str(path)!r}"
    if path.is_dir():
        raise ScenarioError(f"{where}: is a directory; expected a YAML file of scenario keys")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(f"{where}: no such file; expected a YAML file of scenario"
                            " keys") from None
    except OSError as err:
        raise ScenarioError(f"{where}: cannot be read ({err.strerror or err})") from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{where}: longer than {MAX_SCENARIO_BYTES >> 20} MiB; expected"
                            " a YAML file of scenario keys")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{where}: not UTF-8 text (byte {data[err.start]:#04x} at offset"
                            f" {err.start}); expected a YAML file in UTF-8") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    # PyYAML's messages span several lines; the CLI's errors are one line
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(err).split())


def unknown_key(key: str) -> str:
    """The error for a key no scenario has, with the nearest one that exists."""
    near = difflib.get_close_matches(str(key).replace("_", "-"), FIELDS, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown scenario key {key!r}: {hint}accepted {', '.join(FIELDS)}"


def load_yaml(path: Path, base: Scenario | None = None) -> Scenario:
    text = _read_scenario(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(f"--scenario {str(path)!r}: not valid YAML:"
                            f" {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"--scenario {str(path)!r}: expected a mapping of scenario keys")
    # the result JSON's spelling (link_rate) is the option's (link-rate)
    data = {str(k).replace("_", "-") if str(k).replace("_", "-") in FIELDS else k: v
            for k, v in data.items()}
    for key in data:
        if key not in FIELDS:
            line = next((i for i, row in enumerate(text.splitlines(), 1)
                         if row.lstrip().startswith(f"{key}:")), None)
            where = f"--scenario {str(path)!r}" + (f", line {line}" if line else "")
            raise ScenarioError(f"{where}: {unknown_key(key)}")
    return parse(data, base)
