"""kind = "tamper": parsing, its part of the kernel maps, its events, and
the agent identity the kernel uses to exempt the running agent."""

from __future__ import annotations

import os
import signal

import pytest

from enforcer import abi
from enforcer.compile import compile_policy
from enforcer.events import BootClock, TamperTarget, decode
from enforcer.kernel import selfid
from enforcer.parse import loads_policy
from enforcer.policy import Mode, RuleKind, Severity, TamperObject
from enforcer.policyfile.problems import PolicyError

from enforcer.kernel.maps import PolicyMaps
from test_events import record
from test_maps import FDS, Barrier, FakeBpf  # the maps protocol's fakes

RULE = 'version = 1\n[[rule]]\nid = "tamper"\nkind = "tamper"\nscope = "container"\n'


def test_a_tamper_rule_protects_all_four_by_default() -> None:
    (rule,) = loads_policy(RULE).rules
    assert rule.kind is RuleKind.TAMPER
    assert rule.protect == frozenset(TamperObject)
    assert (rule.meta.severity, rule.meta.mitre) == (Severity.CRITICAL, "T1562.001")


@pytest.mark.parametrize("scope, host, container", [("all", True, True), ("host", True, False)])
def test_host_scope_is_accepted(scope: str, host: bool, container: bool) -> None:
    """On the host the kernel exempts root (effective uid 0), so a host-scoped
    rule judges services with capabilities that are not root."""
    plan = compile_policy(loads_policy(RULE.replace('scope = "container"', f'scope = "{scope}"')))
    assert bool(_targets(plan, abi.KernelScope.HOST)) is host
    assert bool(_targets(plan, abi.KernelScope.CONTAINER)) is container


def test_a_tamper_rule_without_scope_covers_both() -> None:
    plan = compile_policy(loads_policy(RULE.replace('scope = "container"\n', "")))
    assert _targets(plan, abi.KernelScope.HOST) == _targets(plan, abi.KernelScope.CONTAINER) != {}


def test_an_unknown_object_is_named() -> None:
    with pytest.raises(PolicyError, match='unknown value "kernel"'):
        loads_policy(RULE + 'protect = ["bpf", "kernel"]\n')


def _targets(plan, scope: abi.KernelScope) -> dict:
    """target -> rule number, for one kernel scope."""
    return {slot.target: number.rule for slot, number in plan.maps["targets"].items() if slot.scope is scope}


@pytest.mark.parametrize("protect, targets, watch", [
    (["bpf"], {abi.Target.TAMPER_BPF_OBJECT}, abi.Watch.TAMPER_BPF),
    (["pins"], {abi.Target.TAMPER_PIN}, abi.Watch.TAMPER_PINS),
    (["agent"], {abi.Target.TAMPER_SIGNAL, abi.Target.TAMPER_PTRACE, abi.Target.TAMPER_RESOURCES}, abi.Watch.TAMPER_AGENT),
    (["policy"], {abi.Target.TAMPER_POLICY}, abi.Watch.TAMPER_POLICY),
])
def test_each_object_claims_its_targets_in_container_scope_only(protect, targets, watch) -> None:
    plan = compile_policy(loads_policy(RULE + f"protect = {protect!r}\n".replace("'", '"')))
    assert _targets(plan, abi.KernelScope.CONTAINER) == {target: 1 for target in targets}
    assert _targets(plan, abi.KernelScope.HOST) == {}
    assert plan.watch & (abi.Watch.TAMPER_BPF | abi.Watch.TAMPER_PINS | abi.Watch.TAMPER_AGENT
                         | abi.Watch.TAMPER_POLICY) == watch


def test_two_tamper_rules_may_not_claim_the_same_object() -> None:
    second = '[[rule]]\nid = "again"\nkind = "tamper"\nscope = "container"\nprotect = ["pins"]\n'
    with pytest.raises(PolicyError, match="tampering with enforcer's pins is also covered by rule 1"):
        loads_policy(RULE + second)


# --- events -----------------------------------------------------------------------

PLAN = compile_policy(loads_policy(RULE), Mode.ENFORCE)


@pytest.mark.parametrize("hook, access, detail, path, fstype, expected", [
    (abi.Hook.BPF_MAP, abi.Access.OBTAIN, 42, b"rules", b"", TamperTarget("map", id=42)),
    (abi.Hook.BPF_PROG, abi.Access.OBTAIN, 7, b"lsm__file_open", b"", TamperTarget("program", id=7)),
    (abi.Hook.BPF, abi.Access.OBTAIN, 9, b"", b"", TamperTarget("link", id=9)),
    (abi.Hook.INODE_UNLINK, abi.Access.REMOVE, 0, b"/enforcer/1-2-ab/link_file_open", b"bpf", TamperTarget("pin")),
    (abi.Hook.INODE_RENAME, abi.Access.RENAME, 0, b"/enforcer/1-2-ab", b"bpf", TamperTarget("pin")),
    (abi.Hook.INODE_CREATE, abi.Access.CREATE, 0, b"/enforcer/planted", b"bpf", TamperTarget("pin")),
    (abi.Hook.INODE_MKDIR, abi.Access.CREATE, 0, b"/enforcer/1-2-cd", b"bpf", TamperTarget("pin")),
    (abi.Hook.INODE_SYMLINK, abi.Access.CREATE, 0, b"/enforcer/1-2-ef", b"bpf", TamperTarget("pin")),
    (abi.Hook.INODE_LINK, abi.Access.CREATE, 0, b"/enforcer/1-2-ab/x", b"bpf", TamperTarget("pin")),
    (abi.Hook.FILE_OPEN, abi.Access.WRITE, 0, b"/host/etc/enforcer/policy.toml", b"ext4", TamperTarget("policy")),
    (abi.Hook.PATH_TRUNCATE, abi.Access.WRITE, 0, b"/etc/enforcer/policy.toml", b"xfs", TamperTarget("policy")),
    (abi.Hook.INODE_RENAME, abi.Access.RENAME, 0, b"/etc/enforcer", b"ext4", TamperTarget("policy")),
    (abi.Hook.INODE_LINK, abi.Access.CREATE, 0, b"/tmp/x", b"ext4", TamperTarget("policy")),
    (abi.Hook.TASK_KILL, abi.Access.SIGNAL, int(signal.SIGKILL), b"python3", b"",
     TamperTarget("agent", signal="SIGKILL")),
    (abi.Hook.TASK_KILL, abi.Access.SIGNAL, 40, b"python3", b"", TamperTarget("agent", signal="signal 40")),
    (abi.Hook.PTRACE_ACCESS_CHECK, abi.Access.TRACE, 0x12, b"python3", b"", TamperTarget("agent", ptrace_mode=0x12)),
    (abi.Hook.TASK_SETRLIMIT, abi.Access.LIMIT, 0, b"python3", b"", TamperTarget("agent", limit="RLIMIT_CPU")),
    (abi.Hook.TASK_SETRLIMIT, abi.Access.LIMIT, 7, b"python3", b"", TamperTarget("agent", limit="RLIMIT_NOFILE")),
    (abi.Hook.TASK_SETRLIMIT, abi.Access.LIMIT, 99, b"python3", b"", TamperTarget("agent", limit="limit 99")),
    (abi.Hook.TASK_SETSCHEDULER, abi.Access.SCHEDULE, 0, b"python3", b"", TamperTarget("agent")),
    (abi.Hook.TASK_SETNICE, abi.Access.SCHEDULE, 19, b"python3", b"", TamperTarget("agent", nice=19)),
    (abi.Hook.TASK_SETNICE, abi.Access.SCHEDULE, (1 << 32) - 20, b"python3", b"", TamperTarget("agent", nice=-20)),
])
def test_tamper_events_say_what_they_aimed_at(hook, access, detail, path, fstype, expected) -> None:
    raw = record(rule=1, hook=int(hook), access=int(access), action=int(abi.Action.BLOCKED), detail=detail,
                 path=path, fstype=fstype, flags=int(abi.EventFlag.CONTAINER | abi.EventFlag.TAMPER))
    event = decode(raw, PLAN, BootClock(0))
    assert event.rule == "tamper" and event.mitre == "T1562.001"
    assert event.tamper == expected
    assert event.to_dict()["tamper"]["object"] == expected.object


def test_other_events_have_no_tamper_part() -> None:
    """Without the kernel's TAMPER flag, attributed or not (the same hooks decide other kinds' rules)."""
    raw = record(rule=1, hook=int(abi.Hook.INODE_RENAME), access=int(abi.Access.RENAME), fstype=b"cgroup",
                 path=b"/release_agent", action=int(abi.Action.BLOCKED))
    assert decode(raw, PLAN, BootClock(0)).tamper is None
    raw = record(rule=9, hook=int(abi.Hook.FILE_OPEN), access=int(abi.Access.WRITE), fstype=b"proc",
                 path=b"/proc/sysrq-trigger", action=int(abi.Action.BLOCKED))
    event = decode(raw, PLAN, BootClock(0))
    assert not event.attributed and event.tamper is None


# --- the agent's identity -----------------------------------------------------------


def test_start_ticks_counts_fields_after_the_last_parenthesis() -> None:
    # a comm with spaces and a ')' in it must not shift the fields
    fields = " ".join(str(n) for n in range(3, 53))
    assert selfid.start_ticks(f"123 (a) b) c) {fields}") == 22


def test_the_identity_of_this_process(tmp_path) -> None:
    me = selfid.current(tmp_path)
    with open("/proc/self/stat") as fh:
        assert me.start_ticks == int(fh.read().rsplit(")", 1)[1].split()[19])
    assert me.tgid > 0 and me.tick_ns == 10_000_000  # USER_HZ is 100 on every Linux ABI
    stat = tmp_path.stat()
    assert me.pins_ino == stat.st_ino
    assert me.pins_dev >> 20 == os.major(stat.st_dev)
    assert selfid.current(tmp_path / "missing").pins_ino == 0


def test_the_policy_directory_is_named_by_its_filesystems_dev_from_mountinfo(tmp_path) -> None:
    """mountinfo's major:minor is super_block.s_dev (stat's st_dev is not, on btrfs)."""
    policy_dir = tmp_path / "etc" / "enforcer"
    policy_dir.mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                         f"2 1 0:44 / {tmp_path} rw - btrfs /dev/sdb rw\n")
    found = selfid.directory_on_its_filesystem(policy_dir, str(mountinfo))
    assert (found.dev, found.ino) == ((0 << 20) | 44, policy_dir.stat().st_ino)
    # the one directory above it below the mount point: tmp_path is the mount's root here
    assert found.ancestors == ((tmp_path / "etc").stat().st_ino,)
    assert selfid.directory_on_its_filesystem(tmp_path / "gone", str(mountinfo)) == selfid.DirectoryIdentity()
    me = selfid.current(None, policy_dir)
    assert me.policy_ino == policy_dir.stat().st_ino and me.policy_dev != 0
    assert selfid.with_policy_dir(me, None).policy_ino == 0


def test_the_settings_carry_the_agent() -> None:
    fake = FakeBpf()
    agent = selfid.AgentIdentity(tgid=4321, start_ticks=99, tick_ns=10_000_000, pins_dev=(0 << 20) | 33,
                                 pins_ino=7, policy_dev=(8 << 20) | 1, policy_ino=1234)
    maps = PolicyMaps(FDS.__getitem__, host_mntns=1, barrier=Barrier(fake), syscalls=fake, agent=agent)
    maps.fill(PLAN)
    settings = fake.settings()
    assert (settings.agent_tgid, settings.agent_start_ticks, settings.tick_ns) == (4321, 99, 10_000_000)
    assert (settings.pins_dev, settings.pins_ino) == (33, 7)
    assert (settings.policy_dev, settings.policy_ino) == ((8 << 20) | 1, 1234)
    assert list(settings.policy_ancestors) == [0] * abi.POLICY_ANCESTORS  # none named


def test_the_settings_carry_the_policy_directorys_ancestors() -> None:
    fake = FakeBpf()
    agent = selfid.AgentIdentity(tgid=1, policy_dev=1, policy_ino=1234, policy_ancestors=(55, 2))
    maps = PolicyMaps(FDS.__getitem__, host_mntns=1, barrier=Barrier(fake), syscalls=fake, agent=agent)
    maps.fill(PLAN)
    assert list(fake.settings().policy_ancestors) == [55, 2, 0, 0]


@pytest.mark.parametrize("path, mount_point, expected", [
    ("/etc/enforcer", "/", ("/etc",)),
    ("/usr/local/etc/enforcer", "/", ("/usr/local/etc", "/usr/local", "/usr")),
    ("/a/b/c/d/e/enforcer", "/", ("/a/b/c/d/e", "/a/b/c/d", "/a/b/c", "/a/b")),  # the nearest four
    ("/etc/enforcer", "/etc", ()),  # /etc a file system of its own: nothing above on it
    ("/srv/conf/enforcer", "/srv", ("/srv/conf",)),
    ("/enforcer", "/", ()),
])
def test_the_ancestors_judged_are_those_below_the_mount_point(path: str, mount_point: str, expected: tuple) -> None:
    assert selfid.ancestors_below(path, mount_point) == expected
