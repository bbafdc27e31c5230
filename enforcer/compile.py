"""Policy -> MapPlan: the exact contents of the kernel maps. Pure; no I/O, no bcc.

Rules are numbered 1..N in file order. The semantics of every map are in
docs/policy.md ("How matching works") and in the docstrings of enforcer.abi.
Each rule kind's part of the maps comes from its spec in `enforcer.kinds`.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from enforcer import abi
from enforcer.kinds import KINDS, kinds_in
from enforcer.matching import dir_node, kernel_scopes
from enforcer.mountinfo import MountTable
from enforcer.plan import (
    POLICY_MAPS,
    FsTypeSlot,
    MapPlan,
    Prefix,
    RuleIndex,
    RuleInfo,
    RuleMask,
    RuleNumber,
    RuleValue,
    TargetSlot,
    Uid,
)
from enforcer.policy import Allowlist, Mode, Policy

__all__ = ["compile_policy"]


def _put(table: Dict, key, value, what: str) -> None:
    if key in table and table[key] != value:
        raise ValueError(f"{what}: {key!r} claimed by rule {table[key]} and {value} (policy not validated?)")
    table[key] = value


def _allow_entries(allow: Allowlist) -> Iterable[Tuple[str, object]]:
    for path in allow.exe:
        yield "allow_exe", Prefix(0, path, exact=True)
    for path in allow.exe_dirs:
        yield "allow_exe", Prefix(0, dir_node(path))
    for path in allow.cgroup:
        yield "allow_cgroup", Prefix(0, dir_node(path))
    for uid in allow.uid:
        yield "allow_uid", Uid(uid)


def _propagate(masks: Dict[Prefix, int]) -> Dict[Prefix, RuleMask]:
    """Each LPM entry carries the masks of every entry that is a prefix of it.

    The kernel's lookup returns only the longest matching entry, so a shorter
    entry's rules must be repeated in every longer entry below it.
    """
    # Linear in entries times distinct key lengths (at most abi.LPM_DATA_LEN),
    # not quadratic in entries: a 1,000-entry allowlist recompiles on every
    # reload and every mount change.
    by_data: Dict[bytes, int] = {}
    for key, own in masks.items():
        data = key.data()
        by_data[data] = by_data.get(data, 0) | own
    lengths = sorted({len(data) for data in by_data})
    out: Dict[Prefix, RuleMask] = {}
    for key in masks:
        data = key.data()
        mask = 0
        for length in lengths:
            if length > len(data):
                break
            mask |= by_data.get(data[:length], 0)
        out[key] = RuleMask(mask)
    return out


def _allow_maps(policy: Policy) -> Dict[str, Dict]:
    """allow_exe, allow_cgroup, allow_uid: who is exempt from which rules (global: all)."""
    all_rules = sum(1 << n for n in range(1, len(policy.rules) + 1))
    raw: Dict[str, Dict] = {"allow_exe": {}, "allow_cgroup": {}, "allow_uid": {}}
    sources: List[Tuple[Allowlist, int]] = [(policy.allow, all_rules)]
    sources += [(rule.meta.allow, 1 << n) for n, rule in enumerate(policy.rules, start=1)]
    for allow, bits in sources:
        for map_name, key in _allow_entries(allow):
            raw[map_name][key] = raw[map_name].get(key, 0) | bits
    return {
        "allow_exe": _propagate(raw["allow_exe"]),
        "allow_cgroup": _propagate(raw["allow_cgroup"]),
        "allow_uid": {key: RuleMask(mask) for key, mask in raw["allow_uid"].items()},
    }


def compile_policy(
    policy: Policy, mode_override: Optional[Mode] = None, mounts: Optional[MountTable] = None
) -> MapPlan:
    """The exact contents of every policy map for `policy` (already validated by parse).

    `mounts`: the host's mount table; with it, exec places are also keyed by
    where they live (enforcer.kinds.exec_places.located_places). The agent
    passes it; `enforcer check` does not need it.
    """
    if len(policy.rules) > abi.MAX_RULES:
        raise ValueError(f"{len(policy.rules)} rules; at most {abi.MAX_RULES}")
    maps: Dict[str, Dict] = {name: {} for name in POLICY_MAPS}
    infos: List[RuleInfo] = []
    watch = abi.Watch(0)

    for number, rule in enumerate(policy.rules, start=1):
        mode = policy.effective_mode(rule, mode_override)
        part = KINDS[rule.kind].plan(rule)
        maps["rules"][RuleIndex(number)] = RuleValue(enforce=mode is Mode.ENFORCE, flags=int(part.flags))
        infos.append(
            RuleInfo(
                index=number,
                id=rule.meta.id,
                description=rule.meta.description,
                severity=rule.meta.severity,
                mitre=rule.meta.mitre,
                kind=rule.kind,
                mode=mode,
            )
        )
        scopes = kernel_scopes(rule.meta.scope)
        watch |= part.watch
        for name in part.filesystems:
            for scope in scopes:
                _put(maps["exec_fstypes"], FsTypeSlot(name, scope), RuleNumber(number), "exec_fstypes")
        for target in part.targets:
            for scope in scopes:
                _put(maps["targets"], TargetSlot(target, scope), RuleNumber(number), "targets")

    for spec in kinds_in(policy):
        if spec.policy_plan is not None:
            for map_name, entries in spec.policy_plan(policy, mode_override, mounts).items():
                maps[map_name].update(entries)

    maps.update(_allow_maps(policy))
    return MapPlan(maps=maps, watch=int(watch), rules=tuple(infos))
