"""The allowlist text editor: one entry in or out, comments and layout kept, every edit proven."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.policyfile.edit import EditError, add_entry, remove_entry, toml_value

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

RULE = ("rule_allow", "exec-unusual-dir")

ONE_PER_LINE = """\
# why these are here
[rule_allow.exec-unusual-dir]
exe = [
    "/usr/bin/a",  # the a tool
    "/usr/bin/b",  # the b tool
]
uid = [1, 2]
"""


def test_a_new_file_gets_the_table() -> None:
    assert add_entry("", RULE, "exe", "/usr/bin/gcc") == '[rule_allow.exec-unusual-dir]\nexe = ["/usr/bin/gcc"]\n'


def test_a_new_table_goes_at_the_end_after_a_blank_line() -> None:
    assert add_entry("# head\n", ("rule_allow", "exec.tmp"), "uid", 7) == (
        '# head\n\n[rule_allow."exec.tmp"]\nuid = [7]\n')
    assert add_entry("# no newline", RULE, "cgroup", "/system.slice/a.service") == (
        '# no newline\n\n[rule_allow.exec-unusual-dir]\ncgroup = ["/system.slice/a.service"]\n')


def test_a_new_key_goes_under_its_tables_header() -> None:
    text = "[rule_allow.exec-unusual-dir]  # a comment\nuid = [1]\n\n[rule_allow.other]\nuid = [2]\n"
    assert add_entry(text, RULE, "exe", "/x") == (
        '[rule_allow.exec-unusual-dir]  # a comment\nexe = ["/x"]\nuid = [1]\n\n[rule_allow.other]\nuid = [2]\n')


def test_one_element_per_line_gets_a_line_of_its_own_keeping_comments() -> None:
    assert add_entry(ONE_PER_LINE, RULE, "exe", "/usr/bin/c") == ONE_PER_LINE.replace(
        '    "/usr/bin/b",  # the b tool\n', '    "/usr/bin/b",  # the b tool\n    "/usr/bin/c",\n')


def test_the_last_element_without_a_comma_gets_one() -> None:
    text = 'exe_dirs = [\n  "/opt/a"  # why\n]\n'
    table = '[rule_allow.exec-unusual-dir]\n'
    assert add_entry(table + text, RULE, "exe_dirs", "/opt/b") == (
        table + 'exe_dirs = [\n  "/opt/a",  # why\n  "/opt/b"\n]\n')


def test_a_one_line_array_stays_on_its_line() -> None:
    text = '[rule_allow.exec-unusual-dir]\nuid = [1, 2]  # two users\ncgroup = []\n'
    once = add_entry(text, RULE, "uid", 3)
    assert once == '[rule_allow.exec-unusual-dir]\nuid = [1, 2, 3]  # two users\ncgroup = []\n'
    assert add_entry(once, RULE, "cgroup", "/system.slice/x.service").endswith('cgroup = ["/system.slice/x.service"]\n')


def test_dotted_keys_in_a_parent_table_are_extended() -> None:
    assert add_entry('[rule_allow]\nexec-unusual-dir.exe = ["/x"]\n', RULE, "exe", "/y") == (
        '[rule_allow]\nexec-unusual-dir.exe = ["/x", "/y"]\n')


@pytest.mark.parametrize("text", [
    'rule_allow = {exec-unusual-dir = {exe = ["/x"]}}\n',  # inline tables
    '[rule_allow]\nexec-unusual-dir.exe = ["/x"]\n',  # a new key: no header to put it under
    '[rule_allow.exec-unusual-dir]\nexe = "/x"\n',  # not an array
])
def test_layouts_it_does_not_handle_are_refused(text) -> None:
    key = "uid" if "exec-unusual-dir.exe" in text and "{" not in text else "exe"
    with pytest.raises(EditError):
        add_entry(text, RULE, key, 5 if key == "uid" else "/y")


def test_values_are_written_as_toml_reads_them() -> None:
    odd = 'a "quoted" \\ name\t\x7f\u00e9'
    text = add_entry("", RULE, "exe", "/" + odd)
    assert tomllib.loads(text)["rule_allow"]["exec-unusual-dir"]["exe"] == ["/" + odd]
    with pytest.raises(TypeError):
        toml_value(True)


def test_remove_an_element_on_its_own_line_takes_the_line() -> None:
    assert remove_entry(ONE_PER_LINE, RULE, "exe", "/usr/bin/a") == ONE_PER_LINE.replace(
        '    "/usr/bin/a",  # the a tool\n', "")


@pytest.mark.parametrize("value,expected", [(1, "uid = [2]"), (2, "uid = [1]")])
def test_remove_from_a_one_line_array(value, expected) -> None:
    assert remove_entry(ONE_PER_LINE, RULE, "uid", value) == ONE_PER_LINE.replace("uid = [1, 2]", expected)


def test_the_last_element_takes_its_key_and_then_its_table() -> None:
    text = "# head\n\n[rule_allow.exec-unusual-dir]\nexe = [\n  \"/x\",  # why\n]\nuid = [3]\n\n[rule_allow.b]\nuid = [4]\n"
    without_exe = remove_entry(text, RULE, "exe", "/x")
    assert without_exe == "# head\n\n[rule_allow.exec-unusual-dir]\nuid = [3]\n\n[rule_allow.b]\nuid = [4]\n"
    assert remove_entry(without_exe, RULE, "uid", 3) == "# head\n\n[rule_allow.b]\nuid = [4]\n"


def test_removing_what_is_not_there_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        remove_entry(ONE_PER_LINE, RULE, "exe", "/usr/bin/z")
    with pytest.raises(KeyError):
        remove_entry(ONE_PER_LINE, ("rule_allow", "other"), "exe", "/usr/bin/a")


def test_every_edit_of_the_shipped_examples_is_proven(tmp_path) -> None:
    """Add then remove an entry in every table of a realistic drop-in: back to the original text."""
    text = Path(__file__).resolve().parents[2].joinpath("policies/default.toml").read_text()
    # default.toml is a policy, not a drop-in; its [rule.allow] arrays are arrays of tables' members
    drop_in = "[rule_allow.a]\n" + "\n".join(l for l in text.splitlines() if l.strip().startswith("#")) + \
              '\nexe = [\n    # a comment line inside\n    "/usr/lib/x",\n]\n'
    added = add_entry(drop_in, ("rule_allow", "a"), "exe", "/usr/lib/y")
    assert remove_entry(added, ("rule_allow", "a"), "exe", "/usr/lib/y") == drop_in
