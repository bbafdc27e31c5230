"""The rule tables of recent policy generations, for decoding events truthfully.

Each kernel event record carries the generation of the policy that decided it
(the policy slot a hook read once, see bpf/enforcer.h). Records decided just
before a reload can still be queued in the ring buffer after it, so the agent
keeps the tables of the last few generations and decodes every record with
its own. A record whose generation is no longer (or never was) known is
reported as unattributed, never guessed.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from typing import Optional

from enforcer import abi
from enforcer.plan import MapPlan

#: Records the agent handles per turn of its main loop, before it looks at
#: signals (a reload) again: a flood must not starve the loop.
DRAIN_BUDGET = 256

#: Records the ring buffer holds at most (each has an 8-byte header, rounded to 8).
RING_RECORDS = abi.RINGBUF_BYTES // ((ctypes.sizeof(abi.EventRecord) + 8 + 7) // 8 * 8)

#: Generations kept, so that every record can be attributed. When a reload
#: returns, every record of the old generation is in the ring (its grace period
#: has passed); each later turn of the loop consumes DRAIN_BUDGET records from
#: the front (or empties the ring) and performs at most one reload. So a record
#: is read at most ceil(RING_RECORDS / DRAIN_BUDGET) turns, hence reloads,
#: later: keep that many generations, plus the current one and one to spare.
KEEP = -(-RING_RECORDS // DRAIN_BUDGET) + 2


class GenerationTable:
    def __init__(self, keep: int = KEEP) -> None:
        if keep < 2:
            raise ValueError("keep at least the current and the previous generation")
        self._keep = keep
        self._plans: "OrderedDict[int, MapPlan]" = OrderedDict()

    def add(self, generation: int, plan: MapPlan) -> None:
        if self._plans and generation <= next(reversed(self._plans)):
            raise ValueError(f"generation {generation} is not newer than {next(reversed(self._plans))}")
        # decoding needs the rule table only; the map contents can be large
        self._plans[generation] = MapPlan(maps={}, watch=plan.watch, rules=plan.rules)
        while len(self._plans) > self._keep:
            self._plans.popitem(last=False)

    def plan(self, generation: int) -> Optional[MapPlan]:
        return self._plans.get(generation)

    @property
    def current_generation(self) -> int:
        return next(reversed(self._plans))
