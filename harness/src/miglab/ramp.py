"""KubeVirt's downtime ramp (VEP 291, KubeVirt 1.9), as a comparison mode.

What KubeVirt does against migrations that never converge, written from
the VEP's description (not from its code): the migration starts with a
downtime limit of INITIAL_MS; once QEMU's iteration count (libvirt's
MemIteration, query-migrate's ram.dirty-sync-count) reaches
START_ITERATION, the limit rises by one of STEPS equal steps up to
CEILING_MS, and again each time COOLDOWN_S has passed since the last rise.
The defaults are the VEP's: 150 ms, 7 steps of (1050 - 150) / 7 = 128.6 ms,
from iteration 3, every 10 s, up to 1050 ms.

The ramp helps when QEMU's estimate is right but the guest dirties memory
about as fast as the link carries it; it cannot help when the estimate is
wrong (capped migrations): then the expected downtime is the hot set over
the cap, above any ceiling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .result import RampStep, Sample

INITIAL_MS = 150
STEPS = 7
START_ITERATION = 3
COOLDOWN_S = 10.0
CEILING_MS = 1050


@dataclass(frozen=True)
class DowntimeRamp:
    initial_ms: int = INITIAL_MS
    steps: int = STEPS
    start_iteration: int = START_ITERATION
    cooldown_s: float = COOLDOWN_S
    ceiling_ms: int = CEILING_MS

    def __post_init__(self) -> None:
        if not 0 < self.initial_ms <= self.ceiling_ms:
            raise ValueError(f"initial_ms {self.initial_ms} must be above 0 and at most"
                             f" ceiling_ms {self.ceiling_ms}")
        if self.steps < 1 or self.start_iteration < 1 or self.cooldown_s < 0:
            raise ValueError("steps and start_iteration must be at least 1, cooldown_s"
                             " at least 0")

    def limit_ms(self, step: int) -> int:
        """The limit after @step rises (0: the initial one), rounded to the ms."""
        step = min(step, self.steps)
        return round(self.initial_ms + (self.ceiling_ms - self.initial_ms) * step / self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RampDriver:
    """Decides, sample by sample, when the ramp raises the limit."""

    ramp: DowntimeRamp
    step: int = 0
    changes: list[RampStep] = field(default_factory=list)

    @property
    def limit_ms(self) -> int:
        """The limit in force now."""
        return self.ramp.limit_ms(self.step)

    def decide(self, sample: Sample) -> int | None:
        """A new downtime-limit (ms) to set after @sample, or None."""
        if sample.status != "active" or self.step >= self.ramp.steps:
            return None
        if sample.dirty_sync_count < self.ramp.start_iteration:
            return None
        if self.changes and sample.t_s - self.changes[-1].t_s < self.ramp.cooldown_s:
            return None
        self.step += 1
        self.changes.append(RampStep(round(sample.t_s, 3), sample.dirty_sync_count,
                                       self.limit_ms))
        return self.limit_ms


RAMP_KEYS = {"initial_ms": int, "steps": int, "start_iteration": int, "cooldown_s": float,
             "ceiling_ms": int}


def parse(text: str, what: str) -> DowntimeRamp | None:
    """'off', 'on' (the VEP's defaults) or KEY=VALUE,... over the defaults."""
    accepted = ("off, on (VEP 291's defaults: initial_ms=150,steps=7,start_iteration=3,"
                "cooldown_s=10,ceiling_ms=1050) or some of those KEY=VALUE pairs")
    word = text.strip().lower()
    if word in ("off", "none", "false"):
        return None
    if word in ("on", "true", "vep291"):
        return DowntimeRamp()
    values: dict[str, Any] = {}
    for part in word.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in RAMP_KEYS or key in values:
            raise ValueError(f"{what} {text!r}: expected {accepted}")
        try:
            values[key] = RAMP_KEYS[key](value)
        except ValueError:
            raise ValueError(f"{what} {text!r}: {key} takes a number; expected"
                             f" {accepted}") from None
        if values[key] != values[key] or values[key] in (float("inf"), float("-inf")):
            raise ValueError(f"{what} {text!r}: {key} must be finite")
    try:
        return DowntimeRamp(**values)
    except ValueError as err:
        raise ValueError(f"{what} {text!r}: {err}") from None
