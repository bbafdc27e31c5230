"""Writing MapPlans into the kernel's policy maps: whole plans, and reload diffs.

Separate from the loader so that the reload transaction (ordering and undo)
is tested without a kernel: the bpf(2) calls come from an injectable object
with bpfsys's `map_update`/`map_delete` signatures.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Callable, Hashable, List

from enforcer import abi
from enforcer.kernel import bpfsys
from enforcer.plan import POLICY_MAPS, MapPlan, PlanDiff, diff, encode_key, encode_value
from enforcer.registry import MAPS_BY_NAME


class CapacityError(ValueError):
    """A plan has more entries for a map than the kernel map holds."""


class ReloadError(RuntimeError):
    """A new plan could not be applied; the previous one is still in force."""


def check_capacity(plan: MapPlan) -> None:
    for name in POLICY_MAPS:
        capacity = MAPS_BY_NAME[name].capacity
        size = len(plan.maps.get(name, {}))
        if size > capacity:
            raise CapacityError(f"policy needs {size} entries in map {name}, the kernel map holds {capacity}")


@dataclass
class _UndoLog:
    steps: List[Callable[[], None]] = field(default_factory=list)

    def rollback(self) -> None:
        for step in reversed(self.steps):
            step()


class PolicyMaps:
    def __init__(self, fd_of: Callable[[str], int], host_mntns: int, syscalls=bpfsys) -> None:
        self._fd_of = fd_of
        self._sys = syscalls
        self.host_mntns = host_mntns

    def write(self, name: str, key: Hashable, value: Hashable) -> None:
        self._sys.map_update(self._fd_of(name), encode_key(key), encode_value(value), what=f"map {name}")

    def remove(self, name: str, key: Hashable) -> None:
        spec = MAPS_BY_NAME[name]
        if spec.is_array:  # arrays cannot delete keys
            self._sys.map_update(self._fd_of(name), encode_key(key), spec.removed_value(), what=f"map {name}")
        else:
            self._sys.map_delete(self._fd_of(name), encode_key(key), what=f"map {name}")

    def write_settings(self, watch: int) -> None:
        settings = abi.Settings(host_mntns=self.host_mntns, watch=watch)
        self._sys.map_update(self._fd_of("settings"), ctypes.c_uint32(0), settings, what="map settings")

    def fill(self, plan: MapPlan) -> None:
        """Write a whole plan into empty maps (before the programs are attached)."""
        check_capacity(plan)
        for name in POLICY_MAPS:
            for key, value in plan.maps.get(name, {}).items():
                self.write(name, key, value)
        self.write_settings(plan.watch)

    def apply(self, old: MapPlan, new: MapPlan) -> PlanDiff:
        """Change live maps from `old` to `new`, touching only what differs.

        Rules first (a slot must never name a rule number not configured yet),
        then additions and changes, then deletions, then the watch flags. On
        any failure every write already made is undone, so the old plan stays
        in force, and ReloadError says why.
        """
        try:
            check_capacity(new)
        except CapacityError as error:
            raise ReloadError(f"new policy rejected, previous policy kept: {error}") from error
        changes = diff(old, new)
        undo = _UndoLog()
        try:
            for name in ("rules",) + tuple(n for n in POLICY_MAPS if n != "rules"):
                before = old.maps.get(name, {})
                map_diff = changes.maps[name]
                for key, value in list(map_diff.added.items()) + list(map_diff.changed.items()):
                    self.write(name, key, value)
                    if key in before:
                        undo.steps.append(lambda n=name, k=key, v=before[key]: self.write(n, k, v))
                    else:
                        undo.steps.append(lambda n=name, k=key: self.remove(n, k))
            for name in POLICY_MAPS:
                before = old.maps.get(name, {})
                for key in changes.maps[name].deleted:
                    self.remove(name, key)
                    undo.steps.append(lambda n=name, k=key, v=before[key]: self.write(n, k, v))
            if changes.watch_changed:
                self.write_settings(new.watch)
                undo.steps.append(lambda: self.write_settings(old.watch))
        except (OSError, ValueError) as error:
            undo.rollback()
            raise ReloadError(f"applying the new policy failed, previous policy kept: {error}") from error
        return changes
