"""`enforcer events`: read, follow and filter the records the agent wrote.

Sources: the systemd journal (what the packaged service writes; each entry
carries the whole record in ENFORCER_RECORD, read through `journalctl -o
json`), or a JSON-lines file written by the `file:` sink (followed across
logrotate's rename). Records are filtered here, after decoding, so both
sources filter the same way; `--json` prints the records untouched.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TextIO, Tuple

from enforcer.exitcodes import ExitCode
from enforcer.sinks import JOURNAL_SOCKET, human_message

Record = Mapping[str, object]

#: How often a followed file is checked for new lines or a rotation.
FOLLOW_POLL_S = 0.5


class EventSourceError(Exception):
    pass


@dataclass(frozen=True)
class RecordFilter:
    """Which records to show; an empty field matches everything."""

    types: Tuple[str, ...] = ("event",)
    rules: Tuple[str, ...] = ()
    actions: Tuple[str, ...] = ()
    container: str = ""  # a container id (or its prefix), a runtime name, or "host"
    since: str = ""  # RFC 3339, compared with the record's own time

    def matches(self, record: Record) -> bool:
        if self.types and record.get("type") not in self.types:
            return False
        if self.rules and record.get("rule") not in self.rules:
            return False
        if self.actions and record.get("action") not in self.actions:
            return False
        if self.since and str(record.get("time", "")) < self.since:
            return False
        return not self.container or self._container_matches(record.get("container"))

    def _container_matches(self, container: object) -> bool:
        if not isinstance(container, Mapping):
            return False  # records without one (summaries, agent notices) are not in any container
        if self.container == "host":
            return not container.get("namespaced")
        if self.container == container.get("runtime"):
            return True
        return bool(container.get("id")) and str(container.get("id")).startswith(self.container)


def parse_lines(lines: Iterable[str]) -> Iterator[Record]:
    """JSON records from JSON lines; other lines (a torn last line) are skipped."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "type" in record:
            yield record


def journal_records(journal_lines: Iterable[str]) -> Iterator[Record]:
    """Records from `journalctl -o json` lines: each entry's ENFORCER_RECORD."""
    for entry in _json_objects(journal_lines):
        raw = entry.get("ENFORCER_RECORD")
        if isinstance(raw, str):
            yield from parse_lines([raw])


def any_records(lines: Iterable[str]) -> Iterator[Record]:
    """Records from lines that are either: JSON records (stdout, an event file) or
    `journalctl -o json` entries (their ENFORCER_RECORD), mixed as they come."""
    for entry in _json_objects(lines):
        raw = entry.get("ENFORCER_RECORD")
        if isinstance(raw, str):
            yield from parse_lines([raw])
        elif "type" in entry:
            yield entry


def _json_objects(lines: Iterable[str]) -> Iterator[Mapping[str, object]]:
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def journalctl_command(follow: bool, since: str) -> list:
    # --all: journalctl prints fields over 4096 bytes as null without it, and
    # an event's ENFORCER_RECORD (ancestry, command lines) can be that long
    command = ["journalctl", "--no-pager", "--all", "-o", "json", "SYSLOG_IDENTIFIER=enforcer"]
    if since:
        # systemd.time(7): "2026-11-24 10:00:00.000000 UTC"; the records' own
        # time is compared again afterwards, so this only narrows the read
        command += ["--since", since.replace("T", " ").replace("Z", " UTC")]
    if follow:
        command.append("--follow")
    return command


def read_journal(follow: bool, since: str) -> Iterator[Record]:
    if not shutil.which("journalctl"):
        raise EventSourceError("journalctl is not installed: read an event file with --from FILE")
    with subprocess.Popen(journalctl_command(follow, since), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            yield from journal_records(proc.stdout)
        finally:
            proc.terminate()


def read_file(path: Path, follow: bool, sleep: Callable[[float], None] = time.sleep,
              keep_going: Callable[[], bool] = lambda: True) -> Iterator[Record]:
    """The file's records; with `follow`, then new ones as they are appended,
    reopening the path when logrotate replaced it."""
    try:
        handle = open(path, encoding="utf-8", errors="backslashreplace")
    except OSError as error:
        raise EventSourceError(f"{path}: {error.strerror}") from None
    try:
        pending = ""
        while True:
            chunk = handle.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split("\n")
                yield from parse_lines(complete)
                continue
            if not follow or not keep_going():
                return
            if _replaced(handle, path):
                handle.close()
                handle = open(path, encoding="utf-8", errors="backslashreplace")
                pending = ""
                continue
            sleep(FOLLOW_POLL_S)
    finally:
        handle.close()


def _replaced(handle: TextIO, path: Path) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False  # between rename and the agent's reopen: keep reading the old one


def normalize_since(text: str) -> str:
    """An RFC 3339 / ISO 8601 time as records write theirs (UTC, microseconds),
    so that records compare by text; a time without zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EventSourceError(f"--since {text!r}: not a time like 2026-11-24T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_record(record: Record) -> str:
    return f"{record.get('time', '')}  {human_message(record)}"


def show(records: Iterable[Record], wanted: RecordFilter, as_json: bool, out: TextIO) -> int:
    shown = 0
    for record in records:
        if not wanted.matches(record):
            continue
        out.write((json.dumps(record) if as_json else format_record(record)) + "\n")
        out.flush()
        shown += 1
    return shown


def events_command(args) -> int:  # argparse.Namespace
    try:
        wanted = RecordFilter(
            types=tuple(args.type or ("event",)),
            rules=tuple(args.rule or ()),
            actions=tuple(args.action or ()),
            container=args.container or "",
            since=normalize_since(args.since) if args.since else "",
        )
        if args.source == "journal":
            if not Path(JOURNAL_SOCKET).exists() and not args.follow:
                print(f"enforcer events: note: no journal socket at {JOURNAL_SOCKET}; reading what is stored",
                      file=sys.stderr)
            records = read_journal(args.follow, wanted.since)
        else:
            records = read_file(Path(args.source), args.follow)
        show(records, wanted, args.json, sys.stdout)
    except EventSourceError as error:
        print(f"enforcer events: {error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK


__all__: Sequence[str] = ["RecordFilter", "any_records", "events_command", "read_file", "journal_records", "show"]
