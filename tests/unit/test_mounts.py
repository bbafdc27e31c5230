"""Mounting bpffs and securityfs goes through mount(2), and a failure says why."""

from __future__ import annotations

import errno

import pytest

from enforcer.kernel import bpfsys, loader, probe


def _refuse(fstype: str, target: str) -> None:
    raise OSError(errno.EPERM, f"mount -t {fstype} {fstype} {target}: Operation not permitted")


def test_mount_failure_carries_the_kernels_reason(tmp_path) -> None:
    # a filesystem type no kernel has: ENODEV as root, EPERM otherwise; never mounts
    with pytest.raises(OSError) as raised:
        bpfsys.mount("enforcer-no-such-fs", str(tmp_path))
    assert raised.value.errno in (errno.ENODEV, errno.EPERM)
    assert f"mount -t enforcer-no-such-fs enforcer-no-such-fs {tmp_path}: " in str(raised.value)


def test_bpffs_mount_failure_is_a_load_error_with_the_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(loader, "BPFFS_ROOT", tmp_path / "bpf")
    monkeypatch.setattr(bpfsys, "mount", _refuse)
    with pytest.raises(loader.LoadError) as raised:
        loader.ensure_bpffs()
    assert f"no bpf filesystem at {tmp_path / 'bpf'} and mounting one failed" in str(raised.value)
    assert "Operation not permitted" in str(raised.value)


def test_bpffs_is_mounted_with_mount2(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(loader, "BPFFS_ROOT", tmp_path / "bpf")
    monkeypatch.setattr(bpfsys, "mount", lambda fstype, target: calls.append((fstype, target)))
    loader.ensure_bpffs()
    assert calls == [("bpf", str(tmp_path / "bpf"))]


def test_securityfs_mount_failure_reaches_the_probe_report(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(probe, "SECURITYFS", tmp_path)
    monkeypatch.setattr(probe, "LSM_LIST", tmp_path / "lsm")
    monkeypatch.setattr(probe.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bpfsys, "mount", _refuse)
    check = probe.check_securityfs()
    assert not check.ok
    reason = f"mount -t securityfs securityfs {tmp_path}: Operation not permitted"
    assert check.detail == f"{tmp_path / 'lsm'} is not readable: {reason}"


def test_securityfs_needs_root(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(probe, "LSM_LIST", tmp_path / "lsm")
    monkeypatch.setattr(probe.os, "geteuid", lambda: 1000)
    assert probe.mount_securityfs() == "not mounted, and only root may mount it"


def test_securityfs_already_there(tmp_path, monkeypatch) -> None:
    (tmp_path / "lsm").write_text("capability,bpf")
    monkeypatch.setattr(probe, "LSM_LIST", tmp_path / "lsm")
    assert probe.mount_securityfs() is None
    assert probe.check_securityfs().ok
