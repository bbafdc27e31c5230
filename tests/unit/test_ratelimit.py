"""The repeat limiter on its own: bursts, windows, timed summaries, bounds, exact accounting."""

from __future__ import annotations

import pytest

from enforcer.ratelimit import RepeatLimiter, Suppressed


def test_keys_are_counted_separately_and_over_burst_is_refused(clock) -> None:
    limiter = RepeatLimiter(burst=2, window_s=10.0, clock=clock)
    assert [limiter.admit("a") for _ in range(3)] == [True, True, False]
    assert limiter.admit("b") is True


def test_a_window_closes_on_the_timer_even_without_new_events(clock) -> None:
    limiter = RepeatLimiter(burst=1, window_s=10.0, clock=clock)
    assert limiter.tick() == []  # no window open
    for key in ("a", "a", "a", "b"):
        limiter.admit(key)
    clock.now += 9.9
    assert limiter.tick() == []
    clock.now += 0.1
    assert limiter.tick() == [Suppressed("a", 2, 0.0, 10.0)]
    assert limiter.tick() == []  # summarised once
    assert limiter.admit("a") is True  # the next window starts from zero


def test_close_window_summarises_once_and_only_if_something_was_seen(clock) -> None:
    limiter = RepeatLimiter(burst=1, window_s=10.0, clock=clock)
    assert limiter.close_window() == []
    limiter.admit("k")
    limiter.admit("k")
    clock.now = 3.0
    assert limiter.close_window() == [Suppressed("k", 1, 0.0, 3.0)]
    assert limiter.close_window() == []


def test_distinct_keys_cannot_flood_past_the_window_budget(clock) -> None:
    # fresh file names per attempt: every key is new, the total is still bounded
    limiter = RepeatLimiter(burst=5, max_events=10, window_s=10.0, coarse=lambda k: k[0], clock=clock)
    admitted = sum(limiter.admit(("rule", f"/tmp/x{i}")) for i in range(100))
    assert admitted == 10
    summaries = limiter.close_window()
    assert sum(s.count for s in summaries) == 90


def test_memory_is_bounded_and_overflow_is_counted_under_the_coarse_key(clock) -> None:
    limiter = RepeatLimiter(burst=1, max_keys=3, max_events=1000, coarse=lambda k: k[0], clock=clock)
    for i in range(50):
        limiter.admit(("exec-rule", f"/tmp/{i}"))
    assert limiter.tracked_keys == 3
    summaries = limiter.close_window()
    assert summaries == [Suppressed("exec-rule", 47, 0.0, 0.0, coarse=True)]


def test_summaries_are_bounded_largest_first_rest_merged(clock) -> None:
    limiter = RepeatLimiter(burst=1, max_summaries=2, coarse=lambda k: k[0], clock=clock)
    for name, repeats in (("a", 5), ("b", 3), ("c", 2), ("d", 4)):
        for _ in range(repeats):
            limiter.admit(("r", name))
    summaries = limiter.close_window()
    assert [(s.key, s.count, s.coarse) for s in summaries] == [
        (("r", "a"), 4, False), (("r", "d"), 3, False), ("r", 2 + 1, True)]


@pytest.mark.parametrize("seed", range(5))
def test_every_event_is_admitted_or_summarised_exactly_once(clock, seed: int) -> None:
    import random

    rng = random.Random(seed)
    limiter = RepeatLimiter(burst=3, max_events=40, max_keys=20, max_summaries=5, window_s=10.0,
                            coarse=lambda k: k[0], clock=clock)
    admitted = summarised = 0
    for _ in range(2000):
        clock.now += rng.random() * 0.1
        summarised += sum(s.count for s in limiter.tick())
        admitted += limiter.admit((rng.choice("xyz"), rng.randrange(60)))
    summarised += sum(s.count for s in limiter.close_window())
    assert admitted + summarised == 2000


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        RepeatLimiter(max_keys=0)
