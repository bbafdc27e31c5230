"""Every BPF map and LSM hook of bpf/enforcer.bpf.c, described once.

The C declares each map and program; this registry says what Python may
assume about them: a map's kind, key and value layouts (the ctypes mirrors in
enforcer.abi), its size and whether a MapPlan fills it (every map is pinned with its instance);
a hook's BTF parameter names and its program's name. plan.py, kernel/maps.py
and kernel/loader.py read these facts from here, and `cflags()` hands the
sizes to the C as named constants, so no size is spelled on both sides.
`enforcer.registry_check` proves the C declares exactly what is registered
(tests/unit/test_registry.py, tests/compile/test_registry_compile.py).

Nothing here imports bcc or touches the kernel.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from enforcer import abi

#: Bytes per page as bcc's BPF_RINGBUF_OUTPUT counts them.
PAGE_BYTES = 4096

#: Threads that may sit between a let-through O_TRUNC open and its
#: path_truncate call; the LRU map forgets the oldest beyond that.
TRUNCATING_OPENS_MAX = 1024


class MapKind(enum.IntEnum):
    """Map types used by the C; values are the kernel's `enum bpf_map_type`."""

    HASH = 1
    ARRAY = 2
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    LPM_TRIE = 11
    RINGBUF = 27


#: Kinds whose keys always exist: an entry is "removed" by writing zero.
ARRAY_KINDS = frozenset({MapKind.ARRAY, MapKind.PERCPU_ARRAY})


@dataclass(frozen=True)
class MapSpec:
    """One map as declared in bpf/enforcer.bpf.c."""

    name: str
    kind: MapKind
    key: Optional[type]  # ctypes type; None for the ring buffer, which has no keys
    value: Optional[type]  # ctypes type; None when the layout is private to the C (scratch space)
    capacity: int  # entries (of one policy, for policy maps); bytes for the ring buffer
    policy: bool = False  # filled from a MapPlan, one complete policy per slot (abi.POLICY_SLOTS)

    @property
    def size_macro(self) -> str:
        """The -D constant the C declaration passes as this map's size."""
        unit = "PAGES" if self.kind is MapKind.RINGBUF else "ENTRIES"
        return f"ENFORCER_{self.name.upper()}_{unit}"

    @property
    def size_value(self) -> int:
        """What `size_macro` stands for: entries (every slot's, for policy maps), or pages for the ring buffer."""
        if self.kind is MapKind.RINGBUF:
            return self.capacity // PAGE_BYTES
        return self.capacity * abi.POLICY_SLOTS if self.policy else self.capacity

    @property
    def is_array(self) -> bool:
        return self.kind in ARRAY_KINDS

    def removed_value(self) -> ctypes.Structure:
        """What an array holds where a plan has no entry: the value type's zero."""
        if not self.is_array or self.value is None:
            raise TypeError(f"map {self.name} deletes keys; only arrays are written with zero")
        return self.value()


@dataclass(frozen=True)
class HookSpec:
    """One LSM hook and the program in bpf/enforcer.bpf.c that runs on it.

    An LSM program reads its arguments by position; `params` are the names the
    program expects, compared with the kernel's BTF before loading.
    """

    hook: abi.Hook
    params: Tuple[str, ...]
    #: arguments newer kernels pass after `params` (the C declares them through
    #: ENFORCER_HOOK_TAIL_<HOOK>, defined by kernel/features.py from BTF)
    optional_tail: Tuple[str, ...] = ()
    #: arguments newer kernels pass before `params` (ENFORCER_HOOK_HEAD_<HOOK>)
    optional_head: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.optional_head and self.optional_tail:
            raise ValueError(f"hook {self.name}: arguments added at both ends are not supported")

    @property
    def optional_count(self) -> int:
        """How many arguments a newer kernel passes beyond `params`."""
        return len(self.optional_head) + len(self.optional_tail)

    @property
    def name(self) -> str:
        """The kernel's name of the hook (security_<name>), as in BTF."""
        return self.hook.name.lower()

    @property
    def program(self) -> str:
        """The function bcc's LSM_PROBE(<name>, ...) defines."""
        return f"lsm__{self.name}"


_U32 = ctypes.c_uint32
_U64 = ctypes.c_uint64

#: Policy maps are filled and diffed in this order (on a reload `rules` goes
#: first, see kernel/maps.py); pins are made in this order.
MAPS: Tuple[MapSpec, ...] = (
    MapSpec("settings", MapKind.ARRAY, _U32, abi.Settings, 1),
    MapSpec("rules", MapKind.ARRAY, _U32, abi.RuleConfig, abi.MAX_RULES + 1, policy=True),
    MapSpec("targets", MapKind.ARRAY, _U32, _U32, abi.TARGET_SLOTS, policy=True),
    MapSpec("exec_places", MapKind.LPM_TRIE, abi.LpmKey, abi.ExecPlace, abi.MAX_PLACES, policy=True),
    MapSpec("exec_fstypes", MapKind.HASH, abi.FsTypeKey, _U32, abi.MAX_FSTYPES, policy=True),
    MapSpec("allow_exe", MapKind.LPM_TRIE, abi.LpmKey, _U64, abi.MAX_ALLOW, policy=True),
    MapSpec("allow_uid", MapKind.HASH, abi.UidKey, _U64, abi.MAX_ALLOW, policy=True),
    MapSpec("allow_cgroup", MapKind.LPM_TRIE, abi.LpmKey, _U64, abi.MAX_ALLOW, policy=True),
    MapSpec("place_devs", MapKind.HASH, abi.DevKey, _U32, abi.MAX_PLACE_DEVS + abi.MAX_SYSTEM_OVERLAYS, policy=True),
    MapSpec("protected_objects", MapKind.HASH, abi.ObjectKey, _U32, abi.MAX_PROTECTED_OBJECTS),
    MapSpec("stats", MapKind.PERCPU_ARRAY, _U32, _U64, abi.STAT_COUNT),
    MapSpec("truncating_opens", MapKind.LRU_HASH, _U64, _U64, TRUNCATING_OPENS_MAX),
    MapSpec("scratch_map", MapKind.PERCPU_ARRAY, _U32, None, 1),
    MapSpec("events", MapKind.RINGBUF, None, abi.EventRecord, abi.RINGBUF_BYTES),
)

MAPS_BY_NAME: Dict[str, MapSpec] = {spec.name: spec for spec in MAPS}

#: In load and attach order.
HOOKS: Tuple[HookSpec, ...] = (
    HookSpec(abi.Hook.FILE_OPEN, ("file",)),
    HookSpec(abi.Hook.PATH_TRUNCATE, ("path",)),
    # Linux 6.3 added the mount's idmap in front
    HookSpec(abi.Hook.INODE_SETATTR, ("dentry", "attr"), optional_head=("idmap",)),
    HookSpec(abi.Hook.BPF_MAP, ("map", "fmode")),
    HookSpec(abi.Hook.BPF_PROG, ("prog",)),
    # Linux 6.14+ (BPF tokens, signed programs) passes `kernel`: a bpf() call
    # made by the kernel itself (a syscall program) rather than by a process.
    HookSpec(abi.Hook.BPF, ("cmd", "attr", "size"), optional_tail=("kernel",)),
    HookSpec(abi.Hook.INODE_UNLINK, ("dir", "dentry")),
    HookSpec(abi.Hook.INODE_RMDIR, ("dir", "dentry")),
    HookSpec(abi.Hook.INODE_CREATE, ("dir", "dentry", "mode")),
    HookSpec(abi.Hook.INODE_MKDIR, ("dir", "dentry", "mode")),
    HookSpec(abi.Hook.INODE_SYMLINK, ("dir", "dentry", "old_name")),
    HookSpec(abi.Hook.INODE_LINK, ("old_dentry", "dir", "new_dentry")),
    HookSpec(abi.Hook.INODE_MKNOD, ("dir", "dentry", "mode", "dev")),
    HookSpec(abi.Hook.SB_UMOUNT, ("mnt", "flags")),
    HookSpec(abi.Hook.SB_MOUNT, ("dev_name", "path", "type", "flags", "data")),
    HookSpec(abi.Hook.SB_REMOUNT, ("sb", "mnt_opts")),
    HookSpec(abi.Hook.MOVE_MOUNT, ("from_path", "to_path")),
    HookSpec(abi.Hook.TASK_KILL, ("p", "info", "sig", "cred")),
    HookSpec(abi.Hook.FILE_SEND_SIGIOTASK, ("tsk", "fown", "sig")),
    HookSpec(abi.Hook.PTRACE_ACCESS_CHECK, ("child", "mode")),
    HookSpec(abi.Hook.TASK_SETRLIMIT, ("p", "resource", "new_rlim")),
    HookSpec(abi.Hook.TASK_SETSCHEDULER, ("p",)),
    HookSpec(abi.Hook.TASK_SETNICE, ("p", "nice")),
    HookSpec(abi.Hook.INODE_RENAME, ("old_dir", "old_dentry", "new_dir", "new_dentry")),
    HookSpec(abi.Hook.BPRM_CHECK_SECURITY, ("bprm",)),
    HookSpec(abi.Hook.FS_CONTEXT_PARSE_PARAM, ("fc", "param")),
    HookSpec(abi.Hook.BPRM_CREDS_FOR_EXEC, ("bprm",)),
    HookSpec(abi.Hook.MMAP_FILE, ("file", "reqprot", "prot", "flags")),
    HookSpec(abi.Hook.FILE_MPROTECT, ("vma", "reqprot", "prot")),
)


#: C function -> LSM hook of every program: what a compiled object holds and loads.
PROGRAM_HOOKS: Dict[str, str] = {spec.program: spec.name for spec in HOOKS}


def cflags() -> List[str]:
    """Every -D flag bpf/enforcer.bpf.c needs: the header's (abi.cflags()) and each map's size."""
    return [*abi.cflags(), *(f"-D{spec.size_macro}={spec.size_value}" for spec in MAPS)]
