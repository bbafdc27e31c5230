"""Add or remove one entry of an allowlist array in TOML text, keeping everything else.

`enforcer allow add|remove` edits files people also edit by hand: their
comments (why an exception is there) and their layout must survive. So the
text is edited in place rather than regenerated: a new element goes after
the last one (on a line of its own in an array written one element per line),
a new key under its table's header, a new table at the end of the file; a
removed element takes its own line with it, and a key or `[rule_allow.ID]`
table left empty goes too.

Every edit is then proven: the new text is parsed again and must decode to
exactly the old data with that one entry added or removed (empty arrays and
tables aside), else EditError. A layout this module does not handle (an
inline table, a key and its array on different lines) is refused, never
guessed at; the caller says to edit by hand.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, List, Tuple, Union

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.9/3.10
    import tomli as _toml  # type: ignore[no-redef]

from enforcer.policyfile.locate import KeyPath, locate

__all__ = ["EditError", "Value", "add_entry", "remove_entry", "toml_key", "toml_value", "table_header"]

Value = Union[str, int]

# The string and scalar grammar of enforcer.policyfile.locate, needed here to
# find where a value ends (locate records lines only).
_ML_BASIC = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*""""{0,2}', re.S)
_ML_LITERAL = re.compile(r"'''.*?''''{0,2}", re.S)
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
_STRINGS = (_ML_BASIC, _ML_LITERAL, _BASIC, _LITERAL)
_SCALAR = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}[^\s,\]}#]*|[^\s,\]}#]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


class EditError(Exception):
    """The file cannot be edited safely; nothing was changed."""


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Value) -> str:
    """A TOML literal: JSON's string escapes are TOML's, except that TOML wants DEL escaped too."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"not an allowlist value: {value!r}")
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def table_header(table: KeyPath) -> str:
    return "[" + ".".join(toml_key(str(part)) for part in table) + "]"


# --- finding values in the text -----------------------------------------------------


def _line_starts(text: str) -> List[int]:
    starts = [0]
    for match in re.finditer("\n", text):
        starts.append(match.end())
    return starts


def _blank(text: str, pos: int) -> int:
    """Past spaces, line ends and comments."""
    while pos < len(text):
        ch = text[pos]
        if ch in " \t\r\n":
            pos += 1
        elif ch == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        else:
            break
    return pos


def _string_end(text: str, pos: int) -> int:
    for pattern in _STRINGS:
        match = pattern.match(text, pos)
        if match:
            return match.end()
    return -1


def _value_end(text: str, pos: int) -> int:
    if pos >= len(text):
        raise EditError("a value ends early")
    ch = text[pos]
    if ch == "[":
        return _array(text, pos)[1] + 1
    if ch == "{":
        return _inline_table_end(text, pos)
    end = _string_end(text, pos)
    if end >= 0:
        return end
    match = _SCALAR.match(text, pos)
    if not match:
        raise EditError(f"unexpected {text[pos]!r} in a value")
    return match.end()


def _inline_table_end(text: str, pos: int) -> int:
    pos += 1
    while True:
        pos = _blank(text, pos)
        if pos >= len(text):
            raise EditError("an inline table does not end")
        ch = text[pos]
        if ch == "}":
            return pos + 1
        if ch == ",":
            pos += 1
            continue
        pos = _value_end(text, _after_equals(text, pos))


def _array(text: str, pos: int) -> Tuple[List[Tuple[int, int]], int]:
    """The array opening at `pos`: each element's (start, end) and the offset of its `]`."""
    elements: List[Tuple[int, int]] = []
    pos += 1
    while True:
        pos = _blank(text, pos)
        if pos >= len(text):
            raise EditError("an array does not end")
        ch = text[pos]
        if ch == "]":
            return elements, pos
        if ch == ",":
            pos += 1
            continue
        end = _value_end(text, pos)
        elements.append((pos, end))
        pos = end


def _after_equals(text: str, pos: int) -> int:
    """From a key at `pos` (on one line, possibly dotted and quoted): the start of its value."""
    while pos < len(text) and text[pos] != "\n":
        ch = text[pos]
        if ch in "\"'":
            end = _string_end(text, pos)
            if end < 0:
                raise EditError("a quoted key does not end")
            pos = end
            continue
        if ch == "=":
            pos += 1
            while pos < len(text) and text[pos] in " \t":
                pos += 1
            return pos
        if ch == "#":
            break
        pos += 1
    raise EditError("no `=` after a key on its line")


# --- proving an edit ----------------------------------------------------------------


def _pruned(data: Any) -> Any:
    """Data without empty arrays and tables: `exe = []`, an empty `[rule_allow.x]`
    and no key at all allow the same (nothing)."""
    if isinstance(data, dict):
        kept = {key: _pruned(value) for key, value in data.items()}
        return {key: value for key, value in kept.items() if value not in ({}, [])}
    if isinstance(data, list):
        return [_pruned(value) for value in data]
    return data


def _prove(new_text: str, expected: Dict[str, Any], what: str) -> str:
    try:
        decoded = _toml.loads(new_text)
    except _toml.TOMLDecodeError as error:
        raise EditError(f"{what} would not be valid TOML here ({error})") from None
    if _pruned(decoded) != _pruned(expected):
        raise EditError(f"{what} would change more than that entry here")
    return new_text


def _decode(text: str) -> Dict[str, Any]:
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as error:
        raise EditError(f"not valid TOML: {error}") from None


def _table_of(data: Dict[str, Any], table: KeyPath) -> Any:
    node: Any = data
    for part in table:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _key_array(text: str, lines: Dict[KeyPath, int], starts: List[int], path: KeyPath):
    """The array of key `path`: (key line start, elements, offset of `]`)."""
    line = lines.get(path)
    if line is None:
        raise EditError(f"cannot find {'.'.join(map(str, path))} in the text")
    line_start = starts[line - 1]
    value = _after_equals(text, line_start)
    if text[value:value + 1] != "[":
        raise EditError(f"line {line} is not `KEY = [...]` for {path[-1]} (an inline table or a dotted key?)")
    elements, close = _array(text, value)
    return line_start, elements, close


# --- the edits ----------------------------------------------------------------------


def add_entry(text: str, table: KeyPath, key: str, value: Value) -> str:
    """`text` with `value` appended to array `key` of `table` (created as needed)."""
    data = _decode(text)
    expected = copy.deepcopy(data)
    what = f"adding {toml_value(value)} to {key} of {table_header(table)}"
    node = expected
    for part in table:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise EditError(f"{table_header(table)} is not a table")
    if not isinstance(node.setdefault(key, []), list):
        raise EditError(f"{key} of {table_header(table)} is not an array")
    node[key].append(value)

    existing = _table_of(data, table)
    if existing is None:
        head = text if not text or text.endswith("\n") else text + "\n"
        gap = "\n" if head.strip() else ""
        return _prove(f"{head}{gap}{table_header(table)}\n{key} = [{toml_value(value)}]\n", expected, what)
    if not isinstance(existing, dict):
        raise EditError(f"{table_header(table)} is not a table")
    lines = locate(text)
    starts = _line_starts(text) + [len(text)]
    if key not in existing:
        header_line = lines.get(table)
        header_at = starts[header_line - 1] if header_line else 0
        if header_line is None or not text[header_at:].lstrip(" \t").startswith("[") \
                or text[header_at:].lstrip(" \t").startswith("[["):
            raise EditError(f"{table_header(table)} is not written as a table header")
        eol = text.find("\n", header_at)
        insert = len(text) if eol < 0 else eol + 1
        before = text[:insert] if eol >= 0 else text + "\n"
        return _prove(before + f"{key} = [{toml_value(value)}]\n" + text[insert:], expected, what)

    _, elements, close = _key_array(text, lines, starts, table + (key,))
    literal = toml_value(value)
    if not elements:
        return _prove(text[:close] + literal + text[close:], expected, what)
    start, end = elements[-1]
    after = end
    while after < len(text) and text[after] in " \t":
        after += 1
    has_comma = text[after:after + 1] == ","
    if "\n" not in text[end:close]:  # `]` on the last element's line: continue that line
        return _prove(text[:end] + ", " + literal + text[end:], expected, what)
    # one element per line: a line of its own, indented as the last one, after its comment
    line_start = text.rfind("\n", 0, start) + 1
    lead = text[line_start:start]
    indent = lead if not lead.strip() else "    "
    head = text if has_comma else text[:end] + "," + text[end:]
    shift = 0 if has_comma else 1
    eol = head.find("\n", end + shift)
    return _prove(head[:eol] + f"\n{indent}{literal}{',' if has_comma else ''}" + head[eol:], expected, what)


def remove_entry(text: str, table: KeyPath, key: str, value: Value) -> str:
    """`text` without `value` in array `key` of `table`; the key, and a header
    table, go when nothing is left in them. KeyError when it is not there."""
    data = _decode(text)
    existing = _table_of(data, table)
    items = existing.get(key) if isinstance(existing, dict) else None
    if not isinstance(items, list) or value not in items:
        raise KeyError(value)
    index = items.index(value)
    expected = copy.deepcopy(data)
    node = _table_of(expected, table)
    del node[key][index]
    what = f"removing {toml_value(value)} from {key} of {table_header(table)}"

    lines = locate(text)
    starts = _line_starts(text) + [len(text)]
    key_start, elements, close = _key_array(text, lines, starts, table + (key,))
    if len(elements) != len(items):
        raise EditError(f"{key} of {table_header(table)} is not laid out as expected")
    start, end = elements[index]
    if len(elements) == 1:
        # the whole `key = [...]` statement, to the end of the line of its `]`
        eol = text.find("\n", close)
        cut_end = len(text) if eol < 0 else eol + 1
        new_text = text[:key_start] + text[cut_end:]
        left = {k: v for k, v in existing.items() if k != key}
        header_line = lines.get(table)
        if not _pruned(left) and header_line is not None and table[0] == "rule_allow":
            header_at = starts[header_line - 1]
            if text[header_at:].lstrip(" \t").startswith("[") and header_at < key_start:
                eol = new_text.find("\n", header_at)
                new_text = new_text[:header_at] + new_text[(len(new_text) if eol < 0 else eol + 1):]
                if new_text[:header_at].endswith("\n\n") and new_text[header_at:header_at + 1] in ("\n", ""):
                    new_text = new_text[:header_at - 1] + new_text[header_at:]  # the blank line before it too
        return _prove(new_text, expected, what)
    line_start = text.rfind("\n", 0, start) + 1
    rest = re.match(r"[ \t]*,?[ \t]*(#[^\n]*)?(\n|\Z)", text[end:])
    if not text[line_start:start].strip() and rest is not None:  # alone on its line(s)
        return _prove(text[:line_start] + text[end + rest.end():], expected, what)
    if index < len(elements) - 1:
        return _prove(text[:start] + text[elements[index + 1][0]:], expected, what)
    return _prove(text[:elements[index - 1][1]] + text[end:], expected, what)
