"""Which container a process belongs to, read from its cgroup v2 path.

Container runtimes name the cgroup of each container after its id, in a few
well-known shapes (systemd and cgroupfs cgroup drivers differ). Reading the
path is pure, costs no system call and works for processes already gone, so
it is done for every event. What the path does not say is left None, never
guessed; the mount-namespace fact (`namespaced`) comes from the kernel.

Shapes recognised (the deepest matching component wins, so a container's
own sub-cgroups, e.g. with cgroup namespaces, still name their container):

- Docker: ``docker-<id>.scope`` (systemd driver), ``/docker/<id>`` (cgroupfs)
- containerd CRI (Kubernetes): ``cri-containerd-<id>.scope``,
  ``/kubepods/<qos>/pod<uid>/<id>`` (cgroupfs driver)
- CRI-O: ``crio-<id>.scope`` (``crio-conmon-<id>.scope`` is its monitor, not
  the container)
- Podman: ``libpod-<id>.scope``, ``/libpod_parent/libpod-<id>``
  (``libpod-conmon-<id>.scope`` is the monitor)
- systemd-nspawn: ``systemd-nspawn@<name>.service``, ``machine-<name>.scope``
  (under ``machine.slice``); the id is the machine name
- LXC: ``lxc.payload.<name>``
- Kubernetes pod uid from a ``pod<uid>`` component (``kubepods-...-pod<uid>.slice``
  with the systemd driver, where the uid's dashes are written as underscores).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

_HEX_ID = r"([0-9a-f]{64})"

#: (runtime, pattern of one path component); group 1 is the id.
_COMPONENT_PATTERNS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    ("docker", re.compile(rf"^docker-{_HEX_ID}\.scope$")),
    ("containerd", re.compile(rf"^cri-containerd-{_HEX_ID}\.scope$")),
    ("cri-o", re.compile(rf"^crio-{_HEX_ID}\.scope$")),
    ("podman", re.compile(rf"^libpod-{_HEX_ID}\.scope$")),
    ("podman", re.compile(rf"^libpod-{_HEX_ID}$")),
    ("systemd-nspawn", re.compile(r"^systemd-nspawn@(.+)\.service$")),
    ("lxc", re.compile(r"^lxc\.payload\.(.+)$")),
)

_POD_SYSTEMD = re.compile(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$")
_POD_CGROUPFS = re.compile(r"^pod([0-9a-f-]{36})$")
_BARE_ID = re.compile(rf"^{_HEX_ID}$")


@dataclass(frozen=True)
class ContainerInfo:
    """What is known of the container of an event's process.

    `namespaced`: outside the host's (initial) mount namespace, which is what
    a rule's `scope = "container"` means; also true for a systemd service
    with a private /tmp. `runtime`, `id`, `pod_uid`: from the cgroup path,
    None where it does not say.
    """

    namespaced: bool
    runtime: Optional[str] = None
    id: Optional[str] = None
    pod_uid: Optional[str] = None


def identify(cgroup_path: str, namespaced: bool) -> ContainerInfo:
    """Runtime, container id and pod uid named by a cgroup v2 path ("/" for the root)."""
    parts = [p for p in cgroup_path.split("/") if p]
    pod_uid = _pod_uid(parts)
    for index in range(len(parts) - 1, -1, -1):
        found = _runtime_of(parts, index, pod_uid is not None)
        if found:
            runtime, container_id = found
            return ContainerInfo(namespaced, runtime, container_id, pod_uid)
    return ContainerInfo(namespaced, None, None, pod_uid)


def _runtime_of(parts: list, index: int, in_pod: bool) -> Optional[Tuple[str, str]]:
    part = parts[index]
    for runtime, pattern in _COMPONENT_PATTERNS:
        match = pattern.match(part)
        if match:
            return runtime, match.group(1)
    parent = parts[index - 1] if index > 0 else ""
    if parent == "machine.slice" and part.startswith("machine-") and part.endswith(".scope"):
        return "systemd-nspawn", _unescape_systemd(part[len("machine-"):-len(".scope")])
    bare = _BARE_ID.match(part)
    if bare and parent == "docker":
        return "docker", bare.group(1)
    if bare and in_pod:
        # cgroupfs driver under /kubepods/.../pod<uid>/: the CRI runtime is not named
        return "kubernetes", bare.group(1)
    return None


def _pod_uid(parts: list) -> Optional[str]:
    for part in parts:
        match = _POD_SYSTEMD.match(part)
        if match:
            return match.group(1).replace("_", "-")
        match = _POD_CGROUPFS.match(part)
        if match and "kubepods" in parts:
            return match.group(1)
    return None


def _unescape_systemd(name: str) -> str:
    r"""systemd escapes unit names: "\x2d" stands for "-"."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), name)
