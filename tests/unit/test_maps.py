"""The atomic reload of PolicyMaps, against a fake bpf(2): the new policy is
written beside the old one, one byte flips, the old one is cleared after a
grace period; failures keep the old policy whole; capacity is checked first."""

from __future__ import annotations

import ctypes
import errno
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from enforcer import abi
from enforcer.compile import compile_policy
from enforcer.kernel.maps import PolicyMaps, ReloadError
from enforcer.parse import loads_policy
from enforcer.plan import POLICY_MAPS, MapPlan, RuleIndex, RuleValue, encode_key, encode_value

FDS = {name: number for number, name in enumerate(("settings",) + POLICY_MAPS, start=10)}
NAMES = {number: name for name, number in FDS.items()}
SETTINGS_KEY = bytes(ctypes.c_uint32(0))


def slot_of(name: str, key: bytes) -> int:
    """Which policy slot an encoded key belongs to (the inverse of plan.encode_key)."""
    if name == "rules":
        return ctypes.c_uint32.from_buffer_copy(key).value // (abi.MAX_RULES + 1)
    if name == "targets":
        return ctypes.c_uint32.from_buffer_copy(key).value // abi.TARGET_SLOTS
    if name == "allow_uid":
        return abi.UidKey.from_buffer_copy(key).slot
    if name == "exec_fstypes":
        return abi.FsTypeKey.from_buffer_copy(key).ns >> 1
    return abi.LpmKey.from_buffer_copy(key).data[0] >> 1


class FakeBpf:
    """Maps as dicts of bytes; fails the update or delete whose number is given."""

    def __init__(self) -> None:
        self.maps: Dict[str, Dict[bytes, bytes]] = {name: {} for name in FDS}
        self.log: List[Tuple[str, str]] = []
        self.updates = 0
        self.deletes = 0
        self.fail_on_update = 0
        self.fail_on_delete = 0
        self.observer: Optional[Callable[[], None]] = None

    def map_update(self, fd: int, key: ctypes.Structure, value: ctypes.Structure, what: str = "") -> None:
        self.updates += 1
        if self.updates == self.fail_on_update:
            raise OSError(errno.ENOMEM, "injected failure")
        self.maps[NAMES[fd]][bytes(key)] = bytes(value)
        self.log.append(("update", NAMES[fd]))
        if self.observer:
            self.observer()

    def map_delete(self, fd: int, key: ctypes.Structure, what: str = "") -> bool:
        self.deletes += 1
        if self.deletes == self.fail_on_delete:
            raise OSError(errno.EBUSY, "injected delete failure")
        self.log.append(("delete", NAMES[fd]))
        found = self.maps[NAMES[fd]].pop(bytes(key), None) is not None
        if self.observer:
            self.observer()
        return found

    def map_lookup(self, fd: int, key: ctypes.Structure, value: ctypes.Structure, what: str = "") -> bool:
        raw = self.maps[NAMES[fd]].get(bytes(key))
        if raw is None:
            return False
        ctypes.memmove(ctypes.addressof(value), raw, len(raw))
        return True

    def map_keys(self, fd: int, key_type: type, what: str = "") -> List[ctypes.Structure]:
        return [key_type.from_buffer_copy(raw) for raw in self.maps[NAMES[fd]]]

    def settings(self) -> abi.Settings:
        return abi.Settings.from_buffer_copy(self.maps["settings"][SETTINGS_KEY])

    def slot_contents(self, slot: int) -> Dict[str, Dict[bytes, bytes]]:
        """Entries of one policy slot; zeroed array entries count as absent."""
        return {
            name: {k: v for k, v in self.maps[name].items() if slot_of(name, k) == slot and any(v)}
            for name in POLICY_MAPS
        }


def expected_contents(plan: MapPlan, slot: int) -> Dict[str, Dict[bytes, bytes]]:
    return {
        name: {bytes(encode_key(k, slot)): bytes(encode_value(v)) for k, v in plan.maps.get(name, {}).items()
               if any(bytes(encode_value(v)))}
        for name in POLICY_MAPS
    }


BASE = """
version = 1
[[rule]]
id = "sysrq"
kind = "sysrq"
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/tmp"]
filesystems = ["ramfs"]
[rule.allow]
uid = [1000]
exe = ["/usr/bin/ok"]
"""

# The same protections, renumbered and re-moded: the reload that let attempts
# through when maps were edited entry by entry.
CHANGED = """
version = 1
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/tmp", "/var/tmp"]
[[rule]]
id = "sysrq"
kind = "sysrq"
mode = "audit"
"""


def plan(text: str) -> MapPlan:
    return compile_policy(loads_policy(text, "test.toml"))


class Barrier:
    def __init__(self, fake: FakeBpf) -> None:
        self.fake = fake
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.fake.log.append(("barrier", ""))


def loaded(fake: FakeBpf, text: str) -> PolicyMaps:
    maps = PolicyMaps(FDS.__getitem__, host_mntns=4026531841, barrier=Barrier(fake), syscalls=fake)
    maps.fill(plan(text))
    return maps


def test_fill_writes_generation_one_into_slot_zero() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    assert fake.slot_contents(0) == expected_contents(plan(BASE), 0)
    assert fake.slot_contents(1) == expected_contents(MapPlan(maps={}, watch=0), 1)
    settings = fake.settings()
    assert (settings.active, settings.generation[0], maps.generation) == (0, 1, 1)
    assert settings.host_mntns == 4026531841
    assert settings.watch[0] == int(abi.Watch.PROC_WRITE | abi.Watch.EXEC)


def test_reload_switches_slots_and_leaves_the_old_one_empty() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    maps.apply(plan(BASE), plan(CHANGED))
    maps.retire()
    assert fake.settings().active == 1 and maps.generation == 2
    assert fake.slot_contents(1) == expected_contents(plan(CHANGED), 1)
    assert fake.slot_contents(0) == expected_contents(MapPlan(maps={}, watch=0), 0)
    maps.apply(plan(CHANGED), plan(BASE))
    maps.retire()
    assert fake.settings().active == 0 and maps.generation == 3
    assert fake.slot_contents(0) == expected_contents(plan(BASE), 0)
    assert fake.slot_contents(1) == expected_contents(MapPlan(maps={}, watch=0), 1)


def test_apply_returns_at_the_flip_and_the_next_apply_retires_the_old_slot_first() -> None:
    """The old slot keeps the old policy (no hook reads it after the flip)
    until `retire`; a reload that comes first retires it before it writes."""
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    barrier: Barrier = maps._barrier  # type: ignore[assignment]
    maps.apply(plan(BASE), plan(CHANGED))
    assert barrier.calls == 0 and fake.settings().active == 1
    assert fake.slot_contents(0) == expected_contents(plan(BASE), 0)
    fake.log.clear()
    maps.apply(plan(CHANGED), plan(THIRD))
    barrier_at = fake.log.index(("barrier", ""))
    first_write_to_slot_0 = next(i for i, (op, name) in enumerate(fake.log) if op == "update" and name != "rules")
    assert barrier.calls == 1 and barrier_at < first_write_to_slot_0
    assert fake.slot_contents(0) == expected_contents(plan(THIRD), 0)
    assert fake.slot_contents(1) == expected_contents(plan(CHANGED), 1)  # retired by the next retire
    maps.retire()
    maps.retire()  # nothing left: no second wait
    assert barrier.calls == 2
    assert fake.slot_contents(1) == expected_contents(MapPlan(maps={}, watch=0), 1)


def test_a_failed_wait_leaves_the_slot_to_retire_and_refuses_to_write_into_it() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    maps.apply(plan(BASE), plan(CHANGED))

    def failing() -> None:
        raise OSError(4, "Interrupted system call")

    maps._barrier = failing
    with pytest.raises(ReloadError, match="old policy slot 0 failed, previous policy kept"):
        maps.retire()
    writes_before = fake.updates
    with pytest.raises(ReloadError, match="old policy slot 0 failed, previous policy kept"):
        maps.apply(plan(CHANGED), plan(BASE))
    assert fake.updates == writes_before and fake.settings().active == 1
    maps._barrier = Barrier(fake)
    maps.apply(plan(CHANGED), plan(BASE))
    assert fake.settings().active == 0 and fake.slot_contents(0) == expected_contents(plan(BASE), 0)


def test_a_hook_sees_one_whole_policy_at_every_step_of_a_reload() -> None:
    """After every single bpf(2) call of a reload, the slot `active` names holds
    exactly the old or exactly the new policy, with that policy's watch flags."""
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    old, new = plan(BASE), plan(CHANGED)
    seen = observe_policy_in_force(fake, old, new)
    maps.apply(old, new)
    assert_old_then_new(seen)


def observe_policy_in_force(fake: FakeBpf, old: MapPlan, new: MapPlan) -> List[str]:
    """After each bpf(2) call on `fake`, note whether the slot in force holds
    exactly `old` or exactly `new` (with its watch flags), or a mixture."""
    seen: List[str] = []

    def observe() -> None:
        settings = fake.settings()
        slot = settings.active
        contents = fake.slot_contents(slot)
        if contents == expected_contents(old, slot) and settings.watch[slot] == old.watch:
            seen.append("old")
        elif contents == expected_contents(new, slot) and settings.watch[slot] == new.watch:
            seen.append("new")
        else:
            seen.append(f"MIXED after {fake.log[-1]}")

    fake.observer = observe
    return seen


def assert_old_then_new(seen: List[str]) -> None:
    assert seen and all(state in ("old", "new") for state in seen), seen
    flip = seen.index("new")
    assert set(seen[:flip]) == {"old"} and set(seen[flip:]) == {"new"}


def test_the_flip_changes_one_byte_and_clearing_waits_for_the_barrier() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    fake.log.clear()
    settings_values = []
    fake.observer = lambda: settings_values.append(fake.maps["settings"][SETTINGS_KEY])
    maps.apply(plan(BASE), plan(CHANGED))
    maps.retire()
    kinds = [entry for entry in fake.log if entry[1] == "settings" or entry[0] == "barrier"]
    assert kinds == [("update", "settings"), ("update", "settings"), ("barrier", "")]
    first_settings = fake.log.index(("update", "settings"))
    barrier = fake.log.index(("barrier", ""))
    assert all(op == "update" for op, _ in fake.log[:first_settings])  # only the new slot is written before
    assert all(op != "update" or name in ("rules", "targets") for op, name in fake.log[barrier + 1:])
    distinct = list(dict.fromkeys(settings_values))
    stage, flip = distinct[-2], distinct[-1]
    changed = [i for i, (a, b) in enumerate(zip(stage, flip)) if a != b]
    assert changed == [abi.Settings.active.offset]


@pytest.mark.parametrize("failing_update", [1, 2, 3, 5])
def test_a_failure_before_the_flip_keeps_the_old_policy_and_cleans_the_new_slot(failing_update: int) -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    before = fake.slot_contents(0)
    fake.fail_on_update = fake.updates + failing_update
    with pytest.raises(ReloadError, match="previous policy kept: .*injected failure"):
        maps.apply(plan(BASE), plan(CHANGED))
    assert fake.settings().active == 0 and maps.generation == 1
    assert fake.slot_contents(0) == before
    assert fake.slot_contents(1) == expected_contents(MapPlan(maps={}, watch=0), 1)


def test_a_failed_flip_keeps_the_old_policy() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    entries = sum(len(v) for v in plan(CHANGED).maps.values())
    fake.fail_on_update = fake.updates + entries + 2  # staging works, the flip fails
    with pytest.raises(ReloadError, match="switching to the new policy failed, previous policy kept"):
        maps.apply(plan(BASE), plan(CHANGED))
    assert fake.settings().active == 0 and maps.generation == 1
    assert fake.slot_contents(0) == expected_contents(plan(BASE), 0)
    assert fake.slot_contents(1) == expected_contents(MapPlan(maps={}, watch=0), 1)


def test_old_entries_that_could_not_be_cleared_are_retried_before_the_slot_is_reused() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    fake.fail_on_delete = 1
    maps.apply(plan(BASE), plan(CHANGED))  # in force
    maps.retire()  # one old entry is left in slot 0
    assert maps.generation == 2
    assert fake.slot_contents(0) != expected_contents(MapPlan(maps={}, watch=0), 0)
    maps.apply(plan(CHANGED), plan(BASE))  # the retry removes it before slot 0 is written
    assert fake.slot_contents(0) == expected_contents(plan(BASE), 0)


def test_a_slot_that_cannot_be_cleaned_refuses_the_next_reload() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    fake.fail_on_delete = 1
    maps.apply(plan(BASE), plan(CHANGED))
    maps.retire()
    fake.fail_on_delete = fake.deletes + 1  # the retry fails too
    writes_before = fake.updates
    with pytest.raises(ReloadError, match="could not be removed; previous policy kept"):
        maps.apply(plan(CHANGED), plan(BASE))
    assert fake.updates == writes_before and fake.settings().active == 1


def test_removed_array_entries_are_zeroed_not_deleted() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    maps.apply(plan(BASE), plan(CHANGED))
    maps.retire()
    assert fake.maps["rules"][bytes(ctypes.c_uint32(abi.rule_index(0, 2)))] == bytes(abi.RuleConfig())
    assert ("delete", "rules") not in fake.log and ("delete", "targets") not in fake.log


def test_plan_larger_than_a_map_is_refused_before_any_write() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    fake.log.clear()
    huge = MapPlan(maps={"rules": {RuleIndex(i): RuleValue(True) for i in range(abi.MAX_RULES + 2)}}, watch=0)
    with pytest.raises(ReloadError, match="map rules"):
        maps.apply(plan(BASE), huge)
    assert fake.log == []


# --- adoption: a new agent takes over the maps of a dead one's pinned instance ---------

THIRD = """
version = 1
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/dev/shm"]
[rule.allow]
uid = [2000]
"""


def adopter(fake: FakeBpf) -> PolicyMaps:
    return PolicyMaps(FDS.__getitem__, host_mntns=4026531841, barrier=Barrier(fake), syscalls=fake)


@pytest.mark.parametrize("reloads", [0, 1])
def test_adoption_brings_the_pinned_maps_to_the_new_policy_through_a_flip(reloads: int) -> None:
    fake = FakeBpf()
    dead = loaded(fake, BASE)
    if reloads:
        dead.apply(plan(BASE), plan(CHANGED))
    before = fake.settings()
    maps = adopter(fake)
    maps.adopt(plan(THIRD))
    settings = fake.settings()
    assert settings.active == 1 - before.active
    assert maps.generation == max(before.generation) + 1 == settings.generation[settings.active]
    assert fake.slot_contents(settings.active) == expected_contents(plan(THIRD), settings.active)
    assert fake.slot_contents(before.active) == expected_contents(MapPlan(maps={}, watch=0), before.active)
    # and the adopter reloads normally afterwards
    maps.apply(plan(THIRD), plan(BASE))
    assert fake.slot_contents(fake.settings().active) == expected_contents(plan(BASE), fake.settings().active)


def test_adoption_clears_what_a_reload_cut_short_left_in_the_inactive_slot() -> None:
    fake = FakeBpf()
    loaded(fake, BASE)  # slot 0 in force
    # the dead agent had written half of a reload into slot 1, then died before the flip
    half = plan(CHANGED)
    for name in ("exec_places", "exec_fstypes"):
        for key, value in half.maps.get(name, {}).items():
            fake.maps[name][bytes(encode_key(key, 1))] = bytes(encode_value(value))
    stale_uid = next(iter(plan(BASE).maps["allow_uid"]))
    fake.maps["allow_uid"][bytes(encode_key(stale_uid, 1))] = bytes(8)
    maps = adopter(fake)
    maps.adopt(plan(THIRD))
    assert fake.settings().active == 1
    assert fake.slot_contents(1) == expected_contents(plan(THIRD), 1)  # nothing stale beside it
    assert fake.slot_contents(0) == expected_contents(MapPlan(maps={}, watch=0), 0)


def test_a_hook_sees_one_whole_policy_at_every_step_of_an_adoption() -> None:
    fake = FakeBpf()
    loaded(fake, BASE)
    old, new = plan(BASE), plan(THIRD)
    seen = observe_policy_in_force(fake, old, new)
    adopter(fake).adopt(new)
    assert_old_then_new(seen)


@pytest.mark.parametrize("when", ["clearing", "writing"])
def test_a_failed_adoption_leaves_the_dead_agents_policy_in_force(when: str) -> None:
    fake = FakeBpf()
    loaded(fake, BASE)
    snapshot = fake.slot_contents(0)
    clearing_updates = abi.MAX_RULES + 1 + abi.TARGET_SLOTS  # the inactive slot's array entries zeroed
    fake.fail_on_update = fake.updates + (3 if when == "clearing" else clearing_updates + 3)
    with pytest.raises(ReloadError):
        adopter(fake).adopt(plan(THIRD))
    assert fake.settings().active == 0
    assert fake.slot_contents(0) == snapshot
