"""One process's details from /proc: start time, executable, command line.

A pid alone does not name a process: pids are reused. The kernel's event
carries each process's start time (task->start_boottime, ns since boot), and
/proc/PID/stat field 22 is the same clock in ticks (nsec_to_clock_t), so a
read of /proc is accepted for an event's process only when the two agree.
The start time is read before and after the other files: if the pid changed
hands in between, the read is thrown away.

The command line is kept bounded (CMDLINE_MAX bytes) and rendered as a list
of strings, one per NUL-separated argument; bytes that are not UTF-8 become
backslash escapes (\\xNN), so the list is always valid JSON text and never
loses the fact that odd bytes were there. JSON encoding escapes control
characters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

#: Bytes of a command line kept per process; longer ones are cut and flagged.
CMDLINE_MAX = 4096

#: Nanoseconds per tick of /proc/PID/stat's starttime (USER_HZ, 100 on Linux).
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def start_ticks_of(start_ns: int) -> int:
    """The kernel's start_boottime as /proc/PID/stat field 22 shows it."""
    return start_ns // TICK_NS


@dataclass(frozen=True)
class ProcDetails:
    """What /proc said about one process, and when it started (its identity)."""

    pid: int
    start_ticks: int
    exe: Optional[str]  # None: unreadable (a kernel thread, a zombie, gone)
    cmdline: Optional[Tuple[str, ...]]  # None: unreadable, or a kernel thread, a zombie, an exiting process
    cmdline_truncated: bool

    @property
    def size_bytes(self) -> int:
        """Bytes of text this entry holds (the cache's memory bound counts these)."""
        return len(self.exe or "") + sum(len(arg) for arg in self.cmdline or ())


def parse_start_ticks(stat: bytes) -> int:
    """Field 22 (starttime) of /proc/PID/stat. comm (field 2) may hold spaces
    and parentheses, so the fields are counted after its last ')'."""
    rest = stat[stat.rindex(b")") + 2:].split()
    return int(rest[19])  # fields 3.. -> index 0 is field 3, field 22 is index 19


def render_cmdline(raw: bytes, limit: int = CMDLINE_MAX) -> Tuple[Tuple[str, ...], bool]:
    """NUL-separated arguments -> (arguments, truncated). `raw` may be up to
    limit + 1 bytes: more than `limit` means the line was longer."""
    truncated = len(raw) > limit
    raw = raw[:limit]
    if raw.endswith(b"\0"):
        raw = raw[:-1]  # the terminator of the last argument, not an empty argument
    if not raw:
        return (), truncated
    return tuple(arg.decode("utf-8", "backslashreplace") for arg in raw.split(b"\0")), truncated


def _read(path: Path, limit: int) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return None


def read_start_ticks(pid: int, proc: Path = Path("/proc")) -> Optional[int]:
    stat = _read(proc / str(pid) / "stat", 4096)
    if not stat:
        return None
    try:
        return parse_start_ticks(stat)
    except (ValueError, IndexError):
        return None


def is_dead(stat: bytes) -> bool:
    """State (field 3) Z or X: the process has exited and /proc no longer has
    its program or arguments (exe unreadable, cmdline empty)."""
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")


def read_details(pid: int, proc: Path = Path("/proc")) -> Optional[ProcDetails]:
    """The process now holding `pid`, or None when there is none (or it
    changed hands while being read). A process that already exited (a
    zombie) gives exe and cmdline None: unknown, not empty."""
    before = read_start_ticks(pid, proc)
    if before is None:
        return None
    try:
        exe: Optional[str] = os.readlink(proc / str(pid) / "exe")
    except OSError:
        exe = None
    raw = _read(proc / str(pid) / "cmdline", CMDLINE_MAX + 1)
    cmdline, truncated = render_cmdline(raw) if raw is not None else (None, False)
    stat = _read(proc / str(pid) / "stat", 4096)
    try:
        after, dead = (parse_start_ticks(stat), is_dead(stat)) if stat else (None, True)
    except (ValueError, IndexError):
        return None
    if after != before:
        return None
    # A zombie, or a process between releasing its memory and becoming one
    # (state still R or D: seen in the VM under load, its cmdline read empty
    # and its exe unreadable): /proc has no program and no arguments for it,
    # which means unknown, not "none" (a process that ran has an exe).
    if dead or (exe is None and not cmdline):
        exe, cmdline, truncated = None, None, False
    return ProcDetails(pid=pid, start_ticks=before, exe=exe, cmdline=cmdline, cmdline_truncated=truncated)
