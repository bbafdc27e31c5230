"""enforcer.kernel.objload: maps and programs all or none, attach all or none, the verifier's reason kept."""

from __future__ import annotations

import errno
import os
import struct
from typing import List

import pytest

from enforcer.kernel import bpfsys
from enforcer.kernel.bpfobject import MapSpec, build, map_fd_loads
from enforcer.kernel.objload import LoadedObject, ObjectLoadError

EXIT = bytes.fromhex("b700000000000000" "9500000000000000")


def ld_map(fd: int) -> bytes:
    return struct.pack("<BBhi", 0x18, 0x11, 0, fd) + bytes(8)


OBJ = build(
    (MapSpec("rules", 2, 4, 4, 8, 0), MapSpec("events", 27, 0, 0, 4096, 0)),
    {"rules": 3, "events": 4},
    {"lsm__file_open": ("file_open", ld_map(3) + EXIT), "lsm__inode_rename": ("inode_rename", ld_map(4) + EXIT)},
    "GPL",
)
HOOK_IDS = {"file_open": 100, "inode_rename": 101}


class FakeSyscalls:
    """bpfsys's calls, with fds from real pipes (so closing them is checked) and chosen failures."""

    BpfSyscallError = bpfsys.BpfSyscallError
    ProgramRefused = bpfsys.ProgramRefused

    def __init__(self, refuse_program: str = "", refuse_errno: int = errno.EACCES, refuse_attach: str = "") -> None:
        self.refuse_program = refuse_program
        self.refuse_errno = refuse_errno
        self.refuse_attach = refuse_attach
        self.open: List[int] = []
        self.loaded: dict = {}

    def _fd(self) -> int:
        read, write = os.pipe()
        os.close(write)
        self.open.append(read)
        return read

    def still_open(self) -> List[int]:
        alive = []
        for fd in self.open:
            try:
                os.fstat(fd)
            except OSError:
                continue
            alive.append(fd)
        return alive

    def map_create(self, map_type, key_size, value_size, max_entries, flags=0, name="", what=""):  # type: ignore[no-untyped-def]
        return self._fd()

    def prog_load_lsm(self, name, insns, license, attach_btf_id, log_size=0):  # type: ignore[no-untyped-def]
        if name == self.refuse_program:
            if log_size:
                raise bpfsys.ProgramRefused(self.refuse_errno, "refused", "0: r0 = 0\nR1 invalid mem access 'scalar'")
            raise bpfsys.BpfSyscallError(self.refuse_errno, f"load program {name}: refused")
        fd = self._fd()
        self.loaded[name] = (insns, attach_btf_id)
        return fd

    def attach_lsm(self, prog_fd, what=""):  # type: ignore[no-untyped-def]
        if self.refuse_attach and self.refuse_attach in what:
            raise bpfsys.BpfSyscallError(errno.EBUSY, f"attach {what}: busy")
        return self._fd()


def test_programs_are_loaded_with_their_maps_new_fds_and_their_hooks_btf_ids() -> None:
    fake = FakeSyscalls()
    loaded = LoadedObject(OBJ, HOOK_IDS, syscalls=fake)
    insns, btf_id = fake.loaded["lsm__inode_rename"]
    assert btf_id == 101
    assert map_fd_loads(insns) == ((0, loaded.map_fd("events")),)
    assert map_fd_loads(fake.loaded["lsm__file_open"][0]) == ((0, loaded.map_fd("rules")),)
    loaded.close()
    assert fake.still_open() == []


def test_a_refused_program_leaves_nothing_loaded_and_says_what_the_verifier_said() -> None:
    fake = FakeSyscalls(refuse_program="lsm__inode_rename")
    with pytest.raises(ObjectLoadError) as raised:
        LoadedObject(OBJ, HOOK_IDS, syscalls=fake)
    assert "the verifier refused lsm__inode_rename" in str(raised.value)
    assert "invalid mem access" in str(raised.value)
    assert fake.still_open() == []  # both maps and the first program are closed


def test_eperm_is_not_retried_for_a_verifier_log() -> None:
    fake = FakeSyscalls(refuse_program="lsm__file_open", refuse_errno=errno.EPERM)
    with pytest.raises(ObjectLoadError) as raised:
        LoadedObject(OBJ, HOOK_IDS, syscalls=fake)
    assert "verifier" not in str(raised.value) and "refused" in str(raised.value)
    assert fake.still_open() == []


def test_a_hook_without_btf_id_fails_cleanly() -> None:
    fake = FakeSyscalls()
    with pytest.raises(ObjectLoadError, match="no BTF id for LSM hook"):
        LoadedObject(OBJ, {"file_open": 100}, syscalls=fake)
    assert fake.still_open() == []


def test_attach_is_all_or_none() -> None:
    fake = FakeSyscalls(refuse_attach="inode_rename")
    loaded = LoadedObject(OBJ, HOOK_IDS, syscalls=fake)
    programs_and_maps = set(fake.still_open())
    with pytest.raises(ObjectLoadError, match="busy"):
        loaded.attach()
    assert loaded.link_fds == {}
    assert set(fake.still_open()) == programs_and_maps  # the file_open link was closed again
    links = FakeSyscalls()
    ok = LoadedObject(OBJ, HOOK_IDS, syscalls=links)
    assert set(ok.attach()) == {"file_open", "inode_rename"}
    ok.close()
    loaded.close()
    assert fake.still_open() == [] and links.still_open() == []
