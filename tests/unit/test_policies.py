"""The shipped policies: valid, and they say what the docs say they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from enforcer.cli import main
from enforcer.parse import load_policy
from enforcer.policy import (
    ExecRule,
    KernelHelperRule,
    KernelHelperSetting,
    Mode,
    ReleaseAgentRule,
    Scope,
    SysrqAccess,
    SysrqRule,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED = sorted(POLICIES.glob("*.toml"))


def test_the_three_policies_ship():
    assert [p.name for p in SHIPPED] == ["audit.toml", "default.toml", "strict.toml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_enforcer_check_passes(path, capsys):
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["check", "--strict", str(path)]) == 0  # no risky allowlist entry ships


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_four_protections_present(path):
    kinds = {type(rule) for rule in load_policy(path).rules}
    assert kinds == {SysrqRule, ReleaseAgentRule, ExecRule, KernelHelperRule}


def _all_exe_entries(policy):
    yield from policy.allow.exe
    for rule in policy.rules:
        yield from rule.meta.allow.exe


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_sysctl_binary_is_never_allowlisted(path):
    assert not [e for e in _all_exe_entries(load_policy(path)) if e.endswith("/sysctl")]


def test_default_exceptions_are_where_they_belong():
    policy = load_policy(POLICIES / "default.toml")
    assert policy.mode is Mode.ENFORCE
    assert policy.allow.is_empty()
    host = policy.rule("sysrq-write-host")
    assert host.meta.scope is Scope.HOST
    assert host.access == frozenset({SysrqAccess.WRITE})
    assert host.meta.allow.exe == ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl")
    container = policy.rule("sysrq-write-container")
    assert container.meta.scope is Scope.CONTAINER and container.meta.allow.is_empty()
    assert policy.rule("release-agent").meta.allow.is_empty()
    memfd = policy.rule("exec-memfd")
    assert memfd.memfd and not memfd.dirs and not memfd.filesystems
    assert set(memfd.meta.allow.exe) == {"/usr/sbin/runc", "/usr/bin/runc", "/usr/bin/crun"}
    dirs = policy.rule("exec-unusual-dir")
    assert [d.path for d in dirs.dirs] == ["/tmp", "/var/tmp", "/dev", "/proc", "/sys"]
    assert all(d.recursive for d in dirs.dirs)
    assert dirs.meta.allow.is_empty() and policy.effective_mode(dirs) is Mode.ENFORCE
    run = policy.rule("exec-run-audit")
    assert policy.effective_mode(run) is Mode.AUDIT
    assert "/usr/lib/systemd/systemd-shutdown" in run.meta.allow.exe


def test_default_kernel_helper_exceptions_are_host_only_and_split_by_setting():
    policy = load_policy(POLICIES / "default.toml")
    sysctl = policy.rule("kernel-helper-sysctl-host")
    binfmt = policy.rule("kernel-helper-binfmt-host")
    container = policy.rule("kernel-helper-container")
    assert (sysctl.meta.scope, binfmt.meta.scope, container.meta.scope) == (Scope.HOST, Scope.HOST, Scope.CONTAINER)
    assert sysctl.settings | binfmt.settings == container.settings == frozenset(KernelHelperSetting)
    assert sysctl.settings & binfmt.settings == frozenset()
    assert sysctl.meta.allow.exe == ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl")
    assert sysctl.meta.allow.cgroup == ("/system.slice/apport.service", "/system.slice/abrt-ccpp.service")
    assert binfmt.meta.allow.exe == (
        "/usr/lib/systemd/systemd-binfmt", "/lib/systemd/systemd-binfmt", "/usr/sbin/update-binfmts",
    )
    assert container.meta.allow.is_empty()
    assert all(policy.effective_mode(rule) is Mode.ENFORCE for rule in (sysctl, binfmt, container))


def test_audit_policy_never_enforces():
    policy = load_policy(POLICIES / "audit.toml")
    assert {policy.effective_mode(rule) for rule in policy.rules} == {Mode.AUDIT}


def test_strict_is_stricter_than_default():
    default = load_policy(POLICIES / "default.toml")
    strict = load_policy(POLICIES / "strict.toml")

    def enforced_places(policy):
        return {d.path for r in policy.rules if isinstance(r, ExecRule) and policy.effective_mode(r) is Mode.ENFORCE
                for d in r.dirs}

    def enforced_fs(policy):
        return {f for r in policy.rules if isinstance(r, ExecRule) and policy.effective_mode(r) is Mode.ENFORCE
                for f in r.filesystems}

    assert enforced_places(default) < enforced_places(strict)
    assert enforced_fs(default) < enforced_fs(strict)
    read = strict.rule("sysrq-read")
    assert read.access == frozenset({SysrqAccess.READ}) and strict.effective_mode(read) is Mode.AUDIT
    assert strict.rule("exec-tmpfs-container").meta.scope is Scope.CONTAINER


def test_every_default_exception_has_a_comment_saying_why():
    """Each allowlist entry carries a comment, or follows comment lines (entries grouped under one)."""
    lines = (POLICIES / "default.toml").read_text().splitlines()
    inside, checked = False, 0
    for n, line in enumerate(lines):
        stripped = line.strip()
        if re.match(r"(exe|exe_dirs|uid|cgroup) = \[$", stripped):
            inside = True
            continue
        if inside and stripped == "]":
            inside = False
        if not (inside and stripped.startswith('"')):
            continue
        checked += 1
        if "#" in stripped:
            continue
        previous = n - 1
        while lines[previous].strip().startswith('"'):
            previous -= 1
        assert lines[previous].strip().startswith("#"), f"no comment says why: {stripped}"
    assert checked == 14


def test_audit_policy_switched_to_enforce_denies_no_more_than_the_default() -> None:
    # The packaging docs tell operators to audit first, then run with --mode enforce:
    # the broad rule that default.toml keeps in audit must stay audit there too.
    from enforcer.compile import compile_policy
    from enforcer.policy import Mode

    def modes(name: str) -> dict:
        plan = compile_policy(load_policy(POLICIES / name), Mode.ENFORCE)
        return {info.id: info.mode for info in plan.rules}

    audit, default = modes("audit.toml"), modes("default.toml")
    assert audit == default
    assert audit["exec-run-audit"] is Mode.AUDIT
