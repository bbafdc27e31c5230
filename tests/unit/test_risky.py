"""Risky allowlist entries (issue 10.4): warnings from `check`, errors under `check --strict`,
listed by `check --explain`.

A case is `risky/NAME.toml`, or `risky/NAME/policy.toml` with an `allow.d/`
beside it; `risky/NAME.expected` holds the exact warning lines `enforcer check`
prints to stderr, paths relative to tests/unit/risky. The agent's logging of
them is in test_daemon.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.cli import main
from enforcer.parse import load_policy
from enforcer.policyfile.risks import cgroup_risk, exe_dir_risk, exe_risk, uid_risk

RISKY = Path(__file__).resolve().parent / "risky"


def _cases():
    for expected in sorted(RISKY.glob("*.expected")):
        name = expected.stem
        policy = f"{name}.toml" if (RISKY / f"{name}.toml").is_file() else f"{name}/policy.toml"
        yield pytest.param(policy, expected.read_text(encoding="utf-8").splitlines(), id=name)


def test_every_case_has_expected_warnings():
    cases = {p.stem for p in RISKY.glob("*.toml")} | {p.name for p in RISKY.iterdir() if p.is_dir()}
    assert cases == {p.stem for p in RISKY.glob("*.expected")}


@pytest.mark.parametrize("policy,expected", list(_cases()))
def test_check_warns_and_accepts(policy, expected, monkeypatch, capsys):
    monkeypatch.chdir(RISKY)
    assert expected and all(": warning: " in line for line in expected)
    assert main(["check", policy]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == expected
    assert out.startswith(f"{policy}: ok: ")
    assert out.endswith(f", {len(expected)} warning{'s' if len(expected) > 1 else ''}\n")
    assert [str(w) for w in load_policy(policy).warnings] == expected


@pytest.mark.parametrize("policy,expected", list(_cases()))
def test_strict_refuses(policy, expected, monkeypatch, capsys):
    monkeypatch.chdir(RISKY)
    assert main(["check", "--strict", policy]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        line.replace(": warning: ", ": ", 1) + " (refused by --strict)" for line in expected
    ]


@pytest.mark.parametrize("policy,expected", list(_cases()))
def test_explain_lists_them(policy, expected, monkeypatch, capsys):
    monkeypatch.chdir(RISKY)
    assert main(["check", "--explain", policy]) == 0
    out = capsys.readouterr().out
    part = out[out.index("\nRisky allowlist entries (warnings of `enforcer check`, errors under "
                         "`enforcer check --strict`):\n"):]
    assert part.strip("\n").splitlines()[1:] == ["  - " + line.replace(": warning: ", ": ", 1) for line in expected]


def test_a_drop_in_checked_alone_warns_too(monkeypatch, capsys):
    monkeypatch.chdir(RISKY)
    assert main(["check", "dropin/allow.d/10-agent.toml"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == (RISKY / "dropin.expected").read_text().splitlines()
    assert out == ("dropin/allow.d/10-agent.toml: ok: drop-in, 2 allowlist entries, 2 warnings; "
                   "rule ids checked against dropin/policy.toml\n")
    assert main(["check", "--strict", "dropin/allow.d/10-agent.toml"]) == 2


@pytest.mark.parametrize("uid,risky", [(0, True), (1, False), (990, False)])
def test_uid(uid, risky):
    assert (uid_risk(uid) is not None) is risky


@pytest.mark.parametrize("path", [
    "/bin/sh", "/usr/bin/bash", "/bin/dash", "/usr/bin/ksh93", "/usr/bin/fish", "/bin/busybox",
    "/usr/bin/python", "/usr/bin/python2.7", "/usr/bin/python3.12", "/usr/bin/pypy3", "/usr/bin/perl5.36.0",
    "/usr/bin/ruby", "/usr/bin/nodejs", "/usr/bin/php", "/usr/sbin/php-fpm8.2", "/usr/bin/luajit",
    "/usr/bin/tclsh8.6", "/usr/bin/gawk", "/usr/bin/qemu-aarch64-static", "/usr/bin/env", "/usr/bin/xargs",
    "/usr/bin/nice", "/usr/bin/timeout", "/usr/sbin/chroot", "/usr/bin/nsenter",
    "/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-musl-x86_64.so.1",
    "/tmp/x", "/var/tmp/a/b", "/dev/shm/x", "/home/alice/bin/tool",
])
def test_risky_exe(path):
    assert exe_risk(path) is not None


@pytest.mark.parametrize("path", [
    "/usr/lib/systemd/systemd-sysctl", "/usr/sbin/runc", "/usr/bin/crun", "/usr/sbin/update-binfmts",
    "/usr/bin/ssh", "/usr/sbin/sshd", "/usr/bin/shellcheck", "/usr/bin/bashbug-extra", "/usr/bin/envsubst",
    "/usr/bin/nodemon-not", "/opt/vendor/agent", "/tmpfoo/x",
])
def test_ordinary_exe(path):
    assert exe_risk(path) is None


@pytest.mark.parametrize("path", [
    "/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/usr/local", "/usr/local/bin", "/opt", "/usr/lib",
    "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/libexec", "/snap/bin",
    "/tmp", "/tmp/agent", "/var/tmp", "/dev/shm", "/home", "/home/deploy", "/run/user/1000",
    "/var", "/run", "/dev",  # contain a directory anyone can write to
])
def test_risky_exe_dirs(path):
    assert exe_dir_risk(path) is not None


@pytest.mark.parametrize("path", [
    "/opt/vendor-agent", "/usr/lib/apt/methods", "/usr/lib/systemd", "/usr/local/lib/agent", "/srv/app/bin",
    "/var/lib/agent", "/etc/agent",
])
def test_narrow_exe_dirs(path):
    assert exe_dir_risk(path) is None


@pytest.mark.parametrize("path,risky", [
    ("/system.slice", True), ("/user.slice", True), ("/machine.slice", True), ("/kubepods", True),
    ("/system.slice/apport.service", False), ("/user.slice/user-1000.slice", False), ("/kubepods/besteffort", False),
])
def test_cgroup(path, risky):
    assert (cgroup_risk(path) is not None) is risky


def test_the_lists_are_documented():
    from enforcer.policyfile.risks import SYSTEM_DIRS, USER_WRITABLE_DIRS, WIDE_CGROUPS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Checks and warnings"):doc.index("## Error messages")]
    assert [d for d in SYSTEM_DIRS + USER_WRITABLE_DIRS + WIDE_CGROUPS if f"`{d}`" not in section] == []
