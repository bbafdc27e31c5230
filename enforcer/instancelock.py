"""One agent at a time: an exclusive lock held for the agent's whole life.

`enforcer run` takes an flock on <state dir>/agent.lock (/run/enforcer, the
unit's RuntimeDirectory) and writes its pid there. The kernel releases the
lock when the process dies however it dies, so a stale file never blocks a
restart and never passes for a live agent: `enforcer status` asks the lock,
not the file, whether an agent runs.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LOCK_FILE = "agent.lock"


class AgentAlreadyRunning(Exception):
    def __init__(self, path: Path, pid: Optional[int]) -> None:
        who = f"pid {pid}" if pid else "a process whose pid is not recorded"
        super().__init__(
            f"another enforcer agent is running ({who}, holding {path}); stop it first "
            "(systemctl stop enforcer, or end that process): two agents would load two sets of programs")
        self.pid = pid


@dataclass
class AgentLock:
    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock


def acquire(state_dir: Path) -> AgentLock:
    """The lock, or AgentAlreadyRunning naming the holder. Never blocks."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _recorded_pid(fd)
        os.close(fd)
        raise AgentAlreadyRunning(path, pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return AgentLock(path, fd)


def running_agent(state_dir: Path) -> Optional[int]:
    """The pid of the live agent holding the lock (0 if it recorded none), None if no agent runs."""
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _recorded_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _recorded_pid(fd: int) -> Optional[int]:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
