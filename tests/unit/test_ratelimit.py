"""The repeat limiter on its own: bursts, windows, summaries, shutdown."""

from __future__ import annotations

from enforcer.ratelimit import RepeatLimiter, Suppressed



def test_keys_are_counted_separately_and_over_burst_is_refused(clock) -> None:
    limiter = RepeatLimiter(burst=2, window_s=10.0, clock=clock)
    assert limiter.roll() == []
    assert [limiter.admit("a") for _ in range(3)] == [True, True, False]
    assert limiter.admit("b") is True


def test_a_window_closes_only_after_its_length_and_summarises_what_it_refused(clock) -> None:
    limiter = RepeatLimiter(burst=1, window_s=10.0, clock=clock)
    limiter.roll()
    for key in ("a", "a", "a", "b"):
        limiter.admit(key)
    clock.now += 9.9
    assert limiter.roll() == []
    clock.now += 0.1
    assert limiter.roll() == [Suppressed("a", 2)]
    assert limiter.admit("a") is True  # the new window starts from zero


def test_close_window_summarises_once_and_only_if_something_was_seen(clock) -> None:
    limiter = RepeatLimiter(burst=1, window_s=10.0, clock=clock)
    assert limiter.close_window() == []
    limiter.roll()
    limiter.admit("k")
    limiter.admit("k")
    assert limiter.close_window() == [Suppressed("k", 1)]
    assert limiter.close_window() == []
