"""The pure parts of tests/harness/containers.py: Podman command lines, the
runtime's output parsed, the root file system built and placed. No runtime
runs here (the kernel tier runs them in the VM: tests/kernel/test_real_containers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.containers import (
    APPLETS, ContainerError, ContainerSpec, Podman, build_busybox_rootfs, cgroup_v2_path, check_rootfs_location,
    parse_container_id,
)

# An id Podman 4.3.1 printed in the guest (2026-12-06).
REAL_ID = "8e6296104bf0f16a26d306f36f5f5f7747e75cb0d80dd8703961287b0f214bb2"
PODMAN = Podman(root=Path("/s"), runroot=Path("/r"))


def _option(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_every_podman_command_carries_the_guest_flags() -> None:
    spec = ContainerSpec(rootfs=Path("/var/lib/x"))
    for cmd in (PODMAN.run_detached(spec), PODMAN.exec_in(REAL_ID, ["/bin/true"]),
                PODMAN.inspect(REAL_ID, "{{.Id}}"), PODMAN.remove(REAL_ID), PODMAN.version()):
        assert cmd[0] == "podman"
        assert _option(cmd, "--cgroup-manager") == "cgroupfs"  # no systemd in the guest
        assert _option(cmd, "--storage-driver") == "vfs"
        assert _option(cmd, "--events-backend") == "file"  # no journald
        assert (_option(cmd, "--root"), _option(cmd, "--runroot"), _option(cmd, "--runtime")) == ("/s", "/r", "crun")


def test_global_options_come_before_the_subcommand() -> None:
    cmd = PODMAN.exec_in(REAL_ID, ["/bin/sh", "-c", "echo x"])
    assert cmd.index("--runtime") < cmd.index("exec")
    assert cmd[-5:] == ["exec", REAL_ID, "/bin/sh", "-c", "echo x"]


def test_run_unprivileged_by_default() -> None:
    cmd = PODMAN.run_detached(ContainerSpec(rootfs=Path("/var/lib/x")))
    assert "--privileged" not in cmd and "--cgroupns=host" not in cmd and "--name" not in cmd
    assert _option(cmd, "--network") == "none"
    assert "--detach" in cmd
    assert cmd[-4:] == ["--rootfs", "/var/lib/x", "/bin/sleep", "3600"]


def test_run_privileged_in_the_host_cgroup_namespace() -> None:
    cmd = PODMAN.run_detached(ContainerSpec(rootfs=Path("/var/lib/x"), privileged=True, cgroupns_host=True,
                                            name="attacker", command=("/bin/sh",)))
    assert "--privileged" in cmd and "--cgroupns=host" in cmd
    assert _option(cmd, "--name") == "attacker"
    # options precede --rootfs, the command follows it
    assert cmd.index("--privileged") < cmd.index("--rootfs")
    assert cmd[-3:] == ["--rootfs", "/var/lib/x", "/bin/sh"]


def test_remove_does_not_wait_out_the_grace_period() -> None:
    cmd = PODMAN.remove(REAL_ID)
    assert cmd[-5:] == ["rm", "--force", "--time", "0", REAL_ID]


@pytest.mark.parametrize("stdout", [REAL_ID + "\n", f"WARN[0000] something\n{REAL_ID}\n\n"])
def test_container_id_is_the_last_line(stdout: str) -> None:
    assert parse_container_id(stdout) == REAL_ID


@pytest.mark.parametrize("stdout", ["", "\n", REAL_ID[:12] + "\n", REAL_ID.upper(), f"{REAL_ID}\nError: x\n"])
def test_anything_else_is_no_container_id(stdout: str) -> None:
    with pytest.raises(ContainerError):
        parse_container_id(stdout)


def test_cgroup_v2_line() -> None:
    text = f"1:name=systemd:/x\n0::/libpod_parent/libpod-{REAL_ID}\n"
    assert cgroup_v2_path(text) == f"/libpod_parent/libpod-{REAL_ID}"
    with pytest.raises(ContainerError):
        cgroup_v2_path("1:name=systemd:/x\n")


@pytest.mark.parametrize("rootfs", ["/tmp/rootfs", "/tmp", "/var/tmp/a/b", "/dev/shm/r", "/run/containers/r"])
def test_a_rootfs_in_a_covered_place_is_refused(rootfs: str) -> None:
    with pytest.raises(ContainerError, match="inside"):
        check_rootfs_location(Path(rootfs))


@pytest.mark.parametrize("rootfs", ["/var/lib/enforcer-test-containers/rootfs", "/tmpfoo/r", "/srv/run"])
def test_a_rootfs_elsewhere_is_accepted(rootfs: str) -> None:
    check_rootfs_location(Path(rootfs))


def test_busybox_rootfs(tmp_path: Path) -> None:
    fake_busybox = tmp_path / "busybox"
    fake_busybox.write_bytes(b"\x7fELF fake")
    dest = tmp_path / "rootfs"
    (dest / "stale").mkdir(parents=True)  # a previous run's tree is replaced
    build_busybox_rootfs(dest, busybox=fake_busybox, covered=())
    assert not (dest / "stale").exists()
    assert (dest / "bin" / "busybox").read_bytes() == b"\x7fELF fake"
    for applet in APPLETS:
        assert os.readlink(dest / "bin" / applet) == "busybox"
    assert (dest / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert {p.name for p in dest.iterdir()} >= {"bin", "tmp", "proc", "sys", "dev", "etc"}


def test_busybox_rootfs_refuses_a_covered_place(tmp_path: Path) -> None:
    with pytest.raises(ContainerError):
        build_busybox_rootfs(tmp_path / "rootfs", busybox=tmp_path / "busybox", covered=(str(tmp_path),))
    assert not (tmp_path / "rootfs").exists()
