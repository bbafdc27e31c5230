"""Event -> one JSON object per line. Reports; decides nothing.

A flood of identical denials (an attacker looping on a blocked action) must
not drown the log: per (rule, pid, path) at most `burst` events are written
per `window_s`; the rest are counted and summarised in a `suppressed` record
when the window closes. Lost ring-buffer records are reported as `lost`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, TextIO, Tuple

from enforcer.events import Event

_Key = Tuple[str, int, str]


@dataclass
class JsonReporter:
    stream: TextIO
    burst: int = 20
    window_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _window_start: Optional[float] = field(default=None, init=False)  # None: no event yet
    _counts: Dict[_Key, int] = field(default_factory=dict, init=False)

    def _write(self, record: Dict[str, object]) -> None:
        self.stream.write(json.dumps(record, sort_keys=False) + "\n")
        self.stream.flush()

    def _roll_window(self) -> None:
        now = self.clock()
        if self._window_start is None:
            self._window_start = now
            return
        if now - self._window_start < self.window_s:
            return
        for (rule, pid, path), seen in self._counts.items():
            if seen > self.burst:
                self._write(
                    {"type": "suppressed", "rule": rule, "pid": pid, "path": path, "count": seen - self.burst}
                )
        self._counts.clear()
        self._window_start = now

    def event(self, event: Event) -> None:
        self._roll_window()
        key = (event.rule, event.pid, event.path)
        seen = self._counts.get(key, 0) + 1
        self._counts[key] = seen
        if seen <= self.burst:
            self._write({"type": "event", **event.to_dict()})

    def lost(self, count: int) -> None:
        self._write({"type": "lost", "count": count, "reason": "ring buffer full"})

    def notice(self, message: str, **fields: object) -> None:
        """Agent lifecycle records: started, reloaded, stopping."""
        record: Dict[str, object] = {"type": "agent", "message": message}
        record.update(fields)
        self._write(record)

    def flush(self) -> None:
        """Close the window (used at shutdown so suppressed counts are not lost)."""
        if self._window_start is None:
            return  # nothing was reported, nothing to summarise
        self._window_start = self.clock() - self.window_s
        self._roll_window()
