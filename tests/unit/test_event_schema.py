"""Records the reporter builds conform to the schema in docs/events.md, and
the schema's enumerations are exactly the code's."""

from __future__ import annotations

import io
import json

from enforcer import abi, containers
from enforcer.events import BootClock, decode
from enforcer.report import Reporter, default_limiter
from enforcer.sinks import JsonLinesSink
from harness.event_schema import record_schema, schema_problems

from test_events import PLAN, record



def _properties(kind: str) -> dict:
    return record_schema()["definitions"][kind]["properties"]


def test_schema_enumerations_match_the_code() -> None:
    event = _properties("event")
    assert set(event["hook"]["anyOf"][0]["enum"]) == {h.name.lower() for h in abi.Hook}
    assert set(event["access"]["anyOf"][0]["enum"]) == {a.name.lower() for a in abi.Access}
    assert set(event["match"]["enum"]) - {None} == {m.name.lower() for m in abi.ExecMatch if m}
    runtimes = set(event["container"]["properties"]["runtime"]["enum"]) - {None}
    assert runtimes == {r for r, _ in containers._COMPONENT_PATTERNS} | {"kubernetes"}


def test_every_record_type_the_reporter_builds_conforms(clock) -> None:
    out = io.StringIO()
    reporter = Reporter([JsonLinesSink(out)], default_limiter(burst=1, clock=clock))
    cid = "cd" * 32
    for pid in range(3):
        reporter.event(decode(record(
            rule=2, pid=pid, hook=int(abi.Hook.BPRM_CHECK_SECURITY), access=int(abi.Access.EXEC),
            action=int(abi.Action.AUDITED), match=int(abi.ExecMatch.DIRECTORY), path=b"/tmp/x",
            exe=b"/usr/bin/dash", comm=b"\xffsh", flags=int(abi.EventFlag.CONTAINER),
            cgroup=f"/system.slice/docker-{cid}.scope".encode()), PLAN, BootClock(0)))
    reporter.event(decode(record(rule=9, action=int(abi.Action.BLOCKED)), None, BootClock(0)))  # unattributed
    reporter.lost(4)
    reporter.notice("reload rejected, previous policy still in force", level="warning", error="x")
    reporter.flush()
    limiter = default_limiter(burst=1, clock=clock)
    limiter.max_keys = 1
    coarse = Reporter([JsonLinesSink(out)], limiter)
    for path in (b"/tmp/a", b"/tmp/b", b"/tmp/c"):
        coarse.event(decode(record(rule=1, action=int(abi.Action.BLOCKED), path=path), PLAN, BootClock(0)))
    coarse.flush()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {r["type"] for r in records} == {"event", "suppressed", "lost", "agent"}
    assert any(r["type"] == "suppressed" and r["coarse"] for r in records)
    assert schema_problems(records) == []


def test_the_schema_rejects_what_it_should() -> None:
    bad = [
        {"type": "lost", "time": "yesterday", "boot_ns": 1, "count": 1, "reason": "x"},
        {"type": "suppressed", "time": "2026-01-01T00:00:00.000000Z", "boot_ns": 1, "rule": "r",
         "action": "blocked", "exe": None, "path": None, "count": 0, "window_start": "2026-01-01T00:00:00.000000Z",
         "window_end": "2026-01-01T00:00:00.000000Z", "coarse": True},
        {"type": "agent", "time": "2026-01-01T00:00:00.000000Z", "boot_ns": 1, "message": "no level"},
    ]
    problems = schema_problems(bad)
    assert len(problems) == 3, problems
    assert "time" in problems[0] and "count" in problems[1] and "level" in problems[2]
