"""What the tamper rules must know about the agent and its pins (Settings fields).

The kernel side never judges the running agent (bpf/enforcer.bpf.c,
task_is_agent): it recognises it by its tgid and by its start time in clock
ticks, the unit of /proc/PID/stat's starttime (start_boottime divided by the
tick), so that a process that later gets the pid of an agent gone is not
taken for it. The pin directory is recognised by its bpffs's device number
and its inode number; the policy directory (the --policy file's, with its
allow.d) likewise, by its filesystem's super_block.s_dev, which mountinfo
gives (stat's st_dev is another number on btrfs: a subvolume's), and its
inode number, with the inode numbers of the directories above it on that
file system (renaming /etc away would put another /etc/enforcer in its place).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from enforcer import abi
from enforcer.mountinfo import MOUNTINFO_PATH, MountInfoError, kernel_dev, read_mount_table

log = logging.getLogger(__name__)

__all__ = ["AgentIdentity", "DirectoryIdentity", "NO_AGENT", "ancestors_below", "current",
           "directory_on_its_filesystem", "start_ticks", "with_policy_dir"]


@dataclass(frozen=True)
class AgentIdentity:
    tgid: int = 0
    start_ticks: int = 0
    tick_ns: int = 0
    pins_dev: int = 0  # super_block.s_dev (kernel encoding) of the pin directory's bpffs
    pins_ino: int = 0
    policy_dev: int = 0  # super_block.s_dev (kernel encoding) of the policy directory's filesystem
    policy_ino: int = 0
    #: inode numbers of the directories above it on its filesystem, nearest first
    policy_ancestors: Tuple[int, ...] = ()


#: Nothing to exempt, nothing pinned (the tamper rules then protect objects only).
NO_AGENT = AgentIdentity()


def start_ticks(stat_text: str) -> int:
    """Field 22 (starttime) of a /proc/PID/stat line; the command name (field
    2) may hold spaces and parentheses, so fields are counted after its last ')'."""
    after_comm = stat_text[stat_text.rindex(")") + 2:].split()
    return int(after_comm[19])  # field 22 is the 20th after the comm


@dataclass(frozen=True)
class DirectoryIdentity:
    """A directory as the kernel knows it: its file system, its inode, and
    the inodes of the directories above it on that file system."""

    dev: int = 0  # super_block.s_dev (kernel encoding); 0: unknown
    ino: int = 0
    ancestors: Tuple[int, ...] = ()  # nearest first, at most abi.POLICY_ANCESTORS


def ancestors_below(path: str, mount_point: str, limit: int = abi.POLICY_ANCESTORS) -> Tuple[str, ...]:
    """The directories above `path` (absolute, resolved) up to the mount
    point holding it, nearest first, `limit` at most. The mount point itself
    is not one: the root of a file system cannot be renamed, and a mount
    point cannot be in the namespace where it is one."""
    found = []
    parent = os.path.dirname(path)
    while len(found) < limit and parent != path and parent != mount_point and _below(parent, mount_point):
        found.append(parent)
        path, parent = parent, os.path.dirname(parent)
    return tuple(found)


def _below(path: str, mount_point: str) -> bool:
    return mount_point == "/" or path.startswith(mount_point + "/")


def directory_on_its_filesystem(directory: Path, mountinfo: str = MOUNTINFO_PATH) -> DirectoryIdentity:
    """`directory` as this process sees it; DirectoryIdentity() (nothing),
    said in the log, when it cannot be known."""
    try:
        real = os.path.realpath(directory)
        inode = os.stat(real).st_ino
        entry = read_mount_table(mountinfo).mount_of(real)
        ancestors = tuple(os.stat(above).st_ino for above in ancestors_below(real, entry.mount_point)) if entry else ()
    except (OSError, MountInfoError) as error:
        log.warning("the policy directory %s is not protected by tamper rules: %s", directory, error)
        return DirectoryIdentity()
    if entry is None:
        log.warning("the policy directory %s is not protected by tamper rules: no mount holds it", directory)
        return DirectoryIdentity()
    return DirectoryIdentity(entry.dev, inode, ancestors)


def with_policy_dir(identity: AgentIdentity, policy_dir: Optional[Path]) -> AgentIdentity:
    """`identity` naming `policy_dir` (looked up now: an administrator may
    have replaced it since) as the policy directory; None: none."""
    found = directory_on_its_filesystem(policy_dir) if policy_dir is not None else DirectoryIdentity()
    return dataclasses.replace(identity, policy_dev=found.dev, policy_ino=found.ino,
                               policy_ancestors=found.ancestors)


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
