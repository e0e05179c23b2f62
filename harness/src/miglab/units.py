"""Parsing the sizes and rates users type, with errors that say what is accepted.

- sizes (memory, hot set): binary, "512M" = 512 MiB; plain number = bytes
- data rates for QEMU (max-bandwidth, switchover bandwidth): bytes/s,
  decimal, "125M" = "125MB" = 125,000,000 B/s, as in QEMU's docs; bits
  when the unit says so, "1gbit" = "1Gbps" = 125 MB/s; "6Mb" could be
  either (network people write megabits so, QEMU reads megabytes) and is
  refused with both spellings
- link rates (tc): bits/s, "1gbit", "500mbit"; a plain number is bits/s
- durations: "5ms", "1.5s"; a plain number is milliseconds
"""
from __future__ import annotations

import re
from decimal import Decimal

from .errors import InputError

_NUMBER = r"(\d+(?:\.\d+)?)"
# Every limit that matters (QEMU's 2^64 - 1) has 20 digits; longer numbers
# would only reach floats' infinity or decimal's exponent limits.
_MAX_DIGITS = 30
_BINARY = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
           "g": 1 << 30, "gib": 1 << 30}
_DECIMAL = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
            "g": 10**9, "gb": 10**9}
_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


class UnitError(InputError, ValueError):
    """A value that does not parse; the message names what is accepted."""


def _split(text: str, what: str, accepted: str, fold: bool = True) -> tuple[Decimal, str]:
    # Decimal, not float: "18446744073709551615" must stay that number, so
    # limits such as QEMU's 2^64 - 1 are checked on what the user typed.
    m = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]*)(?:/s)?", str(text).strip())
    if not m:
        raise UnitError(f"{what} {text!r}: expected {accepted}")
    if len(m.group(1)) > _MAX_DIGITS:
        raise UnitError(f"{what} {text!r}: expected {accepted}, in at most {_MAX_DIGITS}"
                        " digits")
    return Decimal(m.group(1)), m.group(2).lower() if fold else m.group(2)


def parse_size(text: str, what: str = "size") -> int:
    accepted = "a size such as 512M, 32M, 4096K (K/M/G are KiB/MiB/GiB)"
    value, unit = _split(text, what, accepted)
    if unit not in _BINARY:
        raise UnitError(f"{what} {text!r}: expected {accepted}")
    return int(value * _BINARY[unit])


_AMBIGUOUS_BYTES = re.compile(r"[kKmMgG]b")  # "6Mb": megabits to some, megabytes to QEMU
_BITS_PER_S = re.compile(r"(?i:([kmg]?)bit)|([kKmMgG]?)bps")  # "1gbit", "1Gbit", "100Mbps"


def parse_bytes_per_s(text: str, what: str = "bandwidth") -> int:
    accepted = ("bytes/s such as 8M, 8MB or 125000000 (K/M/G are 10^3/10^6/10^9), "
                "or bits/s such as 1gbit or 64Mbps")
    value, unit = _split(text, what, accepted, fold=False)
    if _AMBIGUOUS_BYTES.fullmatch(unit):
        prefix = unit[0].lower()
        name = {"k": "kilo", "m": "mega", "g": "giga"}[prefix]
        raise UnitError(f"{what} {text!r} is ambiguous: write {value}{prefix}bit for"
                        f" {name}bits/s or {value}{prefix.upper()}B for {name}bytes/s")
    if unit.lower() in _DECIMAL and (unit[-1:] != "b"):
        return int(value * _DECIMAL[unit.lower()])
    if m := _BITS_PER_S.fullmatch(unit):
        prefix = (m.group(1) if m.group(1) is not None else m.group(2)).lower()
        return int(value * _BITS[prefix + "bit"] // 8)
    raise UnitError(f"{what} {text!r}: expected {accepted}")


def both_rates(bytes_per_s: int) -> str:
    """A QEMU rate as set, in both units: "8000000 B/s (64 Mbit/s)"."""
    return f"{bytes_per_s} B/s ({human_bits(bytes_per_s * 8)})"


def parse_bits_per_s(text: str, what: str = "link rate") -> int:
    accepted = "a rate such as 1gbit, 500mbit or 200000kbit (bits/s, as tc writes it)"
    value, unit = _split(text, what, accepted)
    if unit == "":
        return int(value)
    if unit not in _BITS:
        raise UnitError(f"{what} {text!r}: expected {accepted}")
    return int(value * _BITS[unit])


def parse_ms(text: str, what: str = "duration") -> float:
    accepted = "a duration such as 5ms or 1.5s"
    value, unit = _split(text, what, accepted)
    scale = {"": Decimal(1), "ms": Decimal(1), "s": Decimal(1000),
             "us": Decimal("0.001")}.get(unit)
    if scale is None:
        raise UnitError(f"{what} {text!r}: expected {accepted}")
    return float(value * scale)


def parse_percent(text: str, what: str = "loss") -> float:
    m = re.fullmatch(_NUMBER + r"%?", str(text).strip())
    if not m or float(m.group(1)) > 100:
        raise UnitError(f"{what} {text!r}: expected a percentage from 0 to 100, such as 0.1%")
    return float(m.group(1))


def human_mib(mib: int) -> str:
    """MiB as users type them: 102400000 -> "100000G", 512 -> "512M"."""
    if mib and mib % 1024 == 0:
        return f"{mib // 1024}G"
    return f"{mib}M"


def human_bits(bps: float | None) -> str:
    if bps is None:
        return "-"
    for scale, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.0f} bit/s"
