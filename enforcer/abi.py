"""The contract between the BPF programs and Python: constants, map layouts, event layout.

This module is the single source of truth for every number the C side uses.
The C never spells a number of this contract itself: `bpf/enforcer.h` receives them as `-D`
flags built by `cflags()`, and refuses to compile without them. Struct layouts
are declared twice by necessity (C and ctypes); `tests/compile/test_abi_layout.py`
compiles the header with the host compiler and checks every size and offset
against the ctypes mirror below.

Maps and hooks are described in `enforcer.registry`, whose `cflags()` adds
each map's size to this module's flags: the program is compiled with those.

Nothing here imports bcc or touches the kernel.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Dict, List

# --- limits -------------------------------------------------------------------

#: Rules are numbered 1..MAX_RULES; 0 means "no rule". Allowlist values are
#: 64-bit masks in which bit N stands for rule N, hence 63.
MAX_RULES = 63

#: Bytes of data in an LPM trie key. The kernel caps LPM keys at 256 data
#: bytes (LPM_DATA_SIZE_MAX); byte 0 is the namespace byte (policy slot and,
#: for exec places, the scope: key_namespace()), so a matched path has at most 255 bytes, and an
#: exact executable path (terminated by NUL) at most 254.
LPM_DATA_LEN = 256
PATH_MATCH_MAX = LPM_DATA_LEN - 1
EXACT_PATH_MATCH_MAX = PATH_MATCH_MAX - 1

#: Steps the kernel takes walking from a file up to the task's root; a step
#: is one path component or one mount point crossed. A path that needs more
#: cannot be resolved; exec then fails safe (Target.EXEC_UNRESOLVED,
#: docs/threat-model.md). A power of two: the walk indexes by `step & (N-1)`.
PATH_WALK_STEPS = 64

#: cgroup v2 hierarchy levels walked to name the task's cgroup (at most
#: PATH_WALK_STEPS: the walks share one stack).
CGROUP_DEPTH_MAX = 32

#: Bytes of each string field in an event record (NUL-terminated).
EVENT_STR_LEN = 256

#: Bytes of a filesystem type name as the kernel map stores it.
FSTYPE_NAME_LEN = 16

#: Task command name length (TASK_COMM_LEN).
COMM_LEN = 16

#: Ancestors of the acting process an event names, from its parent up
#: (real_parent, thread group leaders). The kernel captures them on the event
#: path only; a chain longer than this sets EventFlag.ANCESTRY_TRUNCATED. Eight
#: covers service -> shell -> loop -> payload under systemd or a container
#: runtime with room to spare, at 32 bytes each. A power of two: the C indexes
#: with `i & (ANCESTRY_MAX - 1)`.
ANCESTRY_MAX = 8

#: Ring buffer size in bytes (power of two, multiple of the page size).
RINGBUF_BYTES = 1 << 22

#: Complete policies each policy map holds side by side; `Settings.active`
#: names the one in force. A reload fills the other and flips (see Settings).
POLICY_SLOTS = 2
#: directories above the policy directory, on its file system, whose renaming
#: the tamper rules judge (the nearest ones; /etc/enforcer has one, /etc)
POLICY_ANCESTORS = 4

#: Map capacities, per policy (the kernel maps hold POLICY_SLOTS times as
#: many). The compiler refuses a policy whose plan does not fit.
MAX_PLACES = 8192  # exec_places nodes (both scopes; each place by name and by location)
#: Filesystems that hold a listed exec place (place_devs); the index of one
#: travels in an LPM key's namespace byte above the slot and scope bits.
LOCATION_SHIFT = 2
MAX_PLACE_DEVS = (1 << (8 - LOCATION_SHIFT)) - 1
#: place_devs also names the host's system overlays (an overlayfs mounted at /
#: or at a top-level directory in the agent's mount namespace: live systems,
#: systemd-sysext, image-based hosts). Their files are judged by name, never
#: by the layer that serves them: a live system's layers lie in /run. The
#: value's bit PLACE_DEV_SYSTEM_OVERLAY says so; its low bits keep the index
#: (0 when the overlay holds no place).
MAX_SYSTEM_OVERLAYS = 32
PLACE_DEV_SYSTEM_OVERLAY = 1 << 16
PLACE_DEV_INDEX_MASK = MAX_PLACE_DEVS
#: Overlays stacked on overlays whose layers the kernel follows to the file
#: that really serves an executed or mapped overlay file.
OVERLAY_DEPTH = 2
MAX_FSTYPES = 256  # exec_fstypes entries (both scopes)
MAX_ALLOW = 4096  # entries in each allowlist map


# --- enumerations shared with C -----------------------------------------------


class KernelScope(enum.IntEnum):
    """Which tasks a rule covers; the kernel compares mount namespaces."""

    HOST = 0  # task's mount namespace is the initial one
    CONTAINER = 1  # any other mount namespace


SCOPE_COUNT = len(KernelScope)


class Target(enum.IntEnum):
    """Fixed protected objects. Index into the `targets` map: see target_index()."""

    SYSRQ_TRIGGER_WRITE = 0
    SYSRQ_TRIGGER_READ = 1
    SYSRQ_SYSCTL_WRITE = 2
    SYSRQ_SYSCTL_READ = 3
    RELEASE_AGENT_WRITE = 4
    RELEASE_AGENT_RENAME = 5
    EXEC_MEMFD = 6
    #: exec of a file whose path needs more than PATH_WALK_STEPS: the kernel
    #: cannot tell where it lives, so it applies this rule instead of allowing.
    EXEC_UNRESOLVED = 7
    #: writes of kernel settings that name a program the kernel runs as root
    #: in the host's namespaces (kind "kernel_helper")
    HELPER_CORE_PATTERN = 8  # /proc/sys/kernel/core_pattern
    HELPER_MODPROBE = 9  # /proc/sys/kernel/modprobe
    HELPER_UEVENT_HELPER = 10  # /sys/kernel/uevent_helper
    HELPER_HOTPLUG = 11  # /proc/sys/kernel/hotplug
    HELPER_BINFMT_REGISTER = 12  # register in any binfmt_misc mount
    HELPER_BINFMT_STATUS = 13  # status in any binfmt_misc mount
    #: release_agent given as a cgroup v1 mount parameter (mount, remount, fsconfig)
    RELEASE_AGENT_MOUNT = 14
    #: tampering with enforcer itself (kind "tamper"): an fd of one of its BPF
    #: maps, programs or links; removing or renaming its pins; a signal to the
    #: agent; ptrace attach to the agent
    TAMPER_BPF_OBJECT = 15
    TAMPER_PIN = 16
    TAMPER_SIGNAL = 17
    TAMPER_PTRACE = 18
    #: the agent's resource limits or scheduling changed by another process
    #: (RLIMIT_CPU makes the kernel kill it; RLIMIT_NOFILE or RLIMIT_AS break
    #: it; SCHED_IDLE or nice 19 starve its event reports)
    TAMPER_RESOURCES = 19
    #: writes, creations, renames and removals in the policy directory
    TAMPER_POLICY = 20


TARGET_COUNT = len(Target)

#: Entries of the `targets` array: one per (target, scope).
TARGET_SLOTS = TARGET_COUNT * SCOPE_COUNT


class Hook(enum.IntEnum):
    FILE_OPEN = 1
    INODE_RENAME = 2
    BPRM_CHECK_SECURITY = 3
    PATH_TRUNCATE = 4
    FS_CONTEXT_PARSE_PARAM = 5
    #: an interpreter's execveat(AT_EXECVE_CHECK) of a script (Linux 6.14+)
    BPRM_CREDS_FOR_EXEC = 6
    MMAP_FILE = 7
    FILE_MPROTECT = 8
    BPF = 9  # the bpf(2) command, before it runs: here only BPF_LINK_GET_FD_BY_ID
    BPF_MAP = 10  # an fd of a map is being made
    BPF_PROG = 11  # an fd of a program is being made
    INODE_UNLINK = 12
    INODE_RMDIR = 13
    TASK_KILL = 14  # a signal sent from user space
    PTRACE_ACCESS_CHECK = 15
    INODE_CREATE = 16  # a file made in a directory; BPF_OBJ_PIN comes here
    INODE_MKDIR = 17
    INODE_SYMLINK = 18
    INODE_LINK = 19  # a hard link: the new name
    TASK_SETRLIMIT = 20  # prlimit(2) or setrlimit(2) setting a limit
    TASK_SETSCHEDULER = 21  # sched_setscheduler, sched_setattr, sched_setaffinity
    TASK_SETNICE = 22  # setpriority(2), sched_setattr's nice
    #: chmod, chown, truncate(2), ftruncate(2), O_TRUNC: a file's size, mode or owner set
    INODE_SETATTR = 23
    SB_UMOUNT = 24  # umount(2) of a mount
    SB_MOUNT = 25  # mount(2): a new mount, a bind or a move onto a path
    MOVE_MOUNT = 26  # move_mount(2): a mount put on a path (new mount API), or moved there
    INODE_MKNOD = 27  # a fifo, a device node or a socket (bind(2) of AF_UNIX) made in a directory
    #: a superblock's options changed: mount -o remount, fspick(2) + fsconfig(FSCONFIG_CMD_RECONFIGURE)
    SB_REMOUNT = 28
    #: a signal sent on a file's I/O to its owner (F_SETOWN); refused for the agent, counted, no event
    FILE_SEND_SIGIOTASK = 29


class Access(enum.IntEnum):
    READ = 1
    WRITE = 2
    RENAME = 3
    EXEC = 4
    MOUNT = 5  # a mount parameter
    MAP = 6  # a file mapped executable (mmap or mprotect with PROT_EXEC)
    OBTAIN = 7  # an fd of a BPF object (by id or by pin); EventRecord.detail: its id
    REMOVE = 8  # unlink or rmdir
    SIGNAL = 9  # EventRecord.detail: the signal number
    TRACE = 10  # ptrace attach, /proc/PID/mem, process_vm_writev, pidfd_getfd; detail: the mode bits
    CREATE = 11  # a pin, a directory, a symlink or a hard link made
    LIMIT = 12  # a resource limit set; EventRecord.detail: the RLIMIT_* number
    SCHEDULE = 13  # scheduling policy, affinity or nice set; detail: the nice value (task_setnice)
    ATTRIBUTES = 14  # a file's mode or owner set (chmod, chown); its size is a WRITE
    UNMOUNT = 15  # a mount removed (umount, umount -l)


class Action(enum.IntEnum):
    BLOCKED = 1
    AUDITED = 2


class ExecMatch(enum.IntEnum):
    """Why an exec matched a rule (zero for non-exec events)."""

    NONE = 0
    DIRECTORY = 1
    FILESYSTEM = 2
    MEMFD = 3
    UNRESOLVED = 4
    #: the file lives in a listed place, reached by another name (a bind
    #: mount, a chroot, a detached mount clone): matched by its filesystem
    #: and its path inside it (enforcer.mountinfo)
    LOCATION = 5


class RuleFlag(enum.IntFlag):
    ENFORCE = 1  # deny with -EPERM; without it the rule only audits
    #: exec rules: which accesses the rule decides (checked by the exec hooks,
    #: which set verdict_ctx.needs; other kinds never need them)
    EXEC = 2  # execve and interpreters' AT_EXECVE_CHECK
    MAP = 4  # mmap/mprotect adding PROT_EXEC to a file mapping
    #: set in every rule of a policy: lets `enforcer status` count the rules
    #: in force from the pinned map alone (an audit rule's config is otherwise 0)
    PRESENT = 8


class Watch(enum.IntFlag):
    """Settings.watch: which checks any rule needs, so hooks leave early otherwise."""

    PROC_WRITE = 1
    PROC_READ = 2
    CGROUP_WRITE = 4
    RENAME = 8
    EXEC = 16
    HELPER_SYSCTL = 32  # writes of helper sysctls in procfs (core_pattern, modprobe, hotplug)
    HELPER_SYSFS = 64  # writes of /sys/kernel/uevent_helper in sysfs
    HELPER_BINFMT = 128  # writes of register or status in binfmt_misc
    CGROUP_MOUNT = 256  # release_agent as a cgroup v1 mount parameter
    TAMPER_BPF = 512  # fds of enforcer's own maps, programs and links
    TAMPER_PINS = 1024  # unlink, rmdir and rename under enforcer's pin directory
    TAMPER_AGENT = 2048  # signals to, ptrace of, limits and scheduling of the agent
    TAMPER_POLICY = 4096  # writes and changes in the policy directory


class ObjectKind(enum.IntEnum):
    """ObjectKey.kind: which id space a protected BPF object's id belongs to."""

    MAP = 1
    PROG = 2
    LINK = 3


class ProtectedOwner(enum.IntEnum):
    """protected_objects' value: whose object an id is (the programs test only
    that the key is there; enforcer.kernel.protected keeps the table)."""

    INSTANCE = 1  # a map, program or link of the pinned instance
    AGENT = 2  # the running agent's own (its reload barrier's maps): the next agent replaces them


#: Entries of `protected_objects`: enforcer's maps, programs and links, and the
#: agent's two barrier maps (tests/unit/test_registry.py checks they fit: 74
#: with 29 hooks); room for more hooks, a hash map costs nothing per entry unused.
MAX_PROTECTED_OBJECTS = 128


class EventFlag(enum.IntFlag):
    PATH_TRUNCATED = 1  # path did not fit EVENT_STR_LEN or the walk bound
    CONTAINER = 2  # task outside the initial mount namespace
    EXE_TRUNCATED = 4
    CGROUP_TRUNCATED = 8
    #: the kernel has task_struct.loginuid/sessionid (CONFIG_AUDIT): the
    #: record's loginuid and sessionid are real; without it they are unknown
    LOGIN_KNOWN = 16
    #: the process chain goes on above the last of ANCESTRY_MAX ancestors
    ANCESTRY_TRUNCATED = 32
    #: the kernel has task_struct.start_boottime: start_ns fields are real
    START_KNOWN = 64
    #: decided by a tamper rule (the event's `tamper` part says what it aimed at)
    TAMPER = 128


class Stat(enum.IntEnum):
    """Per-CPU counters in the `stats` map."""

    EVENTS_LOST = 0  # ring buffer full: a decision was made but not reported
    BLOCKED = 1
    AUDITED = 2
    ALLOWLISTED = 3  # a rule matched but an allowlist entry let it through
    #: a signal a file's I/O would have sent the agent (F_SETOWN), refused without an event
    SIGIO_REFUSED = 4


STAT_COUNT = len(Stat)


# --- map layouts ----------------------------------------------------------------


class Settings(ctypes.Structure):
    """`settings` array, one element: the host's identity and which policy slot is in force.

    A reload fills the inactive slot's `generation` and `watch` first, then
    flips `active`: the one byte a reload changes in a value the hooks read.
    """

    _fields_ = [
        ("host_mntns", ctypes.c_uint64),  # inode number of the initial mount namespace
        ("active", ctypes.c_uint8),  # policy slot in force
        ("reserved", ctypes.c_uint8 * 3),
        ("generation", ctypes.c_uint32 * POLICY_SLOTS),  # generation held by each slot
        ("watch", ctypes.c_uint32 * POLICY_SLOTS),  # Watch flags of each slot
        # The running agent, for the tamper rules, which never judge it: its
        # pid (tgid), and its start time in clock ticks (/proc/PID/stat's
        # starttime, i.e. start_boottime / tick_ns) so that a process that
        # reuses the pid of an agent gone is not taken for it. 0: no agent.
        ("agent_tgid", ctypes.c_uint32),
        # enforcer's pin directory (/sys/fs/bpf/enforcer): super_block.s_dev
        # of its bpffs and its inode number. 0: not pinned.
        ("pins_dev", ctypes.c_uint32),
        ("tick_ns", ctypes.c_uint32),  # nanoseconds per clock tick (1e9 / sysconf(_SC_CLK_TCK))
        ("pins_ino", ctypes.c_uint64),
        ("agent_start_ticks", ctypes.c_uint64),
        # the policy directory (/etc/enforcer): its inode number and
        # super_block.s_dev of its filesystem. 0: not protected.
        ("policy_ino", ctypes.c_uint64),
        ("policy_dev", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32),
        # inode numbers of the directories above it on that file system,
        # nearest first, up to the root of its mount (0: none): renaming one
        # of them away would put other files at the policy's path
        ("policy_ancestors", ctypes.c_uint64 * POLICY_ANCESTORS),
    ]


class ObjectKey(ctypes.Structure):
    """`protected_objects` key: one of enforcer's BPF objects."""

    _fields_ = [("kind", ctypes.c_uint32), ("id", ctypes.c_uint32)]  # ObjectKind, the kernel's id


class RuleConfig(ctypes.Structure):
    """`rules` array, indexed by rule number."""

    _fields_ = [("flags", ctypes.c_uint32)]


class LpmKey(ctypes.Structure):
    """Key of every LPM trie: exec places and the allowlists."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),  # in bits, over `data`
        ("data", ctypes.c_uint8 * LPM_DATA_LEN),
    ]


class ExecPlace(ctypes.Structure):
    """`exec_places` value for a directory node "<dir>/".

    A lookup with the executed file's path finds the deepest node that is a
    prefix of it. `rule_direct` applies when the file sits directly in that
    directory (its directory length + 1 == node_len), `rule_below` when it is
    deeper. `excluded` is the mask of rules this place is excepted from; it
    also stops filesystem-type matching for those rules.
    """

    _fields_ = [
        ("node_len", ctypes.c_uint32),
        ("rule_direct", ctypes.c_uint16),
        ("rule_below", ctypes.c_uint16),
        ("excluded", ctypes.c_uint64),
    ]


class FsTypeKey(ctypes.Structure):
    """`exec_fstypes` key: filesystem type name as in /proc/filesystems, in a slot and scope."""

    _fields_ = [
        ("name", ctypes.c_char * FSTYPE_NAME_LEN),
        ("ns", ctypes.c_uint32),  # key_namespace(slot, scope)
    ]


class DevKey(ctypes.Structure):
    """`place_devs` key: a filesystem (super_block.s_dev, kernel encoding) in a policy slot."""

    _fields_ = [
        ("dev", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
    ]


class UidKey(ctypes.Structure):
    """`allow_uid` key."""

    _fields_ = [
        ("uid", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
    ]


class Ancestor(ctypes.Structure):
    """One process above the acting one in an event record (its thread group leader)."""

    _fields_ = [
        ("start_ns", ctypes.c_uint64),  # task start_boottime, ns since boot (what /proc/PID/stat field 22 counts in ticks)
        ("pid", ctypes.c_uint32),  # thread group id, in the initial pid namespace
        ("reserved", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


class EventRecord(ctypes.Structure):
    """One ring-buffer record."""

    _fields_ = [
        ("boot_ns", ctypes.c_uint64),  # bpf_ktime_get_boot_ns()
        ("cgroup_id", ctypes.c_uint64),
        ("mntns", ctypes.c_uint64),
        ("rule", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),  # policy generation that decided
        ("pid", ctypes.c_uint32),  # thread group id (what ps calls PID)
        ("tid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),  # EventFlag
        ("hook", ctypes.c_uint8),
        ("access", ctypes.c_uint8),
        ("action", ctypes.c_uint8),
        ("match", ctypes.c_uint8),  # ExecMatch
        ("comm", ctypes.c_char * COMM_LEN),
        ("fstype", ctypes.c_char * FSTYPE_NAME_LEN),
        ("path", ctypes.c_char * EVENT_STR_LEN),
        ("new_path", ctypes.c_char * EVENT_STR_LEN),  # rename destination
        ("exe", ctypes.c_char * EVENT_STR_LEN),
        ("cgroup", ctypes.c_char * EVENT_STR_LEN),
        ("start_ns", ctypes.c_uint64),  # the acting process's start_boottime (EventFlag.START_KNOWN)
        ("loginuid", ctypes.c_uint32),  # audit login uid (EventFlag.LOGIN_KNOWN); 4294967295: unset
        ("sessionid", ctypes.c_uint32),  # audit session id (EventFlag.LOGIN_KNOWN); 4294967295: unset
        ("ancestry_len", ctypes.c_uint32),  # entries of `ancestors` filled, parent first
        ("detail", ctypes.c_uint32),  # tamper events: object id, signal number or ptrace mode (see Access)
        ("ancestors", Ancestor * ANCESTRY_MAX),
    ]


#: Every struct shared with C, by its C name (`struct enforcer_<name>`).
SHARED_STRUCTS: Dict[str, type] = {
    "settings": Settings,
    "rule_config": RuleConfig,
    "object_key": ObjectKey,
    "lpm_key": LpmKey,
    "exec_place": ExecPlace,
    "fstype_key": FsTypeKey,
    "uid_key": UidKey,
    "dev_key": DevKey,
    "ancestor": Ancestor,
    "event": EventRecord,
}


def _enum_defines(prefix: str, members: type) -> List[str]:
    return [f"-DENFORCER_{prefix}_{m.name}={int(m.value)}" for m in members]  # type: ignore[attr-defined]


def cflags() -> List[str]:
    """The -D flags that give bpf/enforcer.h every constant it uses (map sizes: registry.cflags())."""
    flags = [
        f"-DENFORCER_MAX_RULES={MAX_RULES}",
        f"-DENFORCER_LPM_DATA_LEN={LPM_DATA_LEN}",
        f"-DENFORCER_PATH_WALK_STEPS={PATH_WALK_STEPS}",
        f"-DENFORCER_CGROUP_DEPTH_MAX={CGROUP_DEPTH_MAX}",
        f"-DENFORCER_EVENT_STR_LEN={EVENT_STR_LEN}",
        f"-DENFORCER_FSTYPE_NAME_LEN={FSTYPE_NAME_LEN}",
        f"-DENFORCER_COMM_LEN={COMM_LEN}",
        f"-DENFORCER_ANCESTRY_MAX={ANCESTRY_MAX}",
        f"-DENFORCER_SCOPE_COUNT={SCOPE_COUNT}",
        f"-DENFORCER_POLICY_SLOTS={POLICY_SLOTS}",
        f"-DENFORCER_POLICY_ANCESTORS={POLICY_ANCESTORS}",
        f"-DENFORCER_TARGET_COUNT={TARGET_COUNT}",
        f"-DENFORCER_STAT_COUNT={STAT_COUNT}",
        f"-DENFORCER_LOCATION_SHIFT={LOCATION_SHIFT}",
        f"-DENFORCER_PLACE_DEV_SYSTEM_OVERLAY={PLACE_DEV_SYSTEM_OVERLAY}",
        f"-DENFORCER_PLACE_DEV_INDEX_MASK={PLACE_DEV_INDEX_MASK}",
        f"-DENFORCER_OVERLAY_DEPTH={OVERLAY_DEPTH}",
    ]
    flags += _enum_defines("SCOPE", KernelScope)
    flags += _enum_defines("TARGET", Target)
    flags += _enum_defines("HOOK", Hook)
    flags += _enum_defines("ACCESS", Access)
    flags += _enum_defines("ACTION", Action)
    flags += _enum_defines("MATCH", ExecMatch)
    flags += _enum_defines("RULE", RuleFlag)
    flags += _enum_defines("WATCH", Watch)
    flags += _enum_defines("EVENT", EventFlag)
    flags += _enum_defines("STAT", Stat)
    flags += _enum_defines("OBJECT", ObjectKind)
    return flags


def rule_index(slot: int, rule: int) -> int:
    """Index of rule `rule` of policy slot `slot` in the `rules` array (ENFORCER_RULE_INDEX)."""
    return slot * (MAX_RULES + 1) + rule


def target_index(slot: int, target: Target, scope: KernelScope) -> int:
    """Index of a (target, scope) slot of policy slot `slot` in the `targets` array (ENFORCER_TARGET_INDEX)."""
    return slot * TARGET_SLOTS + int(target) * SCOPE_COUNT + int(scope)


def key_namespace(slot: int, scope: int = 0) -> int:
    """Namespace byte of LPM keys and exec_fstypes keys (ENFORCER_KEY_NS): slot, then scope.

    `scope` may carry a filesystem index above it (location_namespace)."""
    return (slot << 1) | scope


def slot_of_namespace(ns: int) -> int:
    """The policy slot of a key_namespace() value."""
    return (ns >> 1) & 1


def location_namespace(scope: int, fs_index: int) -> int:
    """Scope bits of an exec_places key that places a file by location: the
    scope, and the index of its filesystem in place_devs (1..MAX_PLACE_DEVS)."""
    if not 1 <= fs_index <= MAX_PLACE_DEVS:
        raise ValueError(f"filesystem index {fs_index} outside 1..{MAX_PLACE_DEVS}")
    return (fs_index << LOCATION_SHIFT) | scope
