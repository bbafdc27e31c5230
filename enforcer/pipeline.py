"""Kernel record -> Event -> enrichers -> reporter: the event path of the agent.

Decoding is pure (enforcer.events) and uses the rule table of the policy
generation that decided the record (enforcer.generations), never simply the
newest one. Enrichers add what the kernel record does not carry (process
ancestry, container identity, ...), each a small object with one `enrich`
method that returns a new Event; the reporter delivers.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Protocol, Sequence

from enforcer import abi
from enforcer.events import BootClock, Event, decode
from enforcer.plan import MapPlan
from enforcer.policy import Mode


class Enricher(Protocol):
    def enrich(self, event: Event) -> Event: ...


class EventSink(Protocol):
    def event(self, event: Event) -> None: ...


class LetThroughMarker:
    """Marks audited events of rules that the current policy enforces.

    Such an action was let through in audit mode just before a switch to
    enforce, or its record cannot be attributed: the one kind of event an
    operator must always see (the reporter never suppresses it).
    """

    def __init__(self, current_plan: Callable[[], MapPlan]) -> None:
        self._current_plan = current_plan

    def enrich(self, event: Event) -> Event:
        if event.action != "audited":
            return event
        enforced_now = any(
            info.id == event.rule and info.mode is Mode.ENFORCE for info in self._current_plan().rules
        )
        if enforced_now or not event.attributed:
            return dataclasses.replace(event, let_through_enforce_rule=True)
        return event


class EventPipeline:
    def __init__(
        self,
        plan_of_generation: Callable[[int], Optional[MapPlan]],
        clock: BootClock,
        reporter: EventSink,
        enrichers: Sequence[Enricher] = (),
    ) -> None:
        self._plan_of_generation = plan_of_generation
        self._clock = clock
        self._reporter = reporter
        self.enrichers = tuple(enrichers)

    def on_record(self, record: abi.EventRecord) -> None:
        event = decode(record, self._plan_of_generation(record.generation), self._clock)
        for enricher in self.enrichers:
            event = enricher.enrich(event)
        self._reporter.event(event)
