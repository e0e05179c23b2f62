"""A scenario: the link, the guest and the migration tunables of one run.

Built from command-line options or a YAML file with the same keys
(`link-rate: 1gbit`, ...); every value is checked up front, and a bad one
raises ScenarioError naming the key and what it accepts, before anything
is started.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from . import units
from .guest import Workload
from .link import LinkConfig
from .migration import MigrationSettings

ACCEL_CHOICES = ("auto", "tcg", "kvm")


class ScenarioError(ValueError):
    """A scenario value that is not accepted."""


@dataclass(frozen=True)
class Scenario:
    qemu: str = "patched"  # stock, patched, upstream, or a path to a binary
    dst_qemu: str = ""  # the destination's, when it differs from the source's
    link_rate_bps: int = 1_000_000_000
    link_delay_ms: float = 0.0
    link_jitter_ms: float = 0.0
    link_loss_pct: float = 0.0
    memory_mib: int = 512
    hot_set_mib: int = 32
    dirty_rate_mib: int = 40
    zero_set_mib: int = 0
    zero_rate_mib: int = 0
    max_bandwidth: int | None = 8_000_000  # bytes/s
    downtime_limit_ms: int = 300
    switchover_bandwidth: int | None = None  # bytes/s; None: parameter not set
    switchover_auto: bool = False  # set from the kernel's TCP samples (autotune.py)
    timeout_s: float = 60.0
    accel: str = "auto"
    name: str = ""

    def link(self) -> LinkConfig:
        return LinkConfig(self.link_rate_bps, self.link_delay_ms, self.link_jitter_ms,
                          self.link_loss_pct)

    def workload(self) -> Workload:
        return Workload(hot_set_mib=self.hot_set_mib, dirty_rate_mib=self.dirty_rate_mib,
                        zero_set_mib=self.zero_set_mib, zero_rate_mib=self.zero_rate_mib)

    def migration(self) -> MigrationSettings:
        # auto starts from 0 (QEMU's estimate) until the tuner has measured
        declared = 0 if self.switchover_auto else self.switchover_bandwidth
        return MigrationSettings(downtime_limit_ms=self.downtime_limit_ms,
                                 max_bandwidth=self.max_bandwidth,
                                 avail_switchover_bandwidth=declared)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# option/key -> (field, parser); parsers raise units.UnitError or ValueError
def _mib(text: str, what: str) -> int:
    size = units.parse_size(text, what)
    if size % (1 << 20):
        raise units.UnitError(f"{what} {text!r}: expected whole MiB, such as 32M")
    return size >> 20


def _mib_rate(text: str, what: str) -> int:
    return _mib(str(text).removesuffix("/s"), what)


def _optional_bytes_per_s(text: str, what: str) -> int | None:
    if str(text).strip().lower() == "none":
        return None
    if str(text).strip().startswith("-"):
        # QEMU wraps it to 2^64 minus the value ("switch over at once"); a
        # lab run never means that, so it is refused here.
        raise units.UnitError(f"{what} {text!r}: expected 'none' or a bandwidth >= 0")
    return units.parse_bytes_per_s(text, what)


def _switchover(text: str, what: str) -> int | None:
    try:
        return _optional_bytes_per_s(text, what)
    except units.UnitError as err:
        raise units.UnitError(f"{err} (or 'auto')") from None


def _positive_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise units.UnitError(f"{what} {text!r}: expected a number of seconds") from None
    if value <= 0:
        raise units.UnitError(f"{what} {text!r}: expected more than 0 seconds")
    return value


def _int_ms(text: str, what: str) -> int:
    value = units.parse_ms(text, what)
    if value != int(value):
        raise units.UnitError(f"{what} {text!r}: expected whole milliseconds")
    return int(value)


def _choice(choices: tuple[str, ...]):
    def parse(text: str, what: str) -> str:
        if text not in choices:
            raise units.UnitError(f"{what} {text!r}: accepted {', '.join(choices)}")
        return text
    return parse


FIELDS: dict[str, tuple[str, Any]] = {
    "qemu": ("qemu", lambda t, w: str(t)),
    "dst-qemu": ("dst_qemu", lambda t, w: str(t)),
    "link-rate": ("link_rate_bps", units.parse_bits_per_s),
    "link-delay": ("link_delay_ms", units.parse_ms),
    "link-jitter": ("link_jitter_ms", units.parse_ms),
    "link-loss": ("link_loss_pct", units.parse_percent),
    "memory": ("memory_mib", _mib),
    "hot-set": ("hot_set_mib", _mib),
    "dirty-rate": ("dirty_rate_mib", _mib_rate),
    "zero-set": ("zero_set_mib", _mib),
    "zero-rate": ("zero_rate_mib", _mib_rate),
    "max-bandwidth": ("max_bandwidth", _optional_bytes_per_s),
    "downtime-limit": ("downtime_limit_ms", _int_ms),
    "switchover-bandwidth": ("switchover_bandwidth", _switchover),
    "timeout": ("timeout_s", _positive_float),
    "accel": ("accel", _choice(ACCEL_CHOICES)),
    "name": ("name", lambda t, w: str(t)),
}


def parse(values: dict[str, Any], base: Scenario | None = None) -> Scenario:
    """A Scenario from option/key names to text values; unknown keys are errors."""
    fields: dict[str, Any] = asdict(base or Scenario())
    for key, text in values.items():
        if key not in FIELDS:
            raise ScenarioError(f"unknown scenario key {key!r}: accepted {', '.join(FIELDS)}")
        name, parser = FIELDS[key]
        if key == "switchover-bandwidth":
            fields["switchover_auto"] = str(text).strip().lower() == "auto"
            if fields["switchover_auto"]:
                fields["switchover_bandwidth"] = None
                continue
        try:
            fields[name] = parser(str(text), f"--{key}")
        except ValueError as err:
            raise ScenarioError(str(err)) from None
    scenario = Scenario(**fields)
    _check(scenario)
    return scenario


def _check(s: Scenario) -> None:
    try:
        s.link()
    except ValueError as err:
        raise ScenarioError(str(err)) from None
    if s.memory_mib < 128:
        raise ScenarioError(f"--memory {s.memory_mib}M: the guest needs at least 128M")
    if s.hot_set_mib + s.zero_set_mib > s.memory_mib - 96:
        raise ScenarioError(
            f"--hot-set {s.hot_set_mib}M + --zero-set {s.zero_set_mib}M: must leave the"
            f" guest kernel 96M of --memory {s.memory_mib}M")


def load_yaml(path: Path, base: Scenario | None = None) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ScenarioError(f"--scenario {path}: {err}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"--scenario {path}: expected a mapping of scenario keys")
    return parse(data, base)
