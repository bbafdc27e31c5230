"""TOML policy files -> `enforcer.policy.Policy`, strictly.

Every problem is collected and reported at once as a `PolicyError` whose
`.errors` are `PolicyProblem`s:

* syntax problems:   ``FILE:LINE:COL: message``
* meaning problems:  ``FILE:LINE: KEY: message`` (KEY like ``rule 3 "exec-tmp" allow.exe[0]``:
  rules count from 1, as in ``enforcer check --explain``, and are named by id)
* file problems:     ``FILE: message``

Problems are listed file by file, each file's by line.

Nothing here raises anything but `PolicyError` for a bad file: no traceback
for empty, huge, binary or deeply nested input. See docs/policy.md.

The layers are in `enforcer.policyfile` (reader, schema, rules) and each rule
kind's own checks in `enforcer.kinds`; this module is the public entry.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Tuple

from enforcer.kinds import KINDS, KindDefaults, RuleDraft
from enforcer.kinds.exec import KNOWN_FILESYSTEMS
from enforcer.policy import Allowlist, Policy, RuleKind
from enforcer.policyfile.problems import PolicyError, PolicyProblem, in_file_order
from enforcer.policyfile.reader import MAX_NESTING, MAX_POLICY_BYTES, parse_toml, read_toml
from enforcer.policyfile.rules import check_allow_d, check_policy
from enforcer.policyfile.schema import Checker

__all__ = [
    "PolicyProblem",
    "PolicyError",
    "load_policy",
    "loads_policy",
    "allow_d_files",
    "DropIn",
    "load_drop_in",
    "is_drop_in_path",
    "policy_of_drop_in",
    "MAX_POLICY_BYTES",
    "MAX_NESTING",
    "KNOWN_FILESYSTEMS",
    "KIND_DEFAULTS",
]

#: What a rule gets when it does not say, per kind; justified in docs/policy.md.
KIND_DEFAULTS: Dict[RuleKind, KindDefaults] = {kind: spec.defaults for kind, spec in KINDS.items()}


def loads_policy(text: "str | bytes", source: str = "<policy>") -> Policy:
    """Parse and validate policy text (no allow.d). Raises PolicyError."""
    problems: List[PolicyProblem] = []
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError([PolicyProblem(source, f"file is {len(raw)} bytes; policy files are limited to 1 MiB")])
    document = parse_toml(raw, source, problems, allow_empty=False)
    if document is None:
        raise PolicyError(problems)
    policy, _ = check_policy(Checker(source, problems, document.lines), document.data)
    if any(p.is_error for p in problems) or policy is None:
        raise PolicyError(in_file_order(problems))
    return dataclasses.replace(policy, warnings=tuple(in_file_order(problems)))


def allow_d_files(path: str) -> List[str]:
    """The allow.d/*.toml files that belong to the policy at `path`, in merge order."""
    directory = os.path.join(os.path.dirname(path) or ".", "allow.d")
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(directory, n) for n in sorted(names) if n.endswith(".toml") and not n.startswith(".")]


#: Files allow.d may hold that are not drop-ins, and are not worth a warning.
_ALLOW_D_QUIET = ("README",)


def ignored_allow_d_files(path: str) -> List[str]:
    """Files in the policy's allow.d that are NOT read (not *.toml): an operator
    who wrote 10-x.conf expects it to apply, so callers say it does not."""
    directory = os.path.join(os.path.dirname(path) or ".", "allow.d")
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(directory, n) for n in sorted(names)
            if not n.endswith(".toml") and not n.startswith(".") and n not in _ALLOW_D_QUIET]


#: An allow.d file as it is about to be written (its content), or removed (None).
Staged = Mapping[str, Optional[bytes]]


def _staged_names(directory: str, staged: Staged) -> Dict[str, Optional[bytes]]:
    """`staged` by file name; every path must be in `directory` (the policy's allow.d)."""
    names: Dict[str, Optional[bytes]] = {}
    for staged_path, content in staged.items():
        if os.path.dirname(os.path.abspath(staged_path)) != os.path.abspath(directory):
            raise ValueError(f"{staged_path} is not in {directory}")
        names[os.path.basename(staged_path)] = content
    return names


def _read_allow_d_file(path: str, problems: List[PolicyProblem], content: Optional[bytes]):
    """The file from disk, or `content` when it is staged (checked like a file read from disk)."""
    if content is None:
        return read_toml(path, problems, allow_empty=True)
    if len(content) > MAX_POLICY_BYTES:
        problems.append(PolicyProblem(path, f"file is {len(content)} bytes; policy files are limited to 1 MiB"))
        return None
    return parse_toml(content, path, problems, allow_empty=True)


def load_policy(path: "str | os.PathLike[str]", staged: Staged = {}) -> Policy:  # noqa: B006 - never mutated
    """Read, validate and return the policy at `path` with its allow.d files merged in.

    `staged`: allow.d files (paths in the policy's allow.d) as they are about
    to be written, or None for one about to be removed, validated in place of
    what the disk holds: `enforcer allow` checks a change before making it.

    Raises PolicyError listing every problem in the policy and its allow.d files.
    """
    path = os.fspath(path)
    problems: List[PolicyProblem] = []
    document = read_toml(path, problems, allow_empty=False)
    policy: Optional[Policy] = None
    drafts: List[RuleDraft] = []
    if document is not None:
        policy, drafts = check_policy(Checker(path, problems, document.lines), document.data)
    rule_ids = [d.id for d in drafts if d.id is not None]
    directory = os.path.join(os.path.dirname(path) or ".", "allow.d")
    try:
        extra_files = allow_d_files(path) if os.path.isdir(directory) else []
    except OSError as exc:  # pragma: no cover - e.g. unreadable directory
        problems.append(PolicyProblem(directory, f"cannot read: {exc.strerror or exc}"))
        extra_files = []
    pending = _staged_names(directory, staged)
    if pending:
        # the merge order is the name order, staged files included
        names = {os.path.basename(f) for f in extra_files} | {n for n, c in pending.items() if c is not None}
        names -= {n for n, c in pending.items() if c is None}
        extra_files = [os.path.join(directory, n) for n in sorted(names)
                       if n.endswith(".toml") and not n.startswith(".")]
    global_allow = Allowlist()
    per_rule: Dict[str, Allowlist] = {}
    for extra in extra_files:
        extra_document = _read_allow_d_file(extra, problems, pending.get(os.path.basename(extra)))
        if extra_document is None:
            continue
        more, more_rules = check_allow_d(
            Checker(extra, problems, extra_document.lines), extra_document.data, rule_ids, path)
        global_allow = global_allow.merged(more)
        for rule_id, entries in more_rules.items():
            per_rule[rule_id] = per_rule.get(rule_id, Allowlist()).merged(entries)
    if any(p.is_error for p in problems) or policy is None:
        raise PolicyError(in_file_order(problems))
    rules = []
    for rule in policy.rules:
        extra_allow = per_rule.get(rule.meta.id)
        if extra_allow is not None:
            meta = dataclasses.replace(rule.meta, allow=rule.meta.allow.merged(extra_allow))
            rule = dataclasses.replace(rule, meta=meta)
        rules.append(rule)
    return dataclasses.replace(
        policy,
        allow=policy.allow.merged(global_allow),
        rules=tuple(rules),
        allow_sources=tuple(extra_files),
        warnings=tuple(in_file_order(problems)),  # no errors here: every problem is a warning
    )


# --- a drop-in checked alone ----------------------------------------------------------

#: The policy file an allow.d directory belongs to, as packaged (/etc/enforcer/policy.toml).
DEFAULT_POLICY_NAME = "policy.toml"


@dataclasses.dataclass(frozen=True)
class DropIn:
    """One allow.d file, checked with the rules for drop-ins, and what it adds."""

    source: str
    #: the policy its rule ids were checked against; None: not checked (policy unknown)
    policy: Optional[str]
    allow: Allowlist  # added to the global allowlist
    rule_allow: Tuple[Tuple[str, Allowlist], ...]  # (rule id, added to that rule's allowlist), in file order
    rule_numbers: Tuple[Tuple[str, int], ...]  # rule id -> number (from 1) in the policy, when known
    warnings: Tuple[PolicyProblem, ...] = ()


def is_drop_in_path(path: "str | os.PathLike[str]") -> bool:
    """A file directly inside a directory named allow.d is a drop-in, not a policy."""
    return os.path.basename(os.path.dirname(os.path.abspath(os.fspath(path)))) == "allow.d"


def policy_of_drop_in(path: "str | os.PathLike[str]") -> Optional[str]:
    """The policy an allow.d file belongs to: policy.toml beside its allow.d, if there is one."""
    candidate = os.path.join(os.path.dirname(os.path.dirname(os.fspath(path))), DEFAULT_POLICY_NAME)
    return candidate if is_drop_in_path(path) and os.path.isfile(candidate) else None


def _rule_numbers(policy_path: str, problems: List[PolicyProblem]) -> Optional[Dict[str, int]]:
    """Rule id -> number of the policy a drop-in names; None (with problems) if it cannot be read.

    The policy's own semantic errors are not the drop-in's: its rules are
    taken as far as they could be checked (`enforcer check POLICY` says more).
    """
    document = read_toml(policy_path, problems, allow_empty=False)
    if document is None:
        return None
    _, drafts = check_policy(Checker(policy_path, []), document.data)
    return {d.id: int(d.loc[1]) + 1 for d in drafts if d.id is not None}  # loc is ("rule", index)


def load_drop_in(path: "str | os.PathLike[str]", policy_path: Optional[str], content: Optional[bytes] = None) -> DropIn:
    """Read and validate one allow.d file on its own, its rule ids against `policy_path`
    (when given). `content`: the file as it is about to be written, checked
    instead of reading `path`. Raises PolicyError listing every problem."""
    path = os.fspath(path)
    problems: List[PolicyProblem] = []
    numbers: Optional[Dict[str, int]] = None
    if policy_path is not None:
        numbers = _rule_numbers(policy_path, problems)
    document = _read_allow_d_file(path, problems, content)
    allow, per_rule = Allowlist(), {}
    if document is not None:
        allow, per_rule = check_allow_d(
            Checker(path, problems, document.lines), document.data,
            list(numbers) if numbers is not None else None, policy_path)
    if any(p.is_error for p in problems):  # also when either file could not be read
        raise PolicyError(in_file_order(problems))
    return DropIn(
        source=path,
        policy=policy_path,
        allow=allow,
        rule_allow=tuple(per_rule.items()),
        rule_numbers=tuple((numbers or {}).items()),
        warnings=tuple(in_file_order(problems)),
    )
