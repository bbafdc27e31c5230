"""Kernel record -> Event -> enrichers -> reporter: the event path of the agent.

Decoding is pure (enforcer.events); enrichers add what the kernel record does
not carry (process ancestry, container identity, ...), each a small object
with one `enrich` method that returns a new Event; the reporter delivers.
The plan is looked up per record through `plan_of`, so the pipeline always
decodes with the policy the agent currently holds.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from enforcer import abi
from enforcer.events import BootClock, Event, decode
from enforcer.plan import MapPlan
from enforcer.report import Reporter


class Enricher(Protocol):
    def enrich(self, event: Event) -> Event: ...


class EventPipeline:
    def __init__(
        self,
        plan_of: Callable[[], MapPlan],
        clock: BootClock,
        reporter: Reporter,
        enrichers: Sequence[Enricher] = (),
    ) -> None:
        self._plan_of = plan_of
        self._clock = clock
        self._reporter = reporter
        self.enrichers = tuple(enrichers)

    def on_record(self, record: abi.EventRecord) -> None:
        event = decode(record, self._plan_of(), self._clock)
        for enricher in self.enrichers:
            event = enricher.enrich(event)
        self._reporter.event(event)
