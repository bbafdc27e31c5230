"""Attach and detach BPF-LSM programs by file descriptor (guest only; ctypes).

So that configurations can alternate within a round, each configuration's
programs are loaded once and then only attached and detached: an LSM
program is attached by BPF_RAW_TRACEPOINT_OPEN with no name (the kernel
takes the hook from the program's attach_btf_id) and detached by closing
the link descriptor this returns.  Loading again would cost a bcc compile
(a minute under emulation) per switch.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

_NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
BPF_OBJ_GET = 7
BPF_PROG_GET_FD_BY_ID = 13
BPF_RAW_TRACEPOINT_OPEN = 17

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _ById(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _RawTp(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _Obj(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    rc = _libc.syscall(_NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({what}): {os.strerror(err)}")
    return int(rc)


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _ById(prog_id, 0, 0), f"PROG_GET_FD_BY_ID {prog_id}")


def obj_get(path: str) -> int:
    buf = ctypes.create_string_buffer(path.encode())
    return _bpf(BPF_OBJ_GET, _Obj(ctypes.addressof(buf), 0, 0), f"OBJ_GET {path}")


def fdinfo(fd: int) -> Dict[str, str]:
    """The kernel's /proc/self/fdinfo of a BPF object: prog_id, link_id, ..."""
    out = {}
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Program:
    hook: str
    fd: int
    prog_id: int


class ProgramSet:
    """One configuration's programs, attached or not."""

    def __init__(self, name: str, programs: List[Program]) -> None:
        self.name = name
        self.programs = programs
        self._links: List[int] = []

    @property
    def attached(self) -> bool:
        return bool(self._links)

    def attach(self) -> None:
        if self._links:
            return
        for p in self.programs:
            self._links.append(_bpf(BPF_RAW_TRACEPOINT_OPEN, _RawTp(0, p.fd, 0), f"attach {p.hook}"))

    def detach(self, settle_s: float = 0.2) -> None:
        """Close the links.  The trampoline is updated when the last
        reference goes, which can lag the close (kernel-facts.md): wait a
        little so the next measurement does not start half-attached."""
        for fd in self._links:
            os.close(fd)
        self._links = []
        time.sleep(settle_s)


def programs_from_pins(instance_dir: Path, hooks: List[str]) -> List[Program]:
    """Take the programs behind an agent instance's pinned links (link_<hook>)
    as our own descriptors, so they outlive the pins."""
    programs = []
    for hook in hooks:
        link = obj_get(str(instance_dir / f"link_{hook}"))
        try:
            prog_id = int(fdinfo(link)["prog_id"])
        finally:
            os.close(link)
        programs.append(Program(hook, prog_fd_by_id(prog_id), prog_id))
    return programs


def prog_id_of(fd: int) -> Optional[int]:
    value = fdinfo(fd).get("prog_id")
    return int(value) if value is not None else None
