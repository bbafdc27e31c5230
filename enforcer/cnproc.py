"""The kernel's process-events connector (cn_proc): fork, exec, comm, exit.

Linux reports process events to netlink sockets of family NETLINK_CONNECTOR
that joined multicast group CN_IDX_PROC and sent PROC_CN_MCAST_LISTEN
(include/uapi/linux/cn_proc.h, connector.h). Root only (CAP_NET_ADMIN), and
only with CONFIG_PROC_EVENTS.

The socket is the standard library's (AF_NETLINK is a plain socket family
on Linux), not pyroute2's: Debian's pyroute2 0.7.2 has no connector module,
and its NetlinkSocket changed shape in 0.9 (PyPI's 0.9.7 has no
getsockname(), which this module needs for its port id: an agent installed
from PyPI failed to start the connector). The two small structs inside each
message (cn_msg, proc_event) are unpacked here with `struct`, which keeps the
parsing pure and testable with byte layouts built by hand.

Layout of one message (all native-endian, x86-64 little):

    nlmsghdr   len u32, type u16, flags u16, seq u32, pid u32       16 bytes
    cn_msg     idx u32, val u32, seq u32, ack u32, len u16, flags u16  20 bytes
    proc_event what u32, cpu u32, timestamp_ns u64, event_data union
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Iterator, List, Optional, Union

from enforcer.mainsignals import helper_threads_block_signals

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
NLMSG_ERROR = 2

# enum what (proc_event.what)
PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_COMM = 0x00000200
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_PROC_EVENT_HEAD = struct.Struct("=IIQ")
_TWO_IDS = struct.Struct("=II")
_FORK = struct.Struct("=IIII")
_COMM = struct.Struct("=II16s")


@dataclass(frozen=True)
class Fork:
    parent_pid: int
    parent_tgid: int
    child_pid: int
    child_tgid: int

    @property
    def new_process(self) -> bool:
        """A new process, not a new thread of its parent's process."""
        return self.child_pid == self.child_tgid


@dataclass(frozen=True)
class Exec:
    pid: int
    tgid: int


@dataclass(frozen=True)
class Comm:
    pid: int
    tgid: int
    comm: str


@dataclass(frozen=True)
class Exit:
    pid: int
    tgid: int

    @property
    def process_ended(self) -> bool:
        """The thread group leader's exit (a thread's exit ends nothing)."""
        return self.pid == self.tgid


ProcEvent = Union[Fork, Exec, Comm, Exit]


def listen_message(port: int, op: int = PROC_CN_MCAST_LISTEN) -> bytes:
    """The request that starts (or stops) the kernel sending process events."""
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, port) + cn


def parse(data: bytes) -> List[ProcEvent]:
    """Every fork, exec, comm and exit in one datagram (others are skipped)."""
    return list(_parse(data))


def _parse(data: bytes) -> Iterator[ProcEvent]:
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return  # malformed: stop rather than guess
        body = data[offset + _NLMSGHDR.size: offset + length]
        offset += (length + 3) & ~3  # NLMSG_ALIGN
        if kind != NLMSG_DONE or len(body) < _CN_MSG.size:
            continue
        idx, val, _seq, _ack, cn_len, _cn_flags = _CN_MSG.unpack_from(body)
        if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
            continue
        event = body[_CN_MSG.size: _CN_MSG.size + cn_len]
        parsed = _proc_event(event)
        if parsed is not None:
            yield parsed


def _proc_event(event: bytes) -> Optional[ProcEvent]:
    if len(event) < _PROC_EVENT_HEAD.size:
        return None
    what, _cpu, _timestamp = _PROC_EVENT_HEAD.unpack_from(event)
    data = event[_PROC_EVENT_HEAD.size:]
    if what == PROC_EVENT_FORK and len(data) >= _FORK.size:
        return Fork(*_FORK.unpack_from(data))
    if what == PROC_EVENT_EXEC and len(data) >= _TWO_IDS.size:
        return Exec(*_TWO_IDS.unpack_from(data))
    if what == PROC_EVENT_EXIT and len(data) >= _TWO_IDS.size:
        return Exit(*_TWO_IDS.unpack_from(data))
    if what == PROC_EVENT_COMM and len(data) >= _COMM.size:
        pid, tgid, comm = _COMM.unpack_from(data)
        return Comm(pid, tgid, comm.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"))
    return None


#: How long close() waits for the reader thread to end.
JOIN_S = 5.0


class ConnectorUnavailable(OSError):
    pass


#: setsockopt options (asm-generic/socket.h): SO_RCVBUFFORCE passes over
#: net.core.rmem_max, with CAP_NET_ADMIN (which joining the group needs anyway).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def open_connector(rcvbuf: int) -> socket.socket:
    """A netlink socket joined to the process events group, listening.

    Raises ConnectorUnavailable with the kernel's reason (EPERM without
    CAP_NET_ADMIN, EPROTONOSUPPORT without the connector)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
    except OSError as error:
        raise ConnectorUnavailable(error.errno, f"netlink connector socket: {error.strerror}") from None
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # capped at net.core.rmem_max
        sock.bind((0, CN_IDX_PROC))  # port id 0: the kernel picks one
        sock.sendto(listen_message(sock.getsockname()[0]), (0, 0))
    except OSError as error:
        sock.close()
        raise ConnectorUnavailable(error.errno, f"process events connector: {error.strerror}") from None
    return sock


class ProcessEventListener:
    """Reads process events on a thread of its own and hands each to `cache`
    (enforcer.proccache.ProcessCache): a short-lived process is read from
    /proc while it still exists, whatever the agent's main loop is doing."""

    def __init__(self, cache, rcvbuf: int = 4 << 20) -> None:
        self.cache = cache
        self._socket = open_connector(rcvbuf)
        self.overruns = 0  # the socket's buffer overflowed (ENOBUFS): events were missed
        self._stop = False
        self._stopped = False  # the connector failed for good: nothing more to read
        #: One reader at a time, whole messages applied under it: the thread,
        #: or sync() on the event path.
        self._lock = threading.Lock()
        #: close() writes here to wake the thread: it waits for nothing else
        #: (no timeout, so an idle agent's thread never wakes for nothing)
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="cn_proc", daemon=True)
        with helper_threads_block_signals():  # SIGHUP and the rest wake the main loop, not this thread
            self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._socket.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._stop and not self._stopped:
            poller.poll()
            with self._lock:
                self._drain()

    def sync(self) -> None:
        """Apply every process event the kernel has queued until now.

        The event path calls this before describing a process. The kernel
        queues a process's exec event before the process runs a single
        instruction of its new program, so whatever that program did is
        described after its exec is applied: never with the command line of
        the parent it was forked from (the thread alone could still be
        behind when the event is read)."""
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        """Read and apply what is queued, without blocking (lock held)."""
        while not self._stop and not self._stopped:
            try:
                data = self._socket.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as error:
                if self._stop:
                    return
                if error.errno == errno.ENOBUFS:
                    # the kernel dropped events: processes it told nobody
                    # about are read from /proc when their event is read
                    if self.overruns == 0:
                        log.warning("process events were lost (socket buffer full): some processes will be "
                                    "described from /proc at event time, or not at all if gone by then")
                    self.overruns += 1
                    continue
                log.warning("process events connector stopped: %s; process details now come from /proc", error)
                self._stopped = True
                return
            for event in parse(data):
                self._apply(event)

    def _apply(self, event: ProcEvent) -> None:
        if isinstance(event, Exec):
            self.cache.on_exec(event.tgid)
        elif isinstance(event, Fork):
            if event.new_process:
                self.cache.on_fork(event.parent_tgid, event.child_tgid)
        elif isinstance(event, Exit):
            if event.process_ended:
                self.cache.on_exit(event.tgid)
        # Comm: the kernel's event carries the comm it saw; nothing cached depends on it

    def close(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of earlier wake-ups: the thread wakes anyway
        self._thread.join(JOIN_S)
        try:
            self._socket.sendto(listen_message(self._socket.getsockname()[0], PROC_CN_MCAST_IGNORE), (0, 0))
        except OSError as error:
            # closing anyway: the kernel stops sending to a closed socket
            log.debug("process events connector: unsubscribing failed: %s", error)
        self._socket.close()
        if not self._thread.is_alive():  # else it may still poll them: left to the process's end
            os.close(self._wake_read)
            os.close(self._wake_write)


#: capabilities(7): joining the connector's process events group needs it.
CAP_NET_ADMIN = 12


def effective_capabilities(status_text: str) -> Optional[int]:
    """The CapEff mask of a /proc/PID/status text (None if it has none)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return None


def unavailable_reason(status_path: str = "/proc/self/status") -> Optional[str]:
    """Why the connector cannot be used here, before trying (None: try it)."""
    if os.geteuid() != 0:
        return "not root (the process events connector needs CAP_NET_ADMIN)"
    try:
        with open(status_path, encoding="ascii") as status:
            caps = effective_capabilities(status.read())
    except OSError:
        caps = None  # cannot tell: try, the bind says
    if caps is not None and not caps & (1 << CAP_NET_ADMIN):
        # a container granted only what loading BPF needs (the Kubernetes DaemonSet)
        return "no CAP_NET_ADMIN (the process events connector needs it)"
    return None
