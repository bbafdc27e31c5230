"""protected_objects: the ids of BPF objects the tamper rules guard.

The kernel programs only test whether an (id space, id) key is present. The
value says whose object it is, for the agent's bookkeeping: the pinned
instance's maps, programs and links stay for as long as the instance does;
the running agent's own objects (its reload barrier's two maps, which are
not pinned and die with it) are replaced by the next agent that adopts the
instance, so that ids of maps gone are not left behind (the table is bounded,
and the kernel reuses ids: a stale id would one day name someone else's map).
"""

from __future__ import annotations

import ctypes
from typing import Dict, Mapping, Tuple

from enforcer import abi
from enforcer.kernel import bpfsys

WHAT = "map protected_objects"


def add(table_fd: int, kind: abi.ObjectKind, fds: Mapping[str, int], owner: abi.ProtectedOwner) -> None:
    """Name these objects (by the ids the kernel gave them) to the tamper rules."""
    for name, fd in fds.items():
        key = abi.ObjectKey(kind=int(kind), id=bpfsys.object_id(fd, what=f"{kind.name.lower()} {name}"))
        bpfsys.map_update(table_fd, key, ctypes.c_uint32(int(owner)), what=WHAT)


def replace_agent_objects(table_fd: int, fds: Mapping[str, int]) -> int:
    """Forget the previous agent's own maps, name this agent's; returns how
    many were forgotten. The instance's own entries are left as they are."""
    forgotten = 0
    for (kind, object_id), owner in entries(table_fd).items():
        if owner is abi.ProtectedOwner.AGENT:
            forgotten += bpfsys.map_delete(table_fd, abi.ObjectKey(kind=int(kind), id=object_id), what=WHAT)
    add(table_fd, abi.ObjectKind.MAP, fds, abi.ProtectedOwner.AGENT)
    return forgotten


def entries(table_fd: int) -> Dict[Tuple[abi.ObjectKind, int], abi.ProtectedOwner]:
    """(id space, id) -> owner: what the table holds."""
    out: Dict[Tuple[abi.ObjectKind, int], abi.ProtectedOwner] = {}
    owner = ctypes.c_uint32()
    for key in bpfsys.map_keys(table_fd, abi.ObjectKey, what=WHAT):
        if bpfsys.map_lookup(table_fd, key, owner, what=WHAT):
            out[(abi.ObjectKind(key.kind), key.id)] = abi.ProtectedOwner(owner.value)
    return out
