"""A policy in plain words: what is denied or audited, for whom, and who is allowed.

Pure text from a validated Policy; each rule kind says what its rules cover
(enforcer.kinds). Used by `enforcer check --explain`.
"""

from __future__ import annotations

from typing import List, Optional

from enforcer.kinds import KINDS, kinds_in
from enforcer.policy import Allowlist, Mode, Policy, Scope

__all__ = ["explain_policy", "count_allow_entries"]

_SCOPE_WORDS = {
    Scope.ALL: "every process, on the host and in containers",
    Scope.HOST: "processes on the host only (initial mount namespace)",
    Scope.CONTAINER: "processes in containers only (any other mount namespace)",
}


def count_allow_entries(policy: Policy) -> int:
    """Allowlist entries in the policy: global plus every rule's (allow.d included)."""

    def size(allow: Allowlist) -> int:
        return len(allow.exe) + len(allow.exe_dirs) + len(allow.uid) + len(allow.cgroup)

    return size(policy.allow) + sum(size(rule.meta.allow) for rule in policy.rules)


def _allow_lines(allow: Allowlist, indent: str) -> List[str]:
    lines = []
    if allow.exe:
        lines.append(f"{indent}- the program {', '.join(allow.exe)}" if len(allow.exe) == 1
                     else f"{indent}- the programs {', '.join(allow.exe)}")
    for directory in allow.exe_dirs:
        lines.append(f"{indent}- any program under {directory}/")
    if allow.uid:
        lines.append(f"{indent}- user id{'s' if len(allow.uid) > 1 else ''} {', '.join(str(u) for u in allow.uid)}")
    for cgroup in allow.cgroup:
        lines.append(f"{indent}- processes in cgroup {cgroup} and below")
    return lines


def explain_policy(policy: Policy, mode_override: Optional[Mode] = None) -> str:
    """A readable account of `policy`, rule by rule, in file order."""
    out: List[str] = []
    forced = f" (forced to {mode_override.value} by --mode)" if mode_override else ""
    out.append(f"Policy {policy.source}: mode {policy.mode.value}{forced}, {len(policy.rules)} "
               f"rule{'s' if len(policy.rules) != 1 else ''}.")
    if policy.allow_sources:
        out.append(f"Exceptions merged from: {', '.join(policy.allow_sources)}")
    out.append("")
    if policy.allow.is_empty():
        out.append("Global allowlist: empty (no process is exempt from every rule).")
    else:
        out.append("Global allowlist: these may do anything the rules below deny:")
        out += _allow_lines(policy.allow, "  ")
    for number, rule in enumerate(policy.rules, start=1):
        meta = rule.meta
        mode = policy.effective_mode(rule, mode_override)
        action = "DENIED (enforce)" if mode is Mode.ENFORCE else "REPORTED ONLY, not denied (audit)"
        out.append("")
        out.append(f"Rule {number} \"{meta.id}\" [{rule.kind.value}]: {action}")
        out.append(f"  {meta.description}")
        out.append(f"  severity {meta.severity.value}, MITRE ATT&CK {meta.mitre}")
        out.append("  What:")
        out += [f"    - {line}" for line in KINDS[rule.kind].describe(rule)]
        out.append(f"  Who: {_SCOPE_WORDS[meta.scope]}")
        exceptions = _allow_lines(meta.allow, "    ")
        if exceptions or not policy.allow.is_empty():
            out.append("  Except:")
            out += exceptions
            if not policy.allow.is_empty():
                out.append("    - anything in the global allowlist")
        else:
            out.append("  Except: nobody")
    for spec in kinds_in(policy):
        if spec.policy_notes is not None:
            out += spec.policy_notes(policy, mode_override)
    return "\n".join(out) + "\n"
