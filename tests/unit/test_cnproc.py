"""The process-events connector protocol: real byte layouts of nlmsghdr +
struct cn_msg + struct proc_event, built here field by field as
include/uapi/linux/{netlink,connector,cn_proc}.h lay them out."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

import pytest

from enforcer import cnproc


def _proc_event(what: int, data: bytes, cpu: int = 1, timestamp_ns: int = 123_456_789) -> bytes:
    # struct proc_event { __u32 what; __u32 cpu; __u64 __attribute__((aligned(8))) timestamp_ns; union event_data; }
    return struct.pack("<IIQ", what, cpu, timestamp_ns) + data


def _message(event: bytes, idx: int = 1, val: int = 1, seq: int = 7, kind: int = 3) -> bytes:
    # struct cn_msg { struct cb_id { __u32 idx; __u32 val; } id; __u32 seq; __u32 ack; __u16 len; __u16 flags; }
    cn = struct.pack("<IIIIHH", idx, val, seq, 0, len(event), 0) + event
    # struct nlmsghdr { __u32 nlmsg_len; __u16 nlmsg_type; __u16 nlmsg_flags; __u32 nlmsg_seq; __u32 nlmsg_pid; }
    body = struct.pack("<IHHII", 16 + len(cn), kind, 0, seq, 0) + cn
    return body + b"\0" * (-len(body) % 4)


def test_fork_exec_comm_exit_are_parsed() -> None:
    fork = _message(_proc_event(0x1, struct.pack("<IIII", 100, 100, 201, 201)))
    thread = _message(_proc_event(0x1, struct.pack("<IIII", 100, 100, 202, 100)))
    exec_ = _message(_proc_event(0x2, struct.pack("<II", 201, 201)))
    comm = _message(_proc_event(0x200, struct.pack("<II16s", 201, 201, b"payload\0garbage")))
    # Linux 6.x exit_proc_event also carries the parent (parent_pid, parent_tgid): ignored
    exit_ = _message(_proc_event(0x80000000, struct.pack("<IIIIII", 201, 201, 0, 17, 100, 100)))
    events = cnproc.parse(fork + thread + exec_ + comm + exit_)
    assert events == [
        cnproc.Fork(100, 100, 201, 201), cnproc.Fork(100, 100, 202, 100),
        cnproc.Exec(201, 201), cnproc.Comm(201, 201, "payload"), cnproc.Exit(201, 201),
    ]
    assert events[0].new_process and not events[1].new_process
    assert events[4].process_ended and not cnproc.Exit(202, 201).process_ended


def test_other_events_other_connectors_and_errors_are_skipped() -> None:
    ack = _message(_proc_event(0x0, struct.pack("<I", 0)))  # PROC_EVENT_NONE: the listen acknowledgement
    uid = _message(_proc_event(0x4, struct.pack("<IIII", 5, 5, 0, 0)))
    other_connector = _message(_proc_event(0x2, struct.pack("<II", 9, 9)), idx=4)
    error = _message(_proc_event(0x2, struct.pack("<II", 9, 9)), kind=2)
    assert cnproc.parse(ack + uid + other_connector + error) == []


def test_truncated_or_malformed_data_stops_without_guessing() -> None:
    exec_ = _message(_proc_event(0x2, struct.pack("<II", 201, 201)))
    assert cnproc.parse(exec_[:-6]) == []  # nlmsg_len says more than arrived
    assert cnproc.parse(exec_ + b"\x03\x00") == [cnproc.Exec(201, 201)]  # trailing bytes too short for a header
    short = _message(_proc_event(0x1, struct.pack("<II", 1, 1)))  # a fork without its child
    assert cnproc.parse(short) == []
    zero_len = struct.pack("<IHHII", 0, 3, 0, 0, 0)
    assert cnproc.parse(zero_len + exec_) == []


def test_listen_message_is_what_the_kernel_expects() -> None:
    raw = cnproc.listen_message(port=4242)
    length, kind, flags, seq, port = struct.unpack_from("<IHHII", raw)
    assert (length, kind, flags, seq, port) == (len(raw), 3, 0, 0, 4242) and length == 16 + 20 + 4
    idx, val, _seq, _ack, cn_len, _flags = struct.unpack_from("<IIIIHH", raw, 16)
    assert (idx, val, cn_len) == (1, 1, 4)
    assert struct.unpack_from("<I", raw, 36) == (cnproc.PROC_CN_MCAST_LISTEN,)
    ignore = cnproc.listen_message(port=1, op=cnproc.PROC_CN_MCAST_IGNORE)
    assert struct.unpack_from("<I", ignore, 36) == (2,)


class _Recorder:
    def __init__(self) -> None:
        self.calls = []

    def on_exec(self, pid):
        self.calls.append(("exec", pid))

    def on_fork(self, parent, child):
        self.calls.append(("fork", parent, child))

    def on_exit(self, pid):
        self.calls.append(("exit", pid))


def test_listener_applies_process_events_and_ignores_threads() -> None:
    listener = cnproc.ProcessEventListener.__new__(cnproc.ProcessEventListener)  # no socket: _apply only
    listener.cache = _Recorder()
    for event in (cnproc.Fork(1, 1, 5, 5), cnproc.Fork(1, 1, 6, 1), cnproc.Exec(7, 5), cnproc.Comm(5, 5, "x"),
                  cnproc.Exit(6, 5), cnproc.Exit(5, 5)):
        listener._apply(event)
    assert listener.cache.calls == [("fork", 1, 5), ("exec", 5), ("exit", 5)]


class _Socket:
    """recv() gives each item in turn: bytes, or an OSError to raise; then
    nothing is queued (EAGAIN), as a non-blocking read of an empty socket."""

    def __init__(self, *items) -> None:
        self.items = list(items)
        self.reads = 0

    def recv(self, _size, flags=0):
        assert flags & socket.MSG_DONTWAIT, "the reader must never block while holding the lock"
        self.reads += 1
        if not self.items:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        item = self.items.pop(0)
        if isinstance(item, OSError):
            raise item
        return item


def _listener(*items) -> cnproc.ProcessEventListener:
    listener = cnproc.ProcessEventListener.__new__(cnproc.ProcessEventListener)  # no thread, no real socket
    listener.cache = _Recorder()
    listener.overruns = 0
    listener._stop = False
    listener._stopped = False
    listener._lock = threading.Lock()
    listener._socket = _Socket(*items)
    return listener


def test_sync_applies_everything_queued_counts_overruns_once_warned_and_goes_on(caplog) -> None:
    exec_ = _message(_proc_event(0x2, struct.pack("<II", 201, 201)))
    listener = _listener(OSError(errno.ENOBUFS, "No buffer space"), OSError(errno.ENOBUFS, "x"), exec_)
    with caplog.at_level("WARNING"):
        listener.sync()
    assert listener.overruns == 2 and listener.cache.calls == [("exec", 201)]
    assert sum("events were lost" in r.getMessage() for r in caplog.records) == 1
    listener.sync()  # nothing queued: one read, EAGAIN, nothing applied
    assert listener.cache.calls == [("exec", 201)] and listener._socket.reads == 5


def test_a_failed_connector_stops_reading_for_good(caplog) -> None:
    listener = _listener(OSError(errno.EBADF, "closed"), _message(_proc_event(0x2, struct.pack("<II", 7, 7))))
    with caplog.at_level("WARNING"):
        listener.sync()
        listener.sync()
    assert listener._stopped and listener.cache.calls == [] and listener._socket.reads == 1
    assert any("connector stopped" in r.getMessage() for r in caplog.records)


def test_without_cap_net_admin_the_connector_is_not_tried(tmp_path, monkeypatch) -> None:
    from enforcer import cnproc

    monkeypatch.setattr(cnproc.os, "geteuid", lambda: 0)
    status = tmp_path / "status"
    # the Kubernetes DaemonSet's set: CAP_SYS_PTRACE, CAP_SYS_RESOURCE, CAP_PERFMON, CAP_BPF
    status.write_text("Name:\tenforcer\nCapEff:\t000000c001080000\n")
    assert cnproc.unavailable_reason(str(status)) == "no CAP_NET_ADMIN (the process events connector needs it)"
    status.write_text("Name:\tenforcer\nCapEff:\t000001ffffffffff\n")  # root with every capability
    assert cnproc.unavailable_reason(str(status)) is None
    assert cnproc.unavailable_reason(str(tmp_path / "missing")) is None  # cannot tell: the bind will say


def test_the_reader_thread_waits_without_a_timeout_and_close_ends_it_at_once() -> None:
    """The real connector (root: joining its group needs CAP_NET_ADMIN). The
    thread sleeps until the kernel or close() wakes it: an idle agent's
    thread costs nothing, and close() does not wait out a poll timeout."""
    import subprocess
    import time

    if os.geteuid() != 0:
        pytest.skip("the process events connector needs CAP_NET_ADMIN")
    recorder = _Recorder()
    listener = cnproc.ProcessEventListener(recorder)
    try:
        child = subprocess.Popen(["/bin/true"])
        assert child.wait(30) == 0
        deadline = time.monotonic() + 5
        while ("exit", child.pid) not in recorder.calls and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        listener.close()
        closed_in = time.monotonic() - started
    assert not listener._thread.is_alive() and closed_in < 1.0, closed_in
    assert [call for call in recorder.calls if call[-1] == child.pid] == [
        ("fork", os.getpid(), child.pid), ("exec", child.pid), ("exit", child.pid)], recorder.calls
