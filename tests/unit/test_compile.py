"""The compiler: exact map contents, exec place semantics, allowlist masks, diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer import abi
from enforcer.compile import compile_policy
from enforcer.kinds.exec_places import indexed_filesystems
from enforcer.parse import load_policy, loads_policy
from enforcer.plan import (
    POLICY_MAPS,
    ExecPlaceValue,
    FsIndex,
    FsTypeSlot,
    MapDiff,
    PlaceDev,
    Prefix,
    RuleIndex,
    RuleInfo,
    RuleMask,
    RuleNumber,
    RuleValue,
    TargetSlot,
    Uid,
    diff,
    encode_key,
    encode_value,
)
from enforcer.mountinfo import kernel_dev, parse_mountinfo
from enforcer.policy import Mode, RuleKind, Severity

POLICIES = Path(__file__).resolve().parents[2] / "policies"
H, C = abi.KernelScope.HOST, abi.KernelScope.CONTAINER
T = abi.Target

#: exec rules decide executions and executable mappings unless `access` says otherwise
EXEC_AND_MAP = int(abi.RuleFlag.EXEC | abi.RuleFlag.MAP)


def _place(node_len, direct, below, excluded=0):
    return ExecPlaceValue(node_len=node_len, rule_direct=direct, rule_below=below, excluded=excluded)


def test_default_policy_plan_is_pinned():
    plan = compile_policy(load_policy(POLICIES / "default.toml"))
    expected = {
        "rules": {
            RuleIndex(1): RuleValue(True),
            RuleIndex(2): RuleValue(True),
            RuleIndex(3): RuleValue(True),
            RuleIndex(4): RuleValue(True, EXEC_AND_MAP),
            RuleIndex(5): RuleValue(True, EXEC_AND_MAP),
            RuleIndex(6): RuleValue(False, EXEC_AND_MAP),
            RuleIndex(7): RuleValue(True),
            RuleIndex(8): RuleValue(True),
            RuleIndex(9): RuleValue(True),
        },
        "targets": {
            TargetSlot(T.SYSRQ_TRIGGER_WRITE, H): RuleNumber(1),
            TargetSlot(T.SYSRQ_SYSCTL_WRITE, H): RuleNumber(1),
            TargetSlot(T.SYSRQ_TRIGGER_WRITE, C): RuleNumber(2),
            TargetSlot(T.SYSRQ_SYSCTL_WRITE, C): RuleNumber(2),
            TargetSlot(T.RELEASE_AGENT_WRITE, H): RuleNumber(3),
            TargetSlot(T.RELEASE_AGENT_WRITE, C): RuleNumber(3),
            TargetSlot(T.RELEASE_AGENT_RENAME, H): RuleNumber(3),
            TargetSlot(T.RELEASE_AGENT_RENAME, C): RuleNumber(3),
            TargetSlot(T.RELEASE_AGENT_MOUNT, H): RuleNumber(3),
            TargetSlot(T.RELEASE_AGENT_MOUNT, C): RuleNumber(3),
            TargetSlot(T.EXEC_MEMFD, H): RuleNumber(5),
            TargetSlot(T.EXEC_MEMFD, C): RuleNumber(5),
            TargetSlot(T.EXEC_UNRESOLVED, H): RuleNumber(4),
            TargetSlot(T.EXEC_UNRESOLVED, C): RuleNumber(4),
            TargetSlot(T.HELPER_CORE_PATTERN, H): RuleNumber(7),
            TargetSlot(T.HELPER_MODPROBE, H): RuleNumber(7),
            TargetSlot(T.HELPER_UEVENT_HELPER, H): RuleNumber(7),
            TargetSlot(T.HELPER_HOTPLUG, H): RuleNumber(7),
            TargetSlot(T.HELPER_BINFMT_REGISTER, H): RuleNumber(8),
            TargetSlot(T.HELPER_BINFMT_STATUS, H): RuleNumber(8),
            TargetSlot(T.HELPER_CORE_PATTERN, C): RuleNumber(9),
            TargetSlot(T.HELPER_MODPROBE, C): RuleNumber(9),
            TargetSlot(T.HELPER_UEVENT_HELPER, C): RuleNumber(9),
            TargetSlot(T.HELPER_HOTPLUG, C): RuleNumber(9),
            TargetSlot(T.HELPER_BINFMT_REGISTER, C): RuleNumber(9),
            TargetSlot(T.HELPER_BINFMT_STATUS, C): RuleNumber(9),
        },
        "exec_fstypes": {
            FsTypeSlot("devtmpfs", H): RuleNumber(4),
            FsTypeSlot("devtmpfs", C): RuleNumber(4),
            FsTypeSlot("proc", H): RuleNumber(4),
            FsTypeSlot("proc", C): RuleNumber(4),
            FsTypeSlot("sysfs", H): RuleNumber(4),
            FsTypeSlot("sysfs", C): RuleNumber(4),
            FsTypeSlot("mqueue", H): RuleNumber(4),
            FsTypeSlot("mqueue", C): RuleNumber(4),
            FsTypeSlot("tmpfs", H): RuleNumber(6),
            FsTypeSlot("tmpfs", C): RuleNumber(6),
            FsTypeSlot("ramfs", H): RuleNumber(6),
            FsTypeSlot("ramfs", C): RuleNumber(6),
        },
        "exec_places": {
            Prefix(0, "/tmp/"): _place(5, 4, 4),
            Prefix(0, "/var/tmp/"): _place(9, 4, 4),
            Prefix(0, "/dev/"): _place(5, 4, 4),
            Prefix(0, "/proc/"): _place(6, 4, 4),
            Prefix(0, "/sys/"): _place(5, 4, 4),
            Prefix(0, "/run/"): _place(5, 6, 6),
            Prefix(1, "/tmp/"): _place(5, 4, 4),
            Prefix(1, "/var/tmp/"): _place(9, 4, 4),
            Prefix(1, "/dev/"): _place(5, 4, 4),
            Prefix(1, "/proc/"): _place(6, 4, 4),
            Prefix(1, "/sys/"): _place(5, 4, 4),
            Prefix(1, "/run/"): _place(5, 6, 6),
        },
        "allow_exe": {
            # sysrq-write-host and kernel-helper-sysctl-host
            Prefix(0, "/usr/lib/systemd/systemd-sysctl", exact=True): RuleMask(1 << 1 | 1 << 7),
            Prefix(0, "/lib/systemd/systemd-sysctl", exact=True): RuleMask(1 << 1 | 1 << 7),
            Prefix(0, "/usr/sbin/runc", exact=True): RuleMask(1 << 5),
            Prefix(0, "/usr/bin/runc", exact=True): RuleMask(1 << 5),
            Prefix(0, "/usr/bin/crun", exact=True): RuleMask(1 << 5),
            Prefix(0, "/usr/lib/systemd/systemd-shutdown", exact=True): RuleMask(1 << 6),
            Prefix(0, "/lib/systemd/systemd-shutdown", exact=True): RuleMask(1 << 6),
            Prefix(0, "/usr/lib/systemd/systemd-binfmt", exact=True): RuleMask(1 << 8),
            Prefix(0, "/lib/systemd/systemd-binfmt", exact=True): RuleMask(1 << 8),
            Prefix(0, "/usr/sbin/update-binfmts", exact=True): RuleMask(1 << 8),
        },
        "allow_uid": {},
        "place_devs": {},  # no mount table given: places by name only
        "allow_cgroup": {
            Prefix(0, "/system.slice/apport.service/"): RuleMask(1 << 7),
            Prefix(0, "/system.slice/abrt-ccpp.service/"): RuleMask(1 << 7),
        },
    }
    assert set(plan.maps) == set(POLICY_MAPS)
    for name in POLICY_MAPS:
        assert dict(plan.maps[name]) == expected[name], name
    assert plan.watch == int(
        abi.Watch.PROC_WRITE | abi.Watch.CGROUP_WRITE | abi.Watch.RENAME | abi.Watch.EXEC
        | abi.Watch.HELPER_SYSCTL | abi.Watch.HELPER_SYSFS | abi.Watch.HELPER_BINFMT | abi.Watch.CGROUP_MOUNT
    )
    assert [(i.index, i.id, i.kind, i.mode, i.severity, i.mitre) for i in plan.rules] == [
        (1, "sysrq-write-host", "sysrq", "enforce", "critical", "T1611"),
        (2, "sysrq-write-container", "sysrq", "enforce", "critical", "T1611"),
        (3, "release-agent", "release_agent", "enforce", "critical", "T1611"),
        (4, "exec-unusual-dir", "exec", "enforce", "high", "T1059"),
        (5, "exec-memfd", "exec", "enforce", "high", "T1620"),
        (6, "exec-run-audit", "exec", "audit", "high", "T1059"),
        (7, "kernel-helper-sysctl-host", "kernel_helper", "enforce", "critical", "T1611"),
        (8, "kernel-helper-binfmt-host", "kernel_helper", "enforce", "critical", "T1611"),
        (9, "kernel-helper-container", "kernel_helper", "enforce", "critical", "T1611"),
    ]
    assert plan.rule_info(5).description.startswith("Execution of an anonymous in-memory file")


def test_every_entry_of_every_shipped_policy_encodes():
    for path in sorted(POLICIES.glob("*.toml")):
        plan = compile_policy(load_policy(path))
        for name in POLICY_MAPS:
            for key, value in plan.maps[name].items():
                slot0, slot1 = bytes(encode_key(key, 0)), bytes(encode_key(key, 1))
                assert slot0 != slot1, (name, key)  # the two policy slots never share a key
                encode_value(value)


def test_mode_override_and_audit_policy():
    policy = load_policy(POLICIES / "default.toml")
    audit = compile_policy(policy, Mode.AUDIT)
    assert set(audit.maps["rules"].values()) == {RuleValue(False), RuleValue(False, EXEC_AND_MAP)}
    assert {i.mode for i in audit.rules} == {"audit"}
    forced = compile_policy(policy, Mode.ENFORCE)
    # --mode enforce keeps a rule's own mode = "audit" (exec-run-audit)
    assert {i.id: i.mode for i in forced.rules} == {
        "sysrq-write-host": "enforce",
        "sysrq-write-container": "enforce",
        "release-agent": "enforce",
        "exec-unusual-dir": "enforce",
        "exec-memfd": "enforce",
        "exec-run-audit": "audit",
        "kernel-helper-sysctl-host": "enforce",
        "kernel-helper-binfmt-host": "enforce",
        "kernel-helper-container": "enforce",
    }
    audit_policy = load_policy(POLICIES / "audit.toml")
    # switched to enforce, it denies what default.toml denies, no more (issue 10.6)
    assert {i.id: i.mode for i in compile_policy(audit_policy, Mode.ENFORCE).rules} == {
        i.id: i.mode for i in forced.rules}
    # the audit policy differs from the default only in modes
    shipped_audit = compile_policy(load_policy(POLICIES / "audit.toml"))
    for name in POLICY_MAPS:
        assert dict(shipped_audit.maps[name]) == dict(audit.maps[name]), name


def _exec(*rules: str, allow: str = "") -> dict:
    text = "version = 1\n" + allow
    for n, body in enumerate(rules):
        text += f'[[rule]]\nid = "r{n + 1}"\nkind = "exec"\n{body}\n'
    return compile_policy(loads_policy(text))


def test_exec_places_nested_recursive_nonrecursive_and_excludes():
    plan = _exec(
        'dirs = ["/", {path = "/home", recursive = false}]\nexclude = ["/usr", "/var/lib"]',
        'scope = "host"\ndirs = ["/var/lib/docker/tmp", {path = "/var/lib", recursive = false}]',
        'scope = "container"\ndirs = ["/usr/local"]\nexclude = ["/usr/local/keep"]',
    )
    places = plan.maps["exec_places"]
    assert dict(places) == {
        # host: rules 1 and 2
        Prefix(0, "/"): _place(1, 1, 1),
        Prefix(0, "/home/"): _place(6, 1, 1),
        Prefix(0, "/usr/"): _place(5, 0, 0, excluded=1 << 1),
        Prefix(0, "/var/lib/"): _place(9, 2, 0, excluded=1 << 1),
        Prefix(0, "/var/lib/docker/tmp/"): _place(20, 2, 2, excluded=1 << 1),
        # container: rules 1 and 3
        Prefix(1, "/"): _place(1, 1, 1),
        Prefix(1, "/home/"): _place(6, 1, 1),
        Prefix(1, "/usr/"): _place(5, 0, 0, excluded=1 << 1),
        Prefix(1, "/usr/local/"): _place(11, 3, 3, excluded=1 << 1),
        Prefix(1, "/usr/local/keep/"): _place(16, 0, 0, excluded=(1 << 1) | (1 << 3)),
        Prefix(1, "/var/lib/"): _place(9, 0, 0, excluded=1 << 1),
    }


def test_exec_places_longest_dir_wins_and_nonrecursive_only_direct():
    plan = _exec(
        'dirs = ["/srv", {path = "/srv/www/cgi", recursive = false}]',
        'dirs = ["/srv/www"]',
    )
    host = {k.text: v for k, v in plan.maps["exec_places"].items() if k.namespace == 0}
    assert host == {
        "/srv/": _place(5, 1, 1),
        "/srv/www/": _place(9, 2, 2),
        "/srv/www/cgi/": _place(13, 1, 2),
    }
    assert len(plan.maps["exec_places"]) == 6


def test_exec_places_are_also_keyed_by_where_they_live():
    # / on ext4 254:1, /tmp a tmpfs 0:25, /var/tmp a directory of the root
    # filesystem, /srv/tmp a bind mount of /tmp's directory "share".
    mounts = parse_mountinfo("\n".join([
        "22 1 254:1 / / rw - ext4 /dev/vda1 rw",
        "25 22 0:25 / /tmp rw - tmpfs tmpfs rw",
        "30 22 0:25 /share /srv/tmp rw - tmpfs tmpfs rw",
    ]))
    policy = loads_policy(
        'version = 1\n[[rule]]\nid = "r1"\nkind = "exec"\nscope = "host"\n'
        'dirs = ["/tmp", "/var/tmp", "/srv/tmp"]\nexclude = ["/tmp/keep"]\n')
    plan = compile_policy(policy, mounts=mounts)
    tmp_fs, root_fs = 1, 2  # filesystem indexes, in order of first use (/srv/tmp, /tmp, /var/tmp)
    assert dict(plan.maps["place_devs"]) == {
        PlaceDev(kernel_dev(0, 25)): FsIndex(tmp_fs),
        PlaceDev(kernel_dev(254, 1)): FsIndex(root_fs),
    }
    loc = abi.location_namespace
    assert dict(plan.maps["exec_places"]) == {
        # by name, as before
        Prefix(0, "/tmp/"): _place(5, 1, 1),
        Prefix(0, "/tmp/keep/"): _place(10, 0, 0, excluded=1 << 1),
        Prefix(0, "/var/tmp/"): _place(9, 1, 1),
        Prefix(0, "/srv/tmp/"): _place(9, 1, 1),
        # by location: the root of the tmpfs, a directory of it, one of ext4
        Prefix(loc(0, tmp_fs), "/"): _place(1, 1, 1),
        Prefix(loc(0, tmp_fs), "/keep/"): _place(6, 0, 0, excluded=1 << 1),
        Prefix(loc(0, tmp_fs), "/share/"): _place(7, 1, 1),
        Prefix(loc(0, root_fs), "/var/tmp/"): _place(9, 1, 1),
    }
    # every key of both slots encodes, and a location key differs from a name key
    for key, value in plan.maps["exec_places"].items():
        encode_key(key, 0), encode_key(key, 1), encode_value(value)
    assert bytes(encode_key(Prefix(loc(0, 1), "/tmp/"), 0)) != bytes(encode_key(Prefix(0, "/tmp/"), 0))
    assert bytes(encode_key(PlaceDev(kernel_dev(0, 25)), 0)) != bytes(encode_key(PlaceDev(kernel_dev(0, 25)), 1))


def test_without_a_mount_table_places_are_keyed_by_name_only():
    plan = _exec('dirs = ["/tmp"]')
    assert all(key.namespace in (0, 1) for key in plan.maps["exec_places"])
    assert dict(plan.maps["place_devs"]) == {}


def test_past_the_filesystem_indexes_places_keep_their_names_only():
    lines = ["22 1 254:1 / / rw - ext4 /dev/vda1 rw"]
    lines += [f"{100 + n} 22 0:{100 + n} / /p{n:02} rw - tmpfs tmpfs rw" for n in range(abi.MAX_PLACE_DEVS + 1)]
    dirs = ", ".join(f'"/p{n:02}"' for n in range(abi.MAX_PLACE_DEVS + 1))
    policy = loads_policy(f'version = 1\n[[rule]]\nid = "r1"\nkind = "exec"\nscope = "host"\ndirs = [{dirs}]\n')
    plan = compile_policy(policy, mounts=parse_mountinfo("\n".join(lines)))
    assert len(plan.maps["place_devs"]) == abi.MAX_PLACE_DEVS
    located = [key for key in plan.maps["exec_places"] if key.namespace > 1]
    assert len(located) == abi.MAX_PLACE_DEVS  # /p63, the last, is matched by name only
    assert Prefix(0, f"/p{abi.MAX_PLACE_DEVS}/") in plan.maps["exec_places"]


def test_real_filesystems_mounted_below_a_place_are_located_too():
    mounts = parse_mountinfo("\n".join([
        "22 1 254:1 / / rw - ext4 /dev/vda1 rw",
        "26 22 0:26 / /run rw - tmpfs tmpfs rw",
        "27 26 0:27 / /run/user/1000 rw - tmpfs tmpfs rw",
        "28 26 0:4 net:[4026532] /run/netns/x rw - nsfs nsfs rw",
        "29 22 0:28 / /srv rw - tmpfs tmpfs rw",
    ]))
    plan = compile_policy(loads_policy(
        'version = 1\n[[rule]]\nid = "r1"\nkind = "exec"\nscope = "host"\ndirs = ["/run"]\n'), mounts=mounts)
    assert dict(plan.maps["place_devs"]) == {
        PlaceDev(kernel_dev(0, 26)): FsIndex(1),
        PlaceDev(kernel_dev(0, 27)): FsIndex(2),  # /run/user/1000: a tmpfs of its own, in /run
    }  # not nsfs (nothing runs from it), not /srv (not below /run)
    loc = abi.location_namespace
    located = {key: value for key, value in plan.maps["exec_places"].items() if key.namespace > 1}
    assert located == {
        Prefix(loc(0, 1), "/"): _place(1, 1, 1),
        Prefix(loc(0, 2), "/"): _place(1, 1, 1),
    }


def test_overlays_below_a_place_get_no_location_and_system_overlays_are_flagged():
    # a live system: / is an overlay whose layers lie in /run; /usr an
    # overlay of systemd-sysext; containerd mounts a container's root under
    # /run; an attacker's overlay at /srv/x. Only / and /usr are the host's.
    mounts = parse_mountinfo("\n".join([
        "22 1 0:30 / / rw - overlay overlay rw,lowerdir=/run/live/rootfs/fs.squashfs,upperdir=/run/live/overlay/rw",
        "26 22 0:26 / /run rw - tmpfs tmpfs rw",
        "27 26 7:0 / /run/live/rootfs/fs.squashfs ro - squashfs /dev/loop0 ro",
        "28 26 0:40 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw",
        "29 22 0:41 / /usr ro - overlay overlay ro",
        "30 22 0:42 / /srv/x rw - overlay overlay rw",
    ]))
    plan = compile_policy(loads_policy(
        'version = 1\n[[rule]]\nid = "r1"\nkind = "exec"\nscope = "host"\ndirs = ["/run", "/tmp"]\n'), mounts=mounts)
    assert dict(plan.maps["place_devs"]) == {
        PlaceDev(kernel_dev(0, 26)): FsIndex(1),  # /run
        PlaceDev(kernel_dev(0, 30)): FsIndex(2, system_overlay=True),  # / holds /tmp, and is the system
        PlaceDev(kernel_dev(7, 0)): FsIndex(3),  # a real filesystem below /run
        PlaceDev(kernel_dev(0, 41)): FsIndex(0, system_overlay=True),  # /usr: no place, judged by name
    }  # not containerd's root (an overlay below /run), not the overlay at /srv/x
    assert indexed_filesystems(plan.maps["place_devs"]) == 3
    flags = {key.dev: encode_value(value).value for key, value in plan.maps["place_devs"].items()}
    assert flags[kernel_dev(0, 30)] == 2 | abi.PLACE_DEV_SYSTEM_OVERLAY
    assert flags[kernel_dev(0, 41)] == abi.PLACE_DEV_SYSTEM_OVERLAY
    assert flags[kernel_dev(0, 26)] == 1
    assert abi.PLACE_DEV_SYSTEM_OVERLAY & abi.PLACE_DEV_INDEX_MASK == 0


def test_system_overlays_beyond_the_bound_are_left_out():
    lines = ["22 1 254:1 / / rw - ext4 /dev/vda1 rw"]
    lines += [f"{100 + n} 22 0:{100 + n} / /o{n:02} rw - overlay overlay rw" for n in range(abi.MAX_SYSTEM_OVERLAYS + 3)]
    plan = compile_policy(loads_policy(
        'version = 1\n[[rule]]\nid = "r1"\nkind = "exec"\nscope = "host"\ndirs = ["/tmp"]\n'),
        mounts=parse_mountinfo("\n".join(lines)))
    system = [value for value in plan.maps["place_devs"].values() if value.system_overlay]
    assert len(system) == abi.MAX_SYSTEM_OVERLAYS
    assert len(plan.maps["place_devs"]) <= abi.MAX_PLACE_DEVS + abi.MAX_SYSTEM_OVERLAYS


def test_exec_place_node_len_counts_utf8_bytes():
    plan = _exec('scope = "host"\ndirs = ["/tmp/\u00e9t\u00e9"]')
    assert dict(plan.maps["exec_places"]) == {Prefix(0, "/tmp/\u00e9t\u00e9/"): _place(11, 1, 1)}


def test_exec_unresolved_prefers_first_enforcing_rule_with_dirs_per_scope():
    plan = _exec(
        'filesystems = ["memfd"]',  # no dirs: never the fallback
        'mode = "audit"\ndirs = ["/run"]',
        'scope = "container"\ndirs = ["/tmp"]',
        'scope = "host"\nmode = "audit"\ndirs = ["/var/tmp"]',
    )
    targets = plan.maps["targets"]
    assert targets[TargetSlot(T.EXEC_UNRESOLVED, C)] == RuleNumber(3)
    assert targets[TargetSlot(T.EXEC_UNRESOLVED, H)] == RuleNumber(2)  # no enforcing rule: first
    only_memfd = _exec('filesystems = ["memfd"]')
    assert TargetSlot(T.EXEC_UNRESOLVED, H) not in only_memfd.maps["targets"]
    assert TargetSlot(T.EXEC_UNRESOLVED, C) not in only_memfd.maps["targets"]
    assert only_memfd.watch == int(abi.Watch.EXEC)
    assert dict(only_memfd.maps["exec_places"]) == {}


def test_allow_masks_propagate_along_prefixes():
    allow = '[allow]\nexe_dirs = ["/opt"]\nuid = [0]\ncgroup = ["/system.slice"]\n'
    plan = _exec(
        'dirs = ["/tmp"]\n[rule.allow]\nexe_dirs = ["/opt/agent"]\nexe = ["/opt/agent/bin/a", "/usr/bin/x"]\n'
        'uid = [0, 1000]\ncgroup = ["/system.slice/a.service"]',
        'dirs = ["/var/tmp"]\n[rule.allow]\nexe = ["/usr/bin/x", "/usr/bin/xy"]\nexe_dirs = ["/usr/bin"]',
        'dirs = ["/run"]\n[rule.allow]\ncgroup = ["/system.slice/ab"]',
        allow=allow,
    )
    everyone = (1 << 1) | (1 << 2) | (1 << 3)
    assert dict(plan.maps["allow_exe"]) == {
        Prefix(0, "/opt/"): RuleMask(everyone),
        Prefix(0, "/opt/agent/"): RuleMask(everyone | 1 << 1),
        Prefix(0, "/opt/agent/bin/a", exact=True): RuleMask(everyone | 1 << 1),
        Prefix(0, "/usr/bin/x", exact=True): RuleMask(1 << 1 | 1 << 2),
        Prefix(0, "/usr/bin/xy", exact=True): RuleMask(1 << 2),  # "/usr/bin/x\0" is no prefix of it
        Prefix(0, "/usr/bin/"): RuleMask(1 << 2),
    }
    assert dict(plan.maps["allow_cgroup"]) == {
        Prefix(0, "/system.slice/"): RuleMask(everyone),
        Prefix(0, "/system.slice/a.service/"): RuleMask(everyone | 1 << 1),
        Prefix(0, "/system.slice/ab/"): RuleMask(everyone | 1 << 3),  # "/a.service/" is not its prefix
    }
    assert dict(plan.maps["allow_uid"]) == {Uid(0): RuleMask(everyone), Uid(1000): RuleMask(1 << 1)}


def test_sysrq_and_release_agent_targets_per_scope_and_watch():
    plan = compile_policy(
        loads_policy(
            'version = 1\n[[rule]]\nid = "r"\nkind = "sysrq"\naccess = ["read"]\nfiles = ["trigger"]\n'
            'scope = "container"\n'
            '[[rule]]\nid = "w"\nkind = "sysrq"\nfiles = ["sysctl"]\nscope = "host"\n'
            '[[rule]]\nid = "ra"\nkind = "release_agent"\naccess = ["rename"]\n'
        )
    )
    assert dict(plan.maps["targets"]) == {
        TargetSlot(T.SYSRQ_TRIGGER_READ, C): RuleNumber(1),
        TargetSlot(T.SYSRQ_SYSCTL_WRITE, H): RuleNumber(2),
        TargetSlot(T.RELEASE_AGENT_RENAME, H): RuleNumber(3),
        TargetSlot(T.RELEASE_AGENT_RENAME, C): RuleNumber(3),
    }
    assert plan.watch == int(abi.Watch.PROC_READ | abi.Watch.PROC_WRITE | abi.Watch.RENAME)
    for name in ("exec_places", "exec_fstypes", "allow_exe", "allow_uid", "allow_cgroup"):
        assert dict(plan.maps[name]) == {}


def test_kernel_helper_targets_per_setting_and_scope_and_watch_per_filesystem():
    plan = compile_policy(
        loads_policy(
            'version = 1\n[[rule]]\nid = "core"\nkind = "kernel_helper"\nscope = "host"\n'
            'settings = ["core_pattern"]\n'
            '[[rule]]\nid = "binfmt"\nkind = "kernel_helper"\nsettings = ["binfmt_status", "binfmt_register"]\n'
        )
    )
    assert dict(plan.maps["targets"]) == {
        TargetSlot(T.HELPER_CORE_PATTERN, H): RuleNumber(1),
        TargetSlot(T.HELPER_BINFMT_REGISTER, H): RuleNumber(2),
        TargetSlot(T.HELPER_BINFMT_REGISTER, C): RuleNumber(2),
        TargetSlot(T.HELPER_BINFMT_STATUS, H): RuleNumber(2),
        TargetSlot(T.HELPER_BINFMT_STATUS, C): RuleNumber(2),
    }
    # no sysfs check without uevent_helper, no SysRq checks without SysRq rules
    assert plan.watch == int(abi.Watch.HELPER_SYSCTL | abi.Watch.HELPER_BINFMT)
    only_uevent = compile_policy(
        loads_policy('version = 1\n[[rule]]\nid = "u"\nkind = "kernel_helper"\nsettings = ["uevent_helper"]\n')
    )
    assert only_uevent.watch == int(abi.Watch.HELPER_SYSFS)


BASE = """version = 1
[allow]
uid = [0]
[[rule]]
id = "sysrq"
kind = "sysrq"
[rule.allow]
exe = ["/usr/lib/systemd/systemd-sysctl"]
[[rule]]
id = "exec"
kind = "exec"
dirs = ["/tmp"]
"""


def test_diff_rule_added():
    old = compile_policy(loads_policy(BASE))
    new = compile_policy(loads_policy(BASE + '[[rule]]\nid = "ra"\nkind = "release_agent"\naccess = ["write"]\n'))
    d = diff(old, new)
    assert d.watch_changed
    assert d.maps["rules"] == MapDiff(added={RuleIndex(3): RuleValue(True)}, changed={}, deleted=())
    assert d.maps["targets"] == MapDiff(
        added={TargetSlot(T.RELEASE_AGENT_WRITE, H): RuleNumber(3), TargetSlot(T.RELEASE_AGENT_WRITE, C): RuleNumber(3)},
        changed={},
        deleted=(),
    )
    # the global uid entry now covers rule 3 as well
    assert d.maps["allow_uid"] == MapDiff(added={}, changed={Uid(0): RuleMask(0b1110)}, deleted=())
    for name in ("exec_places", "exec_fstypes", "allow_exe", "allow_cgroup"):
        assert d.maps[name].is_empty(), name
    assert not d.is_empty()


def test_diff_rule_mode_flipped():
    old = compile_policy(loads_policy(BASE))
    new = compile_policy(loads_policy(BASE.replace('dirs = ["/tmp"]', 'dirs = ["/tmp"]\nmode = "audit"')))
    d = diff(old, new)
    assert not d.watch_changed
    assert d.maps["rules"] == MapDiff(added={}, changed={RuleIndex(2): RuleValue(False, EXEC_AND_MAP)}, deleted=())
    assert all(d.maps[name].is_empty() for name in POLICY_MAPS if name != "rules")
    # the only enforcing exec rule became audit: it stays the deep-path fallback
    assert new.maps["targets"][TargetSlot(T.EXEC_UNRESOLVED, H)] == RuleNumber(2)


def test_diff_allow_entry_removed_is_a_deleted_key():
    old = compile_policy(loads_policy(BASE))
    new = compile_policy(loads_policy(BASE.replace('[rule.allow]\nexe = ["/usr/lib/systemd/systemd-sysctl"]\n', "")))
    d = diff(old, new)
    assert d.maps["allow_exe"] == MapDiff(
        added={}, changed={}, deleted=(Prefix(0, "/usr/lib/systemd/systemd-sysctl", exact=True),)
    )
    assert all(d.maps[name].is_empty() for name in POLICY_MAPS if name != "allow_exe")
    assert diff(new, new).is_empty()


def test_compile_is_pure_and_deterministic():
    policy = load_policy(POLICIES / "strict.toml")
    assert compile_policy(policy) == compile_policy(policy)


def test_compile_refuses_contradictions_in_unvalidated_policies():
    import dataclasses

    policy = loads_policy(BASE)
    doubled = dataclasses.replace(policy, rules=policy.rules + (policy.rules[0],))
    with pytest.raises(ValueError, match="targets"):
        compile_policy(doubled)


def test_rule_info_fields():
    plan = compile_policy(loads_policy(BASE))
    assert plan.rule_info(1) == RuleInfo(
        index=1,
        id="sysrq",
        description=plan.rules[0].description,
        severity=Severity.CRITICAL,
        mitre="T1611",
        kind=RuleKind.SYSRQ,
        mode=Mode.ENFORCE,
    )
