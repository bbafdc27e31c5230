"""`enforcer events`: filtering, the journal's ENFORCER_RECORD, following a rotated file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from enforcer.cli import build_parser
import pytest

from enforcer.eventlog import (EventSourceError, RecordFilter, journal_records, journalctl_command,
                               normalize_since, read_file, show)
from enforcer.sinks import journal_fields

CID = "ab" * 32


def _event(rule="exec-unusual-dir", action="blocked", time="2026-11-24T01:00:00.000000Z", runtime=None,
           cid=None, namespaced=False, path="/tmp/x"):
    return {"type": "event", "time": time, "rule": rule, "action": action, "access": "exec", "path": path,
            "comm": "sh", "pid": 7, "exe": "/usr/bin/dash", "new_path": None,
            "container": {"namespaced": namespaced, "runtime": runtime, "id": cid, "pod_uid": None}}


RECORDS = [
    _event(),
    _event(rule="sysrq-write-host", action="audited", time="2026-11-24T02:00:00.000000Z"),
    _event(runtime="docker", cid=CID, namespaced=True, time="2026-11-24T03:00:00.000000Z"),
    {"type": "agent", "time": "2026-11-24T00:00:00.000000Z", "level": "info", "message": "started"},
    {"type": "suppressed", "time": "2026-11-24T04:00:00.000000Z", "rule": "exec-unusual-dir", "action": "blocked",
     "exe": "/usr/bin/dash", "path": "/tmp/x", "count": 9, "coarse": False,
     "window_start": "a", "window_end": "b"},
]


def _shown(wanted: RecordFilter, records=RECORDS) -> list:
    out = io.StringIO()
    show(records, wanted, True, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_default_shows_events_only() -> None:
    assert [r["type"] for r in _shown(RecordFilter())] == ["event"] * 3


def test_filters_by_rule_action_time_and_type() -> None:
    assert [r["rule"] for r in _shown(RecordFilter(rules=("sysrq-write-host",)))] == ["sysrq-write-host"]
    assert [r["action"] for r in _shown(RecordFilter(actions=("audited",)))] == ["audited"]
    since = normalize_since("2026-11-24T02:00:00Z")
    assert since == "2026-11-24T02:00:00.000000Z"
    assert [r["time"][11:13] for r in _shown(RecordFilter(since=since))] == ["02", "03"]
    assert [r["type"] for r in _shown(RecordFilter(types=("suppressed", "agent")))] == ["agent", "suppressed"]


def test_filters_by_container_id_prefix_runtime_or_host() -> None:
    assert [r["container"]["id"] for r in _shown(RecordFilter(container=CID[:12]))] == [CID]
    assert len(_shown(RecordFilter(container="docker"))) == 1
    assert len(_shown(RecordFilter(container="host"))) == 2


def test_human_lines_name_time_action_and_process() -> None:
    out = io.StringIO()
    show(RECORDS[:1], RecordFilter(), False, out)
    assert out.getvalue() == ("2026-11-24T01:00:00.000000Z  blocked exec of /tmp/x by sh[7] (/usr/bin/dash): "
                              "rule exec-unusual-dir\n")


def test_journal_entries_give_back_the_exact_records() -> None:
    lines = [json.dumps({k: v for k, v in journal_fields(r).items()}) for r in RECORDS]
    lines.insert(1, "not json")
    lines.insert(2, json.dumps({"MESSAGE": "a diagnostic line without a record"}))
    assert list(journal_records(lines)) == RECORDS


def test_journalctl_command_follows_narrows_by_time_and_keeps_long_fields() -> None:
    assert journalctl_command(True, "2026-11-24T01:00:00.000000Z") == [
        "journalctl", "--no-pager", "--all", "-o", "json", "SYSLOG_IDENTIFIER=enforcer",
        "--since", "2026-11-24 01:00:00.000000 UTC", "--follow"]


def test_a_followed_file_is_read_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1])[:20])  # a torn last line
    steps = []

    def sleep(_s: float) -> None:
        steps.append(len(steps))
        if len(steps) == 1:  # the agent finishes the line, then logrotate moves the file
            with open(path, "a") as handle:
                handle.write(json.dumps(RECORDS[1])[20:] + "\n")
            os.rename(path, tmp_path / "events.jsonl.1")
            path.write_text(json.dumps(RECORDS[2]) + "\n")

    records = list(read_file(path, follow=True, sleep=sleep, keep_going=lambda: len(steps) < 3))
    assert records == RECORDS[:3]


def test_cli_parses_filters() -> None:
    args = build_parser().parse_args(
        ["events", "--from", "/var/log/enforcer/events.jsonl", "-f", "--rule", "a", "--rule", "b",
         "--action", "blocked", "--container", "docker", "--since", "2026-11-24T00:00:00Z", "--json"])
    assert (args.source, args.follow, args.rule, args.action, args.container, args.json) == (
        "/var/log/enforcer/events.jsonl", True, ["a", "b"], ["blocked"], "docker", True)


@pytest.mark.parametrize("text,expected", [
    ("2026-11-24T03:00:00+02:00", "2026-11-24T01:00:00.000000Z"),
    ("2026-11-24 01:00", "2026-11-24T01:00:00.000000Z"),
])
def test_since_is_normalised_to_utc(text: str, expected: str) -> None:
    assert normalize_since(text) == expected


def test_a_bad_since_is_refused_with_an_example() -> None:
    with pytest.raises(EventSourceError, match="--since 'yesterday'"):
        normalize_since("yesterday")
