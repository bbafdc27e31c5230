"""Process details: /proc parsing and rendering, the bounded cache (pid reuse,
exit grace, eviction, bounds), and the enricher that describes an event's
processes only when their start times match the kernel's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Dict, Optional

import pytest

from enforcer import abi
from enforcer.ancestry import AncestryEnricher, ProcessDescriber
from enforcer.events import Ancestor, BootClock, ProcessFacts, decode
from enforcer.proccache import ProcessCache
from enforcer.procinfo import (CMDLINE_MAX, TICK_NS, ProcDetails, parse_start_ticks, read_details,
                               render_cmdline, start_ticks_of)
from enforcer.sinks import human_message

from test_events import PLAN, record


# --- /proc ------------------------------------------------------------------------


def test_start_ticks_are_counted_after_a_comm_with_spaces_and_parentheses() -> None:
    stat = b"4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0"
    assert parse_start_ticks(stat) == 987654


def test_cmdline_rendering_splits_escapes_and_flags_truncation() -> None:
    assert render_cmdline(b"sh\0-c\0echo b > /proc/sysrq-trigger\0") == (
        ("sh", "-c", "echo b > /proc/sysrq-trigger"), False)
    assert render_cmdline(b"a\0\0b\0") == (("a", "", "b"), False)  # an empty argument is kept
    args, truncated = render_cmdline(b"x\xff\x1b[31m\0")
    assert args == ("x\\xff\x1b[31m",) and not truncated
    assert json.loads(json.dumps(list(args))) == ["x\\xff\x1b[31m"]  # JSON escapes the control byte
    assert "\\u001b" in json.dumps(list(args))
    assert render_cmdline(b"") == ((), False)  # a kernel thread
    long = b"a" * (CMDLINE_MAX + 1)
    args, truncated = render_cmdline(long)
    assert truncated and len(args[0]) == CMDLINE_MAX
    assert render_cmdline(b"a" * CMDLINE_MAX) == (("a" * CMDLINE_MAX,), False)  # exactly the bound: complete


def test_read_details_of_a_live_process_and_of_none(tmp_path: Path) -> None:
    code = "import sys; print(flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code, "arg one", "\u00e9"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        # Popen returns at exec's point of no return, before the kernel has set
        # up the new arguments (cmdline reads empty then): wait for the program
        child.stdout.readline()
        details = read_details(child.pid)
        assert details is not None
        assert details.cmdline == (sys.executable, "-c", code, "arg one", "\u00e9")
        assert details.exe == os.path.realpath(sys.executable)
        stat = Path(f"/proc/{child.pid}/stat").read_bytes()
        assert details.start_ticks == parse_start_ticks(stat) and not details.cmdline_truncated
    finally:
        child.communicate(b"")
    assert read_details(child.pid) is None  # reaped: nobody holds the pid now (or someone else: not this start)


def test_read_details_refuses_a_pid_that_changed_hands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enforcer.procinfo as procinfo

    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cmdline").write_bytes(b"new\0")
    starts = iter([100, 250])  # the start time read before the other files, then after them
    monkeypatch.setattr(procinfo, "read_start_ticks", lambda pid, root: next(starts))
    (proc / "7" / "stat").write_bytes(b"7 (new) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 250 0")
    assert procinfo.read_details(7, proc) is None
    starts = iter([100])
    (proc / "7" / "stat").write_bytes(b"7 (new) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0")
    assert procinfo.read_details(7, proc) == ProcDetails(7, 100, None, ("new",), False)
    # exited (a zombie): /proc's empty cmdline means "unknown", not "no arguments"
    starts = iter([100])
    (proc / "7" / "stat").write_bytes(b"7 (new) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0")
    assert procinfo.read_details(7, proc) == ProcDetails(7, 100, None, None, False)
    # exiting, not yet a zombie: its memory (hence exe and arguments) already gone
    starts = iter([100])
    (proc / "7" / "cmdline").write_bytes(b"")
    (proc / "7" / "stat").write_bytes(b"7 (new) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0")
    assert procinfo.read_details(7, proc) == ProcDetails(7, 100, None, None, False)


# --- the cache --------------------------------------------------------------------


def _details(pid: int, start: int, exe: str = "/usr/bin/dash", args=("sh",)) -> ProcDetails:
    return ProcDetails(pid=pid, start_ticks=start, exe=exe, cmdline=tuple(args), cmdline_truncated=False)


class FakeProc:
    """/proc as a dict pid -> details; counts reads."""

    def __init__(self) -> None:
        self.table: Dict[int, ProcDetails] = {}
        self.reads = 0

    def read(self, pid: int) -> Optional[ProcDetails]:
        self.reads += 1
        return self.table.get(pid)

    def start(self, pid: int) -> Optional[int]:
        found = self.table.get(pid)
        return found.start_ticks if found else None


def _cache(proc: FakeProc, clock, **kw) -> ProcessCache:
    return ProcessCache(clock=clock, read=proc.read, read_start=proc.start, **kw)


def test_exec_is_read_at_once_and_survives_the_exit_for_the_grace(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock, exit_grace_s=30)
    proc.table[10] = _details(10, 500, args=("payload", "-x"))
    cache.on_exec(10)
    del proc.table[10]  # gone right after
    cache.on_exit(10)
    clock.now += 29
    assert cache.lookup(10, 500) == (_details(10, 500, args=("payload", "-x")), "connector")
    clock.now += 1.5
    assert cache.lookup(10, 500) is None and len(cache) == 0 and cache.counts["expired"] == 1


def test_a_reused_pid_is_never_described_with_the_old_process(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock)
    proc.table[10] = _details(10, 500, args=("old",))
    cache.on_exec(10)
    assert cache.lookup(10, 777) is None  # the event's process started at another time
    proc.table[10] = _details(10, 777, args=("new",))
    cache.on_exit(10)
    cache.on_exec(10)  # the pid's new owner
    assert cache.lookup(10, 500) is None
    assert cache.lookup(10, 777)[0].cmdline == ("new",)
    clock.now += 100  # the old owner's exit must not expire the new owner
    assert cache.lookup(10, 777) is not None


def test_fork_copies_the_parent_and_reads_only_the_childs_start(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock)
    proc.table[1] = _details(1, 10, args=("loop",))
    cache.on_exec(1)
    proc.table[2] = _details(2, 20, args=("loop",))
    reads = proc.reads
    cache.on_fork(1, 2)
    assert proc.reads == reads  # start time only: no exe or cmdline read
    assert cache.lookup(2, 20) == (_details(2, 20, args=("loop",)), "connector")
    cache.on_fork(99, 3)  # unknown parent: the child itself is read
    assert proc.reads == reads + 1


def test_an_exec_that_cannot_be_read_drops_the_parents_copy(clock) -> None:
    """A forked child holds its parent's description until it executes; if
    it is gone before its new program could be read, it is unknown: never
    described with the command line it had before (seen in the VM: a
    payload described as the loop that forked it)."""
    proc = FakeProc()
    cache = _cache(proc, clock)
    proc.table[1] = _details(1, 10, args=("loop",))
    cache.on_exec(1)
    proc.table[2] = _details(2, 20, args=("loop",))
    cache.on_fork(1, 2)
    text = cache.text_bytes
    del proc.table[2]  # the child executed the payload and exited at once
    cache.on_exec(2)
    assert cache.lookup(2, 20) is None and len(cache) == 1
    assert cache.text_bytes == text - _details(2, 20, args=("loop",)).size_bytes
    cache.on_exec(3)  # unknown and unreadable: nothing to drop, nothing added
    assert len(cache) == 1


def test_the_enricher_catches_up_with_queued_process_events_first(clock) -> None:
    """The kernel queued the payload's exec before the payload made its
    event; the reader thread may not have applied it yet. Describing must
    apply it first, or the payload is described as its parent."""
    proc = FakeProc()
    cache = _cache(proc, clock)
    proc.table[20] = _details(20, 200, args=("loop",))
    cache.on_exec(20)
    proc.table[30] = _details(30, 300, args=("loop",))
    cache.on_fork(20, 30)  # applied; its exec not yet
    proc.table[30] = _details(30, 300, args=("payload", "-c", "echo b"))
    describer = ProcessDescriber(cache, read=proc.read)
    queued = [lambda: cache.on_exec(30)]
    describer.sync = lambda: [apply() for apply in queued] and queued.clear()
    del proc.table[20]
    event = AncestryEnricher(describer).enrich(_event_with_ancestry())
    assert event.facts.cmdline == ("payload", "-c", "echo b") and event.facts.source == "connector"
    assert queued == []


def test_capacity_evicts_the_least_recently_used(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock, capacity=3)
    for pid in (1, 2, 3):
        proc.table[pid] = _details(pid, pid)
        cache.on_exec(pid)
    assert cache.lookup(1, 1) is not None  # 1 is now the most recently used
    proc.table[4] = _details(4, 4)
    cache.on_exec(4)
    assert len(cache) == 3 and cache.lookup(2, 2) is None and cache.lookup(1, 1) is not None
    assert cache.counts["evicted"] == 1


def test_text_budget_bounds_memory_whatever_the_command_lines(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock, capacity=1000, text_budget=10_000)
    for pid in range(1, 50):
        proc.table[pid] = _details(pid, pid, args=("x" * 1000,))
        cache.on_exec(pid)
    assert cache.text_bytes <= 10_000 and len(cache) < 11
    assert cache.lookup(49, 49) is not None


def test_proc_reads_on_the_event_path_are_remembered_as_proc(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock)
    describer = ProcessDescriber(cache, read=proc.read)
    proc.table[5] = _details(5, 3)
    facts = describer.describe(5, 3 * TICK_NS + 1)
    assert facts == ProcessFacts(exe="/usr/bin/dash", cmdline=("sh",), cmdline_truncated=False, source="proc")
    reads = proc.reads
    assert describer.describe(5, 3 * TICK_NS) == facts and proc.reads == reads  # from the cache now


def test_cache_memory_per_entry_is_what_the_docstring_says(clock) -> None:
    """The module's figure: about 400 bytes of bookkeeping per entry, plus the text."""
    proc = FakeProc()
    cache = _cache(proc, clock, capacity=20_000)
    details = [_details(pid, pid, exe=f"/usr/bin/p{pid}", args=(f"p{pid}", "-c", f"x{pid}")) for pid in range(16_384)]
    for d in details:
        proc.table[d.pid] = d
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for d in details:
        cache.on_exec(d.pid)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_entry = grown / len(details)
    assert per_entry < 400, per_entry  # the details objects themselves were made before


# --- the enricher -----------------------------------------------------------------


def _event_with_ancestry():
    raw = record(rule=1, pid=30, ppid=20, start_ns=300 * TICK_NS, ancestry_len=2,
                 flags=int(abi.EventFlag.START_KNOWN | abi.EventFlag.LOGIN_KNOWN), loginuid=1000, sessionid=3,
                 comm=b"payload", exe=b"/usr/bin/dash", path=b"/proc/sysrq-trigger",
                 action=int(abi.Action.BLOCKED), hook=int(abi.Hook.FILE_OPEN), access=int(abi.Access.WRITE))
    raw.ancestors[0].pid, raw.ancestors[0].comm, raw.ancestors[0].start_ns = 20, b"loop", 200 * TICK_NS
    raw.ancestors[1].pid, raw.ancestors[1].comm, raw.ancestors[1].start_ns = 10, b"svc", 100 * TICK_NS
    return decode(raw, PLAN, BootClock(0))


def test_decode_keeps_the_kernels_chain_and_marks_the_unknown() -> None:
    event = _event_with_ancestry()
    assert [(a.pid, a.comm, a.start_ns) for a in event.ancestry] == [
        (20, "loop", 200 * TICK_NS), (10, "svc", 100 * TICK_NS)]
    assert (event.loginuid, event.sessionid, event.start_ns) == (1000, 3, 300 * TICK_NS)
    out = event.to_dict()
    assert out["cmdline"] is None and out["details"] is None and out["ancestry"][0]["exe"] is None
    bare = decode(record(rule=1, ancestry_len=1, loginuid=0), PLAN, BootClock(0))
    # a kernel without audit or start_boottime: unknown, never a fake 0
    assert (bare.loginuid, bare.sessionid, bare.start_ns, bare.ancestry[0].start_ns) == (None, None, None, None)
    assert decode(record(rule=1, ancestry_len=200), PLAN, BootClock(0)).ancestry.__len__() == abi.ANCESTRY_MAX


def test_enricher_describes_matching_processes_only(clock) -> None:
    proc = FakeProc()
    cache = _cache(proc, clock)
    proc.table[30] = _details(30, 300, args=("payload", "-c", "echo b"))
    cache.on_exec(30)
    del proc.table[30]  # the payload is gone
    proc.table[20] = _details(20, 200, args=("loop",))  # alive, older than the agent: /proc
    proc.table[10] = _details(10, 999, args=("impostor",))  # pid 10 was reused
    event = AncestryEnricher(ProcessDescriber(cache, read=proc.read)).enrich(_event_with_ancestry())
    out = event.to_dict()
    assert (out["cmdline"], out["details"], out["cmdline_truncated"]) == (["payload", "-c", "echo b"], "connector", False)
    assert out["ancestry"][0] == {"pid": 20, "comm": "loop", "start_ns": 200 * TICK_NS, "exe": "/usr/bin/dash",
                                  "cmdline": ["loop"], "cmdline_truncated": False, "details": "proc"}
    assert out["ancestry"][1]["cmdline"] is None and out["ancestry"][1]["details"] is None
    without_cache = AncestryEnricher(ProcessDescriber(None, read=proc.read)).enrich(_event_with_ancestry())
    assert without_cache.facts.source is None  # no connector: the exited payload is unknown


def test_human_message_names_the_first_parents() -> None:
    event = _event_with_ancestry()
    message = human_message({"type": "event", **event.to_dict()})
    assert message == ("blocked write of /proc/sysrq-trigger by payload[30] (/usr/bin/dash), "
                       "under loop[20] < svc[10]: rule sysrq-write-host")
    many = {"type": "event", **event.to_dict(),
            "ancestry": [Ancestor(pid=p, comm=f"p{p}", start_ns=None).to_dict() for p in range(9, 0, -1)]}
    assert human_message(many).endswith("under p9[9] < p8[8] < p7[7] < p6[6] < ...: rule sysrq-write-host")


@pytest.mark.parametrize("ns", [0, TICK_NS - 1, TICK_NS, 123 * TICK_NS + 5])
def test_start_ticks_of_matches_the_kernels_nsec_to_clock_t(ns: int) -> None:
    assert start_ticks_of(ns) == ns // TICK_NS
