"""Repeat suppression for reported events: at most `burst` per key per window.

Pure and generic over the key: the reporter decides what counts as "the same
event" (today rule, pid and path). A window opens with the first event seen
and closes when an event arrives after `window_s`, or on `close_window()`;
closing yields one `Suppressed` summary per key that went over its burst.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional


@dataclass(frozen=True)
class Suppressed:
    """`count` events with this key were not written during the closed window."""

    key: Hashable
    count: int


@dataclass
class RepeatLimiter:
    burst: int = 20
    window_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _window_start: Optional[float] = field(default=None, init=False)  # None: no event yet
    _counts: Dict[Hashable, int] = field(default_factory=dict, init=False)

    def roll(self) -> List[Suppressed]:
        """Start a window if none is open; close it (with its summaries) if it has run out."""
        now = self.clock()
        if self._window_start is None:
            self._window_start = now
            return []
        if now - self._window_start < self.window_s:
            return []
        summaries = self._summaries()
        self._window_start = now
        return summaries

    def admit(self, key: Hashable) -> bool:
        """Count one event with `key`; True while the key is within its burst."""
        seen = self._counts.get(key, 0) + 1
        self._counts[key] = seen
        return seen <= self.burst

    def close_window(self) -> List[Suppressed]:
        """Summaries of the open window, which ends now (at shutdown)."""
        if self._window_start is None:
            return []  # nothing was seen, nothing to summarise
        summaries = self._summaries()
        self._window_start = None
        return summaries

    def _summaries(self) -> List[Suppressed]:
        out = [Suppressed(key, seen - self.burst) for key, seen in self._counts.items() if seen > self.burst]
        self._counts.clear()
        return out
