"""The main loop's periodic tasks."""

from __future__ import annotations

import pytest

from enforcer.periodic import Scheduler



def test_tasks_run_first_time_then_at_their_interval_in_registration_order(clock) -> None:
    ran = []
    scheduler = Scheduler(clock=clock)
    scheduler.every(1.0, "slow", lambda: ran.append("slow"))
    scheduler.every(0.0, "each-turn", lambda: ran.append("each-turn"))
    assert scheduler.run_due() == ["slow", "each-turn"]
    clock.now = 0.5
    assert scheduler.run_due() == ["each-turn"]
    clock.now = 1.0
    assert scheduler.run_due() == ["slow", "each-turn"]
    assert ran == ["slow", "each-turn", "each-turn", "slow", "each-turn"]


def test_duplicate_names_and_negative_intervals_are_refused() -> None:
    scheduler = Scheduler()
    scheduler.every(1.0, "x", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        scheduler.every(2.0, "x", lambda: None)
    with pytest.raises(ValueError, match="negative"):
        scheduler.every(-1.0, "y", lambda: None)
