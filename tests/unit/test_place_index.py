"""Placing exec directories by their ancestors (exec_places._PlaceIndex) gives
exactly what the definition says: for each node, the longest listed
directory covering it among the rules that do not exclude it. The reference
below is that definition, written the plain quadratic way; random rule sets
(overlaps between rules, excluded and non-recursive listings, "/") must
compile to the same places. The compiler's allowlist propagation is checked
the same way against its definition."""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

import pytest

from enforcer import abi
from enforcer.compile import _propagate
from enforcer.kinds.exec_places import exec_places
from enforcer.matching import dir_node
from enforcer.plan import ExecPlaceValue, Prefix, RuleMask
from enforcer.policy import Allowlist, ExecDir, ExecRule, RuleMeta, Scope, Severity

TREE = ["/", "/a", "/a/b", "/a/b/c", "/a/bc", "/a/b/c/d", "/ab", "/x", "/x/y", "/x/y/z", "/tmp", "/tmp/keep"]


def _reference(node: str, covering: List[Tuple[int, ExecRule]]) -> ExecPlaceValue:
    excluded = 0
    for number, rule in covering:
        if any(node.startswith(dir_node(e)) for e in rule.exclude):
            excluded |= 1 << number
    best_below, best_direct = (-1, 0), (-1, 0)
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
            elif not d.recursive and prefix == node and len(prefix) > best_direct[0]:
                best_direct = (len(prefix), number)
    return ExecPlaceValue(node_len=len(node.encode()), rule_direct=best_direct[1], rule_below=best_below[1],
                          excluded=excluded)


def _rule(rng: random.Random, n: int) -> ExecRule:
    meta = RuleMeta(id=f"r{n}", description="", severity=Severity.HIGH, mitre="", mode=None,
                    scope=rng.choice(list(Scope)), allow=Allowlist())
    dirs = tuple(ExecDir(p, recursive=rng.random() < 0.7) for p in rng.sample(TREE, rng.randint(0, 4)))
    exclude = tuple(rng.sample(TREE[1:], rng.randint(0, 2)))
    return ExecRule(meta=meta, dirs=dirs, filesystems=frozenset(), memfd=False, exclude=exclude)


def _expected(rules: List[ExecRule]) -> Dict[Prefix, ExecPlaceValue]:
    out: Dict[Prefix, ExecPlaceValue] = {}
    for scope in abi.KernelScope:
        covering = [(n, r) for n, r in enumerate(rules, start=1)
                    if r.meta.scope in (Scope.ALL, Scope.HOST if scope == abi.KernelScope.HOST else Scope.CONTAINER)]
        nodes = {dir_node(d.path) for _, r in covering for d in r.dirs} | {dir_node(e) for _, r in covering for e in r.exclude}
        for node in sorted(nodes):
            value = _reference(node, covering)
            if value.rule_direct or value.rule_below or value.excluded:
                out[Prefix(namespace=int(scope), text=node)] = value
    return out


@pytest.mark.parametrize("seed", range(300))
def test_places_by_ancestors_equal_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    rules = [_rule(rng, n) for n in range(1, rng.randint(1, 5) + 1)]
    assert exec_places(rules) == _expected(rules)


def test_an_excluding_rule_yields_the_node_to_the_next_rule_listing_it() -> None:
    meta = RuleMeta(id="r", description="", severity=Severity.HIGH, mitre="", mode=None, scope=Scope.HOST,
                    allow=Allowlist())
    first = ExecRule(meta=meta, dirs=(ExecDir("/tmp"),), filesystems=frozenset(), memfd=False, exclude=("/tmp",))
    second = ExecRule(meta=meta, dirs=(ExecDir("/tmp"),), filesystems=frozenset(), memfd=False, exclude=())
    places = exec_places([first, second])
    assert places[Prefix(int(abi.KernelScope.HOST), "/tmp/")] == ExecPlaceValue(
        node_len=5, rule_direct=2, rule_below=2, excluded=1 << 1)


@pytest.mark.parametrize("seed", range(100))
def test_allowlist_propagation_equals_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    keys = {Prefix(0, dir_node(p)) for p in rng.sample(TREE, rng.randint(1, len(TREE)))}
    keys |= {Prefix(0, p, exact=True) for p in rng.sample(TREE[1:], rng.randint(0, 4))}
    masks = {key: rng.randint(1, 255) for key in keys}
    expected = {key: RuleMask(sum_or(masks[o] for o in keys if key.data().startswith(o.data()))) for key in keys}
    assert _propagate(masks) == expected


def sum_or(values) -> int:
    out = 0
    for value in values:
        out |= value
    return out
