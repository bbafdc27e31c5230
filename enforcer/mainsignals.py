"""The agent's signals go to its main thread, whatever other threads it runs.

The agent's loop waits for events in the ring buffer's epoll_wait (up to
POLL_MS) and learns of SIGHUP (reload), SIGUSR1 (reopen), SIGTERM and SIGINT
(stop) because the signal interrupts that wait. The kernel delivers a signal
sent to the process to one of its threads that does not block it: the main
thread when it can take it, but another one when the main thread has a
signal pending already (kernel/signal.c, complete_signal). Taken by a helper
thread (the process-connector reader, the metrics server), it interrupts
nothing the loop waits in, and the loop sees it only when its wait times
out, up to POLL_MS later.

So every helper thread is started inside `helper_threads_block_signals()`: a
thread inherits the signal mask of the thread that creates it, so it blocks
these signals for its whole life, and the main thread's mask is put back.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

__all__ = ["MAIN_THREAD_SIGNALS", "helper_threads_block_signals"]

MAIN_THREAD_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def helper_threads_block_signals() -> Iterator[None]:
    """Threads started inside this block never take the agent's signals.

    A signal that arrives meanwhile stays pending and is delivered when the
    block ends, to a thread that does not block it (the main one)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
