"""The policy model: what an operator asked for, validated, immutable.

Produced by `enforcer.parse`, consumed by `enforcer.compile`. No I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Tuple, Union

from enforcer.policyfile.problems import PolicyProblem


class Mode(str, enum.Enum):
    ENFORCE = "enforce"  # deny in the kernel and report "blocked"
    AUDIT = "audit"  # never deny; report "audited" for what would have been denied


class Scope(str, enum.Enum):
    ALL = "all"
    HOST = "host"  # tasks in the initial mount namespace
    CONTAINER = "container"  # tasks in any other mount namespace


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RuleKind(str, enum.Enum):
    """Each kind has its spec (keys, checks, map contribution, explanation) in enforcer.kinds."""

    SYSRQ = "sysrq"
    RELEASE_AGENT = "release_agent"
    EXEC = "exec"
    KERNEL_HELPER = "kernel_helper"
    TAMPER = "tamper"


class SysrqAccess(str, enum.Enum):
    WRITE = "write"
    READ = "read"


class ExecAccess(str, enum.Enum):
    EXEC = "exec"  # execve(2) of the file (and an interpreter's AT_EXECVE_CHECK)
    MAP = "map"  # the file mapped executable: mmap/mprotect with PROT_EXEC (ld.so, dlopen, LD_PRELOAD)


class SysrqFile(str, enum.Enum):
    TRIGGER = "trigger"  # /proc/sysrq-trigger
    SYSCTL = "sysctl"  # /proc/sys/kernel/sysrq


class ReleaseAgentAccess(str, enum.Enum):
    WRITE = "write"  # open for writing or with O_TRUNC, truncate(2)
    RENAME = "rename"  # rename to or from the name release_agent, any filesystem
    MOUNT = "mount"  # release_agent as a cgroup v1 mount parameter: mount(2), remount, fsconfig(2)


class KernelHelperSetting(str, enum.Enum):
    """A kernel setting that names a program the kernel itself runs as root on the host."""

    CORE_PATTERN = "core_pattern"  # /proc/sys/kernel/core_pattern ("|program" runs on every crash)
    MODPROBE = "modprobe"  # /proc/sys/kernel/modprobe (run to load a module on demand)
    UEVENT_HELPER = "uevent_helper"  # /sys/kernel/uevent_helper (run on every uevent)
    HOTPLUG = "hotplug"  # /proc/sys/kernel/hotplug (the same setting, as a sysctl)
    BINFMT_REGISTER = "binfmt_register"  # register of any binfmt_misc mount (adds an interpreter)
    BINFMT_STATUS = "binfmt_status"  # status of any binfmt_misc mount (enables or flushes)


class TamperObject(str, enum.Enum):
    """What of enforcer itself a tamper rule protects."""

    BPF = "bpf"  # fds of its BPF maps, programs and links (by id or by pin): bpftool map update, prog dump...
    PINS = "pins"  # unlink, rmdir, rename under /sys/fs/bpf/enforcer
    AGENT = "agent"  # signals to the agent process (but 0), ptrace attach to it, its limits and scheduling
    POLICY = "policy"  # writes, creations, renames and removals in the policy directory (/etc/enforcer)


#: The pseudo filesystem name that stands for anonymous files: memfd_create(2)
#: and other unlinked files on shared-memory filesystems, executed by fd.
MEMFD = "memfd"


@dataclass(frozen=True)
class Allowlist:
    """Who may do what a rule denies. Matched against the acting task."""

    exe: Tuple[str, ...] = ()  # exact executable paths
    exe_dirs: Tuple[str, ...] = ()  # executables anywhere below these directories
    uid: Tuple[int, ...] = ()
    cgroup: Tuple[str, ...] = ()  # cgroup v2 paths; covers the cgroup and its descendants

    def merged(self, other: "Allowlist") -> "Allowlist":
        """Union, keeping first-seen order and dropping duplicates."""

        def union(a: tuple, b: tuple) -> tuple:
            return tuple(dict.fromkeys(a + b))

        return Allowlist(
            exe=union(self.exe, other.exe),
            exe_dirs=union(self.exe_dirs, other.exe_dirs),
            uid=union(self.uid, other.uid),
            cgroup=union(self.cgroup, other.cgroup),
        )

    def is_empty(self) -> bool:
        return not (self.exe or self.exe_dirs or self.uid or self.cgroup)


@dataclass(frozen=True)
class RuleMeta:
    """What every rule has, whatever its kind; all of it appears in events."""

    id: str
    description: str
    severity: Severity
    mitre: str  # ATT&CK technique, e.g. "T1611"
    mode: Optional[Mode]  # None: inherit the policy's mode
    scope: Scope
    allow: Allowlist


@dataclass(frozen=True)
class SysrqRule:
    meta: RuleMeta
    access: FrozenSet[SysrqAccess]
    files: FrozenSet[SysrqFile]
    kind: RuleKind = field(default=RuleKind.SYSRQ, init=False)


@dataclass(frozen=True)
class ReleaseAgentRule:
    meta: RuleMeta
    access: FrozenSet[ReleaseAgentAccess]
    kind: RuleKind = field(default=RuleKind.RELEASE_AGENT, init=False)


@dataclass(frozen=True)
class ExecDir:
    path: str  # absolute, normalised, no trailing slash (except "/")
    recursive: bool = True


@dataclass(frozen=True)
class ExecRule:
    meta: RuleMeta
    dirs: Tuple[ExecDir, ...]
    filesystems: FrozenSet[str]  # kernel filesystem type names, without MEMFD
    memfd: bool
    exclude: Tuple[str, ...]  # places (recursive) this rule never applies to
    access: FrozenSet[ExecAccess] = frozenset(ExecAccess)
    kind: RuleKind = field(default=RuleKind.EXEC, init=False)


@dataclass(frozen=True)
class KernelHelperRule:
    meta: RuleMeta
    settings: FrozenSet[KernelHelperSetting]
    kind: RuleKind = field(default=RuleKind.KERNEL_HELPER, init=False)


@dataclass(frozen=True)
class TamperRule:
    meta: RuleMeta
    protect: FrozenSet[TamperObject]
    kind: RuleKind = field(default=RuleKind.TAMPER, init=False)


Rule = Union[SysrqRule, ReleaseAgentRule, ExecRule, KernelHelperRule, TamperRule]


@dataclass(frozen=True)
class Policy:
    source: str  # file the policy came from, for messages
    version: int
    mode: Mode
    allow: Allowlist  # applies to every rule
    rules: Tuple[Rule, ...]
    allow_sources: Tuple[str, ...] = ()  # allow.d files merged in, in order
    #: risky allowlist entries of the policy and its allow.d files (accepted; see
    #: enforcer.policyfile.risks), in file order, for check, --explain and the agent's log
    warnings: Tuple[PolicyProblem, ...] = ()

    def effective_mode(self, rule: Rule, override: Optional[Mode] = None) -> Mode:
        """The mode a rule runs in.

        `override` is `enforcer run --mode`. AUDIT makes every rule audit (a
        dry run). ENFORCE replaces the policy-wide `mode` but not a rule's own
        `mode = "audit"`: a rule its author marked too broad to enforce is not
        turned into a denial by a command-line flag.
        """
        if override is Mode.AUDIT:
            return Mode.AUDIT
        if rule.meta.mode is not None:
            return rule.meta.mode
        return override if override is not None else self.mode

    def rule(self, rule_id: str) -> Rule:
        for candidate in self.rules:
            if candidate.meta.id == rule_id:
                return candidate
        raise KeyError(rule_id)
