"""Writing MapPlans into the kernel's policy maps: the first plan, and atomic reloads.

Every policy map holds two complete policies, one per policy slot
(abi.POLICY_SLOTS); `settings.active` names the one the hooks decide with, and
a hook reads it once per run (bpf/enforcer.h). A reload therefore never edits
the policy in force:

  1. write the whole new plan into the inactive slot (clean since the last
     reload), nothing else changes;
  2. write the settings with that slot's generation and watch flags, `active`
     unchanged;
  3. write the settings again with only `active` changed: the flip, one byte;
     `apply` returns here: the new policy is in force, the reload can be reported;
  4. wait for an RCU grace period (`barrier`): afterwards no hook run that
     read the old `active` is still going;
  5. clear the old slot, which is then the clean inactive slot.

Until step 3 the old policy is in force in full; from step 3 on the new one
is, in full. A failure before the flip removes what was written and keeps the
old policy; a failure while clearing leaves keys that are retried (and must
succeed) before the next reload writes into that slot.

Steps 4 and 5 (`retire`) are the agent's to run once it has reported the
reload: no one waits on the grace period (15 ms measured in the emulated test
VM) nor on the clearing (one bpf(2) call per entry of the old policy). The
next `apply` retires first if that has not happened, so a slot is never
written while a hook run may still read it.

Separate from the loader so that the protocol is tested without a kernel: the
bpf(2) calls come from an injectable object with bpfsys's
`map_update`/`map_delete` signatures, and the barrier is a callable.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Callable, Hashable, List, Optional, Tuple

from enforcer import abi
from enforcer.kernel import bpfsys
from enforcer.kernel.selfid import NO_AGENT, AgentIdentity
from enforcer.plan import POLICY_MAPS, MapPlan, PlanDiff, diff, encode_key, encode_value
from enforcer.registry import MAPS_BY_NAME

log = logging.getLogger(__name__)

_Entry = Tuple[str, Hashable]  # (map name, MapPlan key)


class CapacityError(ValueError):
    """A plan has more entries for a map than one policy slot of the kernel map holds."""


class ReloadError(RuntimeError):
    """A new plan could not be applied; the previous one is still in force."""


def check_capacity(plan: MapPlan) -> None:
    for name in POLICY_MAPS:
        capacity = MAPS_BY_NAME[name].capacity
        size = len(plan.maps.get(name, {}))
        if size > capacity:
            raise CapacityError(f"policy needs {size} entries in map {name}, the kernel map holds {capacity}")


def _entries(plan: MapPlan) -> List[_Entry]:
    return [(name, key) for name in POLICY_MAPS for key in plan.maps.get(name, {})]


def key_slot(key: ctypes.Structure) -> int:
    """The policy slot of a raw hash or LPM map key."""
    if isinstance(key, abi.LpmKey):
        return abi.slot_of_namespace(key.data[0])
    if isinstance(key, abi.FsTypeKey):
        return abi.slot_of_namespace(key.ns)
    if isinstance(key, (abi.UidKey, abi.DevKey)):
        return int(key.slot)
    raise TypeError(f"no policy slot in a {type(key).__name__} key")


class PolicyMaps:
    def __init__(
        self,
        fd_of: Callable[[str], int],
        host_mntns: int,
        barrier: Callable[[], None],
        syscalls=bpfsys,
        agent: AgentIdentity = NO_AGENT,
    ) -> None:
        self._fd_of = fd_of
        self.agent = agent  # written into every settings value (the tamper rules)
        self._sys = syscalls
        self._barrier = barrier
        self.host_mntns = host_mntns
        self.active = 0
        self.generations = [0] * abi.POLICY_SLOTS  # generation held by each slot (0: none)
        self._watch = [0] * abi.POLICY_SLOTS
        self._leftovers: List[Tuple[int, _Entry]] = []  # (slot, entry) a clear could not remove
        self._retiring: Optional[Tuple[int, List[_Entry]]] = None  # the old slot of a reload, and its entries

    @property
    def generation(self) -> int:
        """Generation of the policy in force."""
        return self.generations[self.active]

    # --- single entries -----------------------------------------------------------

    def write(self, name: str, key: Hashable, value: Hashable, slot: int) -> None:
        self._sys.map_update(self._fd_of(name), encode_key(key, slot), encode_value(value), what=f"map {name}")

    def remove(self, name: str, key: Hashable, slot: int) -> None:
        spec = MAPS_BY_NAME[name]
        encoded = encode_key(key, slot)
        if spec.is_array:  # arrays cannot delete keys
            self._sys.map_update(self._fd_of(name), encoded, spec.removed_value(), what=f"map {name}")
        else:
            self._sys.map_delete(self._fd_of(name), encoded, what=f"map {name}")

    def _write_settings(self) -> None:
        agent = self.agent
        settings = abi.Settings(
            host_mntns=self.host_mntns, active=self.active, agent_tgid=agent.tgid,
            agent_start_ticks=agent.start_ticks, tick_ns=agent.tick_ns, pins_dev=agent.pins_dev,
            pins_ino=agent.pins_ino, policy_dev=agent.policy_dev, policy_ino=agent.policy_ino,
        )
        for slot in range(abi.POLICY_SLOTS):
            settings.generation[slot] = self.generations[slot]
            settings.watch[slot] = self._watch[slot]
        for index, ancestor in enumerate(agent.policy_ancestors[:abi.POLICY_ANCESTORS]):
            settings.policy_ancestors[index] = ancestor
        self._sys.map_update(self._fd_of("settings"), ctypes.c_uint32(0), settings, what="map settings")

    def _write_plan(self, plan: MapPlan, slot: int) -> None:
        """Write every entry of `plan` into `slot`; on failure remove what was written, then raise."""
        written: List[_Entry] = []
        try:
            for name, key in _entries(plan):
                self.write(name, key, plan.maps[name][key], slot)
                written.append((name, key))
        except (OSError, ValueError):
            self._clear(slot, written)
            raise

    def _clear(self, slot: int, entries: List[_Entry]) -> None:
        """Remove `entries` from `slot`; what cannot be removed is kept for a retry."""
        for name, key in entries:
            try:
                self.remove(name, key, slot)
            except (OSError, ValueError) as error:
                log.error("could not clear %s entry %r of policy slot %d: %s", name, key, slot, error)
                self._leftovers.append((slot, (name, key)))

    def _retry_leftovers(self, slot: int) -> None:
        pending = [entry for s, entry in self._leftovers if s == slot]
        self._leftovers = [(s, entry) for s, entry in self._leftovers if s != slot]
        self._clear(slot, pending)
        if any(s == slot for s, _ in self._leftovers):
            raise ReloadError(
                f"policy slot {slot} still holds entries of an old policy that could not be removed; "
                "previous policy kept (restart the agent to start from clean maps)"
            )

    # --- a slot as the kernel holds it (adoption) -----------------------------------------

    def _clear_slot_in_kernel(self, slot: int) -> None:
        """Empty `slot` of every policy map, whatever wrote it: read from the
        kernel, not from a plan (an adopted instance's plan is not known, and
        its agent may have died halfway through a reload)."""
        for name in POLICY_MAPS:
            spec = MAPS_BY_NAME[name]
            fd = self._fd_of(name)
            if spec.is_array:
                per_slot = spec.size_value // abi.POLICY_SLOTS
                for index in range(slot * per_slot, (slot + 1) * per_slot):
                    self._sys.map_update(fd, ctypes.c_uint32(index), spec.removed_value(), what=f"map {name}")
                continue
            for key in self._sys.map_keys(fd, spec.key, what=f"map {name}"):
                if key_slot(key) == slot:
                    self._sys.map_delete(fd, key, what=f"map {name}")

    def adopt(self, plan: MapPlan) -> None:
        """Bring maps a previous agent filled (its pinned instance) to `plan`,
        through the reload transaction: the previous policy stays in force
        until the flip, `plan` is in force from it; no window either way.

        Raises ReloadError (the previous policy still in force) or OSError.
        """
        try:
            check_capacity(plan)
        except CapacityError as error:
            raise ReloadError(str(error)) from error
        settings = abi.Settings()
        if not self._sys.map_lookup(self._fd_of("settings"), ctypes.c_uint32(0), settings, what="map settings"):
            raise ReloadError("the pinned settings map is empty")
        previous = int(settings.active)
        if previous not in range(abi.POLICY_SLOTS):
            raise ReloadError(f"the pinned settings name policy slot {previous}")
        self.active = previous
        self.generations = [int(g) for g in settings.generation]
        self._watch = [int(w) for w in settings.watch]
        target = 1 - previous
        try:
            self._clear_slot_in_kernel(target)  # what a reload cut short may have left there
            self._write_plan(plan, target)
        except (OSError, ValueError) as error:
            raise ReloadError(f"writing the policy into the adopted maps failed: {error}") from error
        self.generations[target] = max(self.generations) + 1
        self._watch[target] = plan.watch
        self._write_settings()  # stage
        self.active = target
        self._write_settings()  # the flip
        self._barrier()
        self._clear_slot_in_kernel(previous)
        self.generations[previous] = 0
        self._watch[previous] = 0

    # --- whole plans ------------------------------------------------------------------

    def fill(self, plan: MapPlan) -> None:
        """Write the first plan, as generation 1 in slot 0 (before the programs are attached)."""
        check_capacity(plan)
        self._write_plan(plan, 0)
        self.active = 0
        self.generations[0] = 1
        self._watch[0] = plan.watch
        self._write_settings()

    def apply(self, old: MapPlan, new: MapPlan) -> PlanDiff:
        """Switch the kernel from `old` (in force) to `new` in one step; see the module docstring.

        Returns at the flip, `new` in force; the old slot waits for `retire`.
        """
        try:
            check_capacity(new)
        except CapacityError as error:
            raise ReloadError(f"new policy rejected, previous policy kept: {error}") from error
        self.retire()
        previous, target = self.active, 1 - self.active
        self._retry_leftovers(target)
        try:
            self._write_plan(new, target)
        except (OSError, ValueError) as error:
            raise ReloadError(f"applying the new policy failed, previous policy kept: {error}") from error
        staged_generation = max(self.generations) + 1
        self.generations[target] = staged_generation
        self._watch[target] = new.watch
        try:
            self._write_settings()  # stage: the inactive half only; `active` unchanged
            self.active = target
            self._write_settings()  # the flip
        except OSError as error:
            self.active = previous
            self.generations[target] = 0
            self._watch[target] = 0
            self._clear(target, _entries(new))
            raise ReloadError(f"switching to the new policy failed, previous policy kept: {error}") from error
        self._retiring = (previous, _entries(old))
        return diff(old, new)

    def retire(self) -> None:
        """Empty the slot the last `apply` flipped away from, once no hook run
        can still read it (steps 4 and 5); nothing to do when it is empty already.

        Raises ReloadError when the wait fails (the slot stays to retire: the
        next `apply` tries again, and refuses to write into it before)."""
        if self._retiring is None:
            return
        slot, entries = self._retiring
        try:
            self._barrier()  # no hook run still reads the old slot after this
        except OSError as error:
            raise ReloadError(f"waiting for hook runs on the old policy slot {slot} failed, previous policy "
                              f"kept: {error}") from error
        self._retiring = None
        self._clear(slot, entries)
        self.generations[slot] = 0
        self._watch[slot] = 0
