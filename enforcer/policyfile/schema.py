"""A generic checker for the shapes of decoded TOML: keys, tables, strings, enums, paths.

It knows nothing of rules beyond how to name one; `enforcer.policyfile.rules`
and the kind modules in `enforcer.kinds` say which keys a table may have and
what each must hold. All problems for one file are collected on a `Checker`,
each placed at a key path (a tuple: ("rule", 3, "allow", "exe", 0)), which the
Checker turns into the line of the file and words a person can find:
`rule 4 "exec-tmp" allow.exe[0]` (rules count from 1, as in --explain).
"""

from __future__ import annotations

import difflib
import json
import posixpath
import re
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar

from enforcer import abi
from enforcer.matching import dir_node
from enforcer.policyfile.locate import KeyPath, line_of
from enforcer.policyfile.problems import Level, PolicyProblem

__all__ = ["Checker", "KeyPath", "quoted", "type_name", "listed", "key_words"]

T = TypeVar("T")


def quoted(value: Any, limit: int = 80) -> str:
    """A value quoted for a message, control characters escaped, long strings cut."""
    if isinstance(value, str):
        if len(value) > limit:
            value = value[:limit] + "..."
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


#: Decoded TOML types and their names in messages; bool before int (a bool is an int).
_TYPE_NAMES = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def type_name(value: Any) -> str:
    """What a decoded TOML value is, for "expected X, got Y"."""
    for python_type, name in _TYPE_NAMES:
        if isinstance(value, python_type):
            return name
    return "a date/time"


def _enum_value(member: Any) -> str:
    return member.value


def listed(values: Iterable[str]) -> str:
    """Values for an "(allowed: ...)" hint: quoted, comma-separated."""
    return ", ".join(f'"{v}"' for v in values)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def key_words(path: KeyPath) -> str:
    """A key path as TOML spells it: `allow.exe[0]`, `rule_allow."exec.tmp".uid`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.match(part) else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out


def _rule_index(path: KeyPath) -> Optional[int]:
    """N when `path` is inside the Nth [[rule]] (0-based, as in the data)."""
    if len(path) >= 2 and path[0] == "rule" and isinstance(path[1], int):
        return path[1]
    return None


#: Characters that would make a path a glob pattern: refused, so that "/tmp/*.sh"
#: can never silently stand for the literal name (and leave /tmp uncovered).
_WILDCARDS = ("*", "?", "[")
_LITERAL_HINT = {
    "dir": "a directory covers everything below it: write the directory (e.g. \"/tmp\")",
    "exe": "write each executable's full path, or allow its directory with exe_dirs",
    "cgroup": "a cgroup covers every cgroup below it: write the common parent",
}
#: Where cgroup v2 is mounted; allowlists name cgroups relative to its root.
_CGROUP_FS = "/sys/fs/cgroup"


class Checker:
    """Collects problems for one file; `lines` (from `locate`) places them in it."""

    def __init__(self, path: str, problems: List[PolicyProblem], lines: Optional[Mapping[KeyPath, int]] = None):
        self.file = path
        self.problems = problems
        self.lines: Mapping[KeyPath, int] = lines or {}
        #: [[rule]] index -> its id, once known valid: rules are named by number and id
        self.rule_ids: Dict[int, str] = {}

    # --- naming places ------------------------------------------------------------

    def name_rule(self, index: int, rule_id: Optional[str]) -> None:
        if rule_id:
            self.rule_ids[index] = rule_id

    def where(self, path: KeyPath) -> str:
        """`path` in words: `rule 4 "exec-tmp" allow.exe[0]`, `allow.uid[1]`, `version`."""
        index = _rule_index(path)
        if index is None:
            return key_words(path)
        label = f"rule {index + 1}"
        if index in self.rule_ids:
            label += f' "{self.rule_ids[index]}"'
        rest = key_words(path[2:])
        return f"{label} {rest}" if rest else label

    def short(self, path: KeyPath) -> str:
        """`path` in words within its own rule (`dirs[0]`), or whole outside rules."""
        return key_words(path[2:]) if _rule_index(path) is not None else key_words(path)

    def line(self, path: KeyPath) -> int:
        return line_of(self.lines, path)

    def ref(self, path: KeyPath) -> str:
        """Another place, for a message about this one: `rule 1 "a" dirs[0] on line 5`."""
        return f"{self.where(path)} on line {self.line(path)}"

    # --- recording ----------------------------------------------------------------

    def _add(self, path: KeyPath, message: str, level: Level) -> None:
        self.problems.append(PolicyProblem(
            self.file, message, line=self.line(path), where=self.where(path), path=path, level=level))

    def err(self, path: KeyPath, message: str) -> None:
        self._add(path, message, Level.ERROR)

    def warn(self, path: KeyPath, message: str) -> None:
        """Accepted, but risky: printed by `check`, refused by `check --strict`."""
        self._add(path, message, Level.WARNING)

    def failed(self) -> bool:
        """Some error (not a warning) was recorded for this file."""
        return any(p.file == self.file and p.is_error for p in self.problems)

    # --- shapes -------------------------------------------------------------------

    def keys(self, table: Dict[str, Any], prefix: KeyPath, allowed: Sequence[str], where: str = "") -> None:
        for key in table:
            if key not in allowed:
                loc = prefix + (key,)
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                self.err(loc, f'unknown key "{key}"{where}{hint} (allowed: {", ".join(allowed)})')

    def table(self, value: Any, loc: KeyPath) -> Optional[Dict[str, Any]]:
        if isinstance(value, dict):
            return value
        self.err(loc, f"expected a table, got {type_name(value)}")
        return None

    def string(self, value: Any, loc: KeyPath) -> Optional[str]:
        if isinstance(value, str):
            return value
        self.err(loc, f"expected a string, got {type_name(value)}")
        return None

    def array(self, value: Any, loc: KeyPath) -> Optional[List[Any]]:
        if isinstance(value, list):
            return value
        self.err(loc, f"expected an array, got {type_name(value)}")
        return None

    def enum(self, value: Any, loc: KeyPath, enum_type: Any) -> Any:
        text = self.string(value, loc)
        if text is None:
            return None
        try:
            return enum_type(text)
        except ValueError:
            self.err(loc, f"unknown value {quoted(text)} (allowed: {listed(m.value for m in enum_type)})")
            return None

    def enum_list(self, value: Any, loc: KeyPath, enum_type: Any, what: str) -> Optional[List[Any]]:
        """An array of enum values; None when absent from the result because of errors."""
        items = self.array(value, loc)
        if items is None:
            return None
        before = len(self.problems)
        members = self.distinct(items, loc, lambda c, item, where: c.enum(item, where, enum_type), key=_enum_value)
        if not items:
            self.err(
                loc,
                f"empty: the rule could never match (allowed {what}: {listed(m.value for m in enum_type)})",
            )
            return None
        return [member for _, member in members] if len(self.problems) == before else None

    def distinct(
        self,
        items: Sequence[Any],
        loc: KeyPath,
        check: Callable[["Checker", Any, KeyPath], Optional[T]],
        key: Callable[[T], Hashable] = lambda value: value,
    ) -> List[Tuple[int, T]]:
        """The entries of array `loc` that pass `check`, each `key` once, with their indices."""
        out: List[Tuple[int, T]] = []
        seen: Dict[Hashable, int] = {}
        for i, item in enumerate(items):
            where = loc + (i,)
            value = check(self, item, where)
            if value is None:
                continue
            name = key(value)
            if name in seen:
                self.err(where, f"{quoted(name)} is listed twice (also {self.short(loc + (seen[name],))})")
                continue
            seen[name] = i
            out.append((i, value))
        return out

    def path(self, value: Any, loc: KeyPath, kind: str) -> Optional[str]:
        """kind: "dir" (matched as a prefix with "/"), "exe" (exact), "cgroup" (prefix)."""
        text = self.string(value, loc)
        if text is None:
            return None
        if "\0" in text:
            self.err(loc, f"path {quoted(text)} contains a NUL character")
            return None
        if not text.startswith("/"):
            self.err(loc, f"path {quoted(text)} is not absolute")
            return None
        wildcard = next((ch for ch in _WILDCARDS if ch in text), None)
        if wildcard is not None:
            self.err(loc, f"path {quoted(text)} contains the wildcard {quoted(wildcard)}: paths are matched "
                          f"literally, never as patterns; {_LITERAL_HINT[kind]}")
            return None
        if kind == "cgroup" and (text == _CGROUP_FS or text.startswith(_CGROUP_FS + "/")):
            inner = text[len(_CGROUP_FS):] or "/"
            self.err(loc, f"{quoted(text)} is where the cgroup appears in the filesystem; a cgroup allowlist "
                          f"names the cgroup itself, as /proc/PID/cgroup shows it: write {quoted(inner)}")
            return None
        normal = "/" + posixpath.normpath(text).lstrip("/")
        if normal != text:
            self.err(loc, f"path {quoted(text)} is not normalised (write {quoted(normal)})")
            return None
        if kind == "exe":
            size = len(text.encode())
            if size > abi.EXACT_PATH_MATCH_MAX:
                self.err(
                    loc,
                    f"path {quoted(text)} is too long: {size} bytes, "
                    f"the kernel can match at most {abi.EXACT_PATH_MATCH_MAX}",
                )
                return None
        else:
            size = len(dir_node(text).encode())
            if size > abi.PATH_MATCH_MAX:
                self.err(
                    loc,
                    f'path {quoted(text)} is too long: {size} bytes with the trailing "/", '
                    f"the kernel can match at most {abi.PATH_MATCH_MAX}",
                )
                return None
        return text

    def path_list(self, value: Any, loc: KeyPath, kind: str, refuse_root: str = "") -> List[Tuple[int, str]]:
        """Valid, distinct paths of an array, with their indices.

        With `refuse_root`, "/" is refused too (after every other problem of
        the array): '"/" would REFUSE_ROOT'.
        """
        items = self.array(value, loc)
        if items is None:
            return []
        out = self.distinct(items, loc, lambda c, item, where: c.path(item, where, kind))
        if refuse_root:
            for i, text in out:
                if text == "/":
                    self.err(loc + (i,), f'"/" would {refuse_root}')
            out = [(i, text) for i, text in out if text != "/"]
        return out

    def has_problem_under(self, *prefixes: KeyPath) -> bool:
        """Some error of this file is at one of `prefixes` or inside it."""
        return any(
            problem.file == self.file and problem.is_error and problem.path[:len(p)] == p
            for problem in self.problems
            for p in prefixes
        )
