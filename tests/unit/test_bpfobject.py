"""enforcer.kernel.bpfobject: compiled objects kept without their compiler's map fds."""

from __future__ import annotations

import json
import struct

import pytest

from enforcer.kernel.bpfobject import (CompiledObject, MapSpec, ObjectError, ProgramSpec, build,
                                       map_fd_loads)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def ld_map_fd(fd: int, dst: int = 1) -> bytes:
    """ld_imm64 dst, map fd: two instructions."""
    return insn(0x18, dst=dst, src=1, imm=fd) + insn(0)


MOV_R0_0 = insn(0xB7)
EXIT = insn(0x95)
MAPS = (MapSpec("rules", 2, 4, 4, 128, 0), MapSpec("events", 27, 0, 0, 4096, 0))


def program_using(*fds: int) -> bytes:
    return b"".join(ld_map_fd(fd) for fd in fds) + MOV_R0_0 + EXIT


def test_map_fd_loads_finds_each_reference_and_skips_the_second_half() -> None:
    # A plain 64-bit constant (src 0) whose second half looks like a map load must not count.
    constant = insn(0x18, dst=2, imm=7) + insn(0x18, src=1, imm=99)
    code = ld_map_fd(5) + constant + MOV_R0_0 + ld_map_fd(6) + EXIT
    assert map_fd_loads(code) == ((0, 5), (5, 6))


@pytest.mark.parametrize("bad, what", [
    (insn(0x18, src=2, imm=5) + insn(0), "kind 2"),  # BPF_PSEUDO_MAP_VALUE
    (insn(0x85, src=2, imm=1234), "kernel function call"),  # kfunc
])
def test_what_cannot_be_relocated_by_name_is_refused(bad: bytes, what: str) -> None:
    with pytest.raises(ObjectError, match=what):
        map_fd_loads(MOV_R0_0 + bad + EXIT)


def test_build_names_maps_and_relocation_writes_new_fds() -> None:
    obj = build(MAPS, {"rules": 11, "events": 12},
                {"lsm__file_open": ("file_open", program_using(12, 11, 12))}, "GPL")
    program = obj.programs[0]
    assert program.map_refs == ((0, "events"), (2, "rules"), (4, "events"))
    relocated = program.relocated({"rules": 40, "events": 41})
    assert map_fd_loads(relocated) == ((0, 41), (2, 40), (4, 41))
    # Only the immediates changed.
    assert len(relocated) == len(program.insns)
    assert relocated[6 * 8:] == program.insns[6 * 8:]


def test_build_refuses_an_fd_that_is_no_compiled_map() -> None:
    with pytest.raises(ObjectError, match="fd 13 is none of the compiled maps"):
        build(MAPS, {"rules": 11, "events": 12}, {"p": ("file_open", program_using(13))}, "GPL")


def test_relocation_without_an_fd_for_a_map_fails() -> None:
    obj = build(MAPS, {"rules": 11, "events": 12}, {"p": ("file_open", program_using(11))}, "GPL")
    with pytest.raises(ObjectError, match="no fd for map rules"):
        obj.programs[0].relocated({"events": 3})


def test_json_round_trip_is_exact() -> None:
    obj = build(MAPS, {"rules": 11, "events": 12},
                {"a": ("file_open", program_using(11)), "b": ("inode_rename", program_using(12, 11))}, "GPL")
    assert CompiledObject.from_json(obj.to_json()) == obj


def _tampered(obj: CompiledObject, change) -> str:  # type: ignore[no-untyped-def]
    document = json.loads(obj.to_json())
    change(document)
    return json.dumps(document)


def test_an_altered_object_is_refused_by_its_digest() -> None:
    obj = build(MAPS, {"rules": 11, "events": 12}, {"a": ("file_open", program_using(11))}, "GPL")

    def swap_map_size(document) -> None:  # type: ignore[no-untyped-def]
        document["object"]["maps"][0][4] = 1

    with pytest.raises(ObjectError, match="digest"):
        CompiledObject.from_json(_tampered(obj, swap_map_size))
    with pytest.raises(ObjectError, match="malformed"):
        CompiledObject.from_json(obj.to_json()[:-40])


def test_references_that_do_not_match_the_instructions_are_refused() -> None:
    insns = program_using(11, 12)
    # Claims only one reference where the code holds two: a load would keep a stale fd.
    obj = CompiledObject(MAPS, (ProgramSpec("a", "file_open", insns, ((0, "rules"),)),), "GPL")
    with pytest.raises(ObjectError, match="do not match"):
        obj.check()
    unknown = CompiledObject(MAPS, (ProgramSpec("a", "file_open", program_using(11), ((0, "nope"),)),), "GPL")
    with pytest.raises(ObjectError, match="does not declare"):
        unknown.check()


def test_another_format_version_is_refused() -> None:
    obj = build(MAPS, {"rules": 11, "events": 12}, {"a": ("file_open", program_using(11))}, "GPL")

    def bump(document) -> None:  # type: ignore[no-untyped-def]
        document["format"] += 1

    with pytest.raises(ObjectError, match="format"):
        CompiledObject.from_json(_tampered(obj, bump))
