"""The scenario battery: the actions an attacker (or a normal host) performs,
and what enforcer must do with each under --mode enforce and --mode audit.

Everything is staged once per guest, idempotently (two test modules stage
it); nothing is torn down because the guest is thrown away afterwards.

Places: /tmp, /var/tmp and /dev/shm are "unusual" in policies/default.toml;
/var/lib/enftest is an ordinary place on the same (overlay) filesystem as
/var/tmp, which the hard-link scenario needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from enforcer.mountinfo import read_mount_table

ACTIONS = str(Path(__file__).with_name("actions.py"))
PY = sys.executable
# comm of an action process: exec keeps the caller's comm until the new image
# is committed, so bprm_check_security still sees the interpreter's name
COMM = os.path.basename(PY)[:15]

TMP = Path("/tmp/enftest")
VARTMP = Path("/var/tmp/enftest")
SHM = Path("/dev/shm/enftest")
NORMAL = Path("/var/lib/enftest")
CG1 = NORMAL / "cgv1"  # a named cgroup v1 hierarchy at an unusual place
CG1_MOUNT = NORMAL / "cgv1-ra"  # where a mount with a release_agent option is tried
CG1_MOUNT_CMD = NORMAL / "cgv1-ra-cmd"  # the same with util-linux mount
CG1_PLAIN = NORMAL / "cgv1-plain"  # a cgroup v1 mount without it: must keep working
HARMLESS_AGENT = "/bin/true"  # a release agent that, if ever set, does nothing
PROC2 = NORMAL / "proc2"  # a second procfs mount
CG2 = Path("/sys/fs/cgroup")
CHROOT = NORMAL / "chroot"  # a tmpfs root with its own /tmp and /usr/bin
JAIL = TMP / "jail"  # a root inside /tmp: its /bin/busybox lives in /tmp
OVERLAY = NORMAL / "ovl"  # an overlayfs whose lower layer is in /var/tmp
OVERLAY_SHM = NORMAL / "ovl-shm"  # an overlayfs whose upper layer is in /dev/shm
#: An overlay that nobody mounts in a user and mount namespace of its own (at
#: /mnt there), its lower layer in /var/tmp, its upper on a tmpfs of its own.
USERNS_OVERLAY = (
    "mount -t tmpfs tmpfs /mnt && mkdir /mnt/up /mnt/work /mnt/merged && "
    f"mount -t overlay overlay -o lowerdir={VARTMP / 'ovl-lower'},upperdir=/mnt/up,workdir=/mnt/work /mnt/merged && "
    "exec /mnt/merged/true"
)
BUSYBOX = "/bin/busybox"  # static (busybox-static): runs inside the chroot
DEEP_LEVELS = 70  # > abi.PATH_WALK_STEPS (64): the walk cannot reach the root
#: a shared object every Debian host has, loaded by nothing the tests run
LIBRARY = next((p for p in ("/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib/x86_64-linux-gnu/libm.so.6",
                            "/usr/lib/aarch64-linux-gnu/libm.so.6") if os.path.exists(p)), "/usr/lib/libm.so.6")

ALLOW_D = """
# test-only exceptions, added through allow.d as an operator would
[rule_allow.exec-unusual-dir]
exe = ["/var/lib/enftest/bin/allowed-sh"]
exe_dirs = ["/var/lib/enftest/trusted"]
uid = [4242]
cgroup = ["/enftest-allowed"]
"""


def _mounted() -> Dict[str, str]:
    table = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        table[parts[1]] = parts[2]
    return table


def _mount(args: List[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if str(target) not in _mounted():
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True, text=True)


def _copy_exec(source: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy(source, target)
    target.chmod(0o755)
    return target


def fstype_of(path: Path) -> str:
    best, kind = "", ""
    for mount_point, fstype in _mounted().items():
        if (str(path) + "/").startswith(mount_point.rstrip("/") + "/") and len(mount_point) >= len(best):
            best, kind = mount_point, fstype
    return kind


@dataclass(frozen=True)
class Stage:
    deep_file: Path
    tmp_fstype: str
    tmp_inside: str = str(TMP)  # TMP's path inside its filesystem (enforcer.mountinfo)
    overlay_lower_inside: str = str(VARTMP / "ovl-lower")  # the same for the overlays' layers
    overlay_upper_inside: str = str(SHM / "ovl-shm/upper")


def stage_environment() -> Stage:
    for directory in (TMP, VARTMP, NORMAL):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    if not Path("/dev/shm").is_dir() or "/dev/shm" not in _mounted():
        _mount(["-t", "tmpfs", "tmpfs"], Path("/dev/shm"))
    SHM.mkdir(parents=True, exist_ok=True)
    SHM.chmod(0o755)
    true = shutil.which("true") or "/bin/true"
    dash = os.path.realpath(shutil.which("dash") or "/bin/sh")
    # a harmless shared object dropped where payloads are dropped: LD_PRELOAD / dlopen
    for target in (TMP / "libpayload.so", SHM / "libpayload.so"):
        _copy_exec(LIBRARY, target)
    for target in (TMP / "true", TMP / "a/b/c/true", VARTMP / "true", SHM / "true"):
        _copy_exec(true, target)
    for directory in (TMP / "a", TMP / "a/b", TMP / "a/b/c"):
        directory.chmod(0o755)
    script = TMP / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    link = NORMAL / "link-to-tmp"
    if not link.is_symlink():
        link.symlink_to(TMP / "true")
    # deeper than the kernel walk's bound, in an ordinary place
    deep = NORMAL / "deep"
    for _ in range(DEEP_LEVELS):
        deep = deep / "d"
    deep_file = _copy_exec(true, deep / "true")
    # /tmp/enftest/mnt: a tmpfs of its own under /tmp (the walk crosses a mount)
    _mount(["-t", "tmpfs", "tmpfs"], TMP / "mnt")
    _copy_exec(true, TMP / "mnt/true")
    # a bind mount of /tmp/enftest at an ordinary place
    _mount(["--bind", str(TMP)], NORMAL / "bind")
    # A root of its own on one filesystem, with a /tmp and a /usr/bin, so that a
    # hard link can join an unusual and an ordinary place (the guest's /tmp and
    # /var/tmp are filesystems of their own). Paths are seen from this root.
    _mount(["-t", "tmpfs", "tmpfs"], CHROOT)
    busybox = _copy_exec(BUSYBOX, CHROOT / "tmp/busybox")
    (CHROOT / "tmp").chmod(0o1777)
    linked = CHROOT / "usr/bin/busybox-link"
    linked.parent.mkdir(parents=True, exist_ok=True)
    if not linked.exists():
        os.link(busybox, linked)
    # a chroot root inside /tmp, world-readable for the unprivileged chroot
    _copy_exec(BUSYBOX, JAIL / "bin/busybox")
    for directory in (JAIL, JAIL / "bin"):
        directory.chmod(0o755)
    # an overlayfs mounted at an ordinary place, its lower layer in /var/tmp
    # (its upper layer on a tmpfs: overlayfs refuses an overlay upper)
    _copy_exec(true, VARTMP / "ovl-lower/true")
    _mount(["-t", "tmpfs", "tmpfs"], NORMAL / "ovl-rw")
    for layer in ("upper", "work"):
        (NORMAL / "ovl-rw" / layer).mkdir(exist_ok=True)
    _mount(["-t", "overlay", "overlay", "-o", f"lowerdir={VARTMP / 'ovl-lower'},upperdir={NORMAL / 'ovl-rw/upper'},"
            f"workdir={NORMAL / 'ovl-rw/work'}"], OVERLAY)
    # a file written through the overlay lands in its upper layer (a tmpfs
    # at an ordinary place): served from there, it is an ordinary file
    _copy_exec(true, OVERLAY / "upper-true")
    # an overlay whose upper layer is a directory in /dev/shm (a tmpfs), its
    # lower an ordinary directory; what is written through it lives in /dev/shm
    for layer in ("upper", "work"):
        (SHM / "ovl-shm" / layer).mkdir(parents=True, exist_ok=True)
    (NORMAL / "ovl-shm-lower").mkdir(exist_ok=True)
    _mount(["-t", "overlay", "overlay", "-o", f"lowerdir={NORMAL / 'ovl-shm-lower'},upperdir={SHM / 'ovl-shm/upper'},"
            f"workdir={SHM / 'ovl-shm/work'}"], OVERLAY_SHM)
    _copy_exec(true, OVERLAY_SHM / "true")
    # cgroup v1 named hierarchy and a second procfs, both at unusual places
    _mount(["-t", "cgroup", "-o", "none,name=enftest", "cgroup"], CG1)
    _mount(["-t", "proc", "proc"], PROC2)
    # rename targets (on /tmp's filesystem)
    for name in ("rn-to", "rn-from"):
        (TMP / name).mkdir(exist_ok=True)
    # subjects for the allowlist scenarios
    _copy_exec(dash, NORMAL / "bin/allowed-sh")
    _copy_exec(dash, NORMAL / "bin/other-sh")
    _copy_exec(dash, NORMAL / "trusted/sh")
    if CG2.joinpath("cgroup.procs").exists() and _mounted().get(str(CG2)) == "cgroup2":
        for name in ("enftest-allowed", "enftest-other"):
            (CG2 / name).mkdir(exist_ok=True)
    mounts = read_mount_table()
    tmp_location = mounts.locate(str(TMP))
    lower_location = mounts.locate(str(VARTMP / "ovl-lower"))
    shm_location = mounts.locate(str(SHM / "ovl-shm/upper"))
    assert tmp_location and lower_location and shm_location, "mountinfo places nothing at /tmp, /var/tmp or /dev/shm"
    return Stage(deep_file=deep_file, tmp_fstype=fstype_of(TMP), tmp_inside=tmp_location.path,
                 overlay_lower_inside=lower_location.path, overlay_upper_inside=shm_location.path)


def refresh_rename_files() -> None:
    """Each rename scenario consumes its source; recreate it."""
    source = TMP / "rn-to/src"
    source.write_text("x")
    agent = TMP / "rn-from/release_agent"
    agent.write_text("x")


# --- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: str
    argv: Tuple[str, ...]
    rule: Optional[str]  # expected rule in the event; None: no event at all
    path: Optional[str] = None  # expected event path (exact), if checkable
    path_suffix: Optional[str] = None  # or: expected ending (fs-relative rename paths)
    new_path: Optional[str] = None  # expected new_path (rename destination, mount parameter value)
    access: Optional[str] = None
    hook: Optional[str] = None
    match: Optional[str] = None
    comm: Optional[str] = COMM
    same_pid: bool = True  # event pid is the started process's pid
    container: bool = False
    blocks: bool = True  # under --mode enforce (rule's mode enforce)
    setup: Optional[Callable[[], None]] = None
    note: str = ""


def _act(*args: str) -> Tuple[str, ...]:
    return (PY, ACTIONS, *args)


def sysrq_scenarios() -> List[Scenario]:
    host = dict(rule="sysrq-write-host", access="write", hook="file_open")
    return [
        Scenario("sysrq-trigger-write", _act("open", "/proc/sysrq-trigger", "w"), path="/proc/sysrq-trigger", **host),
        Scenario("sysrq-trigger-append", _act("open", "/proc/sysrq-trigger", "append"), path="/proc/sysrq-trigger", **host),
        Scenario("sysctl-sysrq-write", _act("open", "/proc/sys/kernel/sysrq", "w"), path="/proc/sys/kernel/sysrq", **host),
        Scenario("sysctl-sysrq-rdwr", _act("open", "/proc/sys/kernel/sysrq", "rw"), path="/proc/sys/kernel/sysrq", **host),
        Scenario(
            "sysctl-sysrq-openat-dirfd",
            _act("open", "sysrq", "w", "/proc/sys/kernel"),
            path="/proc/sys/kernel/sysrq",
            **host,
        ),
        Scenario(
            "sysrq-trigger-second-procfs",
            _act("open", str(PROC2 / "sysrq-trigger"), "w"),
            path=str(PROC2 / "sysrq-trigger"),
            **host,
        ),
        Scenario(
            "sysrq-trigger-via-proc-self-root",
            _act("open", "/proc/self/root/proc/sysrq-trigger", "w"),
            path="/proc/sysrq-trigger",
            **host,
        ),
        Scenario(
            "sysctl-w-kernel-sysrq",
            # writes back the current value: harmless if it were ever allowed
            ("sh", "-c", "sysctl -w kernel.sysrq=$(cat /proc/sys/kernel/sysrq)"),
            path="/proc/sys/kernel/sysrq",
            comm="sysctl",
            same_pid=False,
            **host,
        ),
        Scenario(
            "sysrq-trigger-from-new-namespaces",
            ("unshare", "-m", "-p", "-f", "--mount-proc", *_act("open", "/proc/sysrq-trigger", "w")),
            rule="sysrq-write-container",
            path="/proc/sysrq-trigger",
            access="write",
            hook="file_open",
            same_pid=False,
            container=True,
        ),
        Scenario("sysctl-sysrq-read", _act("open", "/proc/sys/kernel/sysrq", "r"), rule=None, blocks=False),
    ]


def release_agent_scenarios() -> List[Scenario]:
    agent_file = str(CG1 / "release_agent")
    write = dict(rule="release-agent", path=agent_file, access="write")
    # the event names the parameter as its path (the value is in new_path)
    mount = dict(rule="release-agent", path="release_agent", new_path=HARMLESS_AGENT, access="mount",
                 hook="fs_context_parse_param")
    return [
        Scenario("release-agent-write", _act("open", agent_file, "w"), hook="file_open", **write),
        Scenario("release-agent-o-trunc", _act("open", agent_file, "trunc_ro"), hook="file_open", **write),
        Scenario("release-agent-truncate", _act("truncate", agent_file), hook="path_truncate", **write),
        Scenario("release-agent-read", _act("open", agent_file, "r"), rule=None, blocks=False),
        Scenario(
            "rename-to-release-agent",
            _act("rename", str(TMP / "rn-to/src"), str(TMP / "rn-to/release_agent")),
            rule="release-agent",
            path_suffix="/rn-to/src",
            access="rename",
            hook="inode_rename",
            setup=refresh_rename_files,
        ),
        Scenario(
            "release-agent-mount-option",
            _act("mount-cgroup", str(CG1_MOUNT), f"none,name=enfra,release_agent={HARMLESS_AGENT}"),
            setup=lambda: CG1_MOUNT.mkdir(parents=True, exist_ok=True),
            **mount,
        ),
        Scenario(
            "release-agent-mount-command",
            ("mount", "-t", "cgroup", "-o", f"none,name=enfra2,release_agent={HARMLESS_AGENT}", "cgroup",
             str(CG1_MOUNT_CMD)),
            setup=lambda: CG1_MOUNT_CMD.mkdir(parents=True, exist_ok=True),
            comm="mount",
            **mount,
        ),
        Scenario(
            "release-agent-remount-option",
            _act("mount-cgroup", str(CG1), f"none,name=enftest,release_agent={HARMLESS_AGENT}", "remount"),
            **mount,
        ),
        Scenario(
            "release-agent-fsconfig",
            _act("fsconfig-cgroup", "release_agent", HARMLESS_AGENT),
            **mount,
        ),
        Scenario(
            "cgroup-mount-without-release-agent",
            _act("mount-cgroup", str(CG1_PLAIN), "none,name=enfplain", "and-umount"),
            setup=lambda: CG1_PLAIN.mkdir(parents=True, exist_ok=True),
            rule=None,
            blocks=False,
        ),
        Scenario(
            "rename-from-release-agent",
            _act("rename", str(TMP / "rn-from/release_agent"), str(TMP / "rn-from/other")),
            rule="release-agent",
            path_suffix="/rn-from/release_agent",
            access="rename",
            hook="inode_rename",
            setup=refresh_rename_files,
        ),
    ]


def exec_scenarios(stage: Stage) -> List[Scenario]:
    unusual = dict(rule="exec-unusual-dir", access="exec", hook="bprm_check_security")
    mapping = dict(rule="exec-unusual-dir", access="map", hook="mmap_file")
    ld_so = next((p for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1") if os.path.exists(p)), "")
    return [
        Scenario("exec-tmp", _act("exec", str(TMP / "true")), path=str(TMP / "true"), match="directory", **unusual),
        Scenario("exec-tmp-subdir", _act("exec", str(TMP / "a/b/c/true")), path=str(TMP / "a/b/c/true"), match="directory", **unusual),
        Scenario("exec-var-tmp", _act("exec", str(VARTMP / "true")), path=str(VARTMP / "true"), match="directory", **unusual),
        Scenario("exec-dev-shm", _act("exec", str(SHM / "true")), path=str(SHM / "true"), match="directory", **unusual),
        Scenario("exec-shebang-script-in-tmp", _act("exec", str(TMP / "script.sh")), path=str(TMP / "script.sh"), match="directory", **unusual),
        Scenario(
            "exec-symlink-to-tmp",
            _act("exec", str(NORMAL / "link-to-tmp")),
            path=str(TMP / "true"),
            match="directory",
            note="the symlink resolves to the real file before the check",
            **unusual,
        ),
        Scenario("exec-tmp-own-tmpfs-mount", _act("exec", str(TMP / "mnt/true")), path=str(TMP / "mnt/true"), match="directory", **unusual),
        Scenario(
            "exec-memfd",
            _act("memfd-exec", shutil.which("true") or "/bin/true"),
            rule="exec-memfd",
            path="/memfd:enftest",
            access="exec",
            hook="bprm_check_security",
            match="memfd",
        ),
        Scenario(
            "exec-deeper-than-walk-bound",
            _act("exec", str(stage.deep_file)),
            path="",
            match="unresolved",
            note="fail-safe: a path the kernel cannot resolve is treated as unusual",
            **unusual,
        ),
        Scenario(
            "exec-bind-mount-of-tmp",
            _act("exec", str(NORMAL / "bind/true")),
            path=str(NORMAL / "bind/true"),
            new_path=f"{stage.tmp_inside}/true",
            match="location",
            note="the name is the bind mount's; where the file lives is /tmp's filesystem",
            **unusual,
        ),
        Scenario(
            "exec-chroot-into-tmp",
            ("chroot", str(JAIL), "/bin/busybox", "true"),
            path="/bin/busybox",
            new_path=f"{stage.tmp_inside}/jail/bin/busybox",
            match="location",
            comm="chroot",
            note="inside the chroot the file is /bin/busybox; it lives in /tmp",
            **unusual,
        ),
        Scenario(
            "exec-unprivileged-chroot-into-tmp",
            ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "unshare", "--user", "--map-root-user", "chroot", str(JAIL), "/bin/busybox", "true"),
            path="/bin/busybox",
            new_path=f"{stage.tmp_inside}/jail/bin/busybox",
            match="location",
            comm="chroot",
            note="nobody, root only in a user namespace of its own (unshare -Ur), chroots into /tmp",
            **unusual,
        ),
        Scenario(
            "exec-detached-mount-clone-of-tmp",
            _act("open-tree-exec", str(TMP), "true"),
            path="/true",
            new_path=f"{stage.tmp_inside}/true",
            match="location",
            note="open_tree(OPEN_TREE_CLONE) + execveat: a mount attached nowhere; the name is relative to it",
            **unusual,
        ),
        Scenario(
            "exec-overlay-with-lower-layer-in-var-tmp",
            _act("exec", str(OVERLAY / "true")),
            path=str(OVERLAY / "true"),
            new_path=f"{stage.overlay_lower_inside}/true",
            match="location",
            note="an overlayfs mounted at an ordinary place serves the file from its lower layer in /var/tmp",
            **unusual,
        ),
        Scenario(
            "exec-overlay-with-upper-layer-in-dev-shm",
            _act("exec", str(OVERLAY_SHM / "true")),
            path=str(OVERLAY_SHM / "true"),
            new_path=f"{stage.overlay_upper_inside}/true",
            match="location",
            note="written through an overlay whose upper layer is a directory of /dev/shm",
            **unusual,
        ),
        Scenario(
            "exec-unprivileged-overlay-in-user-namespace",
            ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "unshare", "--user", "--map-root-user", "--mount", "sh", "-c", USERNS_OVERLAY),
            path="/mnt/merged/true",
            new_path=f"{stage.overlay_lower_inside}/true",
            match="location",
            comm="sh",
            same_pid=False,
            container=True,
            note="nobody mounts the overlay in namespaces of its own, which the agent's mount table never shows",
            **unusual,
        ),
        Scenario(
            "exec-overlay-file-from-an-ordinary-upper-layer",
            _act("exec", str(OVERLAY / "upper-true")),
            rule=None,
            blocks=False,
            note="the same overlay serves this file from its upper layer, a tmpfs at an ordinary place",
        ),
        Scenario(
            "exec-tmp-inside-chroot",
            ("chroot", str(CHROOT), "/tmp/busybox", "true"),
            path="/tmp/busybox",
            match="directory",
            comm="chroot",
            note="paths are relative to the executing task's root",
            **unusual,
        ),
        Scenario(
            "exec-hard-link-into-ordinary-dir",
            ("chroot", str(CHROOT), "/usr/bin/busybox-link", "true"),
            rule="exec-run-audit",
            path="/usr/bin/busybox-link",
            access="exec",
            match="filesystem",
            comm="chroot",
            blocks=False,
            note="documented limit: a hard link has its own path, so the directory rule "
            "misses it; the staged root is a tmpfs, which default.toml audits",
        ),
        Scenario(
            "exec-interpreter-with-script-argument",
            ("/bin/sh", str(TMP / "script.sh")),
            rule=None,
            blocks=False,
            note="documented limit: the file executed is /bin/sh",
        ),
        Scenario(
            "exec-ld-so-with-tmp-binary",
            (ld_so, str(TMP / "true")),
            path=str(TMP / "true"),
            match="directory",
            comm=os.path.basename(ld_so)[:15],
            note="no exec of the payload: ld.so maps it, and the mapping is judged",
            **mapping,
        ),
        Scenario(
            "exec-ld-so-with-overlay-binary-from-var-tmp",
            (ld_so, str(OVERLAY / "true")),
            path=str(OVERLAY / "true"),
            new_path=f"{stage.overlay_lower_inside}/true",
            match="location",
            comm=os.path.basename(ld_so)[:15],
            note="the mapping of an overlay file is placed by its layer too",
            **mapping,
        ),
        Scenario(
            "map-ld-preload-from-tmp",
            _act("preload", str(TMP / "libpayload.so")),
            path=str(TMP / "libpayload.so"),
            match="directory",
            note="LD_PRELOAD: the loader maps the library before the program runs",
            **mapping,
        ),
        Scenario(
            "map-dlopen-from-dev-shm",
            _act("dlopen", str(SHM / "libpayload.so")),
            path=str(SHM / "libpayload.so"),
            match="directory",
            **mapping,
        ),
        Scenario("map-dlopen-system-library", _act("dlopen", LIBRARY), rule=None, blocks=False),
        Scenario("map-ffi-callback", _act("ffi-callback"), rule=None, blocks=False,
                 note="libffi closures (ctypes callbacks) must keep working"),
        Scenario("exec-usr-bin", _act("exec", shutil.which("true") or "/bin/true"), rule=None, blocks=False),
    ]


def all_scenarios(stage: Stage) -> List[Scenario]:
    return sysrq_scenarios() + release_agent_scenarios() + exec_scenarios(stage)


#: Scenario ids for parametrize; ids do not depend on the staged environment.
SCENARIO_IDS = [s.id for s in all_scenarios(Stage(deep_file=Path("/"), tmp_fstype=""))]


def check_event(event: dict, scenario: Scenario, action: str, pid: int) -> None:
    assert event["action"] == action, event
    assert event["rule"] == scenario.rule, event
    if scenario.path is not None:
        assert event["path"] == scenario.path, event
    if scenario.path_suffix is not None:
        assert str(event["path"]).endswith(scenario.path_suffix), event
    if scenario.access:
        assert event["access"] == scenario.access, event
    if scenario.hook:
        assert event["hook"] == scenario.hook, event
    if scenario.new_path is not None:
        assert event["new_path"] == scenario.new_path, event
    if scenario.match:
        assert event["match"] == scenario.match, event
    if scenario.comm:
        assert event["comm"] == scenario.comm, event
    if scenario.same_pid:
        assert event["pid"] == pid, event
    assert event["container"]["namespaced"] is scenario.container, event
    for required in ("time", "severity", "mitre", "ppid", "uid", "gid", "exe", "cgroup", "mntns"):
        assert required in event, (required, event)


def events_for(events: List[dict], scenario: Scenario, pid: int) -> List[dict]:
    """The events this scenario's process caused."""
    if scenario.same_pid:
        return [e for e in events if e["pid"] == pid]
    return [e for e in events if e.get("comm") == scenario.comm and e["container"]["namespaced"] is scenario.container]


@pytest.fixture(scope="module", name="stage")
def stage_fixture() -> Stage:
    return stage_environment()


def policy_dir(workdir: Path) -> Path:
    """policies/default.toml, as shipped, plus a test allow.d."""
    repo = Path(__file__).resolve().parents[2]
    directory = workdir / "etc"
    (directory / "allow.d").mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "policies/default.toml", directory / "policy.toml")
    (directory / "allow.d/test.toml").write_text(ALLOW_D)
    return directory


__all__ = [
    "ACTIONS", "COMM", "PY", "Scenario", "Stage", "all_scenarios", "check_event", "events_for",
    "policy_dir", "stage_fixture", "TMP", "NORMAL", "CG2", "SCENARIO_IDS",
]
