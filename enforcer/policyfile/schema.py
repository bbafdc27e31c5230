"""A generic checker for the shapes of decoded TOML: keys, tables, strings, enums, paths.

It knows nothing of rules; `enforcer.policyfile.rules` and the kind modules in
`enforcer.kinds` say which keys a table may have and what each must hold. All
problems for one file are collected on a `Checker`, in the order found.
"""

from __future__ import annotations

import difflib
import json
import posixpath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from enforcer import abi
from enforcer.matching import dir_node
from enforcer.policyfile.problems import PolicyProblem

__all__ = ["Checker", "quoted", "type_name", "listed"]


def quoted(value: Any, limit: int = 80) -> str:
    """A value quoted for a message, control characters escaped, long strings cut."""
    if isinstance(value, str):
        if len(value) > limit:
            value = value[:limit] + "..."
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def type_name(value: Any) -> str:
    """What a decoded TOML value is, for "expected X, got Y"."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def listed(values: Iterable[str]) -> str:
    """Values for an "(allowed: ...)" hint: quoted, comma-separated."""
    return ", ".join(f'"{v}"' for v in values)


class Checker:
    """Collects problems for one file."""

    def __init__(self, path: str, problems: List[PolicyProblem]):
        self.file = path
        self.problems = problems

    def err(self, location: str, message: str) -> None:
        self.problems.append(PolicyProblem(self.file, location, message))

    def keys(self, table: Dict[str, Any], prefix: str, allowed: Sequence[str], where: str = "") -> None:
        for key in table:
            if key not in allowed:
                loc = f"{prefix}.{key}" if prefix else key
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                self.err(loc, f'unknown key "{key}"{where}{hint} (allowed: {", ".join(allowed)})')

    def table(self, value: Any, loc: str) -> Optional[Dict[str, Any]]:
        if isinstance(value, dict):
            return value
        self.err(loc, f"expected a table, got {type_name(value)}")
        return None

    def string(self, value: Any, loc: str) -> Optional[str]:
        if isinstance(value, str):
            return value
        self.err(loc, f"expected a string, got {type_name(value)}")
        return None

    def array(self, value: Any, loc: str) -> Optional[List[Any]]:
        if isinstance(value, list):
            return value
        self.err(loc, f"expected an array, got {type_name(value)}")
        return None

    def enum(self, value: Any, loc: str, enum_type: Any) -> Any:
        text = self.string(value, loc)
        if text is None:
            return None
        try:
            return enum_type(text)
        except ValueError:
            self.err(loc, f"unknown value {quoted(text)} (allowed: {listed(m.value for m in enum_type)})")
            return None

    def enum_list(self, value: Any, loc: str, enum_type: Any, what: str) -> Optional[List[Any]]:
        """An array of enum values; None when absent from the result because of errors."""
        items = self.array(value, loc)
        if items is None:
            return None
        out: List[Any] = []
        seen: Dict[Any, int] = {}
        ok = True
        for i, item in enumerate(items):
            member = self.enum(item, f"{loc}[{i}]", enum_type)
            if member is None:
                ok = False
                continue
            if member in seen:
                self.err(f"{loc}[{i}]", f"{quoted(member.value)} is listed twice (also {loc}[{seen[member]}])")
                ok = False
                continue
            seen[member] = i
            out.append(member)
        if not items:
            self.err(
                loc,
                f"empty: the rule could never match (allowed {what}: {listed(m.value for m in enum_type)})",
            )
            return None
        return out if ok else None

    def path(self, value: Any, loc: str, kind: str) -> Optional[str]:
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

    def path_list(self, value: Any, loc: str, kind: str, refuse_root: str = "") -> List[Tuple[int, str]]:
        """Valid, distinct paths of an array, with their indices.

        With `refuse_root`, "/" is refused too (after every other problem of
        the array): '"/" would REFUSE_ROOT'.
        """
        items = self.array(value, loc)
        out: List[Tuple[int, str]] = []
        if items is None:
            return out
        seen: Dict[str, int] = {}
        for i, item in enumerate(items):
            text = self.path(item, f"{loc}[{i}]", kind)
            if text is None:
                continue
            if text in seen:
                self.err(f"{loc}[{i}]", f"{quoted(text)} is listed twice (also {loc}[{seen[text]}])")
                continue
            seen[text] = i
            out.append((i, text))
        if refuse_root:
            for i, text in out:
                if text == "/":
                    self.err(f"{loc}[{i}]", f'"/" would {refuse_root}')
            out = [(i, text) for i, text in out if text != "/"]
        return out

    def has_problem_under(self, *prefixes: str) -> bool:
        """Some problem of this file is at one of `prefixes` or inside it."""
        for problem in self.problems:
            if problem.file == self.file and any(
                problem.location == p or problem.location.startswith(p + "[") or problem.location.startswith(p + ".")
                for p in prefixes
            ):
                return True
        return False
