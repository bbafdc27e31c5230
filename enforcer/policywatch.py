"""Notice that the policy files were replaced, for a reload without SIGHUP.

Kubernetes mounts a ConfigMap as a directory of symlinks: each key
(`policy.toml`, `allow.d`) points into `..data`, itself a symlink to a
timestamped directory (`..2026_12_07_01_02_03.123456789`). An update writes a
new timestamped directory and renames a new `..data` over the old one: one
atomic swap, after which every file resolves to the new content. No process
is told; the agent must look.

The watch compares a fingerprint of what the policy resolves to: the real
path, inode, size and modification time of the policy file, of its allow.d
directory and of every file in it. A swap changes the real paths, an edit in
place changes the rest; both give a new fingerprint. Nothing is parsed here:
the agent reloads through the same transaction as SIGHUP
(enforcer.daemon.Agent.reload), which keeps the previous policy when the new
one does not parse, compile or load.

A fingerprint is taken only once the files are still for one look: Kubernetes
(and an editor) may be half way through, and a reload of a half-written set
would be rejected for no fault of the operator's. A new fingerprint is acted
on when two successive looks agree on it.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

__all__ = ["KUBERNETES_DATA_LINK", "PolicyWatch", "WatchMode", "fingerprint", "is_kubernetes_volume"]

#: The symlink Kubernetes' atomic writer swaps in a ConfigMap or Secret volume.
KUBERNETES_DATA_LINK = "..data"

#: One file as seen: (real path, inode, size, mtime in ns); a missing one is (path, None...)
FileView = Tuple[str, Optional[int], Optional[int], Optional[int]]


class WatchMode(enum.Enum):
    """`enforcer run --watch-policy`: auto watches only a Kubernetes-mounted policy."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


def is_kubernetes_volume(policy_path: Path) -> bool:
    """Whether the policy's directory is a ConfigMap/Secret volume (it has a `..data` symlink)."""
    return os.path.islink(os.path.join(os.path.dirname(os.path.abspath(policy_path)), KUBERNETES_DATA_LINK))


def _view(path: str) -> FileView:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return (real, None, None, None)
    return (real, st.st_ino, st.st_size, st.st_mtime_ns)


def fingerprint(policy_path: Path) -> Tuple[FileView, ...]:
    """What the policy and its allow.d resolve to now (enforcer.parse reads allow.d beside the policy)."""
    path = os.path.abspath(policy_path)
    allow_d = os.path.join(os.path.dirname(path), "allow.d")
    views = [_view(path), _view(allow_d)]
    try:
        names = sorted(os.listdir(allow_d))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    views.extend(_view(os.path.join(allow_d, name)) for name in names)
    return tuple(views)


@dataclass
class PolicyWatch:
    """Asked periodically by the agent's scheduler; `changed()` is True once per settled change."""

    policy_path: Path

    def __post_init__(self) -> None:
        self._in_force = fingerprint(self.policy_path)
        self._candidate: Optional[Tuple[FileView, ...]] = None

    def changed(self) -> bool:
        now = fingerprint(self.policy_path)
        if now == self._in_force:
            self._candidate = None
            return False
        if now != self._candidate:  # first sight, or still moving: look again next time
            self._candidate = now
            return False
        self._in_force = now
        self._candidate = None
        return True

    def reset(self) -> None:
        """The files were read by another reload (SIGHUP): that is the state to compare with."""
        self._in_force = fingerprint(self.policy_path)
        self._candidate = None

    @classmethod
    def for_mode(cls, mode: WatchMode, policy_path: Path) -> Optional["PolicyWatch"]:
        if mode is WatchMode.OFF or (mode is WatchMode.AUTO and not is_kubernetes_volume(policy_path)):
            return None
        return cls(policy_path)
