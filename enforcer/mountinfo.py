"""Where a directory lives: its filesystem and its path inside it, from mountinfo.

The exec rules list places by name (/tmp, /dev/shm). The kernel sees a file by
the name the executing task used, and names lie: a chroot, a bind mount or a
detached mount clone (open_tree) reaches a file in /tmp under another name.
What does not change is the filesystem the file is on (its superblock's
device number) and its path inside that filesystem. This module turns a
listed place into that pair, from the host's mount table (PID 1's,
`host_mountinfo_path`), so that the compiler can
give the kernel a second key per place (enforcer.kinds.exec_places).
Pure apart from `read_mount_table`; proc(5) documents the format.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

__all__ = ["MountEntry", "MountTable", "Location", "MountInfoError", "parse_mountinfo", "read_mount_table", "kernel_dev",
           "host_mountinfo_path"]

MOUNTINFO_PATH = "/proc/self/mountinfo"
#: The host's mount table: PID 1's. The agent's own namespace differs from it
#: under systemd's sandbox (PrivateTmp= binds a private directory on /tmp,
#: PrivateDevices= mounts a /dev of its own) and in a DaemonSet's container
#: (hostPID shows the host's PID 1): /tmp located there would be a private
#: directory, not the host's /tmp. Reading it takes what reading
#: /proc/1/ns/mnt takes (CAP_SYS_PTRACE, which the unit keeps for that).
HOST_MOUNTINFO_PATH = "/proc/1/mountinfo"

log = logging.getLogger(__name__)

# Mount points and roots escape space, tab, newline and backslash as \ooo.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def kernel_dev(major: int, minor: int) -> int:
    """A device number as the kernel keeps it in `super_block.s_dev` (MKDEV)."""
    return (major << 20) | minor


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str  # path inside the filesystem that is mounted here ("/" for a whole filesystem)
    mount_point: str
    fstype: str

    @property
    def dev(self) -> int:
        return kernel_dev(self.major, self.minor)


@dataclass(frozen=True)
class Location:
    """A directory as (filesystem, path inside it)."""

    dev: int  # kernel encoding, see kernel_dev
    path: str  # absolute, inside the filesystem; "/" is its root
    fstype: str


def _contains(mount_point: str, path: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point + "/")


@dataclass(frozen=True)
class MountTable:
    entries: Tuple[MountEntry, ...]

    def mount_of(self, path: str) -> Optional[MountEntry]:
        """The mount that `path` (absolute, normalised) is reached through: the
        deepest mount point containing it; of several mounts on one point the
        last listed, which is the one on top."""
        best: Optional[MountEntry] = None
        for entry in self.entries:
            if _contains(entry.mount_point, path) and (
                best is None or len(entry.mount_point) >= len(best.mount_point)
            ):
                best = entry
        return best

    def locate(self, path: str) -> Optional[Location]:
        """Where the directory `path` lives (whether or not it exists yet)."""
        entry = self.mount_of(path)
        if entry is None:
            return None
        rest = path[len(entry.mount_point):] if entry.mount_point != "/" else path
        inside = (entry.root.rstrip("/") + rest) or "/"
        return Location(dev=entry.dev, path=inside, fstype=entry.fstype)


class MountInfoError(ValueError):
    """A mountinfo line that does not have the documented shape."""


def parse_mountinfo(text: str, origin: str = MOUNTINFO_PATH) -> MountTable:
    entries = []
    # "\n" only: str.splitlines() also splits on \x0b, \x0c, \x1c-\x1e and
    # U+2028, which the kernel leaves unescaped in a mount point's path, so
    # one strange mount would have made the whole table unreadable
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major=int(major),
                    minor=int(minor),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    fstype=fields[separator + 1],
                )
            )
        except (ValueError, IndexError) as exc:
            raise MountInfoError(f"{origin}:{number}: not a mountinfo line ({exc}): {line!r}") from None
    return MountTable(tuple(entries))


def host_mountinfo_path(host: str = HOST_MOUNTINFO_PATH, own: str = MOUNTINFO_PATH) -> str:
    """PID 1's mountinfo when this process may read it; else its own, said
    loudly (places are then located as this process's namespace sees them)."""
    try:
        os.close(os.open(host, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as error:
        log.warning("cannot read the host's mount table (%s): exec places are located from this process's own "
                    "mount namespace, which differs from the host's under a sandbox such as PrivateTmp=", error)
        return own
    return host


def read_mount_table(path: Optional[str] = None) -> MountTable:
    """The host's mount table (host_mountinfo_path), or the one at `path`."""
    path = path or host_mountinfo_path()
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read(), path)


