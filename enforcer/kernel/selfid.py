"""What the tamper rules must know about the agent and its pins (Settings fields).

The kernel side never judges the running agent (bpf/enforcer.bpf.c,
task_is_agent): it recognises it by its tgid and by its start time in clock
ticks, the unit of /proc/PID/stat's starttime (start_boottime divided by the
tick), so that a process that later gets the pid of an agent gone is not
taken for it. The pin directory is recognised by its bpffs's device number
and its inode number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from enforcer.mountinfo import kernel_dev

__all__ = ["AgentIdentity", "NO_AGENT", "current", "start_ticks"]


@dataclass(frozen=True)
class AgentIdentity:
    tgid: int = 0
    start_ticks: int = 0
    tick_ns: int = 0
    pins_dev: int = 0  # super_block.s_dev (kernel encoding) of the pin directory's bpffs
    pins_ino: int = 0


#: Nothing to exempt, nothing pinned (the tamper rules then protect objects only).
NO_AGENT = AgentIdentity()


def start_ticks(stat_text: str) -> int:
    """Field 22 (starttime) of a /proc/PID/stat line; the command name (field
    2) may hold spaces and parentheses, so fields are counted after its last ')'."""
    after_comm = stat_text[stat_text.rindex(")") + 2:].split()
    return int(after_comm[19])  # field 22 is the 20th after the comm


def current(pin_dir: Optional[Path]) -> AgentIdentity:
    """This process's identity, and `pin_dir`'s (None or missing: not pinned)."""
    pins_dev = pins_ino = 0
    if pin_dir is not None:
        try:
            st = os.stat(pin_dir)
        except FileNotFoundError:
            pass
        else:
            pins_dev = kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))
            pins_ino = st.st_ino
    return AgentIdentity(
        tgid=os.getpid(),
        start_ticks=start_ticks(Path("/proc/self/stat").read_text()),
        tick_ns=1_000_000_000 // os.sysconf("SC_CLK_TCK"),
        pins_dev=pins_dev,
        pins_ino=pins_ino,
    )
