"""Reading the events ring buffer with libbpf, without bcc.

The consumer side of a BPF ring buffer (memory-mapped pages, the producer
and consumer positions and their memory ordering, epoll) is libbpf's
`ring_buffer__*` API, stable since libbpf 0.0.9. libbpf is already on every
host enforcer runs on: bcc's library links it (Debian: libbpf1, RHEL:
libbpf). Loading it costs milliseconds; loading bcc's Python binding, which
pulls in LLVM, costs seconds and tens of MiB, and an agent started from a
cached object needs nothing else of bcc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
from typing import Callable, Optional

#: int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so.0")

#: What our callback returns to end a poll early (an errno nothing else returns there).
_STOPPED = errno.ECANCELED


class RingBufferError(OSError):
    pass


def _libbpf() -> ctypes.CDLL:
    candidates = list(_LIBBPF_NAMES)
    found = ctypes.util.find_library("bpf")
    if found:
        candidates.insert(0, found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        lib.ring_buffer__new.argtypes = [ctypes.c_int, _SAMPLE_FN, ctypes.c_void_p, ctypes.c_void_p]
        lib.ring_buffer__new.restype = ctypes.c_void_p
        lib.ring_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.ring_buffer__poll.restype = ctypes.c_int
        lib.ring_buffer__consume.argtypes = [ctypes.c_void_p]
        lib.ring_buffer__consume.restype = ctypes.c_int
        lib.ring_buffer__epoll_fd.argtypes = [ctypes.c_void_p]
        lib.ring_buffer__epoll_fd.restype = ctypes.c_int
        lib.ring_buffer__free.argtypes = [ctypes.c_void_p]
        lib.ring_buffer__free.restype = None
        return lib
    raise RingBufferError(f"libbpf is not installed (looked for {', '.join(candidates)}; "
                          "Debian: libbpf1, RHEL: libbpf)")


class RingBuffer:
    """Deliver the records of the ring buffer map `map_fd` to `on_record(data: bytes)`.

    `on_record` returns True to go on, False to end the current poll after
    this record (the record is consumed either way).
    """

    def __init__(self, map_fd: int, on_record: Callable[[bytes], bool]) -> None:
        self._lib = _libbpf()

        def sample(_ctx: Optional[int], data: int, size: int) -> int:
            # A negative return makes libbpf stop this poll after the record,
            # which it has already consumed, and return that value.
            return 0 if on_record(ctypes.string_at(data, size)) else -_STOPPED

        self._sample = _SAMPLE_FN(sample)  # keep a reference: libbpf holds only a C pointer
        ctypes.set_errno(0)
        self._rb = self._lib.ring_buffer__new(map_fd, self._sample, None, None)
        if not self._rb:
            err = ctypes.get_errno() or 22
            raise RingBufferError(err, f"opening the events ring buffer: {os.strerror(err)}")

    def poll(self, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for records and deliver those available.

        libbpf returns the callback's stop signal and EINTR (a signal arrived
        during the wait) as negative values: both only end this poll. Any
        other error is raised.
        """
        self._check(self._lib.ring_buffer__poll(self._rb, timeout_ms))

    def wait(self, timeout_ms: int, wake_fd: int) -> None:
        """Like poll(), but the wait also ends when `wake_fd` becomes readable
        (a signal's wakeup fd: signal.set_wakeup_fd). A signal that arrives
        while the caller is busy, before the wait begins, has already written
        its byte there, so it cannot be held up by the wait."""
        poller = select.poll()
        poller.register(self._lib.ring_buffer__epoll_fd(self._rb), select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        poller.poll(timeout_ms)  # retried by Python after a signal's handler (PEP 475): the wake fd ends it
        self._check(self._lib.ring_buffer__consume(self._rb))

    @staticmethod
    def _check(result: int) -> None:
        if result < 0 and -result not in (_STOPPED, errno.EINTR):
            raise RingBufferError(-result, f"reading the events ring buffer: {os.strerror(-result)}")

    def close(self) -> None:
        if self._rb:
            self._lib.ring_buffer__free(self._rb)
            self._rb = None
