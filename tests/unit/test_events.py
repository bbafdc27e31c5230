"""Ring-buffer record decoding and the JSON-lines reporter (no kernel)."""

from __future__ import annotations

import io
import json

import pytest

from enforcer import abi
from enforcer.containers import ContainerInfo
from enforcer.events import BootClock, Event, decode
from enforcer.plan import MapPlan, RuleInfo
from enforcer.policy import Mode, RuleKind, Severity
from enforcer.report import RecordClock, Reporter, default_limiter
from enforcer.sinks import JsonLinesSink

PLAN = MapPlan(
    maps={},
    watch=0,
    rules=(
        RuleInfo(1, "sysrq-write-host", "SysRq", Severity.CRITICAL, "T1611", RuleKind.SYSRQ, Mode.ENFORCE),
        RuleInfo(2, "exec-unusual-dir", "exec", Severity.HIGH, "T1059", RuleKind.EXEC, Mode.AUDIT),
        RuleInfo(3, "kernel-helpers", "helpers", Severity.CRITICAL, "T1611", RuleKind.KERNEL_HELPER, Mode.ENFORCE),
    ),
)

REQUIRED_FIELDS = {
    "time", "action", "rule", "severity", "mitre", "hook", "path", "access", "pid", "ppid",
    "uid", "gid", "comm", "exe", "cgroup", "mntns", "container", "boot_ns",
    "path_truncated", "exe_truncated", "cgroup_truncated",
}


def record(**fields) -> abi.EventRecord:
    raw = abi.EventRecord()
    for name, value in fields.items():
        setattr(raw, name, value)
    return raw


def test_decode_blocked_sysrq_write() -> None:
    raw = record(
        boot_ns=5_000_000_000, rule=1, pid=42, tid=43, ppid=1, uid=0, gid=0,
        flags=int(abi.EventFlag.CONTAINER), hook=int(abi.Hook.FILE_OPEN),
        access=int(abi.Access.WRITE), action=int(abi.Action.BLOCKED), mntns=4026532000,
        comm=b"sh", fstype=b"proc", path=b"/proc/sysrq-trigger", exe=b"/usr/bin/dash",
        cgroup=b"/system.slice/x.service", cgroup_id=77,
    )
    event = decode(raw, PLAN, BootClock(wall_minus_boot_ns=1_700_000_000_000_000_000))
    assert event.action == "blocked"
    assert event.rule == "sysrq-write-host"
    assert (event.severity, event.mitre) == ("critical", "T1611")
    assert event.hook == "file_open" and event.access == "write"
    assert event.path == "/proc/sysrq-trigger" and event.new_path is None
    assert (event.pid, event.tid, event.ppid) == (42, 43, 1)
    assert event.comm == "sh" and event.exe == "/usr/bin/dash"
    assert event.container == ContainerInfo(namespaced=True) and event.path_truncated is False
    assert event.boot_ns == 5_000_000_000
    assert event.match is None and event.setting is None
    assert event.time == "2023-11-14T22:13:25.000000Z"
    assert REQUIRED_FIELDS <= set(event.to_dict())


def test_decode_exec_audited_with_match_and_truncation() -> None:
    raw = record(
        rule=2, hook=int(abi.Hook.BPRM_CHECK_SECURITY), access=int(abi.Access.EXEC),
        action=int(abi.Action.AUDITED), match=int(abi.ExecMatch.UNRESOLVED),
        flags=int(abi.EventFlag.PATH_TRUNCATED | abi.EventFlag.CGROUP_TRUNCATED),
    )
    event = decode(raw, PLAN, BootClock(0))
    assert event.action == "audited"
    assert event.match == "unresolved"
    assert (event.path_truncated, event.exe_truncated, event.cgroup_truncated) == (True, False, True)
    assert event.container.namespaced is False


def test_decode_names_the_container_from_the_cgroup_path() -> None:
    cid = "ab" * 32
    raw = record(rule=1, flags=int(abi.EventFlag.CONTAINER), cgroup=f"/system.slice/docker-{cid}.scope".encode())
    event = decode(raw, PLAN, BootClock(0))
    assert event.container == ContainerInfo(namespaced=True, runtime="docker", id=cid)
    assert event.to_dict()["container"] == {"namespaced": True, "runtime": "docker", "id": cid, "pod_uid": None}


def test_decode_rename_reports_destination() -> None:
    raw = record(
        rule=1, hook=int(abi.Hook.INODE_RENAME), access=int(abi.Access.RENAME),
        action=int(abi.Action.BLOCKED), path=b"/x", new_path=b"/release_agent",
    )
    assert decode(raw, PLAN, BootClock(0)).new_path == "/release_agent"


def test_unknown_rule_number_is_reported_not_dropped() -> None:
    event = decode(record(rule=9, action=int(abi.Action.BLOCKED)), PLAN, BootClock(0))
    assert event.rule == "rule#9"


def test_invalid_utf8_in_paths_is_escaped() -> None:
    event = decode(record(rule=1, path=b"/tmp/\xff\xfe"), PLAN, BootClock(0))
    assert event.path == "/tmp/\\xff\\xfe"


def _event(pid: int = 1, path: str = "/proc/sysrq-trigger", exe: str = "/usr/bin/dash") -> Event:
    raw = record(rule=1, pid=pid, action=int(abi.Action.BLOCKED), path=path.encode(), exe=exe.encode())
    return decode(raw, PLAN, BootClock(0))



def _fixed_clock(monotonic) -> RecordClock:
    return RecordClock(wall_ns=lambda: 1_700_000_000_000_000_000 + int(monotonic() * 1e9),
                       monotonic=monotonic, boot_ns=lambda: 42)


def test_reporter_writes_one_json_object_per_line_each_timestamped(clock) -> None:
    out = io.StringIO()
    reporter = Reporter([JsonLinesSink(out)], default_limiter(clock=clock), _fixed_clock(clock))
    reporter.event(_event())
    reporter.lost(3)
    reporter.notice("started", policy="/p.toml")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["type"] == "event" and lines[0]["rule"] == "sysrq-write-host"
    assert lines[1] == {"type": "lost", "time": "2023-11-14T22:13:20.000000Z", "boot_ns": 42,
                        "count": 3, "reason": "ring buffer full"}
    assert lines[2] == {"type": "agent", "time": "2023-11-14T22:13:20.000000Z", "boot_ns": 42,
                        "level": "info", "message": "started", "policy": "/p.toml"}
    assert reporter.counts["lost"] == 3


def test_reporter_rate_limits_one_offender_across_fresh_pids(clock) -> None:
    # a shell loop: a new pid every attempt, the same executable and target
    out = io.StringIO()
    reporter = Reporter([JsonLinesSink(out)], default_limiter(burst=2, window_s=10.0, clock=clock), _fixed_clock(clock))
    for pid in range(100, 105):
        reporter.event(_event(pid=pid))
    reporter.event(_event(pid=200, path="/proc/sys/kernel/sysrq"))  # another target: another offender
    reporter.event(_event(pid=201, exe="/usr/bin/python3"))  # another executable: another offender
    clock.now = 11.0
    reporter.tick()  # the timer: the summary comes without a further event
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["type"], r.get("pid")) for r in records] == [
        ("event", 100), ("event", 101), ("event", 200), ("event", 201), ("suppressed", None)]
    summary = records[-1]
    assert (summary["rule"], summary["action"], summary["exe"], summary["path"], summary["count"]) == (
        "sysrq-write-host", "blocked", "/usr/bin/dash", "/proc/sysrq-trigger", 3)
    assert (summary["window_start"], summary["window_end"]) == (
        "2023-11-14T22:13:20.000000Z", "2023-11-14T22:13:31.000000Z")
    assert summary["coarse"] is False and summary["boot_ns"] == 42
    assert reporter.counts["events"] + reporter.counts["suppressed"] == 7


@pytest.mark.parametrize("boot_ns,expected", [(0, "1970-01-01T00:00:00.000000Z"), (1_500_000, "1970-01-01T00:00:00.001500Z")])
def test_boot_clock_formats_rfc3339(boot_ns: int, expected: str) -> None:
    assert BootClock(0).rfc3339(boot_ns) == expected


def test_reporter_flush_at_shutdown_summarises_the_open_window(clock) -> None:
    out = io.StringIO()
    reporter = Reporter.json_lines(out, burst=1, window_s=10.0, clock=clock)
    for _ in range(3):
        reporter.event(_event(pid=9))
    reporter.flush()
    last = json.loads(out.getvalue().splitlines()[-1])
    assert (last["type"], last["path"], last["count"]) == ("suppressed", "/proc/sysrq-trigger", 2)


@pytest.mark.parametrize(
    "fstype,path,setting",
    [
        (b"proc", b"/proc/sys/kernel/core_pattern", "core_pattern"),
        (b"proc", b"/var/lib/x/proc2/sys/kernel/modprobe", "modprobe"),
        (b"proc", b"/proc/sys/kernel/hotplug", "hotplug"),
        (b"sysfs", b"/sys/kernel/uevent_helper", "uevent_helper"),
        (b"binfmt_misc", b"/proc/sys/fs/binfmt_misc/register", "binfmt_register"),
        (b"binfmt_misc", b"/mnt/binfmt/status", "binfmt_status"),
        (b"proc", b"", None),  # the path walk failed: the setting is not guessed
    ],
)
def test_kernel_helper_events_name_the_setting(fstype: bytes, path: bytes, setting) -> None:
    raw = record(rule=3, hook=int(abi.Hook.FILE_OPEN), access=int(abi.Access.WRITE),
                 action=int(abi.Action.BLOCKED), fstype=fstype, path=path)
    event = decode(raw, PLAN, BootClock(0))
    assert event.rule == "kernel-helpers"
    assert event.setting == setting
    assert event.to_dict()["setting"] == setting


def test_only_kernel_helper_events_have_a_setting() -> None:
    raw = record(rule=1, hook=int(abi.Hook.FILE_OPEN), access=int(abi.Access.WRITE), fstype=b"proc",
                 path=b"/proc/sys/kernel/core_pattern")
    assert decode(raw, PLAN, BootClock(0)).setting is None


@pytest.mark.parametrize("lives_at,expected", [(b"/enftest/true", "/enftest/true"), (b"", None)])
def test_decode_exec_by_location_reports_where_the_file_lives(lives_at: bytes, expected) -> None:
    # The kernel fills new_path only when the location differs from the name.
    raw = record(
        rule=2, hook=int(abi.Hook.BPRM_CHECK_SECURITY), access=int(abi.Access.EXEC),
        action=int(abi.Action.BLOCKED), match=int(abi.ExecMatch.LOCATION),
        path=b"/var/lib/x/bind/true", new_path=lives_at,
    )
    event = decode(raw, PLAN, BootClock(0))
    assert (event.match, event.new_path) == ("location", expected)


def test_an_exec_by_name_never_carries_a_new_path() -> None:
    raw = record(rule=2, hook=int(abi.Hook.BPRM_CHECK_SECURITY), access=int(abi.Access.EXEC),
                 match=int(abi.ExecMatch.DIRECTORY), new_path=b"stale")
    assert decode(raw, PLAN, BootClock(0)).new_path is None


def test_the_journal_message_says_where_a_located_file_lives() -> None:
    from enforcer.sinks import human_message

    message = human_message({"type": "event", "action": "blocked", "access": "exec", "path": "/srv/bind/true",
                             "new_path": "/enftest/true", "match": "location", "comm": "sh", "pid": 7,
                             "exe": "/usr/bin/dash", "rule": "exec-unusual-dir"})
    assert message == ("blocked exec of /srv/bind/true (which lives at /enftest/true in its filesystem) "
                       "by sh[7] (/usr/bin/dash): rule exec-unusual-dir")
