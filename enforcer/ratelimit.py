"""Repeat suppression for reported events, bounded in output and in memory.

Pure and generic over the key: the reporter decides what counts as "the same
event" (one offender: rule, action, executable, target). Within a window of
`window_s` seconds:

- each key is written at most `burst` times;
- at most `max_events` events are written in all, so that a flood of
  distinct keys (a loop over fresh file names) cannot flood the log either;
- at most `max_keys` keys are remembered; events of further keys are counted
  under their `coarse` key (the reporter's: rule and action), which is bounded
  by the policy's size, never dropped uncounted.

A window opens with the first event and closes at `tick()` once `window_s`
has passed (the agent's timer calls it every second, so summaries appear even
when no further event arrives), or at `close_window()` on shutdown. Closing
yields `Suppressed` summaries: one per key that lost events, the largest
first, at most `max_summaries` of them; the rest are merged per coarse key.
Every event passed to `admit` is either admitted or in exactly one summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional


@dataclass(frozen=True)
class Suppressed:
    """`count` events with `key` were not written during [window_start, window_end].

    `coarse` is True when `key` is a coarse key standing for several keys (the
    window remembered too many distinct keys, or had too many to summarise
    one by one). Times are the limiter clock's (monotonic seconds).
    """

    key: Hashable
    count: int
    window_start: float
    window_end: float
    coarse: bool = False


@dataclass
class _Seen:
    seen: int = 0
    written: int = 0


def _identity(key: Hashable) -> Hashable:
    return key


@dataclass
class RepeatLimiter:
    burst: int = 20
    window_s: float = 10.0
    max_events: int = 1000
    max_keys: int = 4096
    max_summaries: int = 100
    coarse: Callable[[Hashable], Hashable] = _identity
    clock: Callable[[], float] = time.monotonic
    _window_start: Optional[float] = field(default=None, init=False)  # None: no window open
    _keys: Dict[Hashable, _Seen] = field(default_factory=dict, init=False)
    _overflow: Dict[Hashable, int] = field(default_factory=dict, init=False)
    _written: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name in ("burst", "max_events", "max_keys", "max_summaries"):
            if getattr(self, name) < 1:
                raise ValueError(f"RepeatLimiter.{name} must be at least 1")
        if self.window_s <= 0:
            raise ValueError("RepeatLimiter.window_s must be positive")

    def admit(self, key: Hashable) -> bool:
        """Count one event with `key`; True when it is to be written."""
        if self._window_start is None:
            self._window_start = self.clock()
        seen = self._keys.get(key)
        if seen is None:
            if len(self._keys) >= self.max_keys:
                coarse = self.coarse(key)
                self._overflow[coarse] = self._overflow.get(coarse, 0) + 1
                return False
            seen = self._keys[key] = _Seen()
        seen.seen += 1
        if seen.written >= self.burst or self._written >= self.max_events:
            return False
        seen.written += 1
        self._written += 1
        return True

    def tick(self) -> List[Suppressed]:
        """Close the window if it has run out; its summaries (none otherwise)."""
        if self._window_start is None or self.clock() - self._window_start < self.window_s:
            return []
        return self.close_window()

    def close_window(self) -> List[Suppressed]:
        """Summaries of the open window, which ends now."""
        if self._window_start is None:
            return []  # nothing was seen, nothing to summarise
        start, end = self._window_start, self.clock()
        lost = sorted(
            ((key, s.seen - s.written) for key, s in self._keys.items() if s.seen > s.written),
            key=lambda item: -item[1],
        )
        summaries = [Suppressed(key, count, start, end) for key, count in lost[: self.max_summaries]]
        merged = dict(self._overflow)
        for key, count in lost[self.max_summaries :]:
            coarse = self.coarse(key)
            merged[coarse] = merged.get(coarse, 0) + count
        summaries += [Suppressed(key, count, start, end, coarse=True) for key, count in merged.items()]
        self._window_start = None
        self._keys.clear()
        self._overflow.clear()
        self._written = 0
        return summaries

    @property
    def tracked_keys(self) -> int:
        """Keys remembered in the open window (bounded by max_keys)."""
        return len(self._keys)
