"""The event path (decode -> enrichers -> reporter) and the agent state file."""

from __future__ import annotations

import dataclasses
import io
import json

from enforcer import abi
from enforcer.events import BootClock, Event
from enforcer.pipeline import EventPipeline
from enforcer.plan import MapPlan, RuleInfo
from enforcer.policy import Mode, RuleKind, Severity
from enforcer.report import Reporter
from enforcer.state import AgentState, read_state, write_state

RULE = RuleInfo(1, "sysrq", "SysRq", Severity.CRITICAL, "T1611", RuleKind.SYSRQ, Mode.ENFORCE)
OTHER = RuleInfo(1, "renumbered", "x", Severity.LOW, "T1059", RuleKind.EXEC, Mode.AUDIT)


class TagComm:
    """An enricher: returns a new Event, never mutates the one it got."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.seen = []

    def enrich(self, event: Event) -> Event:
        self.seen.append(event)
        return dataclasses.replace(event, comm=event.comm + self.suffix)


def _record() -> abi.EventRecord:
    raw = abi.EventRecord()
    raw.rule = 1
    raw.action = int(abi.Action.BLOCKED)
    raw.comm = b"sh"
    raw.path = b"/proc/sysrq-trigger"
    return raw


def test_records_are_decoded_with_the_current_plan_and_enriched_in_order() -> None:
    out = io.StringIO()
    plans = [MapPlan(maps={}, watch=0, rules=(RULE,))]
    first, second = TagComm("+a"), TagComm("+b")
    pipeline = EventPipeline(lambda: plans[-1], BootClock(0), Reporter.json_lines(out), [first, second])
    pipeline.on_record(_record())
    plans.append(MapPlan(maps={}, watch=0, rules=(OTHER,)))
    pipeline.on_record(_record())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["rule"], r["comm"]) for r in lines] == [("sysrq", "sh+a+b"), ("renumbered", "sh+a+b")]
    assert second.seen[0].comm == "sh+a" and first.seen[0].comm == "sh"


def test_state_file_round_trips_and_bad_files_read_as_unknown(tmp_path) -> None:
    state = AgentState(
        pid=42, policy="/etc/enforcer/policy.toml", allow_d=("/etc/enforcer/allow.d/10-x.toml",),
        mode_override="audit", instance="1-42", rules=(RULE,), updated="2026-11-23T21:00:00Z",
    )
    write_state(state, tmp_path)
    raw = json.loads((tmp_path / "status.json").read_text())
    assert raw["rules"][0]["mode"] == "enforce" and raw["allow_d"] == ["/etc/enforcer/allow.d/10-x.toml"]
    assert read_state(tmp_path) == state
    assert read_state(tmp_path / "missing") is None
    (tmp_path / "status.json").write_text('{"pid": 1}')
    assert read_state(tmp_path) is None
    (tmp_path / "status.json").write_text("{not json")
    assert read_state(tmp_path) is None
