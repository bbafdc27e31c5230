"""A policy in plain words: what is denied or audited, for whom, and who is allowed.

Pure text from a validated Policy; each rule kind says what its rules cover
(enforcer.kinds). Used by `enforcer check --explain`.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from enforcer.kinds import KINDS, kinds_in
from enforcer.parse import DropIn
from enforcer.policy import Allowlist, Mode, Policy, Scope
from enforcer.policyfile.problems import PolicyProblem

__all__ = ["explain_policy", "explain_drop_in", "count_allow_entries", "allow_size"]

_SCOPE_WORDS = {
    Scope.ALL: "every process, on the host and in containers",
    Scope.HOST: "processes on the host only (initial mount namespace)",
    Scope.CONTAINER: "processes in containers only (any other mount namespace)",
}


def allow_size(allow: Allowlist) -> int:
    return len(allow.exe) + len(allow.exe_dirs) + len(allow.uid) + len(allow.cgroup)


def count_allow_entries(policy: Policy) -> int:
    """Allowlist entries in the policy: global plus every rule's (allow.d included)."""
    return allow_size(policy.allow) + sum(allow_size(rule.meta.allow) for rule in policy.rules)


def _risky_lines(warnings: Sequence[PolicyProblem]) -> List[str]:
    """The "risky allowlist entries" part: every warning, where it is and why."""
    if not warnings:
        return ["", "Risky allowlist entries: none."]
    return ["", "Risky allowlist entries (warnings of `enforcer check`, errors under `enforcer check --strict`):"] + [
        f"  - {warning.file}:{warning.line}: {warning.where}: {warning.message}" for warning in warnings
    ]


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


def explain_policy(policy: Policy, mode_override: Optional[Mode] = None, mode_source: str = "") -> str:
    """A readable account of `policy`, rule by rule, in file order.

    `mode_source` says where the mode comes from when it is not `--mode` itself
    (`check --mode service`: "ENFORCER_MODE=audit in /etc/default/enforcer").
    """
    out: List[str] = []
    if mode_override:
        forced = f" (forced to {mode_override.value} by {mode_source or '--mode'})"
    else:
        forced = f" (the policy's own modes, by {mode_source})" if mode_source else ""
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
    out += _risky_lines(policy.warnings)
    return "\n".join(out) + "\n"


def explain_drop_in(drop_in: DropIn) -> str:
    """What one allow.d file adds, rule by rule, and its risky entries."""
    numbers = dict(drop_in.rule_numbers)
    against = f"for {drop_in.policy}" if drop_in.policy else "for a policy not given (rule ids not checked)"
    out = [f"Drop-in {drop_in.source}, {against}.", ""]
    if drop_in.allow.is_empty():
        out.append("Adds nothing to the global allowlist.")
    else:
        out.append("Adds to the global allowlist (exempt from every rule):")
        out += _allow_lines(drop_in.allow, "  ")
    for rule_id, allow in drop_in.rule_allow:
        number = f"rule {numbers[rule_id]} " if rule_id in numbers else "rule "
        out.append(f"Adds to {number}\"{rule_id}\" (exempt from that rule only):")
        out += _allow_lines(allow, "  ") or ["  - nothing (empty)"]
    out += _risky_lines(drop_in.warnings)
    return "\n".join(out) + "\n"
