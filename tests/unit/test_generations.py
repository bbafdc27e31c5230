"""The bounded table of recent policy generations."""

from __future__ import annotations

import pytest

from enforcer.generations import GenerationTable
from enforcer.plan import MapPlan


def _plan(watch: int) -> MapPlan:
    return MapPlan(maps={}, watch=watch)


def test_keeps_the_newest_generations_only_and_knows_the_current_one() -> None:
    table = GenerationTable(keep=3)
    for generation in range(1, 6):
        table.add(generation, _plan(generation))
    assert [table.plan(g) for g in (1, 2)] == [None, None]
    assert [table.plan(g).watch for g in (3, 4, 5)] == [3, 4, 5]
    assert (table.current_generation, table.plan(table.current_generation).watch) == (5, 5)


def test_generations_only_go_forward() -> None:
    table = GenerationTable()
    table.add(4, _plan(0))
    with pytest.raises(ValueError, match="not newer"):
        table.add(4, _plan(1))
    with pytest.raises(ValueError, match="keep at least"):
        GenerationTable(keep=1)


def test_a_flooded_ring_never_holds_a_record_older_than_the_kept_generations() -> None:
    """A model of the agent's loop under the worst flood: the ring is refilled to
    capacity before every turn, a turn drains DRAIN_BUDGET records, then reloads."""
    from collections import deque

    from enforcer import generations

    ring: deque = deque()
    table = GenerationTable()
    current = 1
    table.add(current, _plan(0))
    oldest_lag = 0
    for _ in range(200):
        while len(ring) < generations.RING_RECORDS:
            ring.append(current)  # decided under the generation in force
        for _ in range(generations.DRAIN_BUDGET):
            generation = ring.popleft()
            assert table.plan(generation) is not None, (generation, current)
            oldest_lag = max(oldest_lag, current - generation)
        current += 1  # a reload every turn, as fast as SIGHUPs can come
        table.add(current, _plan(current))
    # the model reaches the bound the docstring of KEEP derives, and KEEP has room to spare
    assert oldest_lag == -(-generations.RING_RECORDS // generations.DRAIN_BUDGET) - 1
    assert oldest_lag <= generations.KEEP - 2
