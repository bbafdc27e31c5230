"""The event path (decode -> enrichers -> reporter) and the agent state file."""

from __future__ import annotations

import dataclasses
import io
import json

from enforcer import abi
from enforcer.events import BootClock, Event
from enforcer.pipeline import EventPipeline, LetThroughMarker
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


def _record(generation: int = 1, rule: int = 1, action: abi.Action = abi.Action.BLOCKED) -> abi.EventRecord:
    raw = abi.EventRecord()
    raw.rule = rule
    raw.generation = generation
    raw.action = int(action)
    raw.comm = b"sh"
    raw.path = b"/proc/sysrq-trigger"
    return raw


def _pipeline(tables, out, enrichers=()):
    return EventPipeline(tables.get, BootClock(0), Reporter.json_lines(out), enrichers)


def test_records_of_interleaved_generations_are_decoded_each_with_its_own_rule_table() -> None:
    out = io.StringIO()
    tables = {1: MapPlan(maps={}, watch=0, rules=(RULE,)), 2: MapPlan(maps={}, watch=0, rules=(OTHER,))}
    pipeline = _pipeline(tables, out)
    for generation in (1, 2, 1, 2, 2, 1):  # queued across a reload, in ring order
        pipeline.on_record(_record(generation))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["generation"], r["rule"], r["mode"]) for r in lines] == [
        (1, "sysrq", "enforce"), (2, "renumbered", "audit"), (1, "sysrq", "enforce"),
        (2, "renumbered", "audit"), (2, "renumbered", "audit"), (1, "sysrq", "enforce"),
    ]
    assert all(r["attributed"] for r in lines)


def test_a_record_of_an_unknown_generation_says_so_instead_of_guessing() -> None:
    out = io.StringIO()
    _pipeline({2: MapPlan(maps={}, watch=0, rules=(OTHER,))}, out).on_record(_record(generation=1))
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (line["rule"], line["mode"], line["attributed"], line["severity"]) == ("rule#1", None, False, "")


def test_enrichers_run_in_order_on_new_events() -> None:
    out = io.StringIO()
    first, second = TagComm("+a"), TagComm("+b")
    _pipeline({1: MapPlan(maps={}, watch=0, rules=(RULE,))}, out, [first, second]).on_record(_record())
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["comm"] == "sh+a+b"
    assert second.seen[0].comm == "sh+a" and first.seen[0].comm == "sh"


def test_let_throughs_of_enforcing_rules_are_marked_never_suppressed_and_counted() -> None:
    out = io.StringIO()
    audit_rule = dataclasses.replace(RULE, mode=Mode.AUDIT)
    tables = {1: MapPlan(maps={}, watch=0, rules=(audit_rule,)), 2: MapPlan(maps={}, watch=0, rules=(RULE,))}
    reporter = Reporter.json_lines(out, burst=2)
    pipeline = EventPipeline(tables.get, BootClock(0), reporter, [LetThroughMarker(lambda: tables[2])])
    for _ in range(5):  # let through under generation 1 (audit); the rule enforces now
        pipeline.on_record(_record(generation=1, action=abi.Action.AUDITED))
    for _ in range(5):  # blocked under generation 2: ordinary repeats, rate-limited
        pipeline.on_record(_record(generation=2, action=abi.Action.BLOCKED))
    for _ in range(3):  # unattributable let-throughs are never folded either
        pipeline.on_record(_record(generation=9, action=abi.Action.AUDITED))
    reporter.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    events = [r for r in lines if r["type"] == "event"]
    assert [(r["action"], r["let_through_enforce_rule"]) for r in events] == (
        [("audited", True)] * 5 + [("blocked", False)] * 2 + [("audited", True)] * 3
    )
    (summary,) = [r for r in lines if r["type"] == "suppressed"]
    assert (summary["action"], summary["count"]) == ("blocked", 3)
    assert reporter.counts == {"events": 10, "suppressed": 3, "lost": 0, "let_through_enforce_rule": 8}


def test_audited_events_of_audit_rules_are_rate_limited_apart_from_blocked_ones() -> None:
    out = io.StringIO()
    audit_rule = dataclasses.replace(RULE, mode=Mode.AUDIT)
    tables = {1: MapPlan(maps={}, watch=0, rules=(audit_rule,))}
    reporter = Reporter.json_lines(out, burst=1)
    pipeline = EventPipeline(tables.get, BootClock(0), reporter, [LetThroughMarker(lambda: tables[1])])
    for action in (abi.Action.AUDITED, abi.Action.AUDITED, abi.Action.BLOCKED):
        pipeline.on_record(_record(action=action))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["action"], r["let_through_enforce_rule"]) for r in events] == [("audited", False), ("blocked", False)]


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
