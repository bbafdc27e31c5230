"""Events and agent notices -> records -> sinks. Reports; decides nothing.

A record is a flat JSON-able mapping with a "type": "event", "suppressed",
"lost" or "agent" (schemas: docs/events.md), and always a "time" (RFC 3339,
UTC) and "boot_ns" (the kernel's CLOCK_BOOTTIME, nanoseconds). The
`Reporter` builds records and hands each to every sink (enforcer.sinks);
repeats are folded by a `RepeatLimiter` (enforcer.ratelimit), keyed on one
offender (rule, action, executable, target) rather than the pid, so that a
shell loop that gets a fresh pid per attempt is still one offender. `tick()`
(the agent's timer) writes the summaries of a window that ran out even when
no further event arrives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, List, Optional, Sequence, TextIO, Tuple

from enforcer.events import Event, rfc3339_ns
from enforcer.ratelimit import RepeatLimiter, Suppressed
from enforcer.sinks import JsonLinesSink, Record, Sink

#: Event fields that make two events "the same" for repeat suppression. The
#: action is part of it: a let-through is never folded into denials.
REPEAT_KEY_FIELDS: Tuple[str, ...] = ("rule", "action", "exe", "path")
#: The first fields of that key: what a summary keeps when keys are merged
#: (too many distinct offenders in one window).
COARSE_KEY_FIELDS: Tuple[str, ...] = REPEAT_KEY_FIELDS[:2]


def coarse_key(key: Hashable) -> Hashable:
    return tuple(key)[: len(COARSE_KEY_FIELDS)]  # type: ignore[arg-type]


def _boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class RecordClock:
    """Timestamps for records the agent makes itself (events carry the kernel's)."""

    wall_ns: Callable[[], int] = time.time_ns
    monotonic: Callable[[], float] = time.monotonic
    boot_ns: Callable[[], int] = _boot_ns

    def now(self) -> Dict[str, object]:
        return {"time": rfc3339_ns(self.wall_ns()), "boot_ns": self.boot_ns()}

    def wall_of(self, monotonic_s: float) -> str:
        """RFC 3339 of an earlier reading of `monotonic`."""
        ago_ns = int((self.monotonic() - monotonic_s) * 1_000_000_000)
        return rfc3339_ns(self.wall_ns() - ago_ns)


def default_limiter(burst: int = 20, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> RepeatLimiter:
    return RepeatLimiter(burst=burst, window_s=window_s, coarse=coarse_key, clock=clock)


class Reporter:
    def __init__(
        self, sinks: Sequence[Sink], limiter: Optional[RepeatLimiter] = None, clock: Optional[RecordClock] = None
    ) -> None:
        self.sinks = tuple(sinks)
        self.limiter = limiter or default_limiter()
        self.clock = clock or RecordClock(monotonic=self.limiter.clock)
        #: events written, repeats suppressed, events lost in the kernel, and
        #: let-throughs of enforcing rules (always written; see Event.let_through_enforce_rule)
        self.counts: Dict[str, int] = {"events": 0, "suppressed": 0, "lost": 0, "let_through_enforce_rule": 0}
        #: every event reported by the kernel, written or not, per (rule, action): for metrics
        self.events_by_rule: Dict[Tuple[str, str], int] = {}
        #: applied to an event only once it is going to be written: enrichment
        #: that reads /proc (enforcer.ancestry) costs nothing for a suppressed repeat
        self.enrichers: List[Callable[[Event], Event]] = []

    @classmethod
    def json_lines(
        cls, stream: TextIO, burst: int = 20, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> "Reporter":
        """JSON lines on `stream` with the given repeat limits."""
        return cls([JsonLinesSink(stream)], default_limiter(burst, window_s, clock))

    def _write(self, record: Record) -> None:
        for sink in self.sinks:
            sink.write(record)

    def _write_summaries(self, summaries: Sequence[Suppressed]) -> None:
        for summary in summaries:
            fields: Dict[str, object] = {name: None for name in REPEAT_KEY_FIELDS}
            fields.update(zip(REPEAT_KEY_FIELDS, summary.key))  # type: ignore[arg-type]
            self.counts["suppressed"] += summary.count
            self._write({
                "type": "suppressed",
                **self.clock.now(),
                **fields,
                "count": summary.count,
                "window_start": self.clock.wall_of(summary.window_start),
                "window_end": self.clock.wall_of(summary.window_end),
                "coarse": summary.coarse,
            })

    def event(self, event: Event) -> None:
        self.tick()
        key = (event.rule, event.action)
        self.events_by_rule[key] = self.events_by_rule.get(key, 0) + 1
        if event.let_through_enforce_rule:
            self.counts["let_through_enforce_rule"] += 1  # never counted against a burst, never folded
        elif not self.limiter.admit(tuple(getattr(event, name) for name in REPEAT_KEY_FIELDS)):
            return  # a suppressed repeat is not even turned into a record: floods stay cheap
        self.counts["events"] += 1
        for enrich in self.enrichers:
            event = enrich(event)
        self._write({"type": "event", **event.to_dict()})

    def tick(self) -> None:
        """Write the summaries of a repeat window that has run out (the agent's timer calls this)."""
        self._write_summaries(self.limiter.tick())

    def lost(self, count: int) -> None:
        self.counts["lost"] += count
        self._write({"type": "lost", **self.clock.now(), "count": count, "reason": "ring buffer full"})

    def notice(self, message: str, level: str = "info", **fields: object) -> None:
        """Agent lifecycle records: started, reloaded, reload rejected, stopping."""
        record: Dict[str, object] = {"type": "agent", **self.clock.now(), "level": level, "message": message}
        record.update(fields)
        self._write(record)

    def reopen(self) -> None:
        """Reopen file sinks (SIGUSR1, after logrotate moved the file)."""
        for sink in self.sinks:
            sink.reopen()

    def flush(self) -> None:
        """Close the repeat window (at shutdown, so suppressed counts are not lost)."""
        self._write_summaries(self.limiter.close_window())

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
