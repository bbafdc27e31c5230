"""Where each key and array element of a TOML document is: key path -> line number.

tomllib decodes values but keeps no positions, and a policy error without a
line sends the operator counting `[[rule]]` headers by hand. This scanner
reads the same text again and records the line on which each key, table
header, array-of-tables element and array element starts, under the key path
the decoded data has: ("rule", 3, "allow", "exe", 0) for the first entry of
`exe` in the fourth `[[rule]]`'s `[rule.allow]`.

It runs only on text tomllib has already accepted and the reader has
depth-checked (at most MAX_NESTING levels), so it trusts the syntax: it never
reports errors of its own, and every step consumes at least one character, so
an unexpected input ends in missing positions, never in a loop or a crash.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["KeyPath", "Lines", "locate", "line_of"]

#: A place in decoded TOML: table keys (str) and array indices (int).
KeyPath = Tuple[Union[str, int], ...]
#: Where each key path starts, 1-based lines.
Lines = Dict[KeyPath, int]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_KEY = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_LITERAL_KEY = re.compile(r"'([^'\n]*)'")
_ESCAPES = re.compile(r'\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)')
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}
# Multi-line strings may end with up to two quotes of content before the delimiter.
_ML_BASIC = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*""""{0,2}', re.S)
_ML_LITERAL = re.compile(r"'''.*?''''{0,2}", re.S)
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
# A date-time may have a space between date and time; any other scalar ends at
# whitespace, a comma, a closing bracket or brace, or a comment.
_SCALAR = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}[^\s,\]}#]*|[^\s,\]}#]+")


def _unescape(text: str) -> str:
    def one(match: "re.Match[str]") -> str:
        code = match.group(1)
        if code[0] in "uU":
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPES.sub(one, text)


class _Scanner:
    """One pass over the text; `lines` fills in as keys and elements are met."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: Lines = {}
        # arrays of tables seen so far -> elements so far, keyed by resolved path
        self.tables_arrays: Dict[KeyPath, int] = {}

    # --- characters -------------------------------------------------------------

    def _peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def _advance(self, n: int) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def _blank(self, newlines: bool) -> None:
        """Skip spaces, tabs, carriage returns, comments and, if `newlines`, line ends."""
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self._advance(1)
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self._advance((end if end >= 0 else len(self.text)) - self.pos)
            else:
                return

    def _skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self._advance((end + 1 if end >= 0 else len(self.text)) - self.pos)

    def _note(self, path: KeyPath, line: int) -> None:
        # the first mention is where a key is defined (a later [a.b] header
        # only extends an implicitly created table)
        self.lines.setdefault(path, line)

    # --- keys ---------------------------------------------------------------------

    def _key_part(self) -> Optional[str]:
        for pattern, decode in ((_BASIC_KEY, _unescape), (_LITERAL_KEY, str), (_BARE_KEY, str)):
            match = pattern.match(self.text, self.pos)
            if match:
                self._advance(match.end() - self.pos)
                return decode(match.group(1) if pattern is not _BARE_KEY else match.group())
        return None

    def _key(self) -> List[str]:
        """A dotted key (`a."b.c".d`), whitespace around the dots allowed."""
        parts: List[str] = []
        while True:
            self._blank(newlines=False)
            part = self._key_part()
            if part is None:
                return parts
            parts.append(part)
            self._blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance(1)

    def _resolve(self, parts: List[str], line: int) -> KeyPath:
        """A header's dotted key as a data path: an array of tables means its last element.

        `[a.b]` creates `a` if it is new: noted on the header's line too.
        """
        path: KeyPath = ()
        for part in parts:
            path = path + (part,)
            self._note(path, line)
            count = self.tables_arrays.get(path)
            if count:
                path = path + (count - 1,)
        return path

    # --- values -------------------------------------------------------------------

    def _value(self, path: KeyPath) -> None:
        ch = self._peek()
        if ch == "[":
            self._array(path)
        elif ch == "{":
            self._inline_table(path)
        else:
            for pattern in (_ML_BASIC, _ML_LITERAL, _BASIC, _LITERAL, _SCALAR):
                match = pattern.match(self.text, self.pos)
                if match:
                    self._advance(max(match.end() - self.pos, 1))
                    return
            self._advance(1)

    def _array(self, path: KeyPath) -> None:
        self._advance(1)  # "["
        index = 0
        while self.pos < len(self.text):
            self._blank(newlines=True)
            ch = self._peek()
            if ch == "]":
                self._advance(1)
                return
            if ch == ",":
                self._advance(1)
                continue
            self._note(path + (index,), self.line)
            start = self.pos
            self._value(path + (index,))
            index += 1
            if self.pos == start:  # pragma: no cover - _value always consumes
                self._advance(1)

    def _inline_table(self, path: KeyPath) -> None:
        self._advance(1)  # "{"
        while self.pos < len(self.text):
            self._blank(newlines=True)
            ch = self._peek()
            if ch == "}":
                self._advance(1)
                return
            if ch == ",":
                self._advance(1)
                continue
            if not self._key_value(path):
                self._advance(1)

    def _key_value(self, table: KeyPath) -> bool:
        """`key = value` at the current position, inside `table`; False if no key is here."""
        line = self.line
        parts = self._key()
        if not parts:
            return False
        for n in range(1, len(parts) + 1):  # a.b.c = 1 also defines a and a.b here
            self._note(table + tuple(parts[:n]), line)
        self._blank(newlines=False)
        if self._peek() == "=":
            self._advance(1)
            self._blank(newlines=False)
            self._value(table + tuple(parts))
        return True

    # --- the document -------------------------------------------------------------

    def _header(self) -> KeyPath:
        """`[a.b]` or `[[a.b]]` at the current position: the table the next keys go into."""
        line = self.line
        double = self._peek(2) == "[["
        self._advance(2 if double else 1)
        parts = self._key()
        self._blank(newlines=False)
        self._advance(2 if double else 1)  # "]]" or "]"
        if not parts:
            return ()
        if not double:
            return self._resolve(parts, line)
        parent = self._resolve(parts[:-1], line) + (parts[-1],)
        count = self.tables_arrays.get(parent, 0)
        self.tables_arrays[parent] = count + 1
        self._note(parent, line)
        self._note(parent + (count,), line)
        return parent + (count,)

    def scan(self) -> Lines:
        table: KeyPath = ()
        while self.pos < len(self.text):
            self._blank(newlines=True)
            if self.pos >= len(self.text):
                break
            if self._peek() == "[":
                table = self._header()
            elif not self._key_value(table):
                self._skip_line()
                continue
            self._blank(newlines=False)
            if self._peek() not in ("\n", ""):
                self._skip_line()
        return self.lines


def locate(text: str) -> Lines:
    """Line of every key, table, array-of-tables element and array element in `text`.

    `text` must be TOML that tomllib accepted.
    """
    return _Scanner(text).scan()


def line_of(lines: Lines, path: KeyPath) -> int:
    """The line of `path`, else of the nearest enclosing key or element that has one.

    A key that is missing (a rule without `id`) is placed at its table's
    header; a missing top-level key at line 1, the top of the file.
    """
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1
