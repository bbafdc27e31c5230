"""Every invalid policy in tests/unit/invalid yields exactly its expected messages, exit 2.

A case is `invalid/NAME.toml`, or `invalid/NAME/policy.toml` with an
`allow.d/` beside it; `invalid/NAME.expected` holds the exact stderr lines,
with paths relative to tests/unit/invalid (the tests run from there). A case
with `invalid/NAME.args` is checked with those arguments to `enforcer check`
instead (one a line: drop-ins checked alone, --policy, --strict).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer import abi
from enforcer.cli import main
from enforcer.parse import PolicyError, load_policy, loads_policy

INVALID = Path(__file__).resolve().parent / "invalid"


def _expected(name: str):
    return (INVALID / f"{name}.expected").read_text(encoding="utf-8").splitlines()


def _policy_cases():
    for expected in sorted(INVALID.glob("*.expected")):
        name = expected.stem
        if (INVALID / f"{name}.args").is_file():
            continue
        policy = f"{name}.toml" if (INVALID / f"{name}.toml").is_file() else f"{name}/policy.toml"
        yield pytest.param(policy, _expected(name), id=name)


def _cli_cases():
    for expected in sorted(INVALID.glob("*.expected")):
        name = expected.stem
        args = INVALID / f"{name}.args"
        if args.is_file():
            yield pytest.param(args.read_text(encoding="utf-8").splitlines(), _expected(name), id=name)
        else:
            policy = f"{name}.toml" if (INVALID / f"{name}.toml").is_file() else f"{name}/policy.toml"
            yield pytest.param([policy], _expected(name), id=name)


def test_every_case_has_expected_messages():
    policies = {p.stem for p in INVALID.glob("*.toml")} | {p.name for p in INVALID.iterdir() if p.is_dir()}
    expected = {p.stem for p in INVALID.glob("*.expected")}
    assert policies == expected
    assert {p.stem for p in INVALID.glob("*.args")} <= expected
    assert len(expected) >= 40


@pytest.mark.parametrize("policy,expected", list(_policy_cases()))
def test_invalid_policy_messages(policy, expected, monkeypatch):
    monkeypatch.chdir(INVALID)
    assert expected, "an .expected file must not be empty"
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert [str(p) for p in caught.value.problems] == expected
    assert str(caught.value) == "\n".join(expected)


@pytest.mark.parametrize("args,expected", list(_cli_cases()))
def test_invalid_policy_cli_exit_2(args, expected, monkeypatch, capsys):
    monkeypatch.chdir(INVALID)
    assert expected, "an .expected file must not be empty"
    assert main(["check", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == expected


def _exec_policy(*dirs: str, extra: str = "") -> str:
    listed = ", ".join(f'"{d}"' for d in dirs)
    return f'version = 1\n[[rule]]\nid = "x"\nkind = "exec"\ndirs = [{listed}]\n{extra}'


def test_path_length_boundaries_are_exact():
    ok_dir = "/" + "a" * (abi.PATH_MATCH_MAX - 2)  # + "/" = PATH_MATCH_MAX bytes
    long_dir = ok_dir + "a"
    ok_exe = "/" + "b" * (abi.EXACT_PATH_MATCH_MAX - 1)
    policy = loads_policy(_exec_policy(ok_dir, extra=f'[rule.allow]\nexe = ["{ok_exe}"]\n'))
    assert policy.rules[0].dirs[0].path == ok_dir
    assert policy.rules[0].meta.allow.exe == (ok_exe,)
    with pytest.raises(PolicyError) as caught:
        loads_policy(_exec_policy(long_dir, extra=f'[rule.allow]\nexe = ["{ok_exe}b"]\n'))
    # in file order: dirs (line 5) before the rule's allowlist (line 7)
    dirs, exe = caught.value.errors
    assert (dirs.line, dirs.where, exe.line, exe.where) == (5, 'rule 1 "x" dirs[0]', 7, 'rule 1 "x" allow.exe[0]')
    assert exe.message.endswith(f"is too long: {abi.EXACT_PATH_MATCH_MAX + 1} bytes, "
                                f"the kernel can match at most {abi.EXACT_PATH_MATCH_MAX}")
    assert dirs.message.endswith(f'is too long: {abi.PATH_MATCH_MAX + 1} bytes with the trailing "/", '
                                 f"the kernel can match at most {abi.PATH_MATCH_MAX}")


def test_exactly_max_rules_is_fine():
    rules = "".join(f'[[rule]]\nid = "r{i}"\nkind = "exec"\ndirs = ["/d{i}"]\n' for i in range(abi.MAX_RULES))
    assert len(loads_policy("version = 1\n" + rules).rules) == abi.MAX_RULES


def test_same_place_in_host_and_container_rules_is_fine():
    text = """version = 1
[[rule]]
id = "h"
kind = "exec"
scope = "host"
dirs = ["/tmp"]
filesystems = ["tmpfs", "memfd"]
[[rule]]
id = "c"
kind = "exec"
scope = "container"
dirs = ["/tmp"]
filesystems = ["tmpfs", "memfd"]
[[rule]]
id = "sh"
kind = "sysrq"
scope = "host"
[[rule]]
id = "sc"
kind = "sysrq"
scope = "container"
[[rule]]
id = "read"
kind = "sysrq"
access = ["read"]
[[rule]]
id = "ra-w"
kind = "release_agent"
access = ["write"]
[[rule]]
id = "ra-r"
kind = "release_agent"
access = ["rename"]
"""
    assert [r.meta.id for r in loads_policy(text).rules] == ["h", "c", "sh", "sc", "read", "ra-w", "ra-r"]


def test_nested_places_in_different_rules_are_fine():
    text = """version = 1
[[rule]]
id = "a"
kind = "exec"
dirs = ["/var"]
exclude = ["/var/lib"]
[[rule]]
id = "b"
kind = "exec"
dirs = ["/var/tmp", "/var/lib/x"]
"""
    assert len(loads_policy(text).rules) == 2


def test_empty_optional_lists_are_fine():
    text = """version = 1
[allow]
exe = []
exe_dirs = []
uid = []
cgroup = []
[[rule]]
id = "a"
kind = "exec"
dirs = []
filesystems = ["memfd"]
exclude = []
[rule.allow]
exe = []
"""
    policy = loads_policy(text)
    assert policy.allow.is_empty()
    assert policy.rules[0].memfd and policy.rules[0].dirs == () and policy.rules[0].filesystems == frozenset()


def test_root_dir_is_allowed_in_exec_rules_with_excludes():
    policy = loads_policy(_exec_policy("/", extra='exclude = ["/usr", "/opt/app"]\n'))
    assert policy.rules[0].exclude == ("/usr", "/opt/app")


def test_exclude_below_recursive_dir_only_counts_when_strictly_below():
    with pytest.raises(PolicyError) as caught:
        loads_policy(_exec_policy("/tmp", extra='exclude = ["/tmpx"]\n'))
    assert [str(p) for p in caught.value.errors] == [
        '<policy>:6: rule 1 "x" exclude[0]: "/tmpx" is not below any of the rule\'s recursive dirs and '
        "the rule has no filesystems, so it would never matter"
    ]


# --- every semantic error says FILE:LINE and names its rule by number and id (issue 10.4) ---

_FAR_DOWN = """version = 1
# a long comment pushes the rules down
#
[[rule]]
id = "sysrq-write"
kind = "sysrq"

[[rule]]
id = "release-agent"
kind = "release_agent"

[[rule]]
id = "memfd"
kind = "exec"
filesystems = ["memfd"]

[[rule]]
id = "exec-tmp"
kind = "exec"
dirs = [
    "/tmp",
    {path = "/var/tmp/", recursive = false},  # a table entry, on its own line
]
[rule.allow]
exe = [
    "bin/updater",
]
"""


def test_semantic_errors_carry_line_and_rule_number_and_id():
    with pytest.raises(PolicyError) as caught:
        loads_policy(_FAR_DOWN, "p2.toml")
    assert [str(p) for p in caught.value.problems] == [
        'p2.toml:22: rule 4 "exec-tmp" dirs[1].path: path "/var/tmp/" is not normalised (write "/var/tmp")',
        'p2.toml:26: rule 4 "exec-tmp" allow.exe[0]: path "bin/updater" is not absolute',
    ]


def test_rules_are_numbered_alike_in_errors_and_explain(tmp_path):
    from enforcer.explain import explain_policy

    fixed = _FAR_DOWN.replace('"/var/tmp/"', '"/var/tmp"').replace('"bin/updater"', '"/usr/bin/updater"')
    assert 'Rule 4 "exec-tmp" [exec]' in explain_policy(loads_policy(fixed, "p2.toml"))
    with pytest.raises(PolicyError) as caught:
        loads_policy(_FAR_DOWN, "p2.toml")
    assert all(p.where.startswith('rule 4 "exec-tmp" ') for p in caught.value.problems)


def test_allow_d_errors_carry_lines_under_quoted_ids(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('version = 1\n[[rule]]\nid = "exec.tmp"\nkind = "exec"\ndirs = ["/tmp"]\n')
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "allow.d" / "10-x.toml").write_text(
        '# drop-in\n[rule_allow."exec.tmp"]\nuid = [\n  990,\n  "991",\n]\n'
        '[allow]\ncgroup = ["/sys/fs/cgroup/system.slice/x.service"]\n')
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert [str(p) for p in caught.value.problems] == [
        f'{tmp_path}/allow.d/10-x.toml:5: rule_allow."exec.tmp".uid[1]: expected an integer, got a string',
        f'{tmp_path}/allow.d/10-x.toml:8: allow.cgroup[0]: "/sys/fs/cgroup/system.slice/x.service" is where the '
        'cgroup appears in the filesystem; a cgroup allowlist names the cgroup itself, as /proc/PID/cgroup '
        'shows it: write "/system.slice/x.service"',
    ]
