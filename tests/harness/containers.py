"""Real containers in the test guest: Podman 4.3 (Debian bookworm) running crun.

The kernel tests run inside a virtme-ng guest: the host's root file system
shared read-only over 9p, writable overlays on /etc, /var, /tmp, ..., a tmpfs
on /run, and no systemd (PID 1 is virtme-ng's init). No image registry is
reachable. What it took to run a real container there (each seen in the
guest on Debian's 6.1 kernel, 2026-12-06):

- **No image.** The root file system is a directory built here: a copy of
  busybox-static plus one symlink per applet (`build_busybox_rootfs`), run
  with `podman run --rootfs DIR`, which needs no image store at all.
- **No systemd.** Podman's default cgroup manager asks systemd for a scope
  over D-Bus; `--cgroup-manager cgroupfs` makes it create the cgroup itself,
  under `/libpod_parent/libpod-<id>` (the path shape the events' `container`
  object must recognise; conmon stays in the root cgroup).
- **No journald.** Podman's events go to the journal by default;
  `--events-backend file` writes them to a file under the run root instead.
- **Storage.** The guest's /var is an overlayfs; overlay-on-overlay is not
  something to count on, and `--rootfs` needs no layers: `--storage-driver vfs`
  (plain directories) is the driver that cannot fail here.
- **Network.** The guest has no network to join and the tests need none:
  `--network none` (Podman 4.3 then uses no CNI plugin, though Debian's
  podman pulls in containernetworking-plugins).
- **The root file system must live outside every place an exec rule
  covers.** A rootfs under /tmp would make every program of the container
  a file that lives in /tmp (the default policy judges exec by location, not
  only by name): /bin/true inside would be denied. It lives under /var/lib
  (`ROOTFS`); `check_rootfs_location` refuses the covered places.
- **Mounting a cgroup v1 hierarchy needs the host's cgroup namespace.** With
  Podman's default on cgroup v2 (`--cgroupns=private`), `mount -t cgroup` in
  a privileged container fails with EPERM from the kernel itself ("hierarchies
  may only be created in the initial cgroup namespace"), so the release_agent
  escape is impossible there whatever enforcer does. The attacker's
  container is therefore `--privileged --cgroupns=host` (what Docker gave every
  container on cgroup v1 hosts, where the classic escape was published).
- **/dev/shm is noexec in a container.** Podman mounts the container's
  /dev/shm `noexec`: an exec there fails with EACCES in the kernel's own
  mount check before any LSM hook runs. In the privileged container the
  attacker remounts it `exec` first (CAP_SYS_ADMIN allows that).
- **An unprivileged container's /proc/sysrq-trigger is a read-only bind
  mount**: a write fails with EROFS before the LSM hook; only the privileged
  container reaches enforcer's SysRq rule.

Costs measured in the guest (2 vCPUs, software emulation): `podman run -d`
of the busybox rootfs about 5 s, `podman exec` 1-2 s, `podman rm -f -t 0`
about 1.6 s.

Only the standard library: the command lines are built by pure functions
(unit-tested on the host, tests/unit/test_harness_containers.py), the rest
runs them in the guest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence, Tuple

#: Where the guest keeps the container's root file system and Podman's state.
#: Under /var/lib: writable in the guest (an overlay), and not a place that
#: any exec rule of the default policy covers.
WORK = Path("/var/lib/enforcer-test-containers")
ROOTFS = WORK / "rootfs"
STORAGE = WORK / "storage"
#: Podman's run root (locks, conmon pid files); /run is a tmpfs in the guest.
RUNROOT = Path("/run/enforcer-test-containers")

#: Places the default policy's exec rules cover by name (policies/default.toml:
#: exec-unusual-dir and exec-run-audit); a root file system inside one of
#: them would turn every program of the container into a "payload".
COVERED_PLACES: Tuple[str, ...] = ("/tmp", "/var/tmp", "/dev", "/proc", "/sys", "/run")

#: busybox applets the tests call inside the container (sh for every script).
APPLETS: Tuple[str, ...] = (
    "sh", "true", "cat", "echo", "mkdir", "mount", "umount", "ls", "cp", "id", "sleep", "test", "rm",
)

RUNTIME = "crun"
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


class ContainerError(AssertionError):
    """The runtime did not do what a test needs; the message says what it printed."""


@dataclass(frozen=True)
class Podman:
    """How Podman is invoked in the guest (see the module docstring for why each flag)."""

    root: Path = STORAGE
    runroot: Path = RUNROOT
    runtime: str = RUNTIME
    executable: str = "podman"

    def base(self) -> List[str]:
        return [
            self.executable,
            "--cgroup-manager", "cgroupfs",
            "--storage-driver", "vfs",
            "--root", str(self.root),
            "--runroot", str(self.runroot),
            "--events-backend", "file",
            "--runtime", self.runtime,
        ]

    def run_detached(self, spec: "ContainerSpec") -> List[str]:
        cmd = self.base() + ["run", "--detach", "--network", "none"]
        if spec.privileged:
            cmd.append("--privileged")
        if spec.cgroupns_host:
            cmd.append("--cgroupns=host")
        if spec.name:
            cmd += ["--name", spec.name]
        return cmd + ["--rootfs", str(spec.rootfs)] + list(spec.command)

    def exec_in(self, container_id: str, argv: Sequence[str]) -> List[str]:
        return self.base() + ["exec", container_id] + list(argv)

    def inspect(self, container_id: str, template: str) -> List[str]:
        return self.base() + ["inspect", "--format", template, container_id]

    def remove(self, container_id: str) -> List[str]:
        # --time 0: a container's PID 1 ignores SIGTERM unless it handles it
        # (busybox sleep does not), so the default 10 s grace would be waited out.
        return self.base() + ["rm", "--force", "--time", "0", container_id]

    def version(self) -> List[str]:
        return self.base() + ["version", "--format", "{{.Client.Version}}"]


@dataclass(frozen=True)
class ContainerSpec:
    rootfs: Path = ROOTFS
    privileged: bool = False
    cgroupns_host: bool = False
    name: Optional[str] = None
    #: The container's PID 1: idle for far longer than a test module runs.
    command: Tuple[str, ...] = ("/bin/sleep", "3600")


@dataclass(frozen=True)
class Container:
    """A running container, as the runtime itself names it."""

    id: str
    pid: int  # its PID 1, in the guest's PID namespace
    cgroup: str  # that process's cgroup v2 path, read from /proc/PID/cgroup
    start_s: float  # wall time `podman run -d` took


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def parse_container_id(stdout: str) -> str:
    """The id `podman run -d` prints: its last non-empty line, 64 hex digits."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines or not _CONTAINER_ID.match(lines[-1]):
        raise ContainerError(f"no container id in the runtime's output: {stdout!r}")
    return lines[-1]


def cgroup_v2_path(proc_cgroup: str) -> str:
    """The path of the unified hierarchy's line ("0::PATH") of /proc/PID/cgroup."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise ContainerError(f"no cgroup v2 line in {proc_cgroup!r}")


def check_rootfs_location(rootfs: Path, covered: Sequence[str] = COVERED_PLACES) -> None:
    """Refuse a root file system inside a place an exec rule covers."""
    path = PurePosixPath(rootfs)
    for place in covered:
        if path == PurePosixPath(place) or PurePosixPath(place) in path.parents:
            raise ContainerError(
                f"{rootfs} is inside {place}: every program of the container would be an exec from {place}")


def build_busybox_rootfs(dest: Path, busybox: Path = Path("/bin/busybox"),
                         applets: Sequence[str] = APPLETS, covered: Sequence[str] = COVERED_PLACES) -> None:
    """A minimal root file system: busybox-static as /bin/busybox, one symlink
    per applet, and the directories a runtime mounts over."""
    check_rootfs_location(dest, covered)
    if dest.exists():
        shutil.rmtree(dest)
    for directory in ("bin", "tmp", "proc", "sys", "dev", "etc", "run"):
        (dest / directory).mkdir(parents=True)
    (dest / "tmp").chmod(0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    for applet in applets:
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc" / "motd").write_text("a file a benign process reads\n")


class PodmanDriver:
    """Runs the commands of `Podman` in the guest, failing with the runtime's words."""

    def __init__(self, podman: Podman = Podman(), timeout_s: float = 120) -> None:
        self.podman = podman
        self.timeout_s = timeout_s

    def _run(self, cmd: Sequence[str], check: bool = True) -> Outcome:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=self.timeout_s)
        outcome = Outcome(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise ContainerError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
        return outcome

    def version(self) -> str:
        return self._run(self.podman.version()).stdout.strip()

    def start(self, spec: ContainerSpec) -> Container:
        started = time.monotonic()
        container_id = parse_container_id(self._run(self.podman.run_detached(spec)).stdout)
        elapsed = time.monotonic() - started
        pid = int(self.inspect(container_id, "{{.State.Pid}}"))
        cgroup = cgroup_v2_path(Path(f"/proc/{pid}/cgroup").read_text())
        return Container(container_id, pid, cgroup, elapsed)

    def inspect(self, container_id: str, template: str) -> str:
        return self._run(self.podman.inspect(container_id, template)).stdout.strip()

    def exec_in(self, container: Container, argv: Sequence[str]) -> Outcome:
        """Run `argv` in the container; its exit status is the caller's to judge."""
        return self._run(self.podman.exec_in(container.id, argv), check=False)

    def sh(self, container: Container, script: str) -> Outcome:
        return self.exec_in(container, ["/bin/sh", "-c", script])

    def setup(self, container: Container, script: str) -> Outcome:
        """A preparation step inside the container: it must succeed."""
        outcome = self.sh(container, script)
        if outcome.returncode != 0:
            raise ContainerError(f"setup {script!r} exited {outcome.returncode}: {outcome.stderr}")
        return outcome

    def remove(self, container: Container) -> None:
        self._run(self.podman.remove(container.id))
