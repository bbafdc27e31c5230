"""The exec rules of a policy together: the exec_places map and the deep-path fail-safe.

A place (directory node) belongs to the rule with the deepest listed directory
covering it; an executed file the kernel cannot place (deeper than
abi.PATH_WALK_STEPS) gets the fail-safe rule of `unresolved_rule`. Semantics in
docs/policy.md ("exec: places, longest place wins", "Deep paths: fail-safe").
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from enforcer import abi
from enforcer.matching import dir_node, kernel_scopes
from enforcer.plan import ExecPlaceValue, Prefix, RuleNumber, TargetSlot
from enforcer.policy import ExecRule, Mode, Policy, Rule

__all__ = ["exec_places", "unresolved_rule", "policy_plan", "policy_notes"]


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


def _place(node: str, covering: List[Tuple[int, ExecRule]]) -> ExecPlaceValue:
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
    return ExecPlaceValue(
        node_len=len(node.encode()),
        rule_direct=best_direct[1],
        rule_below=best_below[1],
        excluded=excluded,
    )


def exec_places(rules: Sequence[Rule]) -> Dict[Prefix, ExecPlaceValue]:
    """The exec_places map: every listed or excluded directory node, per kernel scope."""
    places: Dict[Prefix, ExecPlaceValue] = {}
    for scope in abi.KernelScope:
        covering = _exec_rules_in(rules, scope)
        nodes: Set[str] = set()
        for _, rule in covering:
            nodes.update(dir_node(d.path) for d in rule.dirs)
            nodes.update(dir_node(e) for e in rule.exclude)
        for node in sorted(nodes):
            value = _place(node, covering)
            if value.rule_direct or value.rule_below or value.excluded:
                places[Prefix(namespace=int(scope), text=node)] = value
    return places


def policy_plan(policy: Policy, mode_override: Optional[Mode]) -> Mapping[str, Mapping]:
    """Map entries of all exec rules together: the places and the fail-safe target slots."""
    fallbacks: Dict[TargetSlot, RuleNumber] = {}
    for scope in abi.KernelScope:
        fallback = unresolved_rule(policy, scope, mode_override)
        if fallback:
            fallbacks[TargetSlot(abi.Target.EXEC_UNRESOLVED, scope)] = RuleNumber(fallback)
    return {"targets": fallbacks, "exec_places": exec_places(policy.rules)}


def policy_notes(policy: Policy, mode_override: Optional[Mode]) -> List[str]:
    """--explain: how places of several rules combine, and what the fail-safe applies."""
    out = [
        "",
        "Where exec places of several rules nest, the deepest listed directory decides.",
        f"Deep paths: the kernel walks at most {abi.PATH_WALK_STEPS} path components and mount points. An executed file "
        "deeper than that cannot be placed; instead of allowing it, the kernel applies:",
    ]
    for scope, words in ((abi.KernelScope.HOST, "host"), (abi.KernelScope.CONTAINER, "containers")):
        number = unresolved_rule(policy, scope, mode_override)
        if number:
            rule = policy.rules[number - 1]
            mode = policy.effective_mode(rule, mode_override).value
            out.append(f"  - {words}: rule {number} \"{rule.meta.id}\" ({mode})")
        else:
            out.append(f"  - {words}: nothing (no exec rule with dirs covers {words}); such files run")
    return out
