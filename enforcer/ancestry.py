"""Who did it, user-space half: exe and command line of the acting process
and of each ancestor the kernel named.

The kernel captured (pid, comm, start time) for every link at the decision;
this enricher adds what only user space can read, from the process cache
(enforcer.proccache, kept current by the process-events connector) or, for a
process the cache does not know (older than the agent, or no connector), from
/proc at event time. Either way a process is described only when its start
time is the one the kernel recorded: a reused pid is left unknown, never
described with another process's details.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from enforcer.events import Event, ProcessFacts, UNKNOWN
from enforcer.proccache import ProcessCache
from enforcer.procinfo import ProcDetails, read_details, start_ticks_of


def _facts(details: ProcDetails, source: str) -> ProcessFacts:
    return ProcessFacts(exe=details.exe, cmdline=details.cmdline,
                        cmdline_truncated=details.cmdline_truncated, source=source)


class ProcessDescriber:
    """(pid, start time) -> ProcessFacts. `cache` is None without the connector."""

    def __init__(self, cache: Optional[ProcessCache] = None,
                 read: Callable[[int], Optional[ProcDetails]] = read_details) -> None:
        self.cache = cache
        self._read = read
        #: Brings `cache` up to date with the process events the kernel has
        #: queued (enforcer.cnproc.ProcessEventListener.sync); None: nothing to do.
        self.sync: Optional[Callable[[], None]] = None

    def catch_up(self) -> None:
        """Before describing the processes of one event: every exec that
        happened before the event is in the cache."""
        if self.sync is not None:
            self.sync()

    def describe(self, pid: int, start_ns: Optional[int]) -> ProcessFacts:
        if start_ns is None or pid == 0:
            return UNKNOWN  # without a start time a reused pid cannot be told apart
        ticks = start_ticks_of(start_ns)
        if self.cache is not None:
            hit = self.cache.lookup(pid, ticks)
            if hit is not None:
                return _facts(*hit)
        details = self._read(pid)
        if details is None or details.start_ticks != ticks:
            return UNKNOWN  # gone, or the pid is another process's now
        if self.cache is not None:
            self.cache.remember(details)
        return _facts(details, "proc")


class AncestryEnricher:
    """Pipeline enricher: fills Event.facts and each Ancestor's facts."""

    def __init__(self, describer: ProcessDescriber) -> None:
        self.describer = describer

    def enrich(self, event: Event) -> Event:
        self.describer.catch_up()
        ancestry = tuple(
            dataclasses.replace(a, facts=self.describer.describe(a.pid, a.start_ns)) for a in event.ancestry)
        return dataclasses.replace(
            event, facts=self.describer.describe(event.pid, event.start_ns), ancestry=ancestry)
