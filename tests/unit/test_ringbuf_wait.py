"""RingBuffer.wait: a signal that came before the wait began must not be held
up by it (the agent's loop relies on this for SIGHUP, see daemon.Agent.loop).

Needs root and libbpf, for a real ring buffer map on this host's kernel
(creating a map needs no BPF-LSM)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from enforcer.kernel import bpfsys
from enforcer.kernel.ringbuf import RingBuffer, RingBufferError

RINGBUF = 27  # BPF_MAP_TYPE_RINGBUF


@pytest.fixture
def ring():
    try:
        fd = bpfsys.map_create(RINGBUF, 0, 0, 4096, what="test ring buffer")
    except OSError as error:
        pytest.skip(f"cannot create a ring buffer map here: {error}")
    try:
        ring = RingBuffer(fd, lambda data: True)
    except RingBufferError as error:
        os.close(fd)
        pytest.skip(str(error))
    yield ring
    ring.close()
    os.close(fd)


@pytest.fixture
def wakeup_pipe():
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    flagged = []
    previous_handler = signal.signal(signal.SIGUSR1, lambda *_: flagged.append(True))
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    yield read_end, flagged
    signal.set_wakeup_fd(previous_fd)
    signal.signal(signal.SIGUSR1, previous_handler)
    os.close(read_end)
    os.close(write_end)


def test_a_signal_before_the_wait_ends_it_at_once(ring, wakeup_pipe) -> None:
    read_end, flagged = wakeup_pipe
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # "while the loop was busy"
    assert flagged == [True]
    started = time.monotonic()
    ring.wait(30_000, read_end)
    assert time.monotonic() - started < 10, "the wait ignored the signal that came before it"


def test_a_signal_during_the_wait_ends_it(ring, wakeup_pipe) -> None:
    read_end, flagged = wakeup_pipe
    main = threading.main_thread().ident
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
    timer.start()
    started = time.monotonic()
    ring.wait(30_000, read_end)
    timer.join()
    assert flagged == [True] and time.monotonic() - started < 10


def test_without_a_signal_the_wait_lasts_its_timeout(ring, wakeup_pipe) -> None:
    read_end, _ = wakeup_pipe
    started = time.monotonic()
    ring.wait(300, read_end)
    assert time.monotonic() - started >= 0.29
