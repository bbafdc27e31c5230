"""What a rule kind must say about itself: the `KindSpec` interface and its parts.

A kind module (enforcer/kinds/<kind>.py) holds everything one kind knows and
exports one `SPEC`; `enforcer.kinds.KINDS` is the table parse, compile and
explain look kinds up in.

Kinds that protect fixed objects (the SysRq files, release_agent) describe
each thing a rule can cover as a `TargetClaim`: one kernel target slot, the
hook checks it needs, and how messages name it. `claiming_kind` builds the
spec of such a kind from its claims: its compile contribution and its
contradiction check follow from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Type

from enforcer import abi
from enforcer.mountinfo import MountTable
from enforcer.policy import Mode, Policy, Rule, RuleKind, RuleMeta, Scope, Severity
from enforcer.policyfile.schema import Checker, KeyPath

__all__ = [
    "KindDefaults",
    "KindSpec",
    "Parsed",
    "RuleDraft",
    "RulePlan",
    "TargetClaim",
    "claiming_kind",
    "claims_overlap",
    "claims_plan",
    "enum_set",
]


@dataclass(frozen=True)
class KindDefaults:
    """What a rule of the kind gets when it does not say; justified in docs/policy.md."""

    description: str
    severity: Severity
    mitre: str


@dataclass(frozen=True)
class Parsed:
    """A kind's part of a rule table, checked: the rule, and where its parts came from.

    `origin` is the kind's own record (e.g. list indices of its entries) for
    its overlap check to name places in the file; nothing else reads it.
    """

    rule: Rule
    origin: Any = None


@dataclass(frozen=True)
class RuleDraft:
    """A rule as far as it could be validated, with where it came from."""

    loc: KeyPath  # ("rule", N), N counted from 0 as in the data
    id: Optional[str]
    kind: Optional[RuleKind]
    scope: Scope
    parsed: Optional[Parsed] = None  # None when the kind is unknown


@dataclass(frozen=True)
class RulePlan:
    """One rule's part of the kernel maps (for each kernel scope its policy scope covers)."""

    targets: Tuple[abi.Target, ...] = ()  # target slots it owns
    filesystems: Tuple[str, ...] = ()  # exec_fstypes names it owns
    watch: abi.Watch = abi.Watch(0)  # hook checks it needs
    flags: abi.RuleFlag = abi.RuleFlag(0)  # kind-specific bits of the rule's RuleConfig


@dataclass(frozen=True)
class TargetClaim:
    """One protected object a rule covers."""

    target: abi.Target
    watch: abi.Watch
    words: str  # how contradiction messages name it, e.g. 'write of sysrq file "trigger"'


#: (checker, table of the rule, ("rule", N), what every rule has) -> the kind's part
ParseCheck = Callable[[Checker, Mapping[str, Any], KeyPath, RuleMeta], Parsed]
#: (checker, earlier rule, later rule): report what the later one contradicts
OverlapCheck = Callable[[Checker, RuleDraft, RuleDraft], None]
#: (policy, --mode override, the host's mount table if known) -> entries for kernel maps, by map name
PolicyPlan = Callable[[Policy, Optional[Mode], Optional[MountTable]], Mapping[str, Mapping]]
#: (policy, --mode override) -> lines for `enforcer check --explain`
PolicyNotes = Callable[[Policy, Optional[Mode]], List[str]]
#: rule -> the objects it covers, in message order
Claims = Callable[[Rule], Sequence[TargetClaim]]
#: (event path, filesystem type) -> the name of the setting the event is about, if any
SettingOf = Callable[[str, str], Optional[str]]


@dataclass(frozen=True)
class KindSpec:
    """Everything parse, compile and explain need to know about one rule kind."""

    kind: RuleKind
    keys: Tuple[str, ...]  # TOML keys of this kind, beyond those every rule has (docs/policy.md)
    defaults: KindDefaults
    parse: ParseCheck  # runs after the keys every rule has are checked
    #: contradiction with an earlier rule of the same kind whose scope overlaps
    overlap: OverlapCheck
    plan: Callable[[Rule], RulePlan]
    describe: Callable[[Rule], List[str]]  # "What:" lines of --explain
    #: map entries that depend on all rules of the kind together; called when the policy has any
    policy_plan: Optional[PolicyPlan] = None
    #: lines after the rules in --explain; called when the policy has rules of the kind
    policy_notes: Optional[PolicyNotes] = None
    #: names the setting an event of this kind is about (the event's "setting")
    setting_of: Optional[SettingOf] = None


def enum_set(
    c: Checker, table: Mapping[str, Any], loc: KeyPath, key: str, enum_type: Type[Any], default: Sequence[Any]
) -> FrozenSet[Any]:
    """`key` of a rule table as a set of `enum_type` members.

    `default` when the key is absent; empty when invalid (the problems are
    recorded, so the policy is refused anyway).
    """
    if key not in table:
        return frozenset(default)
    got = c.enum_list(table[key], loc + (key,), enum_type, key)
    return frozenset(got if got is not None else ())


def claims_plan(claims: Claims) -> Callable[[Rule], RulePlan]:
    """A rule owns the target slots of its claims and needs their hook checks."""

    def plan(rule: Rule) -> RulePlan:
        covered = claims(rule)
        watch = abi.Watch(0)
        for claim in covered:
            watch |= claim.watch
        return RulePlan(targets=tuple(claim.target for claim in covered), watch=watch)

    return plan


def claims_overlap(claims: Claims) -> OverlapCheck:
    """A target slot holds one rule per kernel scope: two rules may not claim the same object."""

    def overlap(c: Checker, earlier: RuleDraft, later: RuleDraft) -> None:
        assert earlier.parsed is not None and later.parsed is not None
        taken = {claim.target for claim in claims(earlier.parsed.rule)}
        for claim in claims(later.parsed.rule):
            if claim.target in taken:
                c.err(
                    later.loc,
                    f"{claim.words} is also covered by {c.ref(earlier.loc)} and their scopes overlap",
                )

    return overlap


def claiming_kind(
    kind: RuleKind,
    keys: Tuple[str, ...],
    defaults: KindDefaults,
    parse: ParseCheck,
    claims: Claims,
    describe: Callable[[Rule], List[str]],
    setting_of: Optional[SettingOf] = None,
) -> KindSpec:
    """The spec of a kind whose rules claim fixed objects, each a target slot."""
    return KindSpec(
        kind=kind,
        keys=keys,
        defaults=defaults,
        parse=parse,
        overlap=claims_overlap(claims),
        plan=claims_plan(claims),
        describe=describe,
        setting_of=setting_of,
    )
