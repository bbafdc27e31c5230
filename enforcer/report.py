"""Events and agent notices -> records -> sinks. Reports; decides nothing.

A record is a flat JSON-able mapping with a "type": "event", "suppressed",
"lost" or "agent". The `Reporter` builds records and hands each to every sink;
repeats are folded by a `RepeatLimiter` (enforcer.ratelimit) so that a flood
of identical denials (an attacker looping on a blocked action) does not
drown the log. Sinks only deliver: JSON lines on a stream today; the journal,
a file and metrics are further implementations of `Sink`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Protocol, Sequence, TextIO, Tuple

from enforcer.events import Event
from enforcer.ratelimit import RepeatLimiter, Suppressed

Record = Mapping[str, object]

#: Event fields that make two events "the same" for repeat suppression. The
#: action is part of it: a let-through is never folded into denials.
REPEAT_KEY_FIELDS: Tuple[str, ...] = ("rule", "action", "pid", "path")


class Sink(Protocol):
    """Where records go. `write` must not raise for a well-formed record."""

    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


@dataclass
class JsonLinesSink:
    """One JSON object per line, flushed at once (stdout in the foreground and in containers)."""

    stream: TextIO

    def write(self, record: Record) -> None:
        self.stream.write(json.dumps(record, sort_keys=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class Reporter:
    def __init__(self, sinks: Sequence[Sink], limiter: Optional[RepeatLimiter] = None) -> None:
        self.sinks = tuple(sinks)
        self.limiter = limiter or RepeatLimiter()
        #: events written, repeats suppressed, and let-throughs of enforcing
        #: rules (always written; see Event.let_through_enforce_rule)
        self.counts: Dict[str, int] = {"events": 0, "suppressed": 0, "let_through_enforce_rule": 0}

    @classmethod
    def json_lines(
        cls, stream: TextIO, burst: int = 20, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> "Reporter":
        """JSON lines on `stream` with the given repeat limits: what `enforcer run` uses."""
        return cls([JsonLinesSink(stream)], RepeatLimiter(burst=burst, window_s=window_s, clock=clock))

    def _write(self, record: Record) -> None:
        for sink in self.sinks:
            sink.write(record)

    def _write_summaries(self, summaries: Sequence[Suppressed]) -> None:
        for summary in summaries:
            fields = dict(zip(REPEAT_KEY_FIELDS, summary.key))  # type: ignore[arg-type]
            self.counts["suppressed"] += summary.count
            self._write({"type": "suppressed", **fields, "count": summary.count})

    def event(self, event: Event) -> None:
        self._write_summaries(self.limiter.roll())
        if event.let_through_enforce_rule:
            self.counts["let_through_enforce_rule"] += 1  # never counted against a burst, never folded
        elif not self.limiter.admit(tuple(getattr(event, name) for name in REPEAT_KEY_FIELDS)):
            return  # a suppressed repeat is not even turned into a record: floods stay cheap
        self.counts["events"] += 1
        self._write({"type": "event", **event.to_dict()})

    def lost(self, count: int) -> None:
        self._write({"type": "lost", "count": count, "reason": "ring buffer full"})

    def notice(self, message: str, **fields: object) -> None:
        """Agent lifecycle records: started, reloaded, stopping."""
        record: Dict[str, object] = {"type": "agent", "message": message}
        record.update(fields)
        self._write(record)

    def flush(self) -> None:
        """Close the repeat window (at shutdown, so suppressed counts are not lost)."""
        self._write_summaries(self.limiter.close_window())

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
