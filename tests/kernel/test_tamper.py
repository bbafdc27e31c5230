"""kind = "tamper": a container's root, or a host service with capabilities, cannot switch enforcer off (issue 14).

One agent for the module, on a host-scoped service's footing (started from
the guest's initial mount namespace), with a SysRq rule for containers and a
tamper rule. The attacker is real root with every capability in the initial
user namespace, in a mount namespace of its own (`unshare --mount`): what a
`--privileged` container's root is to the kernel, and the only way to reach
the BPF id commands, which need CAP_SYS_ADMIN in the initial user namespace.
It shares the host's pid namespace and sees the host's bpffs (a
`--pid=host -v /sys/fs/bpf:/sys/fs/bpf` container). Each attempt must fail
with EPERM and be reported exactly once with what it aimed at; the same
operation by host root must work; and through it all the SysRq rule keeps
denying. The rule covers the host too (scope "all"), where it judges a
service that is not root but holds capabilities (`setpriv` to nobody with
ambient CAP_SYS_ADMIN, CAP_KILL, CAP_DAC_OVERRIDE...).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from battery import agent_running
from namespaced import PIN_ROOT, TAMPER_POLICY, Ran, as_host_service, in_container
from harness.agent import Agent, unload, wait_for_no_enforcer_programs
from scenarios import ACTIONS, PY

pytestmark = pytest.mark.kernel

#: the tamper rule covers the host too: there it judges services that are not root
POLICY = TAMPER_POLICY.replace('kind = "tamper"\nscope = "container"', 'kind = "tamper"\nscope = "all"')
assert POLICY != TAMPER_POLICY


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tamper")


@pytest.fixture(scope="module")
def etc_fs(workdir) -> Iterator[Path]:
    """A file system of its own for the policy directory, as /etc is the root
    file system's on a host: hard links and renames stay inside it. ext4, as
    a host's root file system often is: unlike tmpfs, it lets names leave the
    dentry cache, which is what a file handle's attack needs."""
    root = workdir / "etcfs"
    root.mkdir()
    image = workdir / "etcfs.img"
    with image.open("wb") as blank:
        blank.truncate(32 << 20)
    for module in ("loop", "ext4"):  # the guest has no udev nor kmod's static nodes to load them
        subprocess.run(["modprobe", module], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


@pytest.fixture(scope="module")
def policy_dir(etc_fs) -> Path:
    """/etc/enforcer on that file system: /etc is a directory above it there,
    as on a host."""
    directory = etc_fs / "etc" / "enforcer"
    (directory / "allow.d").mkdir(parents=True)
    (directory / "policy.toml").write_text(POLICY)
    (directory / "allow.d" / "local.toml").write_text("")
    return directory


@pytest.fixture(scope="module")
def agent(workdir, policy_dir) -> Iterator[Agent]:
    with agent_running(policy_dir / "policy.toml", None, workdir, "agent-tamper.log") as running:
        yield running


@pytest.fixture(autouse=True)
def agent_log(agent, agent_log_path) -> Iterator[None]:
    yield
    shutil.copy(agent.log_path, agent_log_path)


@pytest.fixture(scope="module")
def instance(agent) -> Path:
    (found,) = [p for p in PIN_ROOT.iterdir() if p.is_dir()]
    return found


def _bpftool_json(*args: str) -> dict:
    return json.loads(subprocess.run(["bpftool", *args, "--json"], check=True, capture_output=True,
                                     text=True).stdout)


def on_host(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def _tamper_events(agent: Agent, mark: int, settle: bool = True) -> List[dict]:
    def is_tamper(record: dict) -> bool:
        return record.get("type") == "event" and record.get("rule") == "tamper"

    return [r for r in agent.events(mark, is_tamper if settle else None) if is_tamper(r)]


def attempt(agent: Agent, *argv: str, action: str = "blocked", obj: Optional[dict] = None,
            timeout_s: float = 60, runner: Callable[..., Ran] = in_container) -> dict:
    """Run argv in a container (or as `runner` runs it), which must fail
    (blocked) or succeed (audited), and be reported exactly once, as
    `action`, naming `obj` in its tamper part."""
    mark = agent.mark()
    proc = runner(*argv, timeout_s=timeout_s)
    events = _tamper_events(agent, mark)
    said = f"{' '.join(argv)}: exit {proc.returncode}, stderr {proc.stderr.strip()!r}, events {events}"
    if action == "blocked":
        assert proc.returncode != 0, "allowed: " + said
        assert "Operation not permitted" in proc.stderr or "Permission denied" in proc.stderr, said
    else:
        assert proc.returncode == 0, "refused in audit mode: " + said
    assert len(events) == 1, "expected exactly one tamper event: " + said
    event = events[0]
    assert event["action"] == action and event["pid"] == proc.pid, said
    assert event["container"]["namespaced"] is (runner is in_container), said
    if obj is not None:
        for key, value in obj.items():
            assert event["tamper"][key] == value, said
    return event


def _map_id(instance: Path, name: str) -> int:
    return int(_bpftool_json("map", "show", "pinned", str(instance / f"map_{name}"))["id"])


def _link_id(instance: Path, hook: str) -> int:
    return int(_bpftool_json("link", "show", "pinned", str(instance / f"link_{hook}"))["id"])


def _prog_id(name: str) -> int:
    (found,) = [p["id"] for p in _bpftool_json("prog", "show") if p.get("name") == name]
    return int(found)


def sysrq_still_denied(agent: Agent) -> None:
    """Enforcement goes on: a container's open of /proc/sysrq-trigger for writing is refused."""
    mark = agent.mark()
    proc = in_container(PY, ACTIONS, "open", "/proc/sysrq-trigger", "w")
    assert proc.returncode == 77, f"SysRq open from a container: exit {proc.returncode} {proc.stderr!r}"
    agent.wait_for(mark, lambda r: r.get("type") == "event" and r.get("rule") == "sysrq-container")


# --- BPF objects ----------------------------------------------------------------------


def test_a_policy_map_cannot_be_rewritten_by_id(agent: Agent, instance: Path) -> None:
    rules = _map_id(instance, "rules")
    # rule 1 of both slots: flags 0 would make the SysRq rule neither enforce nor exist
    for index in ("1", "65"):
        event = attempt(agent, "bpftool", "map", "update", "id", str(rules), "key", index, "0", "0", "0",
                        "value", "0", "0", "0", "0", obj={"object": "map", "id": rules})
        assert event["hook"] == "bpf_map" and event["access"] == "obtain" and event["path"] == "rules", event
    event = attempt(agent, "bpftool", "map", "dump", "id", str(_map_id(instance, "settings")),
                    obj={"object": "map"})
    assert event["path"] == "settings", event
    sysrq_still_denied(agent)


def test_a_policy_map_cannot_be_opened_by_its_pin(agent: Agent, instance: Path) -> None:
    attempt(agent, "bpftool", "map", "update", "pinned", str(instance / "map_rules"), "key", "1", "0", "0", "0",
            "value", "0", "0", "0", "0", obj={"object": "map", "id": _map_id(instance, "rules")})
    sysrq_still_denied(agent)


def test_programs_and_links_cannot_be_opened_by_id(agent: Agent, instance: Path) -> None:
    prog = _prog_id("lsm__file_open")
    event = attempt(agent, "bpftool", "prog", "dump", "xlated", "id", str(prog), obj={"object": "program", "id": prog})
    assert event["hook"] == "bpf_prog" and event["path"] == "lsm__file_open", event
    link = _link_id(instance, "file_open")
    event = attempt(agent, "bpftool", "link", "show", "id", str(link), obj={"object": "link", "id": link})
    assert event["hook"] == "bpf", event


def _held_map_ids(pid: int) -> set:
    """Ids of the BPF maps process `pid` holds an fd of (its fdinfo's map_id)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        for line in info.read_text().splitlines():
            if line.startswith("map_id:"):
                ids.add(int(line.split()[1]))
    return ids


def test_the_reload_barrier_cannot_be_frozen(agent: Agent, instance: Path) -> None:
    """The barrier's maps are the agent's own (not pinned); frozen, every
    later reload would fail."""
    pinned = {_map_id(instance, p.name[len("map_"):]) for p in instance.iterdir() if p.name.startswith("map_")}
    barrier = sorted(_held_map_ids(agent.pid) - pinned)
    shown = {m["id"]: m["type"] for m in _bpftool_json("map", "show")}
    assert sorted(shown[i] for i in barrier) == ["array", "array_of_maps"], (barrier, shown)
    for map_id in barrier:
        attempt(agent, "bpftool", "map", "freeze", "id", str(map_id), obj={"object": "map", "id": map_id})
    verdict = agent.reload(POLICY)
    assert verdict["message"] == "reloaded", verdict


def test_host_root_is_not_judged(agent: Agent, instance: Path) -> None:
    """It administers enforcer (`enforcer status`, `unload`, the package
    scripts) and is out of scope (docs/threat-model.md)."""
    mark = agent.mark()
    shown = on_host("bpftool", "map", "dump", "id", str(_map_id(instance, "settings")))
    assert shown.returncode == 0, shown.stderr
    status = on_host(PY, "-m", "enforcer", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert _tamper_events(agent, mark, settle=False) == []


def test_a_host_service_with_capabilities_that_is_not_root_is_judged(agent: Agent, instance: Path,
                                                                     policy_dir: Path) -> None:
    """nobody with CAP_SYS_ADMIN, CAP_KILL, CAP_DAC_OVERRIDE... in the host's
    mount namespace: a compromised daemon that has not become root."""
    settings = _map_id(instance, "settings")
    attempt(agent, "bpftool", "map", "dump", "id", str(settings), obj={"object": "map", "id": settings},
            runner=as_host_service)
    attempt(agent, "kill", "-CONT", str(agent.pid), obj={"object": "agent", "signal": "SIGCONT"},
            runner=as_host_service)
    event = attempt(agent, "sh", "-c", f"echo '# mine' >> {policy_dir / 'policy.toml'}", obj={"object": "policy"},
                    runner=as_host_service)
    assert event["uid"] == 65534, event
    assert "# mine" not in (policy_dir / "policy.toml").read_text()
    sysrq_still_denied(agent)


def test_another_programs_maps_stay_reachable_from_a_container(agent: Agent) -> None:
    """Only enforcer's ids are protected: a map someone else made is not."""
    other = Path("/sys/fs/bpf/tamper-test-other")
    created = on_host("bpftool", "map", "create", str(other), "type", "array", "key", "4", "value", "4",
                      "entries", "1", "name", "other")
    assert created.returncode == 0, created.stderr
    try:
        mark = agent.mark()
        proc = in_container("bpftool", "map", "update", "pinned", str(other), "key", "0", "0", "0", "0",
                            "value", "1", "0", "0", "0")
        assert proc.returncode == 0, proc.stderr
        assert _tamper_events(agent, mark, settle=False) == []
    finally:
        other.unlink()


# --- pins ---------------------------------------------------------------------------


def test_pins_cannot_be_removed_or_renamed(agent: Agent, instance: Path) -> None:
    link = instance / "link_file_open"
    event = attempt(agent, "rm", "-f", str(link), obj={"object": "pin"})
    assert event["hook"] == "inode_unlink" and event["access"] == "remove", event
    assert event["path"] == f"/enforcer/{instance.name}/link_file_open", event
    event = attempt(agent, "mv", str(link), str(PIN_ROOT / "elsewhere"), obj={"object": "pin"})
    assert event["hook"] == "inode_rename" and event["new_path"] == "/enforcer/elsewhere", event
    attempt(agent, "rmdir", str(instance), obj={"object": "pin"})
    attempt(agent, "mv", str(PIN_ROOT), "/sys/fs/bpf/moved", obj={"object": "pin"})
    assert link.exists() and instance.is_dir()
    sysrq_still_denied(agent)


def test_nothing_can_be_planted_in_the_pin_directory(agent: Agent, instance: Path) -> None:
    """An instance planted where a restarted agent looks for its own (a
    directory of the attacker's maps and programs, or a name for one made
    elsewhere) would be adopted, and its maps are the attacker's."""
    before = sorted(p.name for p in PIN_ROOT.iterdir())
    outside = Path("/sys/fs/bpf/tamper-test-outside")
    other = Path("/sys/fs/bpf/tamper-test-plant")
    made = on_host("bpftool", "map", "create", str(other), "type", "array", "key", "4", "value", "4",
                   "entries", "1", "name", "plant")
    assert made.returncode == 0, made.stderr
    outside.mkdir()
    try:
        event = attempt(agent, "mkdir", str(PIN_ROOT / "planted"), obj={"object": "pin"})
        assert event["hook"] == "inode_mkdir" and event["access"] == "create", event
        assert event["path"] == "/enforcer/planted", event
        attempt(agent, "mkdir", str(instance / "extra"), obj={"object": "pin"})
        event = attempt(agent, "bpftool", "map", "create", str(PIN_ROOT / "planted-map"), "type", "array",
                        "key", "4", "value", "4", "entries", "1", "name", "planted", obj={"object": "pin"})
        assert event["hook"] == "inode_create" and event["path"] == "/enforcer/planted-map", event
        event = attempt(agent, "ln", "-s", str(outside), str(PIN_ROOT / "symlinked"), obj={"object": "pin"})
        assert event["hook"] == "inode_symlink", event
        event = attempt(agent, "ln", str(other), str(PIN_ROOT / "hardlinked"), obj={"object": "pin"})
        assert event["hook"] == "inode_link" and event["path"] == "/enforcer/hardlinked", event
        event = attempt(agent, "mv", str(outside), str(PIN_ROOT / "moved-in"), obj={"object": "pin"})
        assert event["hook"] == "inode_rename" and event["new_path"] == "/enforcer/moved-in", event
        # the same outside the pin directory is nobody's business
        mark = agent.mark()
        proc = in_container("mkdir", str(outside / "fine"))
        assert proc.returncode == 0, proc.stderr
        assert _tamper_events(agent, mark, settle=False) == []
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        other.unlink()
    assert sorted(p.name for p in PIN_ROOT.iterdir()) == before
    assert not (instance / "extra").exists()
    sysrq_still_denied(agent)


def test_the_pins_file_system_cannot_be_unmounted_nor_covered(agent: Agent, instance: Path) -> None:
    """With shared propagation (`-v /sys/fs/bpf:/sys/fs/bpf:rshared`) a
    container's unmount of its /sys/fs/bpf, or a mount over it, reaches the
    host's. The kernel judges the superblock, so the attempt is refused even
    in the private mount namespace used here (nothing can reach the host)."""
    event = attempt(agent, PY, ACTIONS, "umount", "/sys/fs/bpf", obj={"object": "pin"})
    assert (event["hook"], event["access"], event["path"]) == ("sb_umount", "unmount", "/sys/fs/bpf"), event
    attempt(agent, PY, ACTIONS, "umount", "/sys/fs/bpf", "detach", obj={"object": "pin"})
    # the mount above it, lazily: its mounts go along
    event = attempt(agent, PY, ACTIONS, "umount", "/sys", "detach", obj={"object": "pin"})
    assert (event["hook"], event["path"]) == ("sb_umount", "/sys"), event
    event = attempt(agent, PY, ACTIONS, "mount", "tmpfs", "/sys/fs/bpf", "tmpfs", obj={"object": "pin"})
    assert (event["hook"], event["access"]) == ("sb_mount", "mount"), event
    attempt(agent, PY, ACTIONS, "mount", "/tmp", str(PIN_ROOT), "", "bind", obj={"object": "pin"})
    # a propagation bit does not make a bind one (the kernel binds first)
    attempt(agent, PY, ACTIONS, "mount", "/tmp", "/sys/fs/bpf", "", "bind,shared", obj={"object": "pin"})
    try:
        # the superblock's options, by the old mount API and by the new (fspick of any mount of it)
        event = attempt(agent, PY, ACTIONS, "mount", "bpf", "/sys/fs/bpf", "bpf", "remount,ro",
                        obj={"object": "pin"})
        assert (event["hook"], event["access"]) == ("sb_remount", "mount"), event
        event = attempt(agent, PY, ACTIONS, "reconfigure", "/sys/fs/bpf", "ro", obj={"object": "pin"})
        assert (event["hook"], event["access"]) == ("sb_remount", "mount"), event
    finally:  # had one gone through, the tests after this one would fail for it, not for themselves
        if os.statvfs("/sys/fs/bpf").f_flag & os.ST_RDONLY:
            subprocess.run(["mount", "-o", "remount,rw", "/sys/fs/bpf"], check=True)
    event = attempt(agent, PY, ACTIONS, "move-mount", "/tmp", str(PIN_ROOT), obj={"object": "pin"})
    assert (event["hook"], event["access"]) == ("move_mount", "mount"), event
    # the mount itself moved away (move_mount(2) without a clone)
    event = attempt(agent, PY, ACTIONS, "move-attached", "/sys/fs/bpf", "/mnt", obj={"object": "pin"})
    assert (event["hook"], event["access"], event["path"]) == ("move_mount", "unmount", "/sys/fs/bpf"), event
    # the mount above it, which carries it along
    event = attempt(agent, PY, ACTIONS, "move-attached", "/sys", "/mnt", obj={"object": "pin"})
    assert (event["hook"], event["access"], event["path"]) == ("move_mount", "unmount", "/sys"), event
    # what a runtime does to the /sys/fs/bpf it binds into a container passes: the bind (onto a path
    # of the container's), a propagation change, a read-only remount of the bind
    mark = agent.mark()
    runtime = in_container("sh", "-c", "mkdir -p /tmp/ctr-bpf && mount --bind /sys/fs/bpf /tmp/ctr-bpf && "
                                       "mount --make-rslave /tmp/ctr-bpf && mount -o remount,bind,ro /tmp/ctr-bpf")
    assert runtime.returncode == 0, runtime.stderr
    assert _tamper_events(agent, mark, settle=False) == []
    assert (instance / "link_file_open").exists()
    sysrq_still_denied(agent)


# --- the policy directory ---------------------------------------------------------------


def test_the_policy_directory_cannot_be_changed_from_a_container(agent: Agent, policy_dir: Path,
                                                                  etc_fs: Path) -> None:
    """Through a host mount (`-v /etc:/host/etc`), the next reload would load
    whatever a container wrote there. The directory is known by its file
    system and inode, so the container's name for it does not matter."""
    policy = policy_dir / "policy.toml"
    local = policy_dir / "allow.d" / "local.toml"
    before = {p.name: p.read_text() for p in (policy, local)}
    event = attempt(agent, "sh", "-c", f"echo '# mine' >> {policy}", obj={"object": "policy"})
    assert event["hook"] == "file_open" and event["access"] == "write", event
    assert event["path"] == str(policy), event  # the path as the writer named it
    attempt(agent, "truncate", "-s", "0", str(local), obj={"object": "policy"})
    # truncate(2) by name opens nothing: the size change itself is judged
    event = attempt(agent, PY, "-c", f"import os; os.truncate({str(local)!r}, 0)", obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("inode_setattr", "write"), event
    # another mount of the same filesystem (the container's own bind mount): the same directory
    event = attempt(agent, "sh", "-c", f"mount --bind {etc_fs} /mnt && echo '# mine' >> /mnt/etc/enforcer/policy.toml",
                    obj={"object": "policy"})
    assert event["hook"] == "file_open" and event["path"] == "/mnt/etc/enforcer/policy.toml", event
    event = attempt(agent, "touch", str(policy_dir / "allow.d" / "planted.toml"), obj={"object": "policy"})
    assert event["hook"] == "inode_create" and event["path"] == "/etc/enforcer/allow.d/planted.toml", event
    event = attempt(agent, "rm", "-f", str(local), obj={"object": "policy"})
    assert event["hook"] == "inode_unlink", event
    event = attempt(agent, "mv", str(policy_dir), str(etc_fs / "enforcer.old"), obj={"object": "policy"})
    assert event["hook"] == "inode_rename", event
    # /etc moved away (or swapped with another), a new /etc/enforcer could take the policy's path
    etc = policy_dir.parent
    event = attempt(agent, "mv", str(etc), str(etc_fs / "etc.old"), obj={"object": "policy"})
    assert event["hook"] == "inode_rename" and event["path"] == "/etc", event
    (etc_fs / "etc.fake").mkdir(exist_ok=True)
    exchange = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
                f"r = libc.renameat2(-100, {str(etc_fs / 'etc.fake')!r}.encode(), -100, {str(etc)!r}.encode(), 2); "
                "sys.exit(r and os.strerror(ctypes.get_errno()))")  # RENAME_EXCHANGE
    event = attempt(agent, PY, "-c", exchange, obj={"object": "policy"})
    # an exchange is judged both ways round, /etc first (security_inode_rename)
    assert event["hook"] == "inode_rename" and {event["path"], event["new_path"]} == {"/etc", "/etc.fake"}, event
    # another name for a policy file outside the directory would be a way to write it
    event = attempt(agent, "ln", str(policy), str(etc_fs / "other-name"), obj={"object": "policy"})
    assert event["hook"] == "inode_link", event
    # a fifo or a socket where a policy file would be: allow.d refuses what is not a regular file
    event = attempt(agent, "mkfifo", str(policy_dir / "allow.d" / "zz.toml"), obj={"object": "policy"})
    assert event["hook"] == "inode_mknod", event
    attempt(agent, PY, "-c", f"import socket; socket.socket(socket.AF_UNIX).bind({str(policy_dir / 'x.toml')!r})",
            obj={"object": "policy"})
    # /etc made writable by others: the agent's file checks would refuse every policy below it
    event = attempt(agent, "chmod", "g+w", str(etc), obj={"object": "policy"})
    assert (event["hook"], event["access"], event["path"]) == ("inode_setattr", "attributes", "/etc"), event
    # a mount over the directory, a file of it, or a directory above it (with shared propagation, the host's)
    event = attempt(agent, PY, ACTIONS, "mount", "tmpfs", str(policy_dir), "tmpfs", obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("sb_mount", "mount"), event
    attempt(agent, PY, ACTIONS, "mount", "/dev/null", str(policy), "", "bind", obj={"object": "policy"})
    attempt(agent, PY, ACTIONS, "mount", "tmpfs", str(etc), "tmpfs", obj={"object": "policy"})
    attempt(agent, PY, ACTIONS, "move-mount", "/tmp", str(policy_dir), obj={"object": "policy"})
    # reading is not judged, nor writing beside the directory, nor renaming another directory
    mark = agent.mark()
    read = in_container("cat", str(policy))
    beside = in_container("sh", "-c", f"echo x > {etc_fs / 'beside.txt'}")
    renamed = in_container("mv", str(etc_fs / "etc.fake"), str(etc_fs / "etc.other"))
    assert read.returncode == 0 and "tamper" in read.stdout, read.stderr
    assert beside.returncode == 0, beside.stderr
    assert renamed.returncode == 0, renamed.stderr
    assert _tamper_events(agent, mark, settle=False) == []
    assert {p.name: p.read_text() for p in (policy, local)} == before
    assert sorted(p.name for p in (policy_dir / "allow.d").iterdir()) == ["local.toml"]
    # host root edits it as ever, and the agent reloads it (looking the directory up again)
    verdict = agent.reload(POLICY)
    assert verdict["message"] == "reloaded", verdict
    attempt(agent, "sh", "-c", f"echo '# mine' >> {policy}", obj={"object": "policy"})


def test_the_policy_cannot_be_changed_through_an_overlay_nor_by_its_attributes(
        agent: Agent, policy_dir: Path, etc_fs: Path, workdir: Path) -> None:
    """Other doors to the same files. An overlay whose upper layer is the
    policy directory: the writer's open reaches the real file with the
    overlay's path (its directories have other inode numbers when the lower
    layer is on another file system), and a truncation reaches it only as a
    size change. And the files' attributes: a policy file made writable by
    others, or given to another owner, is one the agent refuses at its next
    start (enforcer/fileperms.py), which would switch enforcement off at the
    next reboot."""
    policy = policy_dir / "policy.toml"
    lower = workdir / "ovl-lower"  # the guest's /tmp: another file system than the upper layer's
    lower.mkdir(exist_ok=True)
    ovl_work = etc_fs / "ovl-work"
    ovl_work.mkdir(exist_ok=True)
    overlay = f"mount -t overlay overlay -o lowerdir={lower},upperdir={policy_dir},workdir={ovl_work} /mnt"
    before = (policy.read_text(), policy.stat().st_mode, policy.stat().st_uid)
    event = attempt(agent, "sh", "-c", f"{overlay} && echo '# mine' >> /mnt/policy.toml", obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("file_open", "write"), event
    # 6.1 opens the real file with the overlay's path: the real inode's name
    # inside its file system stands in. 6.8+ opens it with its real path, on
    # the overlay's private mount of its upper layer: the path inside that.
    assert event["path"] in ("/etc/enforcer/policy.toml", "/policy.toml"), event
    event = attempt(agent, "sh", "-c",
                    f"{overlay} && exec {PY} -c \"import os; os.truncate('/mnt/policy.toml', 0)\"",
                    obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("inode_setattr", "write"), event
    event = attempt(agent, "chmod", "666", str(policy), obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("inode_setattr", "attributes"), event
    event = attempt(agent, "chown", "1000", str(policy), obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("inode_setattr", "attributes"), event
    assert (policy.read_text(), policy.stat().st_mode, policy.stat().st_uid) == before
    # times alone are let through, unjudged (`touch -c`: plain touch opens the file for writing, which is
    # refused); so is an overlay over it that only reads
    mark = agent.mark()
    touched = in_container("touch", "-c", str(policy))
    read = in_container("sh", "-c", f"{overlay} && cat /mnt/policy.toml")
    assert touched.returncode == 0, touched.stderr
    assert read.returncode == 0 and "tamper" in read.stdout, read.stderr
    assert _tamper_events(agent, mark, settle=False) == []


def test_the_policy_cannot_be_changed_through_a_file_handle(agent: Agent, policy_dir: Path, etc_fs: Path) -> None:
    """open_by_handle_at(2) needs CAP_DAC_READ_SEARCH, which a privileged
    container has. After `echo 2 > /proc/sys/vm/drop_caches` the kernel hands
    the file out with a disconnected dentry, its own parent: nothing says
    which directory it lies in. On the policy's file system a write or an
    attribute change through one is judged as one in the policy directory."""
    policy = policy_dir / "policy.toml"
    before = (policy.read_text(), policy.stat().st_mode)
    event = attempt(agent, PY, ACTIONS, "by-handle", str(policy), "append", obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("file_open", "write"), event
    # the attack's condition was met: the kernel had no name for it in its directory, only the
    # anonymous "/" of a disconnected dentry (6.1 and 6.12), after the mount's root
    assert event["path"] == "//", event
    event = attempt(agent, PY, ACTIONS, "by-handle", str(policy), "chmod", obj={"object": "policy"})
    assert (event["hook"], event["access"], event["path"]) == ("inode_setattr", "attributes", "/"), event
    # a new name for it elsewhere (linkat of the handle's fd), where nothing would judge a write
    event = attempt(agent, PY, ACTIONS, "by-handle", str(policy), "link", str(etc_fs / "by-handle"),
                    obj={"object": "policy"})
    assert (event["hook"], event["access"]) == ("inode_link", "create"), event
    assert not (etc_fs / "by-handle").exists()
    assert (policy.read_text(), policy.stat().st_mode) == before
    mark = agent.mark()
    read = in_container(PY, ACTIONS, "by-handle", str(policy), "read")
    assert read.returncode == 0, read.stderr
    assert _tamper_events(agent, mark, settle=False) == []


# --- the agent process ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM])
def test_the_agent_cannot_be_signalled(agent: Agent, sig: signal.Signals) -> None:
    event = attempt(agent, "kill", f"-{int(sig)}", str(agent.pid), obj={"object": "agent", "signal": sig.name})
    assert event["hook"] == "task_kill" and event["access"] == "signal", event
    assert agent._proc.poll() is None, "the agent is gone"


def test_the_agent_cannot_be_signalled_through_a_files_io(agent: Agent) -> None:
    """A pipe whose owner is the agent (F_SETOWN) and whose signal is SIGSTOP
    (F_SETSIG; SIGKILL works the same, SIGIO's default ends the process too):
    the kernel sends it on the pipe's next write, without task_kill. Refused
    without an event (the hook may run in an interrupt); the agent reports
    the kernel's count. SIGSTOP rather than SIGKILL: had it got through, the
    agent could be continued for the tests after this one."""
    mark = agent.mark()
    try:
        proc = in_container(PY, ACTIONS, "sigio", str(agent.pid), "STOP")
        assert proc.returncode == 0, proc.stderr
        # a stopped agent writes nothing: the warning is the proof that it runs
        warning = agent.wait_for(mark, lambda r: r.get("type") == "agent" and r.get("level") == "warning"
                                 and "F_SETOWN" in r.get("message", ""))
        # the write sends one, the write end's close at the writer's exit another (pipe_release)
        assert warning["count"] >= 1, warning
    finally:
        os.kill(agent.pid, signal.SIGCONT)  # host root: not judged
    assert _tamper_events(agent, mark, settle=False) == []


def test_kill_0_only_asks_whether_the_agent_exists(agent: Agent) -> None:
    mark = agent.mark()
    proc = in_container("kill", "-0", str(agent.pid))
    assert proc.returncode == 0, proc.stderr
    assert _tamper_events(agent, mark, settle=False) == []


def test_the_agent_cannot_be_traced_nor_its_memory_written(agent: Agent) -> None:
    event = attempt(agent, "strace", "-p", str(agent.pid), obj={"object": "agent"}, timeout_s=30)
    assert event["hook"] == "ptrace_access_check" and event["tamper"]["ptrace_mode"] & 0x02, event
    attempt(agent, PY, "-c", f"open('/proc/{agent.pid}/mem', 'r+b')", obj={"object": "agent"})
    sysrq_still_denied(agent)


def _limits_and_scheduling(pid: int) -> tuple:
    with open(f"/proc/{pid}/limits") as fh:
        limits = fh.read()
    return limits, os.getpriority(os.PRIO_PROCESS, pid), os.sched_getscheduler(pid), os.sched_getaffinity(pid)


def test_the_agents_limits_and_scheduling_cannot_be_changed(agent: Agent) -> None:
    """RLIMIT_CPU would have the kernel itself kill the agent (no task_kill);
    SCHED_IDLE, an affinity or nice 19 would starve it."""
    before = _limits_and_scheduling(agent.pid)
    event = attempt(agent, "prlimit", f"--pid={agent.pid}", "--cpu=1:1",
                    obj={"object": "agent", "limit": "RLIMIT_CPU"})
    assert event["hook"] == "task_setrlimit" and event["access"] == "limit", event
    attempt(agent, "prlimit", f"--pid={agent.pid}", "--nofile=3:3", obj={"object": "agent", "limit": "RLIMIT_NOFILE"})
    event = attempt(agent, "chrt", "--idle", "-p", "0", str(agent.pid), obj={"object": "agent"})
    assert event["hook"] == "task_setscheduler" and event["access"] == "schedule", event
    event = attempt(agent, "taskset", "-p", "1", str(agent.pid), obj={"object": "agent"})
    assert event["hook"] == "task_setscheduler", event
    event = attempt(agent, "renice", "-n", "19", "-p", str(agent.pid), obj={"object": "agent", "nice": 19})
    assert event["hook"] == "task_setnice", event
    assert _limits_and_scheduling(agent.pid) == before
    # reading them is not judged
    mark = agent.mark()
    proc = in_container("prlimit", f"--pid={agent.pid}")
    assert proc.returncode == 0 and "CPU" in proc.stdout, proc.stdout + proc.stderr
    assert _tamper_events(agent, mark, settle=False) == []
    sysrq_still_denied(agent)


def test_ps_in_a_container_reports_nothing(agent: Agent) -> None:
    """Read-mode checks (every `ps` reading /proc/PID/stat) are not judged."""
    mark = agent.mark()
    proc = in_container("ps", "-p", str(agent.pid), "-o", "pid,stat,wchan,cmd")
    assert proc.returncode == 0 and str(agent.pid) in proc.stdout, proc.stdout + proc.stderr
    assert _tamper_events(agent, mark, settle=False) == []


# --- audit mode -------------------------------------------------------------------------


def test_in_audit_mode_each_attempt_succeeds_and_is_reported_once(agent: Agent, instance: Path) -> None:
    verdict = agent.reload(POLICY.replace('mode = "enforce"', 'mode = "audit"'))
    assert verdict["message"] == "reloaded", verdict
    try:
        settings = _map_id(instance, "settings")
        attempt(agent, "bpftool", "map", "dump", "id", str(settings), action="audited",
                obj={"object": "map", "id": settings})
        attempt(agent, "kill", "-CONT", str(agent.pid), action="audited",
                obj={"object": "agent", "signal": "SIGCONT"})
        # an O_TRUNC open truncates too (inode_setattr): one action, one event
        local = agent.policy.parent / "allow.d" / "local.toml"
        event = attempt(agent, "sh", "-c", f"echo '# audited' > {local}", action="audited",
                        obj={"object": "policy"})
        assert (event["hook"], event["access"]) == ("file_open", "write"), event
        assert local.read_text() == "# audited\n"
        local.write_text("")
    finally:
        verdict = agent.reload(POLICY)
        assert verdict["message"] == "reloaded", verdict
    attempt(agent, "kill", "-CONT", str(agent.pid), obj={"object": "agent", "signal": "SIGCONT"})


# --- last: the agent stops, host root unloads ---------------------------------------------


def test_zz_pins_stay_protected_after_the_agent_exits_until_host_root_unloads(agent: Agent, instance: Path,
                                                                              workdir: Path) -> None:
    """Stopping the agent leaves its programs enforcing, the tamper rule
    among them; `enforcer unload` by host root (the documented way out, and
    what the package's removal runs) still removes every pin."""
    assert agent.stop() == 0, agent.log_tail()
    link = instance / "link_file_open"
    proc = in_container("rm", "-f", str(link))
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr
    proc = in_container(PY, ACTIONS, "open", "/proc/sysrq-trigger", "w")
    assert proc.returncode == 77, f"SysRq open from a container after the agent's exit: {proc.returncode}"
    assert link.exists()
    unload(workdir)
    assert not instance.exists(), sorted(p.name for p in PIN_ROOT.iterdir())
    assert wait_for_no_enforcer_programs(timeout_s=30) == {}, "enforcer programs still loaded after unload"
