"""Event sinks: JSON lines, the append-only file with reopen, the journal's native protocol."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Dict

import pytest

from enforcer import sinks
from enforcer.sinks import JournalSink, JsonFileSink, SinkSpecError, open_sinks

EVENT = {
    "type": "event", "time": "2026-11-24T00:00:00.000000Z", "boot_ns": 5, "action": "blocked",
    "rule": "exec-unusual-dir", "severity": "high", "access": "exec", "path": "/tmp/x", "new_path": None,
    "pid": 42, "comm": "sh", "exe": "/usr/bin/dash", "container": {"namespaced": True, "runtime": "docker"},
    "path_truncated": False,
}


def decode_native(datagram: bytes) -> Dict[str, str]:
    """The journal's native protocol, read back as journald does."""
    fields, pos = {}, 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", datagram, end + 1)
            start = end + 9
            value = datagram[start:start + size]
            assert datagram[start + size:start + size + 1] == b"\n"
            pos = start + size + 1
        fields[key.decode()] = value.decode()
    return fields


def test_file_sink_appends_lines_0640_and_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonFileSink(path)
    sink.write(EVENT)
    assert stat.S_IMODE(path.stat().st_mode) & 0o777 == 0o640 & ~_umask()
    os.rename(path, tmp_path / "events.jsonl.1")  # logrotate
    sink.write({"type": "lost", "count": 1})  # still the old file until SIGUSR1
    sink.reopen()
    sink.write({"type": "lost", "count": 2})
    sink.close()
    old = [json.loads(line) for line in (tmp_path / "events.jsonl.1").read_text().splitlines()]
    new = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in old] == ["event", "lost"] and new == [{"type": "lost", "count": 2}]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_file_sink_names_the_file_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"event file .*/missing/events.jsonl"):
        JsonFileSink(tmp_path / "missing" / "events.jsonl")


def test_failed_reopen_keeps_writing_the_old_file(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    sink = JsonFileSink(directory / "e.jsonl")
    os.rename(directory, tmp_path / "gone")
    with pytest.raises(OSError):
        sink.reopen()
    sink.write({"type": "lost", "count": 1})
    assert (tmp_path / "gone" / "e.jsonl").read_text().count("\n") == 1


def test_journal_entry_has_structured_fields_priority_and_the_whole_record() -> None:
    fields = sinks.journal_fields(EVENT)
    assert fields["PRIORITY"] == "3"  # severity high -> err
    assert fields["MESSAGE_ID"] == sinks.MESSAGE_IDS["event"]
    assert fields["SYSLOG_IDENTIFIER"] == "enforcer"
    assert fields["ENFORCER_RULE"] == "exec-unusual-dir" and fields["ENFORCER_PID"] == "42"
    assert fields["ENFORCER_NEW_PATH"] == "" and fields["ENFORCER_PATH_TRUNCATED"] == "false"
    assert json.loads(fields["ENFORCER_CONTAINER"]) == {"namespaced": True, "runtime": "docker"}
    assert json.loads(fields["ENFORCER_RECORD"]) == EVENT
    assert fields["MESSAGE"] == "blocked exec of /tmp/x by sh[42] (/usr/bin/dash): rule exec-unusual-dir"


@pytest.mark.parametrize("record,priority", [
    ({"type": "event", "severity": "critical"}, "2"),
    ({"type": "event", "severity": "low"}, "5"),
    ({"type": "lost", "count": 1}, "3"),
    ({"type": "suppressed", "count": 1}, "5"),
    ({"type": "agent", "level": "warning", "message": "reload rejected"}, "4"),
    ({"type": "agent", "level": "info", "message": "started"}, "6"),
])
def test_priority_by_severity_and_record_type(record, priority: str) -> None:
    assert sinks.journal_fields(record)["PRIORITY"] == priority


def test_native_protocol_frames_values_with_newlines() -> None:
    datagram = sinks.encode_journal_entry({"MESSAGE": "two\nlines", "A": "b"})
    assert decode_native(datagram) == {"MESSAGE": "two\nlines", "A": "b"}
    assert datagram.startswith(b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n")


def test_journal_field_names_are_valid() -> None:
    assert sinks.journal_field_name("new_path") == "ENFORCER_NEW_PATH"
    assert sinks.journal_field_name("weird-key.x") == "ENFORCER_WEIRD_KEY_X"
    assert len(sinks.journal_field_name("x" * 100)) == 64


def test_journal_sink_sends_one_datagram_per_record(tmp_path: Path) -> None:
    address = str(tmp_path / "journal.socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    try:
        sink = JournalSink(address)
        sink.write(EVENT)
        sink.close()
        fields = decode_native(server.recv(65536))
    finally:
        server.close()
    assert fields["ENFORCER_PATH"] == "/tmp/x" and fields["PRIORITY"] == "3"


def test_journal_sink_says_which_socket_is_missing(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="journal socket .*nope"):
        JournalSink(str(tmp_path / "nope"))


@pytest.mark.parametrize("spec,message", [
    ("", "name at least one"),
    ("syslog", "unknown sink 'syslog'"),
    ("file:", "unknown sink 'file:'"),
    ("file:events.jsonl", "absolute path"),
    ("stdout,stdout", "named twice"),
])
def test_bad_sink_specs_are_refused_before_anything_opens(spec: str, message: str) -> None:
    with pytest.raises(SinkSpecError, match=message):
        open_sinks(spec, io.StringIO())


def test_stdout_and_file_together(tmp_path: Path) -> None:
    out = io.StringIO()
    opened = open_sinks(f"stdout, file:{tmp_path / 'e.jsonl'}", out)
    for sink in opened:
        sink.write(EVENT)
        sink.close()
    assert json.loads(out.getvalue()) == EVENT
    assert json.loads((tmp_path / "e.jsonl").read_text()) == EVENT
