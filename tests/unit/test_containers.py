"""Container identity from real cgroup v2 path shapes of each runtime."""

from __future__ import annotations

import pytest

from enforcer.containers import ContainerInfo, identify

CID = "3f4e" * 16  # 64 hex digits, as runtimes write them
POD = "9c1b2d3e-4f50-4a6b-8c7d-0e1f2a3b4c5d"
POD_SYSTEMD = POD.replace("-", "_")


@pytest.mark.parametrize("path,runtime,container_id,pod_uid", [
    # Docker, systemd cgroup driver (Debian/RHEL default with cgroup v2)
    (f"/system.slice/docker-{CID}.scope", "docker", CID, None),
    # Docker, cgroupfs driver
    (f"/docker/{CID}", "docker", CID, None),
    # a process in a sub-cgroup of its container (cgroup namespaces, systemd inside)
    (f"/system.slice/docker-{CID}.scope/init.scope", "docker", CID, None),
    # Kubernetes with containerd, systemd driver
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/cri-containerd-{CID}.scope",
     "containerd", CID, POD),
    (f"/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice/cri-containerd-{CID}.scope", "containerd", CID, POD),
    # Kubernetes, cgroupfs driver: the runtime is not in the path
    (f"/kubepods/besteffort/pod{POD}/{CID}", "kubernetes", CID, POD),
    # CRI-O
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SYSTEMD}.slice/crio-{CID}.scope",
     "cri-o", CID, POD),
    # Podman: rootful and rootless (systemd), cgroupfs manager
    (f"/machine.slice/libpod-{CID}.scope", "podman", CID, None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope", "podman", CID, None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container", "podman", CID, None),
    (f"/libpod_parent/libpod-{CID}", "podman", CID, None),
    # systemd-nspawn, as a service and as a scope (escaped name)
    ("/machine.slice/systemd-nspawn@web.service/payload", "systemd-nspawn", "web", None),
    ("/machine.slice/machine-db\\x2dprimary.scope", "systemd-nspawn", "db-primary", None),
    # LXC
    ("/lxc.payload.c1/init.scope", "lxc", "c1", None),
])
def test_runtime_and_id_from_path(path: str, runtime: str, container_id: str, pod_uid) -> None:
    assert identify(path, namespaced=True) == ContainerInfo(True, runtime, container_id, pod_uid)


@pytest.mark.parametrize("path", [
    "/",
    "/system.slice/ssh.service",
    "/user.slice/user-1000.slice/session-3.scope",
    # the runtimes' monitors are not containers
    f"/machine.slice/libpod-conmon-{CID}.scope",
    f"/system.slice/crio-conmon-{CID}.scope",
    # an id-shaped name outside any runtime's hierarchy is not guessed to be one
    f"/system.slice/{CID}",
    "/docker/not-an-id",
])
def test_nothing_is_guessed(path: str) -> None:
    assert identify(path, namespaced=False) == ContainerInfo(False)


def test_pod_without_a_recognised_container_keeps_the_pod() -> None:
    info = identify(f"/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice", namespaced=True)
    assert (info.runtime, info.id, info.pod_uid) == (None, None, POD)
