"""kind = "tamper": switching enforcer itself off from a container.

A container's root (a privileged container, a compromised service with
capabilities) can otherwise take an fd of enforcer's policy maps by id and
rewrite them (`bpftool map update id N ...`), remove its pins, kill or trace
the agent, or edit the policy through a host mount. The kernel recognises
enforcer's objects by kernel facts, not by names a caller supplies: maps,
programs and links by their ids (the agent names them in protected_objects
at load, before attaching), pins by the inode of the pin directory, the
policy directory by its file system and inode, the agent by its pid and
start time. The running agent is never judged, nor, in host scope, host
root (effective uid 0): it administers enforcer (`enforcer unload`, the
package scripts) and is out of scope (docs/threat-model.md, "Tamper
protection"); a host service with capabilities that is not root is judged.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from enforcer import abi
from enforcer.kinds.base import KindDefaults, Parsed, TargetClaim, claiming_kind, enum_set
from enforcer.policy import Rule, RuleKind, RuleMeta, Severity, TamperObject, TamperRule
from enforcer.policyfile.schema import Checker, KeyPath

__all__ = ["SPEC", "DEFAULTS"]

#: Defaults justified in docs/policy.md.
DEFAULTS = KindDefaults(
    description="Tampering with enforcer itself from a container: its BPF maps, programs and links, "
    "its pins, its agent process",
    severity=Severity.CRITICAL,
    mitre="T1562.001",  # Impair Defenses: Disable or Modify Tools
)

#: object -> (target slot, hook check, what messages call it, what --explain says)
_SLOTS: Dict[TamperObject, Tuple[Tuple[abi.Target, abi.Watch, str, str], ...]] = {
    TamperObject.BPF: (
        (abi.Target.TAMPER_BPF_OBJECT, abi.Watch.TAMPER_BPF, "enforcer's BPF objects",
         "taking an fd of enforcer's BPF maps, programs or links (by id, by pin): "
         "bpftool map update/delete/dump, prog dump, link by id"),
    ),
    TamperObject.PINS: (
        (abi.Target.TAMPER_PIN, abi.Watch.TAMPER_PINS, "enforcer's pins",
         "removing, renaming or making anything in enforcer's pin directory (/sys/fs/bpf/enforcer): "
         "rm, mv, rmdir, mkdir, a new pin, a symlink or hard link there; in every mount of that bpffs; "
         "unmounting that bpffs or mounting over it"),
    ),
    TamperObject.AGENT: (
        (abi.Target.TAMPER_SIGNAL, abi.Watch.TAMPER_AGENT, "signals to the agent",
         "sending the agent process any signal (kill -0 excepted)"),
        (abi.Target.TAMPER_PTRACE, abi.Watch.TAMPER_AGENT, "tracing the agent",
         "ptrace attach to the agent, writing its memory (/proc/PID/mem, process_vm_writev), "
         "taking its fds (pidfd_getfd)"),
        (abi.Target.TAMPER_RESOURCES, abi.Watch.TAMPER_AGENT, "the agent's limits and scheduling",
         "setting the agent's resource limits (prlimit: RLIMIT_CPU would have the kernel kill it) or its "
         "scheduling (chrt, taskset, renice)"),
    ),
    TamperObject.POLICY: (
        (abi.Target.TAMPER_POLICY, abi.Watch.TAMPER_POLICY, "enforcer's policy directory",
         "writing, truncating, creating, renaming, removing or hard-linking anything in the policy directory "
         "(the --policy file's directory, e.g. /etc/enforcer, and its allow.d), through any mount of its "
         "filesystem"),
    ),
}


def _claims(rule: Rule) -> List[TargetClaim]:
    assert isinstance(rule, TamperRule)
    return [
        TargetClaim(target, watch, f"tampering with {words}")
        for thing, slots in _SLOTS.items()
        if thing in rule.protect
        for target, watch, words, _ in slots
    ]


def _parse(c: Checker, table: Mapping[str, Any], loc: KeyPath, meta: RuleMeta) -> Parsed:
    protect = enum_set(c, table, loc, "protect", TamperObject, list(TamperObject))
    return Parsed(TamperRule(meta=meta, protect=protect))


def _describe(rule: Rule) -> List[str]:
    assert isinstance(rule, TamperRule)
    return [line for thing, slots in _SLOTS.items() if thing in rule.protect for *_, line in slots]


SPEC = claiming_kind(RuleKind.TAMPER, ("protect",), DEFAULTS, _parse, _claims, _describe)
