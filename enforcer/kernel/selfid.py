"""What the tamper rules must know about the agent and its pins (Settings fields).

The kernel side never judges the running agent (bpf/enforcer.bpf.c,
task_is_agent): it recognises it by its tgid and by its start time in clock
ticks, the unit of /proc/PID/stat's starttime (start_boottime divided by the
tick), so that a process that later gets the pid of an agent gone is not
taken for it. The pin directory is recognised by its bpffs's device number
and its inode number; the policy directory (the --policy file's, with its
allow.d) likewise, by its filesystem's super_block.s_dev, which mountinfo
gives (stat's st_dev is another number on btrfs: a subvolume's), and its
inode number.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from enforcer.mountinfo import MOUNTINFO_PATH, MountInfoError, kernel_dev, read_mount_table

log = logging.getLogger(__name__)

__all__ = ["AgentIdentity", "NO_AGENT", "current", "directory_on_its_filesystem", "start_ticks",
           "with_policy_dir"]


@dataclass(frozen=True)
class AgentIdentity:
    tgid: int = 0
    start_ticks: int = 0
    tick_ns: int = 0
    pins_dev: int = 0  # super_block.s_dev (kernel encoding) of the pin directory's bpffs
    pins_ino: int = 0
    policy_dev: int = 0  # super_block.s_dev (kernel encoding) of the policy directory's filesystem
    policy_ino: int = 0


#: Nothing to exempt, nothing pinned (the tamper rules then protect objects only).
NO_AGENT = AgentIdentity()


def start_ticks(stat_text: str) -> int:
    """Field 22 (starttime) of a /proc/PID/stat line; the command name (field
    2) may hold spaces and parentheses, so fields are counted after its last ')'."""
    after_comm = stat_text[stat_text.rindex(")") + 2:].split()
    return int(after_comm[19])  # field 22 is the 20th after the comm


def directory_on_its_filesystem(directory: Path, mountinfo: str = MOUNTINFO_PATH) -> Tuple[int, int]:
    """(super_block.s_dev, inode number) of `directory` as this process sees
    it; (0, 0), said in the log, when either cannot be known."""
    try:
        inode = os.stat(directory).st_ino
        entry = read_mount_table(mountinfo).mount_of(os.path.realpath(directory))
    except (OSError, MountInfoError) as error:
        log.warning("the policy directory %s is not protected by tamper rules: %s", directory, error)
        return 0, 0
    if entry is None:
        log.warning("the policy directory %s is not protected by tamper rules: no mount holds it", directory)
        return 0, 0
    return entry.dev, inode


def with_policy_dir(identity: AgentIdentity, policy_dir: Optional[Path]) -> AgentIdentity:
    """`identity` naming `policy_dir` (looked up now: an administrator may
    have replaced it since) as the policy directory; None: none."""
    dev, inode = directory_on_its_filesystem(policy_dir) if policy_dir is not None else (0, 0)
    return dataclasses.replace(identity, policy_dev=dev, policy_ino=inode)


def current(pin_dir: Optional[Path], policy_dir: Optional[Path] = None) -> AgentIdentity:
    """This process's identity, `pin_dir`'s (None or missing: not pinned) and
    `policy_dir`'s (None: none)."""
    pins_dev = pins_ino = 0
    if pin_dir is not None:
        try:
            st = os.stat(pin_dir)
        except FileNotFoundError:
            pass
        else:
            pins_dev = kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))
            pins_ino = st.st_ino
    return with_policy_dir(AgentIdentity(
        tgid=os.getpid(),
        start_ticks=start_ticks(Path("/proc/self/stat").read_text()),
        tick_ns=1_000_000_000 // os.sysconf("SC_CLK_TCK"),
        pins_dev=pins_dev,
        pins_ino=pins_ino,
    ), policy_dir)
