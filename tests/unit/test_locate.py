"""The TOML locator: the line of every key and element, on tricky TOML and the shipped policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.policyfile.locate import line_of, locate

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - Python 3.9/3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]

TRICKY = '''\
# a comment with [brackets], = signs, "quotes" and [[rule]]
version = 1   # trailing [comment]
title = "a [not a table] # not a comment \\" ]"
lit = 'C:\\path [x] #'
ml = """
[[rule]]
not a header \\"""
"""
ml2 = \'\'\'
[allow]
= x
\'\'\'
"quoted.key" = 1
'lit.key' = 2
"a\\u0062c" = 3
a . b . c = 4
date = 1979-05-27 07:32:00Z
num = +1_000.5e3
inline = { x = 1, y = { z = [1, 2] }, "w.v" = "}" }
multi = [
  "one",   # first ]
  # a comment line with ] and ,
  [ "nested", 'x]' ],
  { path = "/dev", recursive = false },

  """ends with quotes""""",
]

[[rule]]
id = "r1"
[rule.allow]
exe = ["/x", "/y"]

[[rule]]
id = "r2"
allow.uid = [0]
[[rule.sub]]
k = 1
[[rule.sub]]
k = 2

[rule_allow."exec.tmp"]
uid = [
  990,
  991
]
[ rule_allow . plain ]
exe_dirs = []
'''


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, path + (index,))


def _assert_every_path_located(text: str):
    lines = locate(text)
    every = [p for p in _paths(tomllib.loads(text)) if p]
    assert [p for p in every if p not in lines] == []
    known = set(every)
    assert [p for p in lines if p not in known] == []
    return lines


def test_tricky_toml_lines():
    lines = _assert_every_path_located(TRICKY)
    assert lines[("version",)] == 2
    assert lines[("title",)] == 3
    assert lines[("lit",)] == 4
    assert lines[("ml",)] == 5
    assert lines[("ml2",)] == 9
    assert lines[("quoted.key",)] == 13
    assert lines[("lit.key",)] == 14
    assert lines[("abc",)] == 15
    assert lines[("a",)] == lines[("a", "b")] == lines[("a", "b", "c")] == 16
    assert lines[("date",)] == 17
    assert lines[("num",)] == 18
    assert lines[("inline", "y", "z", 1)] == 19
    assert lines[("inline", "w.v")] == 19
    assert lines[("multi",)] == 20
    assert lines[("multi", 0)] == 21
    assert lines[("multi", 1)] == lines[("multi", 1, 1)] == 23
    assert lines[("multi", 2)] == lines[("multi", 2, "recursive")] == 24
    assert lines[("multi", 3)] == 26
    assert lines[("rule",)] == lines[("rule", 0)] == 29
    assert lines[("rule", 0, "id")] == 30
    assert lines[("rule", 0, "allow")] == 31
    assert lines[("rule", 0, "allow", "exe", 1)] == 32
    assert lines[("rule", 1)] == 34
    assert lines[("rule", 1, "allow", "uid", 0)] == 36
    assert lines[("rule", 1, "sub", 0, "k")] == 38
    assert lines[("rule", 1, "sub", 1)] == 39
    assert lines[("rule_allow", "exec.tmp")] == 42
    assert lines[("rule_allow", "exec.tmp", "uid", 1)] == 45
    assert lines[("rule_allow", "plain", "exe_dirs")] == 48


def test_crlf_line_ends_count_the_same():
    assert locate(TRICKY.replace("\n", "\r\n")) == locate(TRICKY)


@pytest.mark.parametrize("name", ["default.toml", "audit.toml", "strict.toml"])
def test_shipped_policies_every_path_located_on_its_own_line(name):
    text = (REPO / "policies" / name).read_text(encoding="utf-8")
    lines = _assert_every_path_located(text)
    source = text.splitlines()
    data = tomllib.loads(text)
    for path, line in lines.items():
        last = path[-1]
        if isinstance(last, str):  # the key itself is written on that line (bare, or a header)
            assert last in source[line - 1], (path, line)
        else:  # an element: its value starts on that line
            value = data
            for part in path:
                value = value[part]
            if isinstance(value, str):
                assert f'"{value}"' in source[line - 1], (path, line)


def test_missing_keys_fall_back_to_their_table_then_line_1():
    lines = locate('version = 1\n\n[[rule]]\nkind = "exec"\n[rule.allow]\n')
    assert line_of(lines, ("rule", 0, "id")) == 3
    assert line_of(lines, ("rule", 0, "allow", "exe", 0)) == 5
    assert line_of(lines, ("mode",)) == 1
    assert line_of(lines, ()) == 1


def test_incomplete_text_never_loops_or_raises():
    # the locator runs after tomllib accepted the text; even so, junk must end it
    for junk in ("[", "[[", "a =", "x = [1, ", "{", "= 1", '"unterminated', "[a.\n", "]]]", "x = {a = [}"):
        locate(junk)
