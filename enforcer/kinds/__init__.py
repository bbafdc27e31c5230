"""Rule kinds: one module per kind, one table to look them up in.

Each kind module (`sysrq`, `release_agent`, `exec`, `kernel_helper`, `tamper`) holds everything its kind
knows: its extra TOML keys, its defaults, its parse check, its contradiction
check against an earlier rule of the same kind, its part of the kernel maps
and its lines in `enforcer check --explain`. Parse, compile and explain only
iterate over or look up `KINDS`.

Adding a kind: its rule dataclass in enforcer.policy and a RuleKind member,
a module here exporting `SPEC` (see `enforcer.kinds.base.KindSpec`), an entry
in `_SPECS`, and its keys in docs/policy.md.
"""

from __future__ import annotations

from typing import Dict, List

from enforcer.kinds import exec as exec_kind
from enforcer.kinds import kernel_helper, release_agent, sysrq, tamper
from enforcer.kinds.base import KindDefaults, KindSpec, RuleDraft
from enforcer.policy import Policy, RuleKind

__all__ = ["KINDS", "KindSpec", "KindDefaults", "RuleDraft", "kinds_in"]

_SPECS = (sysrq.SPEC, release_agent.SPEC, exec_kind.SPEC, kernel_helper.SPEC, tamper.SPEC)

#: Every kind's spec, in RuleKind order (the order of key lists in messages).
#: Building it fails on import when a RuleKind has no spec.
_BY_KIND = {spec.kind: spec for spec in _SPECS}
KINDS: Dict[RuleKind, KindSpec] = {kind: _BY_KIND[kind] for kind in RuleKind}


def kinds_in(policy: Policy) -> List[KindSpec]:
    """The specs of the kinds `policy` has rules of, in RuleKind order."""
    present = {rule.kind for rule in policy.rules}
    return [spec for kind, spec in KINDS.items() if kind in present]
