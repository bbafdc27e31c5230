"""kind = "kernel_helper": writing a kernel setting that names a program the kernel runs.

Each setting is recognised by its filesystem (procfs, sysfs, binfmt_misc
superblock) and its place inside it, in every mount; see docs/threat-model.md.
Events name the setting; the value written is not known at open(2), when the
decision is made (docs/policy.md).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from enforcer import abi
from enforcer.kinds.base import KindDefaults, Parsed, TargetClaim, claiming_kind, enum_set
from enforcer.policy import KernelHelperRule, KernelHelperSetting, Rule, RuleKind, RuleMeta, Severity
from enforcer.policyfile.schema import Checker, KeyPath

__all__ = ["SPEC", "DEFAULTS", "setting_of"]

#: Defaults justified in docs/policy.md.
DEFAULTS = KindDefaults(
    description="Write to a kernel setting that names a program the kernel runs as root on the host "
    "(core_pattern, modprobe, uevent_helper, binfmt_misc), a known way out of a container",
    severity=Severity.CRITICAL,
    mitre="T1611",
)

S = KernelHelperSetting

#: setting -> (target slot, hook check, filesystem type as events name it, file name, where it is)
_SLOTS: Dict[KernelHelperSetting, Tuple[abi.Target, abi.Watch, str, str, str]] = {
    S.CORE_PATTERN: (abi.Target.HELPER_CORE_PATTERN, abi.Watch.HELPER_SYSCTL, "proc", "core_pattern",
                     "/proc/sys/kernel/core_pattern (in every procfs mount)"),
    S.MODPROBE: (abi.Target.HELPER_MODPROBE, abi.Watch.HELPER_SYSCTL, "proc", "modprobe",
                 "/proc/sys/kernel/modprobe (in every procfs mount)"),
    S.UEVENT_HELPER: (abi.Target.HELPER_UEVENT_HELPER, abi.Watch.HELPER_SYSFS, "sysfs", "uevent_helper",
                      "/sys/kernel/uevent_helper (in every sysfs mount)"),
    S.HOTPLUG: (abi.Target.HELPER_HOTPLUG, abi.Watch.HELPER_SYSCTL, "proc", "hotplug",
                "/proc/sys/kernel/hotplug (in every procfs mount)"),
    S.BINFMT_REGISTER: (abi.Target.HELPER_BINFMT_REGISTER, abi.Watch.HELPER_BINFMT, "binfmt_misc", "register",
                        "/proc/sys/fs/binfmt_misc/register (in every binfmt_misc mount): adds an interpreter"),
    S.BINFMT_STATUS: (abi.Target.HELPER_BINFMT_STATUS, abi.Watch.HELPER_BINFMT, "binfmt_misc", "status",
                      "/proc/sys/fs/binfmt_misc/status (in every binfmt_misc mount): enables or flushes them"),
}

_BY_FILE = {(fstype, name): setting for setting, (_, _, fstype, name, _) in _SLOTS.items()}


def setting_of(path: str, fstype: str) -> Optional[str]:
    """The setting an event's file is, from its filesystem type and name (None if neither fits)."""
    setting = _BY_FILE.get((fstype, path.rsplit("/", 1)[-1]))
    return setting.value if setting else None


def _claims(rule: Rule) -> List[TargetClaim]:
    assert isinstance(rule, KernelHelperRule)
    return [
        TargetClaim(target, watch, f'write of kernel helper setting "{setting.value}"')
        for setting, (target, watch, _, _, _) in _SLOTS.items()
        if setting in rule.settings
    ]


def _parse(c: Checker, table: Mapping[str, Any], loc: KeyPath, meta: RuleMeta) -> Parsed:
    settings = enum_set(c, table, loc, "settings", KernelHelperSetting, list(KernelHelperSetting))
    return Parsed(KernelHelperRule(meta=meta, settings=settings))


def _describe(rule: Rule) -> List[str]:
    assert isinstance(rule, KernelHelperRule)
    return [f"writing or truncating {where}" for setting, (_, _, _, _, where) in _SLOTS.items() if setting in rule.settings]


SPEC = claiming_kind(
    RuleKind.KERNEL_HELPER, ("settings",), DEFAULTS, _parse, _claims, _describe, setting_of=setting_of
)
