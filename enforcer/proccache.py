"""A bounded cache of process details, kept current by process events.

Why: an event is read after the fact; the payload that made it has often
exited by then, and /proc no longer knows it. The kernel's process-events
connector (enforcer.cnproc) says when a process forks, executes, renames
itself or exits; the cache reads /proc at once on exec (the process may live
only milliseconds) and keeps what it read a while after the exit, so the
event about a dying process still finds it.

Identity is (pid, start time): an entry is returned only for the start time
the kernel recorded for the event's process, so a reused pid is never
described with another process's details.

Bounds: at most `capacity` entries (least recently used evicted first), at
most `text_budget` bytes of exe and command-line text in all, and an exited
process's entry lives `exit_grace_s` at most. Memory, measured with
tracemalloc: 16,384 entries of a typical shape (exe and three arguments,
about 40 bytes of text each) take 8.9 MiB; the cache's own bookkeeping is
under 400 bytes an entry (tests/unit/test_proccache.py), the details objects
(strings, tuple) about 150 more plus their text. Worst case, every entry
holding long command lines: 8 MiB of text plus about 550 bytes an entry,
under 18 MiB.

Thread safety: the connector's thread writes, the event path reads; one lock.
Pure: reading /proc goes through the `read` callable given.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Callable, Deque, Optional, Tuple

from enforcer.procinfo import ProcDetails, read_details, read_start_ticks

CAPACITY = 16_384
TEXT_BUDGET = 8 << 20
#: How long an exited process stays described: the agent reads events within
#: a second or two even under a flood; 30 s leaves room for a stalled agent.
EXIT_GRACE_S = 30.0


@dataclass(frozen=True)
class _Entry:
    details: ProcDetails
    #: "connector": read when the connector said it executed (or forked);
    #: "proc": read on the event path (a process older than the agent)
    source: str = "connector"
    exited_at: Optional[float] = None  # monotonic seconds; None while alive


class ProcessCache:
    def __init__(self, capacity: int = CAPACITY, text_budget: int = TEXT_BUDGET,
                 exit_grace_s: float = EXIT_GRACE_S, clock: Callable[[], float] = time.monotonic,
                 read: Callable[[int], Optional[ProcDetails]] = read_details,
                 read_start: Callable[[int], Optional[int]] = read_start_ticks) -> None:
        self.capacity = capacity
        self.text_budget = text_budget
        self.exit_grace_s = exit_grace_s
        self._clock = clock
        self._read = read
        self._read_start = read_start
        self._entries: "OrderedDict[int, _Entry]" = OrderedDict()
        self._text = 0
        #: (exit time, pid, start ticks) in exit order; at most one per entry
        #: that ever exited, dropped when expired (or found replaced)
        self._exits: Deque[Tuple[float, int, int]] = deque(maxlen=capacity)  # full: the oldest waits for LRU eviction instead
        self._lock = threading.Lock()
        #: what happened, for the notes and tests: reads of /proc, evictions by bound, by expiry
        self.counts = {"reads": 0, "evicted": 0, "expired": 0}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def text_bytes(self) -> int:
        return self._text

    # --- process events (the connector's thread) ---------------------------------

    def on_exec(self, pid: int) -> None:
        """A process executed a new program: read it now, before it can be gone."""
        self.counts["reads"] += 1
        details = self._read(pid)
        with self._lock:
            if details is not None:
                self._put(_Entry(details))
                return
            # Gone before it could be read: whatever the cache held (its
            # parent's copy, from the fork) describes the program it ran
            # before, not this one. Unknown is the truth.
            stale = self._entries.pop(pid, None)
            if stale is not None:
                self._text -= stale.details.size_bytes

    def on_fork(self, parent_tgid: int, child_tgid: int) -> None:
        """A new process: until it executes it runs its parent's program with
        its parent's command line, so it gets a copy (only its start time is read)."""
        with self._lock:
            parent = self._entries.get(parent_tgid)
        if parent is None or parent.exited_at is not None:
            self.on_exec(child_tgid)  # nothing to copy: read the child itself
            return
        start = self._read_start(child_tgid)
        if start is None:
            return  # already gone: nothing to describe it with
        with self._lock:
            self._put(_Entry(replace(parent.details, pid=child_tgid, start_ticks=start)))

    def on_exit(self, tgid: int) -> None:
        with self._lock:
            entry = self._entries.get(tgid)
            if entry is not None and entry.exited_at is None:
                now = self._clock()
                self._entries[tgid] = replace(entry, exited_at=now)
                self._exits.append((now, tgid, entry.details.start_ticks))

    # --- the event path ----------------------------------------------------------------

    def lookup(self, pid: int, start_ticks: int) -> Optional[Tuple[ProcDetails, str]]:
        """Details of the process (pid, start_ticks) and where they came from
        ("connector" or "proc"), or None when the cache does not know that very process."""
        with self._lock:
            self._expire()
            entry = self._entries.get(pid)
            if entry is None or entry.details.start_ticks != start_ticks:
                return None
            self._entries.move_to_end(pid)
            return entry.details, entry.source

    def remember(self, details: ProcDetails) -> None:
        """Keep what the event path read from /proc itself (a process older
        than the agent): the connector keeps it current from now on."""
        with self._lock:
            if details.pid not in self._entries:
                self._put(_Entry(details, source="proc"))

    # --- bounds (lock held) --------------------------------------------------------------

    def _put(self, entry: _Entry) -> None:
        pid = entry.details.pid
        old = self._entries.pop(pid, None)
        if old is not None:
            self._text -= old.details.size_bytes
        self._entries[pid] = entry
        self._text += entry.details.size_bytes
        self._expire()
        while len(self._entries) > self.capacity or (self._text > self.text_budget and len(self._entries) > 1):
            _, evicted = self._entries.popitem(last=False)
            self._text -= evicted.details.size_bytes
            self.counts["evicted"] += 1

    def _expire(self) -> None:
        """Drop exited processes past their grace, oldest exit first (exits
        are queued in the order they happened, so this stops at the first
        one still in its grace)."""
        now = self._clock()
        while self._exits and now - self._exits[0][0] >= self.exit_grace_s:
            _, pid, start_ticks = self._exits.popleft()
            entry = self._entries.get(pid)
            if entry is not None and entry.exited_at is not None and entry.details.start_ticks == start_ticks:
                del self._entries[pid]
                self._text -= entry.details.size_bytes
                self.counts["expired"] += 1
