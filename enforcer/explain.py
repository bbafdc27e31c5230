"""A policy in plain words: what is denied or audited, for whom, and who is allowed.

Pure text from a validated Policy (and the plan compiled from it, for the
deep-path fail-safe); used by `enforcer check --explain`.
"""

from __future__ import annotations

from typing import List, Optional

from enforcer import abi
from enforcer.compile import unresolved_rule
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

__all__ = ["explain_policy", "count_allow_entries"]

_SYSRQ_FILES = {SysrqFile.TRIGGER: "/proc/sysrq-trigger", SysrqFile.SYSCTL: "/proc/sys/kernel/sysrq"}
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


def _what(rule: Rule) -> List[str]:
    if isinstance(rule, SysrqRule):
        lines = []
        for f in (SysrqFile.TRIGGER, SysrqFile.SYSCTL):
            if f not in rule.files:
                continue
            verbs = [a.value for a in (SysrqAccess.WRITE, SysrqAccess.READ) if a in rule.access]
            how = " or ".join("writing" if v == "write" else "reading" for v in verbs)
            lines.append(f"{how} {_SYSRQ_FILES[f]} (in every procfs mount)")
        return lines
    if isinstance(rule, ReleaseAgentRule):
        lines = []
        if ReleaseAgentAccess.WRITE in rule.access:
            lines.append("writing or truncating release_agent in any cgroup v1 hierarchy")
        if ReleaseAgentAccess.RENAME in rule.access:
            lines.append("renaming a file to or from the name release_agent, on any filesystem")
        return lines
    assert isinstance(rule, ExecRule)
    lines = []
    for d in rule.dirs:
        if d.recursive:
            lines.append(f"executing a file anywhere under {d.path if d.path == '/' else d.path + '/'}")
        else:
            lines.append(f"executing a file directly in {d.path}/ (not in its subdirectories)")
    if rule.filesystems:
        lines.append(f"executing a file from a filesystem of type {', '.join(sorted(rule.filesystems))}, "
                     "wherever it is mounted")
    if rule.memfd:
        lines.append("executing an anonymous in-memory file (memfd_create, or an unlinked shared-memory file)")
    for e in rule.exclude:
        lines.append(f"but never for files under {e}/ (excluded)")
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
        out += [f"    - {line}" for line in _what(rule)]
        out.append(f"  Who: {_SCOPE_WORDS[meta.scope]}")
        exceptions = _allow_lines(meta.allow, "    ")
        if exceptions or not policy.allow.is_empty():
            out.append("  Except:")
            out += exceptions
            if not policy.allow.is_empty():
                out.append("    - anything in the global allowlist")
        else:
            out.append("  Except: nobody")
    exec_rules = [r for r in policy.rules if isinstance(r, ExecRule)]
    if exec_rules:
        out.append("")
        out.append("Where exec places of several rules nest, the deepest listed directory decides.")
        out.append(
            f"Deep paths: the kernel walks at most {abi.PATH_WALK_STEPS} path components and mount points. An executed file "
            "deeper than that cannot be placed; instead of allowing it, the kernel applies:"
        )
        for scope, words in ((abi.KernelScope.HOST, "host"), (abi.KernelScope.CONTAINER, "containers")):
            number = unresolved_rule(policy, scope, mode_override)
            if number:
                rule = policy.rules[number - 1]
                mode = policy.effective_mode(rule, mode_override).value
                out.append(f"  - {words}: rule {number} \"{rule.meta.id}\" ({mode})")
            else:
                out.append(f"  - {words}: nothing (no exec rule with dirs covers {words}); such files run")
    return "\n".join(out) + "\n"
