"""Policy file bytes -> decoded TOML data, refusing anything that could hurt the reader.

Size is limited before reading, encoding and byte order mark are checked, and
nesting is scanned before the TOML decoder (which recurses) sees the text.
Syntax problems carry LINE:COL; a document that parses comes with the line of
each of its keys and elements (`locate`), for the checks after it to name.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.9/3.10
    import tomli as _toml  # type: ignore[no-redef]

from enforcer.policyfile.locate import KeyPath, Lines, line_of, locate
from enforcer.policyfile.problems import PolicyProblem

__all__ = ["MAX_POLICY_BYTES", "MAX_NESTING", "TomlDocument", "read_toml", "parse_toml"]

#: Policy and allow.d files larger than this are refused before parsing.
MAX_POLICY_BYTES = 1 << 20

#: Arrays, inline tables, tables and dotted keys nested deeper than this are refused.
MAX_NESTING = 8

_SCAN_RE = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""'  # multi-line basic string
    r"|'''.*?'''"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}.=,\n]",
    re.S,
)


@dataclass(frozen=True)
class TomlDocument:
    """A parsed file: its data, and the line each key path of the data starts on."""

    data: Dict[str, Any]
    lines: Lines = field(default_factory=dict)


def _position(text: str, offset: int) -> Tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _scan_nesting(text: str) -> Optional[Tuple[int, int]]:
    """Offset-derived (line, col) of the first place nested deeper than MAX_NESTING, if any.

    Runs before the TOML decoder, which recurses on nested arrays and builds
    dotted keys expensively. Strings and comments are skipped; brackets and
    braces count one level each, and so does each dot in a key or header.
    """
    depth = 0
    dots = 0
    for match in _SCAN_RE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            dots = 0
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
            dots = 0
        elif token == ".":
            dots += 1
        elif token in ("=", ",", "\n"):
            dots = 0
            continue
        else:
            continue
        if depth + dots > MAX_NESTING:
            return _position(text, match.start())
    return None


def _data_depth(data: Any) -> Tuple[int, KeyPath]:
    """Deepest nesting of lists/dicts in decoded TOML, and where (iterative)."""
    deepest: int = 0
    where: KeyPath = ()
    stack: List[Tuple[Any, int, KeyPath]] = [(data, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > deepest:
            deepest, where = depth, path
        if depth > MAX_NESTING:
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, path + (key,)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, path + (i,)))
    return deepest, where


def _reporter(path: str, problems: List[PolicyProblem]) -> Callable[..., None]:
    """fail(message, line=None, column=None) adds a problem with `path`."""

    def fail(message: str, line: Optional[int] = None, column: Optional[int] = None) -> None:
        problems.append(PolicyProblem(path, message, line=line, column=column))

    return fail


_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END_RE = re.compile(r"\s*\(at end of document\)\s*$")


def read_toml(path: str, problems: List[PolicyProblem], allow_empty: bool) -> Optional[TomlDocument]:
    """Read, size-check, decode and parse one file; None (with problems added) when it cannot."""
    fail = _reporter(path, problems)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        fail("is a directory, not a policy file")
        return None
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
        return None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            fail("is a directory, not a policy file")
            return None
        if not stat.S_ISREG(info.st_mode):
            fail("is not a regular file")
            return None
        if info.st_size > MAX_POLICY_BYTES:
            fail(f"file is {info.st_size} bytes; policy files are limited to 1 MiB")
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_POLICY_BYTES:
        fail(f"file is more than {MAX_POLICY_BYTES} bytes; policy files are limited to 1 MiB")
        return None
    return parse_toml(raw, path, problems, allow_empty)


def parse_toml(
    raw: bytes, path: str, problems: List[PolicyProblem], allow_empty: bool
) -> Optional[TomlDocument]:
    """Decode, nesting-check and parse file contents; None (with problems added) when it cannot."""
    fail = _reporter(path, problems)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        fail(f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}", line)
        return None
    if text.startswith("\ufeff"):
        fail("starts with a byte order mark; save the file as UTF-8 without BOM", 1, 1)
        return None
    if not text.strip():
        if allow_empty:
            return TomlDocument({})
        fail('file is empty; a policy needs at least "version = 1" and one [[rule]]')
        return None
    deep = _scan_nesting(text)
    if deep is not None:
        fail(f"nested deeper than {MAX_NESTING} levels", deep[0], deep[1])
        return None
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        if getattr(exc, "msg", None):
            message = exc.msg  # type: ignore[attr-defined]
        found = _TOML_POS_RE.search(message)
        if found:
            line, col = int(found.group(1)), int(found.group(2))
            message = message[: found.start()]
        elif _TOML_END_RE.search(message):
            message = _TOML_END_RE.sub("", message)
            if line is None:
                line, col = _position(text, len(text))
        if line is None or col is None:
            line, col = _position(text, len(text))
        fail(message, line, col)
        return None
    except RecursionError:  # pragma: no cover - the scan above should prevent it
        fail(f"nested deeper than {MAX_NESTING} levels")
        return None
    lines = locate(text)
    depth, where = _data_depth(data)
    if depth > MAX_NESTING:
        fail(f"nested deeper than {MAX_NESTING} levels", line_of(lines, where))
        return None
    return TomlDocument(data, lines)

