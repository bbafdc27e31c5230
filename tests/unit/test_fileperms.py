"""A policy that anyone but root could change is refused (StrictModes), naming the file and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.cli import main
from enforcer.fileperms import load_trusted_policy
from enforcer.parse import PolicyError

POLICY = 'version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n'

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need files owned by root")


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    directory = tmp_path / "enforcer"
    (directory / "allow.d").mkdir(parents=True)
    (directory / "policy.toml").write_text(POLICY)
    for path in (tmp_path, directory, directory / "allow.d"):
        path.chmod(0o755)
    (directory / "policy.toml").chmod(0o644)
    return directory


def _refusal(path: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        load_trusted_policy(path)
    return str(caught.value)


def test_root_owned_and_not_writable_by_others_is_accepted(etc: Path) -> None:
    assert load_trusted_policy(etc / "policy.toml").rules[0].meta.id == "s"


def test_group_writable_policy_is_refused_with_the_fix(etc: Path) -> None:
    (etc / "policy.toml").chmod(0o664)
    message = _refusal(etc / "policy.toml")
    assert "writable by its group (mode 0664)" in message
    assert f"chmod go-w {etc / 'policy.toml'}" in message


def test_a_drop_in_owned_by_a_user_is_refused(etc: Path) -> None:
    drop_in = etc / "allow.d" / "10-x.toml"
    drop_in.write_text('[allow]\nuid = [4242]\n')
    os.chown(drop_in, 1000, 1000)
    assert f"file {drop_in} is owned by uid 1000, not root" in _refusal(etc / "policy.toml")


def test_a_writable_directory_above_is_refused_unless_sticky(etc: Path) -> None:
    etc.parent.chmod(0o777)
    assert f"directory {etc.parent} is writable by group and others" in _refusal(etc / "policy.toml")
    etc.parent.chmod(0o1777)  # like /tmp: only an entry's owner may replace it
    load_trusted_policy(etc / "policy.toml")


def test_a_read_only_kubernetes_volume_is_accepted_though_mode_0777(etc: Path, monkeypatch) -> None:
    # the kubelet's ConfigMap volume: 0777 with ..data inside, read-only in the container
    etc.chmod(0o777)
    assert f"directory {etc} is writable by group and others" in _refusal(etc / "policy.toml")
    os.symlink(".", etc / "..data")
    assert f"directory {etc} is writable by group and others" in _refusal(etc / "policy.toml")  # writable mount
    real_statvfs = os.statvfs

    def read_only(path):
        result = real_statvfs(path)
        if Path(path) != etc:
            return result
        return os.statvfs_result(result[:8] + (result.f_flag | os.ST_RDONLY,) + result[9:])

    monkeypatch.setattr(os, "statvfs", read_only)
    load_trusted_policy(etc / "policy.toml")
    (etc / "..data").unlink()  # read-only but no ..data: not a Kubernetes volume, refused
    assert f"directory {etc} is writable by group and others" in _refusal(etc / "policy.toml")


def test_check_exits_2_and_says_why(etc: Path, capsys) -> None:
    (etc / "allow.d").chmod(0o757)
    assert main(["check", str(etc / "policy.toml")]) == 2
    assert "writable by others (mode 0757)" in capsys.readouterr().err
