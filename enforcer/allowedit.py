"""`enforcer allow add|remove|list`: edit the policy's allow.d safely, and apply it.

A change is made only when the whole policy is valid with it: the edited
file is validated in place (enforcer.parse.load_policy with the file staged),
with the same errors `enforcer check` prints, before anything is written; a
new entry that is risky (enforcer.policyfile.risks) is refused unless
--force, and its warning is printed either way. The file is then replaced
atomically (enforcer.atomicfile: temporary file, fsync, rename), root's,
mode 0644, and the running agent reloaded through `enforcer reload`'s code,
whose verdict is printed. Edits keep the file's comments and layout
(enforcer.policyfile.edit). Two editors at once are serialised by an flock
on the policy's directory.

Only per-rule entries (`[rule_allow.RULE-ID]`) are added: an exception for
every rule is rarely what an audit log shows, and stays a hand edit.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple

from enforcer.exitcodes import ExitCode
from enforcer.policy import Policy
from enforcer.policyfile.edit import EditError, Value, add_entry, remove_entry, toml_value
from enforcer.policyfile.locate import KeyPath, line_of
from enforcer.policyfile.problems import PolicyError, PolicyProblem
from enforcer.policyfile.reader import parse_toml, read_toml

__all__ = ["DEFAULT_FILE", "KEYS", "Entry", "list_entries", "allow_add_command", "allow_remove_command",
           "allow_list_command"]

#: The drop-in `allow add` writes unless told (--file): after packaged or
#: configuration-managed files named 10-..., before late overrides named 90-...
DEFAULT_FILE = "50-local.toml"
#: The command line's option -> the allowlist key it edits.
KEYS = {"exe": "exe", "exe_dir": "exe_dirs", "cgroup": "cgroup", "uid": "uid"}
HEADER = ("# Local exceptions, edited by `enforcer allow add|remove` (hand edits are kept).\n"
          "# Format: \"allow.d\" in enforcer.toml(5); list them all: enforcer allow list\n")
ORDER = ("exe", "exe_dirs", "cgroup", "uid")


@dataclass(frozen=True)
class Entry:
    """One allowlist entry, where it is written and whom it exempts from what."""

    file: str
    line: int
    rule: Optional[str]  # None: the global allowlist (every rule)
    rule_number: Optional[int]  # from 1, as `check --explain` numbers rules
    key: str  # exe | exe_dirs | cgroup | uid
    value: Value
    path: KeyPath  # the entry's key path in its file
    warning: str = ""  # why it is risky (enforcer check's warning), if it is

    def describe(self) -> str:
        whom = "every rule (global allowlist)" if self.rule is None else f'rule {self.rule_number} "{self.rule}"'
        risky = " [risky]" if self.warning else ""
        return f"{self.file}:{self.line}: {whom}: {self.key} {toml_value(self.value)}{risky}"


def _entries_of(file: str, table: object, base: KeyPath, lines, rule: Optional[str],
                number: Optional[int], warnings) -> List[Entry]:
    out: List[Entry] = []
    if not isinstance(table, dict):
        return out
    for key in ORDER:  # read in this order, listed by line (list_entries)
        for index, value in enumerate(table.get(key) or ()):
            path = base + (key, index)
            out.append(Entry(file, line_of(lines, path), rule, number, key, value, path,
                             warnings.get((file, path), "")))
    return out


def _document(file: str, staged: Mapping[str, str], problems: List[PolicyProblem], allow_empty: bool):
    if file in staged:
        return parse_toml(staged[file].encode(), file, problems, allow_empty)
    return read_toml(file, problems, allow_empty)


def list_entries(policy: Policy, staged: Mapping[str, str] = {}) -> List[Entry]:  # noqa: B006 - never mutated
    """Every allowlist entry of a valid policy: its own, then its allow.d files' in
    merge order. `staged`: files validated as this text, not written yet."""
    warnings = {(w.file, w.path): w.message for w in policy.warnings}
    problems: List[PolicyProblem] = []
    document = _document(policy.source, staged, problems, allow_empty=False)
    if document is None:  # changed on disk since it was validated
        raise PolicyError(problems)
    numbers = {rule.meta.id: n for n, rule in enumerate(policy.rules, start=1)}
    entries = _entries_of(policy.source, document.data.get("allow"), ("allow",), document.lines, None, None,
                          warnings)
    for index, rule in enumerate(document.data.get("rule", [])):
        rule_id = rule.get("id")
        entries += _entries_of(policy.source, rule.get("allow"), ("rule", index, "allow"), document.lines,
                               rule_id, numbers.get(rule_id), warnings)
    entries.sort(key=lambda e: e.line)
    for file in policy.allow_sources:
        extra = _document(file, staged, problems, allow_empty=True)
        if extra is None:
            raise PolicyError(problems)
        found = _entries_of(file, extra.data.get("allow"), ("allow",), extra.lines, None, None, warnings)
        for rule_id, table in (extra.data.get("rule_allow") or {}).items():
            found += _entries_of(file, table, ("rule_allow", rule_id), extra.lines, rule_id,
                                 numbers.get(rule_id), warnings)
        entries += sorted(found, key=lambda e: e.line)
    return entries


# --- shared steps ---------------------------------------------------------------------


def _print_problems(problems: Sequence[PolicyProblem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _load(policy_path: str, staged=None) -> Policy:
    from enforcer.fileperms import load_trusted_policy  # noqa: PLC0415

    return load_trusted_policy(policy_path, staged or {})


@contextlib.contextmanager
def _editing(policy_path: str) -> Iterator[None]:
    """One editor at a time for this policy (an flock on its directory, which always exists)."""
    fd = os.open(os.path.dirname(os.path.abspath(policy_path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _entry_option(args) -> Tuple[str, Value]:
    for option, key in KEYS.items():
        value = getattr(args, option, None)
        if value is not None:
            return key, value
    raise ValueError("no entry given")  # argparse requires one


def _target(policy_path: str, name: str) -> Optional[str]:
    """allow.d/NAME of the policy, or None (and a message) for a name allow.d would not read."""
    if "/" in name or not name.endswith(".toml") or name.startswith(".") or name == ".toml":
        print(f"enforcer allow: --file {name!r}: give a file name in allow.d ending in .toml, not starting with "
              "\".\" (allow.d reads only those)", file=sys.stderr)
        return None
    return os.path.join(os.path.dirname(policy_path) or ".", "allow.d", name)


def _rule_exists(policy: Policy, rule_id: str) -> bool:
    ids = [rule.meta.id for rule in policy.rules]
    if rule_id in ids:
        return True
    close = difflib.get_close_matches(rule_id, ids, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    print(f'enforcer allow: no rule with id "{rule_id}" in {policy.source}{hint} '
          f"(rules: {', '.join(ids)})", file=sys.stderr)
    return False


def _invalid_now(error: PolicyError, policy_path: str) -> int:
    _print_problems(error.problems)
    print(f"enforcer allow: {policy_path} is invalid as it is: fix it first (enforcer check {policy_path}); "
          "nothing changed", file=sys.stderr)
    return ExitCode.INVALID_POLICY


def _policy_to_edit(policy_path: str, rule_id: str) -> Optional[Policy]:
    """The policy as it is, if it is valid and has the rule; else None, having said why."""
    try:
        policy = _load(policy_path)
    except PolicyError as error:
        _invalid_now(error, policy_path)
        return None
    return policy if _rule_exists(policy, rule_id) else None


def _apply(policy_path: str, args) -> int:
    """Reload the running agent (unless --no-reload) and print its verdict."""
    from enforcer.control import print_outcome, reload_agent  # noqa: PLC0415
    from enforcer.instancelock import running_agent  # noqa: PLC0415
    from enforcer.state import default_state_dir, read_state  # noqa: PLC0415

    if args.no_reload:
        print("not reloaded (--no-reload): apply it with: enforcer reload")
        return ExitCode.OK
    state_dir = default_state_dir()
    pid = running_agent(state_dir)
    state = read_state(state_dir) if pid else None
    if state is not None and state.pid == pid and \
            os.path.realpath(state.policy) != os.path.realpath(policy_path):
        print(f"enforcer allow: the running agent (pid {pid}) enforces {state.policy}, not {policy_path}: "
              "not reloaded", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    outcome = reload_agent(state_dir, timeout_s=args.timeout)
    if outcome.status == ExitCode.NO_AGENT:
        print(f"{outcome.message}\nthe change applies when the agent starts; until then pinned programs, if any, "
              "keep the policy they had", file=sys.stderr)
        return outcome.status
    print_outcome(outcome)
    return outcome.status


def _write(target: str, text: str) -> Optional[int]:
    from enforcer.atomicfile import write_atomic  # noqa: PLC0415

    try:
        Path(target).parent.mkdir(mode=0o755, exist_ok=True)
        write_atomic(target, text.encode(), mode=0o644, owner=0)
    except OSError as error:
        print(f"enforcer allow: cannot write {target}: {error.strerror or error}; nothing changed", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    return None


# --- the commands ---------------------------------------------------------------------


def allow_add_command(args) -> int:  # argparse.Namespace
    policy_path = args.policy
    target = _target(policy_path, args.file or DEFAULT_FILE)
    if target is None:
        return ExitCode.INVALID_POLICY
    key, value = _entry_option(args)
    with _editing(policy_path):
        policy = _policy_to_edit(policy_path, args.rule)
        if policy is None:
            return ExitCode.INVALID_POLICY
        for entry in list_entries(policy):
            if entry.key == key and entry.value == value and entry.rule in (None, args.rule):
                print(f"already allowed: {entry.describe()}; nothing changed")
                return ExitCode.OK
        try:
            text = Path(target).read_text(encoding="utf-8") if os.path.exists(target) else HEADER
            new_text = add_entry(text, ("rule_allow", args.rule), key, value)
        except (OSError, UnicodeDecodeError, EditError) as error:
            print(f"enforcer allow: cannot edit {target} safely: {error}; edit it by hand (or use --file) - "
                  "nothing changed", file=sys.stderr)
            return ExitCode.INVALID_POLICY
        try:
            changed = _load(policy_path, {target: new_text.encode()})
        except PolicyError as error:
            _print_problems(error.problems)
            print("enforcer allow: the policy would be invalid with this entry: nothing changed", file=sys.stderr)
            return ExitCode.INVALID_POLICY
        added = next(e for e in list_entries(changed, {target: new_text})
                     if e.file == target and e.rule == args.rule and e.key == key and e.value == value)
        if added.warning:
            print(next(w for w in changed.warnings if w.file == target and w.path == added.path), file=sys.stderr)
            if not args.force:
                print("enforcer allow: refused: this entry is risky (add --force to add it anyway); nothing changed",
                      file=sys.stderr)
                return ExitCode.INVALID_POLICY
        failed = _write(target, new_text)
        if failed is not None:
            return failed
        print(f"added: {added.describe()}")
    return _apply(policy_path, args)


def allow_remove_command(args) -> int:  # argparse.Namespace
    policy_path = args.policy
    key, value = _entry_option(args)
    only = _target(policy_path, args.file) if args.file else None
    if args.file and only is None:
        return ExitCode.INVALID_POLICY
    with _editing(policy_path):
        policy = _policy_to_edit(policy_path, args.rule)
        if policy is None:
            return ExitCode.INVALID_POLICY
        same = [e for e in list_entries(policy) if e.key == key and e.value == value]
        found = [e for e in same if e.rule == args.rule and e.file != policy.source
                 and (only is None or os.path.abspath(e.file) == os.path.abspath(only))]
        if not found:
            where = [e for e in same if e.rule == args.rule]
            if where:
                print("enforcer allow: not in " + (only or "allow.d") + "; it is written at: "
                      + ", ".join(f"{e.file}:{e.line}" for e in where)
                      + (" (the policy itself: edit it by hand)" if any(e.file == policy.source for e in where)
                         else ""), file=sys.stderr)
            else:
                print(f'enforcer allow: rule "{args.rule}" has no {key} {toml_value(value)} in allow.d; '
                      "nothing changed (enforcer allow list shows every entry)", file=sys.stderr)
            return ExitCode.INVALID_POLICY
        staged = {}
        for entry in found:
            try:
                text = staged.get(entry.file) or Path(entry.file).read_text(encoding="utf-8")
                staged[entry.file] = remove_entry(text, ("rule_allow", args.rule), key, value)
            except (OSError, UnicodeDecodeError, EditError, KeyError) as error:
                print(f"enforcer allow: cannot edit {entry.file} safely: {error}; edit it by hand - nothing changed",
                      file=sys.stderr)
                return ExitCode.INVALID_POLICY
        try:
            _load(policy_path, {file: text.encode() for file, text in staged.items()})
        except PolicyError as error:
            _print_problems(error.problems)
            print("enforcer allow: the policy would be invalid without this entry: nothing changed", file=sys.stderr)
            return ExitCode.INVALID_POLICY
        for file, text in staged.items():
            failed = _write(file, text)
            if failed is not None:
                return failed
        for entry in found:
            print(f"removed: {entry.describe()}")
        for entry in same:
            if entry not in found and entry.rule in (None, args.rule):
                print(f"note: still allowed by: {entry.describe()}", file=sys.stderr)
    return _apply(policy_path, args)


def allow_list_command(args) -> int:  # argparse.Namespace
    try:
        policy = _load(args.policy)
        entries = list_entries(policy)
    except PolicyError as error:
        _print_problems(error.problems)
        return ExitCode.INVALID_POLICY
    if args.rule:
        entries = [e for e in entries if e.rule in (None, *args.rule)]
    if args.json:
        import json  # noqa: PLC0415

        for entry in entries:
            print(json.dumps({"file": entry.file, "line": entry.line, "rule": entry.rule,
                              "rule_number": entry.rule_number, "key": entry.key, "value": entry.value,
                              "warning": entry.warning or None}))
        return ExitCode.OK
    for entry in entries:
        print(entry.describe())
    risky = sum(1 for e in entries if e.warning)
    if risky:
        print(f"{risky} risky {'entry' if risky == 1 else 'entries'}: enforcer check {args.policy} says why",
              file=sys.stderr)
    if not entries:
        print(f"no allowlist entries in {args.policy} or its allow.d", file=sys.stderr)
    return ExitCode.OK
