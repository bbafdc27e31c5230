"""Policy -> MapPlan: the exact contents of the kernel maps. Pure; no I/O, no bcc.

Rules are numbered 1..N in file order. The semantics of every map are in
docs/policy.md ("How matching works") and in the docstrings of enforcer.abi.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from enforcer import abi
from enforcer.plan import (
    POLICY_MAPS,
    ExecPlaceValue,
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
from enforcer.policy import (
    Allowlist,
    ExecRule,
    Mode,
    Policy,
    ReleaseAgentAccess,
    ReleaseAgentRule,
    Rule,
    Scope,
    SysrqAccess,
    SysrqFile,
    SysrqRule,
)

__all__ = ["compile_policy", "kernel_scopes", "dir_node", "UNRESOLVED_FALLBACK"]

_SYSRQ_TARGETS = {
    (SysrqFile.TRIGGER, SysrqAccess.WRITE): abi.Target.SYSRQ_TRIGGER_WRITE,
    (SysrqFile.TRIGGER, SysrqAccess.READ): abi.Target.SYSRQ_TRIGGER_READ,
    (SysrqFile.SYSCTL, SysrqAccess.WRITE): abi.Target.SYSRQ_SYSCTL_WRITE,
    (SysrqFile.SYSCTL, SysrqAccess.READ): abi.Target.SYSRQ_SYSCTL_READ,
}
_RELEASE_AGENT_TARGETS = {
    ReleaseAgentAccess.WRITE: abi.Target.RELEASE_AGENT_WRITE,
    ReleaseAgentAccess.RENAME: abi.Target.RELEASE_AGENT_RENAME,
}

#: Documentation name of the EXEC_UNRESOLVED choice, for explain.
UNRESOLVED_FALLBACK = abi.Target.EXEC_UNRESOLVED


def kernel_scopes(scope: Scope) -> Tuple[abi.KernelScope, ...]:
    """The kernel scopes a policy scope covers."""
    if scope is Scope.HOST:
        return (abi.KernelScope.HOST,)
    if scope is Scope.CONTAINER:
        return (abi.KernelScope.CONTAINER,)
    return (abi.KernelScope.HOST, abi.KernelScope.CONTAINER)


def dir_node(path: str) -> str:
    """A directory as the kernel tries match it: with a trailing "/" ("/" stays "/")."""
    return path if path == "/" else path + "/"


def _put(table: Dict, key, value, what: str) -> None:
    if key in table and table[key] != value:
        raise ValueError(f"{what}: {key!r} claimed by rule {table[key]} and {value} (policy not validated?)")
    table[key] = value


def _exec_rules_in(rules: Sequence[Rule], scope: abi.KernelScope) -> List[Tuple[int, ExecRule]]:
    return [
        (number, rule)
        for number, rule in enumerate(rules, start=1)
        if isinstance(rule, ExecRule) and scope in kernel_scopes(rule.meta.scope)
    ]


def unresolved_rule(policy: Policy, scope: abi.KernelScope, mode_override: Optional[Mode] = None) -> int:
    """The rule the kernel applies to an exec whose path it cannot resolve, in `scope` (0: none).

    Among exec rules with dirs covering the scope: the first in file order that
    enforces, else the first.
    """
    candidates = [(n, r) for n, r in _exec_rules_in(policy.rules, scope) if r.dirs]
    for number, rule in candidates:
        if policy.effective_mode(rule, mode_override) is Mode.ENFORCE:
            return number
    return candidates[0][0] if candidates else 0


def _exec_places(rules: Sequence[Rule]) -> Dict[Prefix, ExecPlaceValue]:
    places: Dict[Prefix, ExecPlaceValue] = {}
    for scope in abi.KernelScope:
        covering = _exec_rules_in(rules, scope)
        nodes = set()
        for _, rule in covering:
            nodes.update(dir_node(d.path) for d in rule.dirs)
            nodes.update(dir_node(e) for e in rule.exclude)
        for node in sorted(nodes):
            excluded = 0
            for number, rule in covering:
                if any(node.startswith(dir_node(e)) for e in rule.exclude):
                    excluded |= 1 << number
            best_below: Tuple[int, int] = (-1, 0)  # (length of dir, rule)
            best_direct: Tuple[int, int] = (-1, 0)
            for number, rule in covering:
                if excluded & (1 << number):
                    continue
                for d in rule.dirs:
                    prefix = dir_node(d.path)
                    if d.recursive and node.startswith(prefix):
                        if len(prefix) > best_below[0]:
                            best_below = (len(prefix), number)
                        if len(prefix) > best_direct[0]:
                            best_direct = (len(prefix), number)
                    elif not d.recursive and prefix == node:
                        if len(prefix) > best_direct[0]:
                            best_direct = (len(prefix), number)
            value = ExecPlaceValue(
                node_len=len(node.encode()),
                rule_direct=best_direct[1],
                rule_below=best_below[1],
                excluded=excluded,
            )
            if value.rule_direct or value.rule_below or value.excluded:
                places[Prefix(namespace=int(scope), text=node)] = value
    return places


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
    data = {key: key.data() for key in masks}
    out: Dict[Prefix, RuleMask] = {}
    for key, own in masks.items():
        mask = own
        for other, other_data in data.items():
            if data[key].startswith(other_data):
                mask |= masks[other]
        out[key] = RuleMask(mask)
    return out


def compile_policy(policy: Policy, mode_override: Optional[Mode] = None) -> MapPlan:
    """The exact contents of every policy map for `policy` (already validated by parse)."""
    if len(policy.rules) > abi.MAX_RULES:
        raise ValueError(f"{len(policy.rules)} rules; at most {abi.MAX_RULES}")
    maps: Dict[str, Dict] = {name: {} for name in POLICY_MAPS}
    infos: List[RuleInfo] = []
    watch = abi.Watch(0)

    for number, rule in enumerate(policy.rules, start=1):
        mode = policy.effective_mode(rule, mode_override)
        maps["rules"][RuleIndex(number)] = RuleValue(enforce=mode is Mode.ENFORCE)
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
        targets: List[abi.Target] = []
        if isinstance(rule, SysrqRule):
            targets = [t for (f, a), t in _SYSRQ_TARGETS.items() if f in rule.files and a in rule.access]
        elif isinstance(rule, ReleaseAgentRule):
            targets = [t for a, t in _RELEASE_AGENT_TARGETS.items() if a in rule.access]
        elif isinstance(rule, ExecRule):
            watch |= abi.Watch.EXEC
            if rule.memfd:
                targets = [abi.Target.EXEC_MEMFD]
            for name in sorted(rule.filesystems):
                for scope in scopes:
                    _put(maps["exec_fstypes"], FsTypeSlot(name, scope), RuleNumber(number), "exec_fstypes")
        for target in targets:
            for scope in scopes:
                _put(maps["targets"], TargetSlot(target, scope), RuleNumber(number), "targets")

    for scope in abi.KernelScope:
        fallback = unresolved_rule(policy, scope, mode_override)
        if fallback:
            maps["targets"][TargetSlot(abi.Target.EXEC_UNRESOLVED, scope)] = RuleNumber(fallback)

    maps["exec_places"] = dict(_exec_places(policy.rules))

    all_rules = sum(1 << n for n in range(1, len(policy.rules) + 1))
    raw: Dict[str, Dict] = {"allow_exe": {}, "allow_cgroup": {}, "allow_uid": {}}
    sources: List[Tuple[Allowlist, int]] = [(policy.allow, all_rules)]
    sources += [(rule.meta.allow, 1 << n) for n, rule in enumerate(policy.rules, start=1)]
    for allow, bits in sources:
        for map_name, key in _allow_entries(allow):
            raw[map_name][key] = raw[map_name].get(key, 0) | bits
    maps["allow_exe"] = _propagate(raw["allow_exe"])
    maps["allow_cgroup"] = _propagate(raw["allow_cgroup"])
    maps["allow_uid"] = {key: RuleMask(mask) for key, mask in raw["allow_uid"].items()}

    slots = {slot.target for slot in maps["targets"]}
    if slots & {abi.Target.SYSRQ_TRIGGER_WRITE, abi.Target.SYSRQ_SYSCTL_WRITE}:
        watch |= abi.Watch.PROC_WRITE
    if slots & {abi.Target.SYSRQ_TRIGGER_READ, abi.Target.SYSRQ_SYSCTL_READ}:
        watch |= abi.Watch.PROC_READ
    if abi.Target.RELEASE_AGENT_WRITE in slots:
        watch |= abi.Watch.CGROUP_WRITE
    if abi.Target.RELEASE_AGENT_RENAME in slots:
        watch |= abi.Watch.RENAME

    return MapPlan(maps=maps, watch=int(watch), rules=tuple(infos))
