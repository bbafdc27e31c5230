"""Ring-buffer records -> Event: decoded, enriched with the rule's metadata.

Pure: no kernel access. The clock conversion takes the two clock readings as
arguments so that it can be tested.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

from enforcer import abi
from enforcer.containers import ContainerInfo, identify
from enforcer.kinds import KINDS
from enforcer.plan import MapPlan, RuleInfo


#: Where an ancestor's or the acting process's exe and cmdline came from:
#: "connector": the agent's cache, filled when the process executed (the
#: kernel's process-events connector told it), so it holds even for a process
#: gone before the event was read; "proc": /proc read when the event was
#: read, the process matched by pid and start time; None: not known (the
#: process was gone, or its pid now belongs to another process).
DETAILS_SOURCES = ("connector", "proc")


@dataclass(frozen=True)
class ProcessFacts:
    """exe and command line of one process, as user space could learn them."""

    exe: Optional[str] = None  # None: not known
    cmdline: Optional[Tuple[str, ...]] = None  # arguments; None: not known
    cmdline_truncated: bool = False  # the command line was longer than the agent keeps
    source: Optional[str] = None  # one of DETAILS_SOURCES, None when nothing is known

    def to_dict(self) -> Dict[str, Any]:
        return {"exe": self.exe, "cmdline": list(self.cmdline) if self.cmdline is not None else None,
                "cmdline_truncated": self.cmdline_truncated, "details": self.source}


UNKNOWN = ProcessFacts()


@dataclass(frozen=True)
class Ancestor:
    """A process above the acting one, as the kernel saw it at the decision."""

    pid: int
    comm: str
    start_ns: Optional[int]  # start time, ns since boot (None: the kernel lacks start_boottime)
    facts: ProcessFacts = UNKNOWN

    def to_dict(self) -> Dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "start_ns": self.start_ns, **self.facts.to_dict()}


@dataclass(frozen=True)
class TamperTarget:
    """What a tamper event aimed at: one of enforcer's BPF objects (with its
    kernel id, as bpftool shows it), its pins, or the agent process."""

    object: str  # "map" | "program" | "link" | "pin" | "agent"
    id: Optional[int] = None  # map, program or link id
    signal: Optional[str] = None  # signal sent to the agent, e.g. "SIGKILL" ("signal 40" when unnamed)
    ptrace_mode: Optional[int] = None  # PTRACE_MODE_* bits asked for
    limit: Optional[str] = None  # resource limit set on the agent, e.g. "RLIMIT_CPU"
    nice: Optional[int] = None  # nice value set on the agent (task_setnice)


#: Object kinds of tamper events by hook (the pin hooks and the agent hooks by access).
_OBJECT_OF_HOOK = {abi.Hook.BPF_MAP: "map", abi.Hook.BPF_PROG: "program", abi.Hook.BPF: "link"}


#: Linux's RLIMIT_* numbers (include/uapi/asm-generic/resource.h; x86, arm64 and the rest alike).
_RLIMITS = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS",
            "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")


def _limit_name(number: int) -> str:
    return f"RLIMIT_{_RLIMITS[number]}" if number < len(_RLIMITS) else f"limit {number}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tamper(record: abi.EventRecord) -> Optional[TamperTarget]:
    if not record.flags & abi.EventFlag.TAMPER:
        return None
    if record.access == abi.Access.OBTAIN:
        return TamperTarget(_OBJECT_OF_HOOK.get(record.hook, "object"), id=record.detail)
    if record.access == abi.Access.SIGNAL:
        return TamperTarget("agent", signal=_signal_name(record.detail))
    if record.access == abi.Access.TRACE:
        return TamperTarget("agent", ptrace_mode=record.detail)
    if record.access == abi.Access.LIMIT:
        return TamperTarget("agent", limit=_limit_name(record.detail))
    if record.access == abi.Access.SCHEDULE:
        if record.hook == abi.Hook.TASK_SETNICE:  # the kernel's int, carried in a u32
            return TamperTarget("agent", nice=record.detail - (1 << 32) if record.detail >= 1 << 31 else record.detail)
        return TamperTarget("agent")
    # an entry of the pin directory (on a bpffs) or of the policy directory (never on one)
    return TamperTarget("pin" if record.fstype == b"bpf" else "policy")


@dataclass(frozen=True)
class Event:
    """One blocked or audited action, as reported to the operator."""

    time: str  # RFC 3339, UTC
    boot_ns: int  # the kernel's CLOCK_BOOTTIME at the decision (orders events exactly)
    action: str  # what the kernel did: "blocked" | "audited" (let through, reported)
    rule: str  # id of the rule that decided; "rule#N" when the record cannot be attributed
    mode: Optional[str]  # that rule's mode when it decided: "enforce" | "audit"; None if unattributed
    generation: int  # policy generation that decided (enforcer status shows the current one)
    attributed: bool  # False: the deciding generation's rule table is unknown to this agent
    severity: str
    mitre: str
    hook: str
    access: str  # read | write | rename | exec
    path: str
    new_path: Optional[str]  # rename destination; the value of a mount parameter
    match: Optional[str]  # exec only: directory | filesystem | memfd | unresolved
    #: kernel_helper only: the setting written (core_pattern, binfmt_register...).
    #: Not the value: it is written after open(2), where the decision is made.
    setting: Optional[str]
    #: tamper only: what of enforcer the action aimed at (None for other kinds)
    tamper: Optional["TamperTarget"]
    fstype: str
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    comm: str
    exe: str
    cgroup: str
    cgroup_id: int
    mntns: int
    container: ContainerInfo
    path_truncated: bool  # path (or new_path) cut short: too long, or deeper than the walk bound
    exe_truncated: bool
    cgroup_truncated: bool
    description: str
    #: let through although the rule (as the agent now runs it) enforces: it was
    #: decided in audit mode before a switch to enforce, or cannot be attributed.
    #: Set by the pipeline; such events are never folded away by rate limiting.
    let_through_enforce_rule: bool = False
    #: who did it (kernel): the acting process's start time, audit login, and
    #: the processes above it, parent first (abi.ANCESTRY_MAX at most)
    start_ns: Optional[int] = None
    loginuid: Optional[int] = None  # None: the kernel has no audit login; 4294967295: unset
    sessionid: Optional[int] = None
    ancestry: Tuple[Ancestor, ...] = ()
    ancestry_truncated: bool = False  # more processes above the last one named
    #: who did it (user space): the acting process's exe and command line
    facts: ProcessFacts = field(default=UNKNOWN)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        facts = out.pop("facts")
        del facts  # flattened below, in the record's own words
        out.update({
            "cmdline": self.facts.to_dict()["cmdline"],
            "cmdline_truncated": self.facts.cmdline_truncated,
            "details": self.facts.source,
            "ancestry": [a.to_dict() for a in self.ancestry],
        })
        return out


@dataclass(frozen=True)
class BootClock:
    """Maps CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns) to wall time."""

    wall_minus_boot_ns: int

    @classmethod
    def now(cls) -> "BootClock":
        return cls(time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    def rfc3339(self, boot_ns: int) -> str:
        return rfc3339_ns(boot_ns + self.wall_minus_boot_ns)


def rfc3339_ns(wall_ns: int) -> str:
    """Wall-clock nanoseconds since the epoch as RFC 3339 UTC with microseconds."""
    stamp = datetime.fromtimestamp(wall_ns // 1_000_000_000, tz=timezone.utc)
    micros = (wall_ns % 1_000_000_000) // 1000
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


#: Hooks whose records carry a second string: the rename destination, or the
#: value of a mount parameter.
_HOOKS_WITH_NEW_PATH = (abi.Hook.INODE_RENAME, abi.Hook.FS_CONTEXT_PARSE_PARAM)


def _new_path(record: abi.EventRecord) -> Optional[str]:
    """The record's second string: a rename destination, a mount parameter's
    value, or where an exec'd file lives (match "location") when the kernel
    found that to differ from its name (it leaves the string empty otherwise)."""
    if record.hook in _HOOKS_WITH_NEW_PATH:
        return _text(record.new_path)
    if record.match == abi.ExecMatch.LOCATION:
        return _text(record.new_path) or None
    return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _setting(info: Optional[RuleInfo], path: str, fstype: str) -> Optional[str]:
    setting_of = KINDS[info.kind].setting_of if info else None
    return setting_of(path, fstype) if setting_of else None


def _ancestry(record: abi.EventRecord, start_known: bool) -> Tuple[Ancestor, ...]:
    count = min(record.ancestry_len, abi.ANCESTRY_MAX)
    return tuple(
        Ancestor(pid=a.pid, comm=_text(a.comm), start_ns=a.start_ns if start_known else None)
        for a in record.ancestors[:count])


def decode(record: abi.EventRecord, plan: Optional[MapPlan], clock: BootClock) -> Event:
    """`plan` is the policy of the record's generation (None: unknown, reported as unattributed)."""
    info: Optional[RuleInfo] = None
    if plan is not None:
        try:
            info = plan.rule_info(record.rule)
        except KeyError:
            info = None  # a number the generation's policy does not have: report, do not guess
    flags = abi.EventFlag(record.flags)
    try:
        hook = abi.Hook(record.hook).name.lower()  # the LSM hook's own name
    except ValueError:
        hook = f"hook#{record.hook}"
    try:
        access = abi.Access(record.access).name.lower()
    except ValueError:
        access = f"access#{record.access}"
    match = abi.ExecMatch(record.match).name.lower() if record.match else None
    path = _text(record.path)
    fstype = _text(record.fstype)
    return Event(
        time=clock.rfc3339(record.boot_ns),
        boot_ns=record.boot_ns,
        action="blocked" if record.action == abi.Action.BLOCKED else "audited",
        rule=info.id if info else f"rule#{record.rule}",
        mode=info.mode.value if info else None,
        generation=record.generation,
        attributed=info is not None,
        severity=info.severity.value if info else "",
        mitre=info.mitre if info else "",
        hook=hook,
        access=access,
        path=path,
        new_path=_new_path(record),
        match=match,
        setting=_setting(info, path, fstype),
        tamper=_tamper(record),
        fstype=fstype,
        pid=record.pid,
        tid=record.tid,
        ppid=record.ppid,
        uid=record.uid,
        gid=record.gid,
        comm=_text(record.comm),
        exe=_text(record.exe),
        cgroup=_text(record.cgroup),
        cgroup_id=record.cgroup_id,
        mntns=record.mntns,
        container=identify(_text(record.cgroup), namespaced=bool(flags & abi.EventFlag.CONTAINER)),
        path_truncated=bool(flags & abi.EventFlag.PATH_TRUNCATED),
        exe_truncated=bool(flags & abi.EventFlag.EXE_TRUNCATED),
        cgroup_truncated=bool(flags & abi.EventFlag.CGROUP_TRUNCATED),
        description=info.description if info else "",
        start_ns=record.start_ns if flags & abi.EventFlag.START_KNOWN else None,
        loginuid=record.loginuid if flags & abi.EventFlag.LOGIN_KNOWN else None,
        sessionid=record.sessionid if flags & abi.EventFlag.LOGIN_KNOWN else None,
        ancestry=_ancestry(record, bool(flags & abi.EventFlag.START_KNOWN)),
        ancestry_truncated=bool(flags & abi.EventFlag.ANCESTRY_TRUNCATED),
    )
