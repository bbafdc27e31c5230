"""Parsing: the model built from TOML, defaults, allow.d merging, and hostile input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from enforcer.parse import (
    KIND_DEFAULTS,
    MAX_POLICY_BYTES,
    PolicyError,
    PolicyProblem,
    load_policy,
    loads_policy,
)
from enforcer.policyfile.problems import Level
from enforcer.policy import (
    Allowlist,
    ExecDir,
    ExecRule,
    KernelHelperSetting,
    Mode,
    ReleaseAgentAccess,
    ReleaseAgentRule,
    RuleKind,
    Scope,
    Severity,
    SysrqAccess,
    SysrqFile,
    SysrqRule,
)

FULL = """
version = 1
mode = "audit"

[allow]
exe = ["/usr/lib/systemd/systemd-sysctl"]
exe_dirs = ["/opt/agent"]
uid = [0, 4294967294]
cgroup = ["/system.slice/foo.service"]

[[rule]]
id = "sysrq-write"
kind = "sysrq"
description = "  custom text  "
severity = "low"
mitre = "T1562.001"
mode = "enforce"
scope = "container"
access = ["read", "write"]
files = ["sysctl"]

[[rule]]
id = "ra"
kind = "release_agent"
access = ["rename"]
scope = "host"

[[rule]]
id = "exec.tmp_1"
kind = "exec"
dirs = ["/tmp", {path = "/dev", recursive = false}, {path = "/run", recursive = true}, {path = "/srv"}]
filesystems = ["tmpfs", "memfd"]
exclude = ["/tmp/ok"]
[rule.allow]
exe_dirs = ["/usr/lib/apt/methods"]
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_full_policy_model():
    policy = loads_policy(FULL, "p.toml")
    assert policy.source == "p.toml"
    assert policy.version == 1
    assert policy.mode is Mode.AUDIT
    assert policy.allow == Allowlist(
        exe=("/usr/lib/systemd/systemd-sysctl",),
        exe_dirs=("/opt/agent",),
        uid=(0, 4294967294),
        cgroup=("/system.slice/foo.service",),
    )
    assert policy.allow_sources == ()
    sysrq, ra, ex = policy.rules
    assert isinstance(sysrq, SysrqRule)
    assert sysrq.meta.id == "sysrq-write"
    assert sysrq.meta.description == "custom text"
    assert sysrq.meta.severity is Severity.LOW
    assert sysrq.meta.mitre == "T1562.001"
    assert sysrq.meta.mode is Mode.ENFORCE
    assert sysrq.meta.scope is Scope.CONTAINER
    assert sysrq.access == frozenset({SysrqAccess.READ, SysrqAccess.WRITE})
    assert sysrq.files == frozenset({SysrqFile.SYSCTL})
    assert isinstance(ra, ReleaseAgentRule)
    assert ra.access == frozenset({ReleaseAgentAccess.RENAME})
    assert ra.meta.scope is Scope.HOST and ra.meta.mode is None
    assert isinstance(ex, ExecRule)
    assert ex.dirs == (
        ExecDir("/tmp", True),
        ExecDir("/dev", False),
        ExecDir("/run", True),
        ExecDir("/srv", True),
    )
    assert ex.filesystems == frozenset({"tmpfs"})
    assert ex.memfd is True
    assert ex.exclude == ("/tmp/ok",)
    assert ex.meta.allow == Allowlist(exe_dirs=("/usr/lib/apt/methods",))
    assert policy.effective_mode(sysrq) is Mode.ENFORCE
    assert policy.effective_mode(ra) is Mode.AUDIT


def test_defaults_per_kind():
    policy = loads_policy(
        'version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n[[rule]]\nid = "r"\nkind = "release_agent"\n'
        '[[rule]]\nid = "e"\nkind = "exec"\nfilesystems = ["memfd"]\n'
    )
    assert policy.mode is Mode.ENFORCE
    s, r, e = policy.rules
    assert s.access == frozenset({SysrqAccess.WRITE})
    assert s.files == frozenset({SysrqFile.TRIGGER, SysrqFile.SYSCTL})
    assert r.access == frozenset({ReleaseAgentAccess.WRITE, ReleaseAgentAccess.RENAME, ReleaseAgentAccess.MOUNT})
    for rule in (s, r, e):
        assert rule.meta.scope is Scope.ALL
        assert rule.meta.mode is None
        assert rule.meta.allow.is_empty()
    assert (s.meta.severity, s.meta.mitre) == (Severity.CRITICAL, "T1611")
    assert (r.meta.severity, r.meta.mitre) == (Severity.CRITICAL, "T1611")
    assert (e.meta.severity, e.meta.mitre) == (Severity.HIGH, "T1059")
    assert s.meta.description == KIND_DEFAULTS[RuleKind.SYSRQ].description
    assert "release_agent" in r.meta.description
    assert e.memfd and not e.filesystems and e.dirs == ()


def test_kernel_helper_rule_defaults_to_every_setting():
    policy = loads_policy(
        'version = 1\n[[rule]]\nid = "all"\nkind = "kernel_helper"\nscope = "container"\n'
        '[[rule]]\nid = "some"\nkind = "kernel_helper"\nscope = "host"\nsettings = ["binfmt_register", "core_pattern"]\n'
    )
    every, some = policy.rules
    assert every.kind is RuleKind.KERNEL_HELPER
    assert every.settings == frozenset(KernelHelperSetting)
    assert some.settings == frozenset({KernelHelperSetting.BINFMT_REGISTER, KernelHelperSetting.CORE_PATTERN})
    assert (every.meta.severity, every.meta.mitre) == (Severity.CRITICAL, "T1611")
    assert every.meta.description == KIND_DEFAULTS[RuleKind.KERNEL_HELPER].description


def test_allow_d_merged_in_name_order(tmp_path):
    policy_path = _write(tmp_path / "policy.toml", FULL)
    _write(tmp_path / "allow.d" / "20-second.toml", '[allow]\nuid = [1000, 0]\n[rule_allow."exec.tmp_1"]\nexe = ["/b"]\n')
    _write(tmp_path / "allow.d" / "10-first.toml", '[rule_allow."exec.tmp_1"]\nexe = ["/a"]\nuid = [33]\n')
    _write(tmp_path / "allow.d" / "05-empty.toml", "# nothing yet\n")
    _write(tmp_path / "allow.d" / "README", "not toml, ignored")
    _write(tmp_path / "allow.d" / ".hidden.toml", "garbage = = =")
    (tmp_path / "allow.d" / "sub").mkdir()
    policy = load_policy(policy_path)
    assert policy.allow_sources == tuple(
        str(tmp_path / "allow.d" / n) for n in ("05-empty.toml", "10-first.toml", "20-second.toml")
    )
    assert policy.allow.uid == (0, 4294967294, 1000)
    ex = policy.rule("exec.tmp_1")
    assert ex.meta.allow == Allowlist(exe=("/a", "/b"), exe_dirs=("/usr/lib/apt/methods",), uid=(33,))
    assert policy.rule("ra").meta.allow.is_empty()


def test_allow_d_file_that_is_a_directory_is_reported(tmp_path):
    policy_path = _write(tmp_path / "policy.toml", FULL)
    (tmp_path / "allow.d" / "x.toml").mkdir(parents=True)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_path)
    assert [str(p) for p in caught.value.errors] == [f"{tmp_path}/allow.d/x.toml: is a directory, not a policy file"]


def test_allow_d_errors_reported_with_policy_errors(tmp_path):
    policy_path = _write(tmp_path / "policy.toml", 'version = 1\nmode = "x"\n[[rule]]\nid = "s"\nkind = "sysrq"\n')
    _write(tmp_path / "allow.d" / "a.toml", "[rule_allow.s]\nexe = ['rel']\n[rule_allow.t]\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(str(policy_path))
    assert [str(p) for p in caught.value.errors] == [
        f'{policy_path}:2: mode: unknown value "x" (allowed: "enforce", "audit")',
        f'{tmp_path}/allow.d/a.toml:2: rule_allow.s.exe[0]: path "rel" is not absolute',
        f'{tmp_path}/allow.d/a.toml:3: rule_allow.t: no rule with id "t" in {policy_path} (rules: "s")',
    ]


def test_problem_formats():
    assert str(PolicyProblem("p.toml", "Invalid value", line=3, column=7)) == "p.toml:3:7: Invalid value"
    assert str(PolicyProblem("p.toml", "bad", line=88, where='rule 4 "exec-tmp" allow.exe[0]')) == (
        'p.toml:88: rule 4 "exec-tmp" allow.exe[0]: bad')
    assert str(PolicyProblem("p.toml", "file is empty")) == "p.toml: file is empty"
    risky = PolicyProblem("p.toml", "risky", line=5, where="allow.uid[0]", level=Level.WARNING)
    assert str(risky) == "p.toml:5: warning: allow.uid[0]: risky"
    assert str(risky.as_error("--strict")) == "p.toml:5: allow.uid[0]: risky (--strict)"
    error = PolicyError([PolicyProblem("a", "one"), risky, PolicyProblem("a", "two", line=2, where="mode")])
    assert str(error) == "a: one\np.toml:5: warning: allow.uid[0]: risky\na:2: mode: two"
    assert [p.message for p in error.errors] == ["one", "two"]


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "nope.toml")
    assert str(caught.value) == f"{tmp_path}/nope.toml: cannot read: No such file or directory"


def test_directory_as_policy(tmp_path):
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a policy file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    path = _write(tmp_path / "p.toml", "version = 1\n")
    path.chmod(0)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == f"{path}: cannot read: Permission denied"


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as caught:
        load_policy(fifo)
    assert str(caught.value) == f"{fifo}: is not a regular file"


def test_ten_megabyte_file_refused_before_parsing(tmp_path):
    path = tmp_path / "big.toml"
    path.write_bytes(b"version = 1\n" + b"# padding padding padding\n" * 400_000)
    assert path.stat().st_size > 10_000_000
    start = time.monotonic()
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert time.monotonic() - start < 1.0
    assert str(caught.value) == f"{path}: file is {path.stat().st_size} bytes; policy files are limited to 1 MiB"


def test_exactly_one_mebibyte_is_accepted(tmp_path):
    head = b'version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n'
    path = tmp_path / "p.toml"
    path.write_bytes(head + b"#" * (MAX_POLICY_BYTES - len(head) - 1) + b"\n")
    assert path.stat().st_size == MAX_POLICY_BYTES
    assert load_policy(path).rules[0].meta.id == "s"
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(PolicyError, match="limited to 1 MiB"):
        load_policy(path)


@pytest.mark.parametrize(
    "body,where",
    [
        ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "2:13"),
        ("x = " + "{a = " * 100_000 + "1" + "}" * 100_000 + "\n", "2:45"),
        ("." .join(["k"] * 200_000) + " = 1\n", "2:18"),
        ("[" + ".".join(["t"] * 200_000) + "]\n", "2:17"),
    ],
    ids=["arrays", "inline-tables", "dotted-keys", "table-header"],
)
def test_deep_nesting_is_refused_quickly(tmp_path, body, where):
    path = tmp_path / "deep.toml"
    path.write_text("version = 1\n" + body, encoding="utf-8")
    start = time.monotonic()
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert time.monotonic() - start < 2.0
    assert str(caught.value) == f"{path}:{where}: nested deeper than 8 levels"


def test_brackets_inside_strings_and_comments_do_not_count():
    text = (
        'version = 1 # [[[[[[[[[[[[\n'
        '[[rule]]\nid = "e"\nkind = "exec"\n'
        'description = "[[[[[[[[[[[[ {{{{{{{{{{{{ a.b.c.d.e.f.g.h.i.j"\n'
        "dirs = ['/x', # [[[[[[[[[[[[\n]\n"
        'mitre = """T1059""" # [[[[[[[[[[[[\n'
    )
    rule = loads_policy(text).rules[0]
    assert rule.meta.description.startswith("[[[[")
    assert rule.meta.mitre == "T1059"
    assert rule.dirs[0].path == "/x"


def test_non_utf8_reports_offset():
    with pytest.raises(PolicyError) as caught:
        loads_policy(b"version = 1\nmode = \"\xc3\x28\"\n", "p.toml")
    assert str(caught.value) == "p.toml:2: not valid UTF-8: byte 0xc3 at offset 20"


def test_binary_garbage_never_tracebacks():
    with pytest.raises(PolicyError) as caught:
        loads_policy(bytes(range(256)) * 4, "bin.toml")
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].file == "bin.toml"


def test_whitespace_only_file_is_empty():
    with pytest.raises(PolicyError) as caught:
        loads_policy("  \n\t\n", "p.toml")
    assert str(caught.value) == 'p.toml: file is empty; a policy needs at least "version = 1" and one [[rule]]'


def test_syntax_error_at_end_of_file_gets_a_position():
    with pytest.raises(PolicyError) as caught:
        loads_policy("version = 1\nmode = ", "p.toml")
    (problem,) = caught.value.errors
    assert (problem.line, problem.column) == (2, 8)
    assert problem.message == "Invalid value"


def test_long_values_are_cut_in_messages():
    with pytest.raises(PolicyError) as caught:
        loads_policy('version = 1\nmode = "' + "x" * 5000 + '"\n[[rule]]\nid = "s"\nkind = "sysrq"\n', "p.toml")
    assert str(caught.value) == 'p.toml:2: mode: unknown value "' + "x" * 80 + '..." (allowed: "enforce", "audit")'


def test_all_errors_are_collected_across_sections():
    with pytest.raises(PolicyError) as caught:
        loads_policy(
            'version = 1\nmode = 1\n[allow]\nuid = ["0"]\n[[rule]]\nid = "a"\nkind = "sysrq"\naccess = ["x"]\n'
            '[[rule]]\nid = "b"\nkind = "exec"\ndirs = ["/tmp/"]\n',
            "p.toml",
        )
    assert [str(p) for p in caught.value.errors] == [
        "p.toml:2: mode: expected a string, got an integer",
        "p.toml:4: allow.uid[0]: expected an integer, got a string",
        'p.toml:8: rule 1 "a" access[0]: unknown value "x" (allowed: "write", "read")',
        'p.toml:12: rule 2 "b" dirs[0]: path "/tmp/" is not normalised (write "/tmp")',
    ]


# --- staged allow.d files: a change validated before it is written (enforcer allow) ----


def test_staged_allow_d_files_are_read_instead_of_the_disk(tmp_path) -> None:
    from enforcer.parse import load_policy

    policy = tmp_path / "policy.toml"
    policy.write_text('version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n')
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "allow.d/10-a.toml").write_text("[rule_allow.s]\nuid = [1]\n")
    (tmp_path / "allow.d/30-c.toml").write_text("[rule_allow.s]\nuid = [3]\n")
    new, changed = str(tmp_path / "allow.d/20-b.toml"), str(tmp_path / "allow.d/10-a.toml")
    staged = load_policy(policy, {new: b"[rule_allow.s]\nuid = [2]\n", changed: b"[rule_allow.s]\nuid = [9]\n"})
    assert staged.rules[0].meta.allow.uid == (9, 2, 3)  # merge order is name order, staged files included
    assert staged.allow_sources == (changed, new, str(tmp_path / "allow.d/30-c.toml"))
    removed = load_policy(policy, {str(tmp_path / "allow.d/30-c.toml"): None})
    assert removed.rules[0].meta.allow.uid == (1,)
    with pytest.raises(PolicyError) as error:
        load_policy(policy, {new: b"[rule_allow.t]\nuid = [2]\n"})
    assert str(error.value).startswith(f'{new}:1: rule_allow.t: no rule with id "t"')
    assert not (tmp_path / "allow.d/20-b.toml").exists()
    with pytest.raises(ValueError):
        load_policy(policy, {str(tmp_path / "elsewhere.toml"): b""})
