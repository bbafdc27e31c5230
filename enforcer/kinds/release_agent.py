"""kind = "release_agent": writing or renaming a cgroup v1 release_agent file."""

from __future__ import annotations

from typing import Any, List, Mapping

from enforcer import abi
from enforcer.kinds.base import KindDefaults, Parsed, TargetClaim, claiming_kind, enum_set
from enforcer.policy import ReleaseAgentAccess, ReleaseAgentRule, Rule, RuleKind, RuleMeta, Severity
from enforcer.policyfile.schema import Checker, KeyPath

__all__ = ["SPEC", "DEFAULTS"]

#: Defaults justified in docs/policy.md.
DEFAULTS = KindDefaults(
    description="Write to or rename of a cgroup v1 release_agent file, or release_agent as a mount option, "
    "a known way to run a program on the host from a container",
    severity=Severity.CRITICAL,
    mitre="T1611",
)

#: Each access a rule can cover; the order is the order of messages.
_SLOTS = {
    ReleaseAgentAccess.WRITE: (abi.Target.RELEASE_AGENT_WRITE, abi.Watch.CGROUP_WRITE),
    ReleaseAgentAccess.RENAME: (abi.Target.RELEASE_AGENT_RENAME, abi.Watch.RENAME),
    ReleaseAgentAccess.MOUNT: (abi.Target.RELEASE_AGENT_MOUNT, abi.Watch.CGROUP_MOUNT),
}

_WORDS = {
    ReleaseAgentAccess.WRITE: "writing or truncating release_agent in any cgroup v1 hierarchy",
    ReleaseAgentAccess.RENAME: "renaming a file to or from the name release_agent, on any filesystem",
    ReleaseAgentAccess.MOUNT: "setting release_agent as a cgroup v1 mount option: mount(2), remount, "
    "or fsconfig(2) of the new mount API",
}


def _claims(rule: Rule) -> List[TargetClaim]:
    assert isinstance(rule, ReleaseAgentRule)
    return [
        TargetClaim(target, watch, f"release_agent {access.value}")
        for access, (target, watch) in _SLOTS.items()
        if access in rule.access
    ]


def _parse(c: Checker, table: Mapping[str, Any], loc: KeyPath, meta: RuleMeta) -> Parsed:
    access = enum_set(c, table, loc, "access", ReleaseAgentAccess, list(ReleaseAgentAccess))
    return Parsed(ReleaseAgentRule(meta=meta, access=access))


def _describe(rule: Rule) -> List[str]:
    assert isinstance(rule, ReleaseAgentRule)
    return [words for access, words in _WORDS.items() if access in rule.access]


SPEC = claiming_kind(RuleKind.RELEASE_AGENT, ("access",), DEFAULTS, _parse, _claims, _describe)
