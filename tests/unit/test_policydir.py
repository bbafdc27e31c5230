"""A tamper rule that protects "policy" needs the policy in a directory of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.compile import compile_policy
from enforcer.kernel.loader import protected_policy_dir
from enforcer.parse import loads_policy
from enforcer.policydir import check_policy_directory, foreign_directories
from enforcer.policyfile.problems import PolicyError

TAMPER = 'version = 1\n[[rule]]\nid = "tamper"\nkind = "tamper"\nscope = "container"\n'


def _plan(text: str):
    return compile_policy(loads_policy(text))


def _policy_in(directory: Path) -> Path:
    (directory / "allow.d").mkdir(parents=True)
    policy = directory / "policy.toml"
    policy.write_text(TAMPER)
    return policy


def test_a_directory_of_its_own_is_accepted(tmp_path: Path) -> None:
    policy = _policy_in(tmp_path / "enforcer")
    (policy.parent / "policy.toml.dpkg-old").write_text("")  # files beside it are enforcer's to protect
    assert foreign_directories(policy.parent) == []
    check_policy_directory(_plan(TAMPER), policy)


def test_a_shared_directory_is_refused_naming_the_file_and_its_directories(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    policy = _policy_in(etc)
    for name in ("cni", "ssl", "apt"):
        (etc / name).mkdir()
    with pytest.raises(PolicyError) as caught:
        check_policy_directory(_plan(TAMPER), policy)
    (error,) = caught.value.errors
    assert error.file == str(policy)
    assert "3 other directories (apt, cni, ssl)" in error.message
    assert 'leave "policy" out of protect' in error.message


def test_without_policy_protection_the_directory_is_not_looked_at(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    policy = _policy_in(etc)
    (etc / "cni").mkdir()
    check_policy_directory(_plan(TAMPER + 'protect = ["bpf", "pins", "agent"]\n'), policy)
    check_policy_directory(_plan('version = 1\n[[rule]]\nid = "sysrq"\nkind = "sysrq"\n'), policy)


def test_an_unlistable_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        check_policy_directory(_plan(TAMPER), tmp_path / "missing" / "policy.toml")
    assert "cannot be listed" in caught.value.errors[0].message


def test_a_configmap_volumes_own_entries_do_not_count(tmp_path: Path) -> None:
    policy = _policy_in(tmp_path / "enforcer")
    (policy.parent / "..2026_12_07_18_00_00.123").mkdir()
    (policy.parent / "..data").symlink_to(policy.parent / "..2026_12_07_18_00_00.123")
    assert foreign_directories(policy.parent) == []


def test_a_policy_directory_on_btrfs_is_refused(tmp_path: Path) -> None:
    policy = _policy_in(tmp_path / "enforcer")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:44 /@etc {tmp_path} rw - btrfs /dev/sdb rw\n")
    with pytest.raises(PolicyError) as caught:
        check_policy_directory(_plan(TAMPER), policy, str(mountinfo))
    assert "is on btrfs" in caught.value.errors[0].message
    mountinfo.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:44 / {tmp_path} rw - xfs /dev/sdb rw\n")
    check_policy_directory(_plan(TAMPER), policy, str(mountinfo))


def test_the_directory_is_looked_up_only_for_a_plan_that_protects_it(tmp_path: Path) -> None:
    """Its identity (mountinfo, stats up the tree) matters to the kernel only
    when a tamper rule protects "policy": a reload of any other plan reads nothing."""
    assert protected_policy_dir(_plan(TAMPER), tmp_path) == tmp_path
    assert protected_policy_dir(_plan(TAMPER + 'protect = ["bpf", "pins", "agent"]\n'), tmp_path) is None
    assert protected_policy_dir(_plan('version = 1\n[[rule]]\nid = "sysrq"\nkind = "sysrq"\n'), tmp_path) is None
