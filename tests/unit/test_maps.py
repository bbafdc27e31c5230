"""The reload transaction of PolicyMaps, against a fake bpf(2): ordering,
minimal writes, array 'deletes', capacity, and undo on failure."""

from __future__ import annotations

import ctypes
import errno
from typing import Dict, List, Tuple

import pytest

from enforcer import abi
from enforcer.compile import compile_policy
from enforcer.kernel.maps import PolicyMaps, ReloadError
from enforcer.parse import loads_policy
from enforcer.plan import MapPlan, RuleIndex, RuleValue

FDS = {name: number for number, name in enumerate(
    ("settings", "rules", "targets", "exec_places", "exec_fstypes", "allow_exe", "allow_uid", "allow_cgroup"), start=10)}
NAMES = {number: name for name, number in FDS.items()}


class FakeBpf:
    """Maps as dicts of bytes; optionally fails the Nth update."""

    def __init__(self, fail_on_update: int = 0) -> None:
        self.maps: Dict[str, Dict[bytes, bytes]] = {name: {} for name in FDS}
        self.log: List[Tuple[str, str]] = []
        self.updates = 0
        self.fail_on_update = fail_on_update

    def map_update(self, fd: int, key: ctypes.Structure, value: ctypes.Structure, what: str = "") -> None:
        self.updates += 1
        if self.updates == self.fail_on_update:
            raise OSError(errno.ENOMEM, "injected failure")
        self.maps[NAMES[fd]][bytes(key)] = bytes(value)
        self.log.append(("update", NAMES[fd]))

    def map_delete(self, fd: int, key: ctypes.Structure, what: str = "") -> bool:
        self.log.append(("delete", NAMES[fd]))
        return self.maps[NAMES[fd]].pop(bytes(key), None) is not None

    def snapshot(self) -> Dict[str, Dict[bytes, bytes]]:
        return {name: dict(entries) for name, entries in self.maps.items()}


BASE = """
version = 1
[[rule]]
id = "sysrq"
kind = "sysrq"
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/tmp"]
[rule.allow]
uid = [1000]
"""

CHANGED = """
version = 1
[[rule]]
id = "sysrq"
kind = "sysrq"
mode = "audit"
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/tmp", "/var/tmp"]
"""


def plan(text: str) -> MapPlan:
    return compile_policy(loads_policy(text, "test.toml"))


def loaded(fake: FakeBpf, text: str) -> PolicyMaps:
    maps = PolicyMaps(FDS.__getitem__, host_mntns=4026531841, syscalls=fake)
    maps.fill(plan(text))
    return maps


def test_fill_then_apply_equals_fill_of_new_plan() -> None:
    fake = FakeBpf()
    loaded(fake, BASE).apply(plan(BASE), plan(CHANGED))
    fresh = FakeBpf()
    loaded(fresh, CHANGED)
    # arrays keep zeroed slots instead of deleting them; compare non-zero entries
    def nonzero(maps):
        return {n: {k: v for k, v in e.items() if any(v)} for n, e in maps.items()}
    assert nonzero(fake.snapshot()) == nonzero(fresh.snapshot())


def test_apply_writes_only_the_difference_rules_first_deletes_last() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    fake.log.clear()
    changes = maps.apply(plan(BASE), plan(CHANGED))
    assert fake.log[0] == ("update", "rules")  # the sysrq rule's mode flipped
    assert ("delete", "allow_uid") == fake.log[-1]  # the uid allowlist went away
    assert changes.maps["exec_places"].added  # /var/tmp
    assert not changes.maps["targets"].changed


def test_removed_array_entry_is_zeroed_not_deleted() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    one_rule = BASE.split("[[rule]]\nid = \"tmp\"")[0]
    maps.apply(plan(BASE), plan(one_rule))
    key = bytes(ctypes.c_uint32(2))
    assert fake.maps["rules"][key] == bytes(abi.RuleConfig())
    assert ("delete", "rules") not in fake.log


@pytest.mark.parametrize("failing_update", [1, 2, 3])
def test_failure_midway_restores_the_old_contents(failing_update: int) -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    before = fake.snapshot()
    fake.fail_on_update = fake.updates + failing_update
    with pytest.raises(ReloadError, match="previous policy kept: .*injected failure"):
        maps.apply(plan(BASE), plan(CHANGED))
    after = fake.snapshot()
    assert {n: {k: v for k, v in e.items() if any(v)} for n, e in after.items()} == {
        n: {k: v for k, v in e.items() if any(v)} for n, e in before.items()
    }


def test_plan_larger_than_a_map_is_refused_before_any_write() -> None:
    fake = FakeBpf()
    maps = loaded(fake, BASE)
    fake.log.clear()
    huge = MapPlan(maps={"rules": {RuleIndex(i): RuleValue(True) for i in range(abi.MAX_RULES + 2)}}, watch=0)
    with pytest.raises(ReloadError, match="map rules"):
        maps.apply(plan(BASE), huge)
    assert fake.log == []


def test_settings_carry_host_mount_namespace_and_watch_flags() -> None:
    fake = FakeBpf()
    loaded(fake, BASE)
    settings = abi.Settings.from_buffer_copy(fake.maps["settings"][bytes(ctypes.c_uint32(0))])
    assert settings.host_mntns == 4026531841
    assert settings.watch == int(abi.Watch.PROC_WRITE | abi.Watch.EXEC)
