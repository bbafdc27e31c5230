"""Medians and spread of per-round samples (pure)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    """One workload under one configuration over the rounds."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: how much the rounds disagree."""
        return 100.0 * (self.high - self.low) / self.median if self.median else 0.0


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("no samples to summarize")
    return Summary(float(statistics.median(samples)), float(min(samples)), float(max(samples)), len(samples))
