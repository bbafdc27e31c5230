"""Decoded TOML -> Policy: the top level, what every rule has, allowlists, allow.d.

Each rule kind's own keys are checked by its spec in `enforcer.kinds`; this
module checks everything else, then asks each kind whether a rule contradicts
an earlier one of the same kind. Problems are recorded in the order found:
the order of keys below is the order of messages, and tests pin it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from enforcer import abi
from enforcer.kinds import KINDS, RuleDraft
from enforcer.kinds.base import Parsed
from enforcer.matching import scopes_overlap
from enforcer.policy import Allowlist, Mode, Policy, RuleKind, RuleMeta, Scope, Severity
from enforcer.policyfile.risks import cgroup_risk, exe_dir_risk, exe_risk, uid_risk
from enforcer.policyfile.schema import Checker, KeyPath, listed, quoted, type_name

__all__ = ["SUPPORTED_VERSION", "check_policy", "check_allow_d"]

SUPPORTED_VERSION = 1

_TOP_KEYS = ("version", "mode", "allow", "rule")
_ALLOW_D_KEYS = ("allow", "rule_allow")
_ALLOW_KEYS = ("exe", "exe_dirs", "uid", "cgroup")
_COMMON_RULE_KEYS = ("id", "kind", "description", "severity", "mitre", "mode", "scope", "allow")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")
_MITRE_RE = re.compile(r"T\d{4}(\.\d{3})?\Z")
_UID_MAX = 4294967294

T = TypeVar("T")


# --- allowlists ---------------------------------------------------------------------


def _uid(c: Checker, item: Any, where: KeyPath) -> Optional[int]:
    if isinstance(item, bool) or not isinstance(item, int):
        c.err(where, f"expected an integer, got {type_name(item)}")
        return None
    if not 0 <= item <= _UID_MAX:
        c.err(where, f"uid {item} is out of range (0..{_UID_MAX})")
        return None
    return item


def _warn_risky(c: Checker, loc: KeyPath, entries: Sequence[Tuple[int, T]], risk: Callable[[T], Optional[str]]) -> None:
    """A warning for each valid entry of array `loc` that exempts far more than it seems to."""
    for i, entry in entries:
        why = risk(entry)
        if why is not None:
            c.warn(loc + (i,), why)


def check_allowlist(c: Checker, value: Any, loc: KeyPath) -> Allowlist:
    table = c.table(value, loc)
    if table is None:
        return Allowlist()
    c.keys(table, loc, _ALLOW_KEYS)
    exe: List[Tuple[int, str]] = []
    exe_dirs: List[Tuple[int, str]] = []
    cgroups: List[Tuple[int, str]] = []
    uids: List[Tuple[int, int]] = []
    if "exe" in table:
        exe = c.path_list(table["exe"], loc + ("exe",), "exe")
        _warn_risky(c, loc + ("exe",), exe, exe_risk)
    if "exe_dirs" in table:
        exe_dirs = c.path_list(table["exe_dirs"], loc + ("exe_dirs",), "dir", refuse_root="allow every executable")
        _warn_risky(c, loc + ("exe_dirs",), exe_dirs, exe_dir_risk)
    if "cgroup" in table:
        cgroups = c.path_list(table["cgroup"], loc + ("cgroup",), "cgroup", refuse_root="allow every process")
        _warn_risky(c, loc + ("cgroup",), cgroups, cgroup_risk)
    if "uid" in table:
        items = c.array(table["uid"], loc + ("uid",)) or []
        uids = c.distinct(items, loc + ("uid",), _uid)
        _warn_risky(c, loc + ("uid",), uids, uid_risk)
    return Allowlist(
        exe=tuple(p for _, p in exe),
        exe_dirs=tuple(p for _, p in exe_dirs),
        uid=tuple(u for _, u in uids),
        cgroup=tuple(p for _, p in cgroups),
    )


# --- rules --------------------------------------------------------------------------

#: Every key any rule may have: the common ones, then each kind's in RuleKind order.
_ALL_RULE_KEYS: Tuple[str, ...] = tuple(
    dict.fromkeys(_COMMON_RULE_KEYS + tuple(key for spec in KINDS.values() for key in spec.keys))
)


def _check_rule_keys(c: Checker, table: Dict[str, Any], loc: KeyPath, kind: Optional[RuleKind]) -> None:
    if kind is None:
        c.keys(table, loc, _ALL_RULE_KEYS)
        return
    allowed = _COMMON_RULE_KEYS + KINDS[kind].keys
    for key in table:
        if key in allowed:
            continue
        if key in _ALL_RULE_KEYS:
            owners = [k.value for k, spec in KINDS.items() if key in spec.keys]
            c.err(loc + (key,), f'"{key}" is not valid for kind "{kind.value}" (only for {listed(owners)})')
        else:
            c.keys({key: None}, loc, allowed, where=f' for kind "{kind.value}"')


@dataclass(frozen=True)
class _KindFound:
    """What a rule's `kind` says: the kind, or, when it names none, the kind the
    rule's other keys are checked as (so that one typo does not hide the rest)."""

    kind: Optional[RuleKind]
    checked_as: Optional[RuleKind] = None

    @property
    def keys_of(self) -> Optional[RuleKind]:
        return self.kind or self.checked_as


def _guess_kind(written: Optional[str], table: Dict[str, Any]) -> Tuple[Optional[RuleKind], str]:
    """The kind a rule without a valid `kind` is checked as, and what to add to the
    message about `kind`; no kind when the rule's keys do not say which.

    Only kinds that have every kind-specific key the rule uses are candidates:
    among them the one `written` is a misspelling of, else the only one.
    """
    own = [key for key in table if key in _ALL_RULE_KEYS and key not in _COMMON_RULE_KEYS]
    fits = [kind for kind, spec in KINDS.items() if all(key in spec.keys for key in own)]
    if written is not None:
        close = difflib.get_close_matches(written, [kind.value for kind in fits], n=1)
        if close:
            return RuleKind(close[0]), f'; did you mean "{close[0]}"? (its other keys are checked as kind "{close[0]}")'
    if own and len(fits) == 1:
        return fits[0], (f'; its other keys are checked as kind "{fits[0].value}", '
                         f"the only kind with {listed(own)}")
    if own:
        return None, f"; {listed(own)} can be checked once the kind is known"
    return None, ""


def _check_kind(c: Checker, table: Dict[str, Any], loc: KeyPath) -> _KindFound:
    allowed = f"(allowed: {listed(k.value for k in RuleKind)})"
    if "kind" in table:
        value = table["kind"]
        if isinstance(value, str) and value in {k.value for k in RuleKind}:
            return _KindFound(RuleKind(value))
        written = value if isinstance(value, str) else None
        problem = f"unknown value {quoted(value)} {allowed}" if written is not None else (
            f"expected a string, got {type_name(value)} {allowed}")
    else:
        written = None
        problem = f"missing {allowed}"
    guess, note = _guess_kind(written, table)
    c.err(loc + ("kind",), problem + note)
    return _KindFound(None, guess)


def _valid_id(value: Any) -> Optional[str]:
    """The rule id in `value` if it is one, to name the rule in messages before it is checked."""
    return value if isinstance(value, str) and _ID_RE.match(value) else None


def _check_id(c: Checker, table: Dict[str, Any], loc: KeyPath) -> Optional[str]:
    if "id" not in table:
        c.err(loc + ("id",), "missing (every rule needs an id)")
        return None
    rule_id = c.string(table["id"], loc + ("id",))
    if rule_id is not None and not _ID_RE.match(rule_id):
        c.err(
            loc + ("id",),
            f"invalid id {quoted(rule_id)} (1-63 characters: lowercase letters, digits, "
            '"_", "." and "-", starting with a letter or digit)',
        )
        return None
    return rule_id


def _check_rule(c: Checker, value: Any, index: int) -> Optional[RuleDraft]:
    loc: KeyPath = ("rule", index)
    table = c.table(value, loc)
    if table is None:
        return None
    c.name_rule(index, _valid_id(table.get("id")))

    found = _check_kind(c, table, loc)
    kind = found.kind
    _check_rule_keys(c, table, loc, found.keys_of)
    rule_id = _check_id(c, table, loc)

    defaults = KINDS[found.keys_of].defaults if found.keys_of is not None else None
    description = defaults.description if defaults else ""
    if "description" in table:
        text = c.string(table["description"], loc + ("description",))
        if text is not None and not text.strip():
            c.err(loc + ("description",), "empty (leave the key out for the default description)")
        elif text is not None:
            description = text.strip()

    severity = defaults.severity if defaults else Severity.HIGH
    if "severity" in table:
        severity = c.enum(table["severity"], loc + ("severity",), Severity) or severity

    mitre = defaults.mitre if defaults else ""
    if "mitre" in table:
        text = c.string(table["mitre"], loc + ("mitre",))
        if text is not None and not _MITRE_RE.match(text):
            c.err(loc + ("mitre",), f'invalid ATT&CK technique {quoted(text)} (expected like "T1611" or "T1562.001")')
        elif text is not None:
            mitre = text

    mode: Optional[Mode] = None
    if "mode" in table:
        mode = c.enum(table["mode"], loc + ("mode",), Mode)

    scope = Scope.ALL
    if "scope" in table:
        scope = c.enum(table["scope"], loc + ("scope",), Scope) or scope

    allow = Allowlist()
    if "allow" in table:
        allow = check_allowlist(c, table["allow"], loc + ("allow",))

    parsed: Optional[Parsed] = None
    if found.keys_of is not None:
        meta = RuleMeta(
            id=rule_id or "",
            description=description,
            severity=severity,
            mitre=mitre,
            mode=mode,
            scope=scope,
            allow=allow,
        )
        parsed = KINDS[found.keys_of].parse(c, table, loc, meta)
    if kind is None:  # checked as a guessed kind: never compared with other rules
        parsed = None
    return RuleDraft(loc=loc, id=rule_id, kind=kind, scope=scope, parsed=parsed)


def _check_overlaps(c: Checker, drafts: List[RuleDraft]) -> None:
    """Contradictions between rules of the same kind whose scopes overlap."""
    for n, later in enumerate(drafts):
        if later.parsed is None or later.kind is None:
            continue
        for earlier in drafts[:n]:
            if earlier.parsed is None or earlier.kind is not later.kind:
                continue
            if scopes_overlap(earlier.scope, later.scope):
                KINDS[later.kind].overlap(c, earlier, later)


# --- files --------------------------------------------------------------------------


def _check_version(c: Checker, data: Dict[str, Any]) -> Optional[int]:
    if "version" not in data:
        c.err(("version",), f"missing (write version = {SUPPORTED_VERSION} at the top)")
        return None
    value = data["version"]
    if isinstance(value, bool) or not isinstance(value, int):
        c.err(("version",), f"expected an integer, got {type_name(value)}")
        return None
    if value != SUPPORTED_VERSION:
        c.err(("version",), f"unsupported version {value} (this enforcer reads version {SUPPORTED_VERSION})")
        return None
    return value


def _check_rules(c: Checker, raw_rules: Any) -> List[RuleDraft]:
    drafts: List[RuleDraft] = []
    if raw_rules is None:
        c.err(("rule",), "no rules: a policy needs at least one [[rule]]")
        return drafts
    if not isinstance(raw_rules, list):
        hint = "; write [[rule]], not [rule]" if isinstance(raw_rules, dict) else ""
        c.err(("rule",), f"expected an array of tables ([[rule]]), got {type_name(raw_rules)}{hint}")
        return drafts
    if not raw_rules:
        c.err(("rule",), "no rules: a policy needs at least one [[rule]]")
    if len(raw_rules) > abi.MAX_RULES:
        # placed at the first rule too many
        c.err(("rule", abi.MAX_RULES), f"{len(raw_rules)} rules; at most {abi.MAX_RULES} are supported")
    ids: Dict[str, int] = {}
    for index, value in enumerate(raw_rules):
        draft = _check_rule(c, value, index)
        if draft is None:
            continue
        drafts.append(draft)
        if draft.id is not None:
            if draft.id in ids:
                first = ids[draft.id]
                c.err(draft.loc + ("id",), f"duplicate id {quoted(draft.id)}: rule {first + 1} on line "
                                           f"{c.line(('rule', first, 'id'))} has it too")
            else:
                ids[draft.id] = index
    _check_overlaps(c, drafts)
    return drafts


def check_policy(c: Checker, data: Dict[str, Any]) -> Tuple[Optional[Policy], List[RuleDraft]]:
    """The policy in `data`, or None when `c` recorded problems; and every rule as far as it got."""
    c.keys(data, (), _TOP_KEYS)
    version = _check_version(c, data)
    mode: Optional[Mode] = Mode.ENFORCE
    if "mode" in data:
        mode = c.enum(data["mode"], ("mode",), Mode)
    allow = Allowlist()
    if "allow" in data:
        allow = check_allowlist(c, data["allow"], ("allow",))
    drafts = _check_rules(c, data.get("rule"))
    if c.failed() or version is None or mode is None:
        return None, drafts
    rules = tuple(d.parsed.rule for d in drafts if d.parsed is not None)
    return Policy(source=c.file, version=version, mode=mode, allow=allow, rules=rules), drafts


def check_allow_d(
    c: Checker, data: Dict[str, Any], rule_ids: Optional[Sequence[str]], policy_path: Optional[str]
) -> Tuple[Allowlist, Dict[str, Allowlist]]:
    """The global and per-rule exceptions of one allow.d file of the policy at `policy_path`.

    `rule_ids` None: the policy is not known (a drop-in checked alone), so the
    ids of `rule_allow` are not checked.
    """
    c.keys(data, (), _ALLOW_D_KEYS, where=" in an allow.d file")
    allow = Allowlist()
    per_rule: Dict[str, Allowlist] = {}
    if "allow" in data:
        allow = check_allowlist(c, data["allow"], ("allow",))
    if "rule_allow" in data:
        table = c.table(data["rule_allow"], ("rule_allow",))
        for rule_id, value in (table or {}).items():
            loc: KeyPath = ("rule_allow", rule_id)
            entries = check_allowlist(c, value, loc)
            if rule_ids is not None and rule_id not in rule_ids:
                known = ", ".join(f'"{r}"' for r in rule_ids) or "none"
                close = difflib.get_close_matches(rule_id, list(rule_ids), n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                c.err(loc, f"no rule with id {quoted(rule_id)} in {policy_path}{hint} (rules: {known})")
                continue
            per_rule[rule_id] = entries
    return allow, per_rule
