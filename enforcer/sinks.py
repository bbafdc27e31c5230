"""Where records go: JSON lines on a stream, an append-only file, the systemd journal.

A record is a flat JSON-able mapping with a "type" (docs/events.md has the
schema of each). Sinks only deliver; the Reporter (enforcer.report) decides
what is written. Events and diagnostics never share a stream: diagnostics go
to stderr through `logging`, events to the sinks chosen with `--events`.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Protocol, Sequence, TextIO

Record = Mapping[str, object]

#: The journal's native protocol socket (systemd.journal-fields(7), "native protocol").
JOURNAL_SOCKET = "/run/systemd/journal/socket"

#: MESSAGE_ID per record type, so `journalctl MESSAGE_ID=...` selects one
#: kind of record (random 128-bit ids, fixed forever; docs/events.md).
MESSAGE_IDS: Mapping[str, str] = {
    "event": "4f1c6e0d2a7b4c91b3e85d6a90f2c7e1",
    "suppressed": "9d2b7a31c04e4f6b8e1a5c3d7b9f0a24",
    "lost": "c3e9a1f75b2d4e08a6c4f19e2d7b3a56",
    "agent": "6a0f4d2c8e1b47a3b5d9c7e2f1a08b34",
}

#: syslog priorities (sd-daemon(3)) by rule severity, for events.
SEVERITY_PRIORITY: Mapping[str, int] = {"critical": 2, "high": 3, "medium": 4, "low": 5}
#: ... and by record type for the others; an agent record may carry a "level".
TYPE_PRIORITY: Mapping[str, int] = {"suppressed": 5, "lost": 3, "agent": 6}
LEVEL_PRIORITY: Mapping[str, int] = {"error": 3, "warning": 4, "info": 6}


class Sink(Protocol):
    """`write` must not raise for a well-formed record."""

    def write(self, record: Record) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


def to_json(record: Record) -> str:
    return json.dumps(record, sort_keys=False, separators=(", ", ": "))


@dataclass
class JsonLinesSink:
    """One JSON object per line, flushed at once (stdout in the foreground and in containers)."""

    stream: TextIO

    def write(self, record: Record) -> None:
        self.stream.write(to_json(record) + "\n")
        self.stream.flush()

    def reopen(self) -> None:
        """A stream is not ours to reopen."""

    def close(self) -> None:
        self.stream.flush()


@dataclass
class JsonFileSink:
    """JSON lines appended to a file; `reopen()` (SIGUSR1) follows a logrotate rename.

    The file is created 0640 (events name paths and command lines: not for
    every local user). Each record is one write(2) of a whole line with
    O_APPEND, so a reader never sees half a record.
    """

    path: Path
    _fd: Optional[int] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._fd = self._open()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as error:
            raise OSError(error.errno, f"event file {self.path}: {error.strerror}") from None

    def write(self, record: Record) -> None:
        if self._fd is None:
            raise ValueError(f"event file {self.path} is closed")
        os.write(self._fd, (to_json(record) + "\n").encode("utf-8", "backslashreplace"))

    def reopen(self) -> None:
        new_fd = self._open()  # first, so a failed reopen keeps the old file
        old_fd, self._fd = self._fd, new_fd
        if old_fd is not None:
            os.close(old_fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def journal_field_name(key: str) -> str:
    """ENFORCER_<KEY>: journal field names are [A-Z0-9_], not starting with '_'."""
    cleaned = "".join(c if c.isalnum() else "_" for c in key.upper())
    return ("ENFORCER_" + cleaned)[:64]


def _journal_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def journal_fields(record: Record) -> Dict[str, str]:
    """The journal entry for a record: MESSAGE, PRIORITY, MESSAGE_ID, SYSLOG_IDENTIFIER,
    one ENFORCER_* field per top-level key (nested values as JSON), and
    ENFORCER_RECORD with the whole record as JSON (what `enforcer events` reads)."""
    kind = str(record.get("type", ""))
    fields = {
        "MESSAGE": human_message(record),
        "PRIORITY": str(_priority(record)),
        "MESSAGE_ID": MESSAGE_IDS.get(kind, MESSAGE_IDS["agent"]),
        "SYSLOG_IDENTIFIER": "enforcer",
    }
    for key, value in record.items():
        fields[journal_field_name(key)] = _journal_value(value)
    fields["ENFORCER_RECORD"] = json.dumps(record, separators=(",", ":"))
    return fields


def _priority(record: Record) -> int:
    kind = record.get("type")
    if kind == "event":
        return SEVERITY_PRIORITY.get(str(record.get("severity", "")), 4)
    if kind == "agent" and "level" in record:
        return LEVEL_PRIORITY.get(str(record["level"]), 6)
    return TYPE_PRIORITY.get(str(kind), 6)


def human_message(record: Record) -> str:
    """One line an operator reads in `journalctl -u enforcer`."""
    kind = record.get("type")
    if kind == "event":
        who = f"{record.get('comm')}[{record.get('pid')}] ({record.get('exe') or 'no executable'})"
        target = record.get("path")
        if record.get("new_path") and record.get("match") == "location":
            target = f"{target} (which lives at {record.get('new_path')} in its filesystem)"
        elif record.get("new_path"):
            target = f"{target} -> {record.get('new_path')}"
        return f"{record.get('action')} {record.get('access')} of {target} by {who}" \
               f"{_lineage(record.get('ancestry'))}: rule {record.get('rule')}"
    if kind == "suppressed":
        what = f"rule {record.get('rule')}, {record.get('action')}"
        if not record.get("coarse"):
            what += f", {record.get('exe')} on {record.get('path')}"
        return f"{record.get('count')} repeated events not written ({what}) " \
               f"between {record.get('window_start')} and {record.get('window_end')}"
    if kind == "lost":
        return f"{record.get('count')} events lost: {record.get('reason')}"
    return str(record.get("message", kind))


#: Ancestors named in a human message; the record has them all (ENFORCER_ANCESTRY).
MESSAGE_ANCESTORS = 4


def _lineage(ancestry: object) -> str:
    """ ", under loop[41] < sh[40] < service[39] < ...": the first parents, for people."""
    if not isinstance(ancestry, list) or not ancestry:
        return ""
    names = [f"{a.get('comm')}[{a.get('pid')}]" for a in ancestry[:MESSAGE_ANCESTORS] if isinstance(a, dict)]
    more = " < ..." if len(ancestry) > MESSAGE_ANCESTORS else ""
    return ", under " + " < ".join(names) + more


def encode_journal_entry(fields: Mapping[str, str]) -> bytes:
    """The native protocol: KEY=value lines; a value with a newline is sent
    as KEY, newline, its length (64-bit little endian), the bytes, newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalSink:
    """Native journal entries over journald's datagram socket.

    Entries are small (a record is a few KiB at most), far below the socket's
    datagram limit, so the memfd path of the protocol is not needed.
    """

    def __init__(self, address: str = JOURNAL_SOCKET) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.connect(address)
        except OSError as error:
            self._socket.close()
            raise OSError(error.errno, f"journal socket {address}: {error.strerror}") from None

    def write(self, record: Record) -> None:
        self._socket.send(encode_journal_entry(journal_fields(record)))

    def reopen(self) -> None:
        """journald keeps its socket across restarts; nothing to reopen."""

    def close(self) -> None:
        self._socket.close()


#: `--events` names: "stdout", "journal", "file:PATH".
SINK_NAMES = ("stdout", "journal", "file:PATH")


class SinkSpecError(ValueError):
    pass


def open_sinks(spec: str, stdout: TextIO) -> List[Sink]:
    """Sinks for a comma-separated `--events` value; every name checked before any is opened."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise SinkSpecError("--events: name at least one of " + ", ".join(SINK_NAMES))
    for name in names:
        if name not in ("stdout", "journal") and not (name.startswith("file:") and len(name) > 5):
            raise SinkSpecError(f"--events: unknown sink {name!r}; use " + ", ".join(SINK_NAMES))
        if name.startswith("file:") and not Path(name[5:]).is_absolute():
            raise SinkSpecError(f"--events: {name!r}: the file must be an absolute path")
    if len(set(names)) != len(names):
        raise SinkSpecError(f"--events: a sink is named twice in {spec!r}")
    sinks: List[Sink] = []
    try:
        for name in names:
            if name == "stdout":
                sinks.append(JsonLinesSink(stdout))
            elif name == "journal":
                sinks.append(JournalSink())
            else:
                sinks.append(JsonFileSink(Path(name[5:])))
    except OSError:
        for sink in sinks:
            sink.close()
        raise
    return sinks


__all__: Sequence[str] = ["Sink", "JsonLinesSink", "JsonFileSink", "JournalSink", "open_sinks", "Record"]
