"""kind = "sysrq": opening the magic SysRq controls, in every procfs mount."""

from __future__ import annotations

from typing import Any, List, Mapping

from enforcer import abi
from enforcer.kinds.base import KindDefaults, Parsed, TargetClaim, claiming_kind, enum_set
from enforcer.policy import Rule, RuleKind, RuleMeta, Severity, SysrqAccess, SysrqFile, SysrqRule
from enforcer.policyfile.schema import Checker, KeyPath

__all__ = ["SPEC", "DEFAULTS"]

#: Defaults justified in docs/policy.md.
DEFAULTS = KindDefaults(
    description="Access to the magic SysRq controls (/proc/sysrq-trigger, /proc/sys/kernel/sysrq), "
    "which can crash, reboot or dump the host kernel",
    severity=Severity.CRITICAL,
    mitre="T1611",
)

_PATHS = {SysrqFile.TRIGGER: "/proc/sysrq-trigger", SysrqFile.SYSCTL: "/proc/sys/kernel/sysrq"}

#: Each file and access a rule can cover; the order is the order of messages.
_SLOTS = {
    (SysrqFile.TRIGGER, SysrqAccess.WRITE): (abi.Target.SYSRQ_TRIGGER_WRITE, abi.Watch.PROC_WRITE),
    (SysrqFile.TRIGGER, SysrqAccess.READ): (abi.Target.SYSRQ_TRIGGER_READ, abi.Watch.PROC_READ),
    (SysrqFile.SYSCTL, SysrqAccess.WRITE): (abi.Target.SYSRQ_SYSCTL_WRITE, abi.Watch.PROC_WRITE),
    (SysrqFile.SYSCTL, SysrqAccess.READ): (abi.Target.SYSRQ_SYSCTL_READ, abi.Watch.PROC_READ),
}


def _claims(rule: Rule) -> List[TargetClaim]:
    assert isinstance(rule, SysrqRule)
    return [
        TargetClaim(target, watch, f'{access.value} of sysrq file "{file.value}"')
        for (file, access), (target, watch) in _SLOTS.items()
        if file in rule.files and access in rule.access
    ]


def _parse(c: Checker, table: Mapping[str, Any], loc: KeyPath, meta: RuleMeta) -> Parsed:
    access = enum_set(c, table, loc, "access", SysrqAccess, [SysrqAccess.WRITE])
    files = enum_set(c, table, loc, "files", SysrqFile, [SysrqFile.TRIGGER, SysrqFile.SYSCTL])
    return Parsed(SysrqRule(meta=meta, access=access, files=files))


def _describe(rule: Rule) -> List[str]:
    assert isinstance(rule, SysrqRule)
    lines = []
    for file in (SysrqFile.TRIGGER, SysrqFile.SYSCTL):
        if file not in rule.files:
            continue
        verbs = [a.value for a in (SysrqAccess.WRITE, SysrqAccess.READ) if a in rule.access]
        how = " or ".join("writing" if v == "write" else "reading" for v in verbs)
        lines.append(f"{how} {_PATHS[file]} (in every procfs mount)")
    return lines


SPEC = claiming_kind(RuleKind.SYSRQ, ("access", "files"), DEFAULTS, _parse, _claims, _describe)
