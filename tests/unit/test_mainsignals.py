"""enforcer.mainsignals: helper threads never take the agent's signals."""

from __future__ import annotations

import signal
import threading
import time

from enforcer.mainsignals import MAIN_THREAD_SIGNALS, helper_threads_block_signals


def _mask_of_a_thread_started(inside: bool) -> set:
    seen = {}

    def run() -> None:
        seen["mask"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    thread = threading.Thread(target=run)
    if inside:
        with helper_threads_block_signals():
            thread.start()
    else:
        thread.start()
    thread.join()
    return set(seen["mask"])


def test_a_thread_started_inside_blocks_the_agents_signals_and_the_main_thread_does_not() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert MAIN_THREAD_SIGNALS <= _mask_of_a_thread_started(inside=True)
    assert not MAIN_THREAD_SIGNALS & _mask_of_a_thread_started(inside=False)  # the control
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_a_signal_sent_meanwhile_reaches_the_main_thread_afterwards() -> None:
    """Sent to the main thread itself: a signal sent to the process could be
    taken by any other thread of the test process that does not block it."""
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(threading.current_thread().name))
    try:
        with helper_threads_block_signals():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
            time.sleep(0.05)
            assert got == []  # pending while blocked
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == ["MainThread"]
    finally:
        signal.signal(signal.SIGUSR1, previous)
