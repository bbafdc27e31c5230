"""A compiled BPF object: what bcc produced, as data the loader can load without bcc.

bcc compiles C into instructions whose map references are file descriptors
of maps it created in the compiling process (`ld_imm64` with
BPF_PSEUDO_MAP_FD). Such bytecode cannot be kept across processes as it is.
A CompiledObject keeps instead, per program, the index of every such
instruction and the *name* of the map it refers to, plus each map's
attributes; the loader creates the maps anew and writes their fds into a
copy of the instructions (`relocated`). That is what lets an agent start
from a cached object (enforcer.kernel.objcache) and skip clang, which is most
of its start-up time.

Pure: no bcc, no kernel. Anything bcc might emit that this format cannot
carry (references to map values, kernel function calls) is refused when the
object is made, so a cached object is never silently wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

#: Bump when the serialised form or its meaning changes.
FORMAT_VERSION = 1

INSN_SIZE = 8
_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: a 64-bit immediate over two instructions
_CALL = 0x85  # BPF_JMP | BPF_CALL
_PSEUDO_MAP_FD = 1  # src_reg of an ld_imm64 whose imm is a map fd
_PSEUDO_KFUNC_CALL = 2  # src_reg of a call to a kernel function by BTF id


class ObjectError(ValueError):
    """An object that cannot be made, read or relocated; the message says why."""


@dataclass(frozen=True)
class MapSpec:
    """A map as the kernel created it for the compiler (BPF_OBJ_GET_INFO_BY_FD)."""

    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgramSpec:
    """One program: its instructions and which of them name which map."""

    name: str  # the C function, e.g. lsm__file_open
    hook: str  # the LSM hook it attaches to, e.g. file_open
    insns: bytes
    map_refs: Tuple[Tuple[int, str], ...]  # (instruction index, map name)

    def relocated(self, map_fds: Mapping[str, int]) -> bytes:
        """The instructions with each map reference set to the fd in `map_fds`."""
        code = bytearray(self.insns)
        for index, name in self.map_refs:
            if name not in map_fds:
                raise ObjectError(f"program {self.name}: no fd for map {name}")
            struct.pack_into("<i", code, index * INSN_SIZE + 4, map_fds[name])
        return bytes(code)


@dataclass(frozen=True)
class CompiledObject:
    maps: Tuple[MapSpec, ...]
    programs: Tuple[ProgramSpec, ...]
    license: str

    def map(self, name: str) -> MapSpec:
        for spec in self.maps:
            if spec.name == name:
                return spec
        raise KeyError(name)

    # --- serialised form ---------------------------------------------------------

    def to_json(self) -> str:
        payload = self._payload()
        return json.dumps({"format": FORMAT_VERSION, "sha256": _digest(payload), "object": payload},
                          sort_keys=True)

    def _payload(self) -> Dict[str, object]:
        return {
            "license": self.license,
            "maps": [[m.name, m.map_type, m.key_size, m.value_size, m.max_entries, m.flags] for m in self.maps],
            "programs": [
                {"name": p.name, "hook": p.hook, "insns": base64.b64encode(p.insns).decode(),
                 "map_refs": [[index, name] for index, name in p.map_refs]}
                for p in self.programs
            ],
        }

    @classmethod
    def from_json(cls, text: str) -> "CompiledObject":
        """Parse and check an object: its digest, its shape, and every map reference."""
        try:
            document = json.loads(text)
            if document.get("format") != FORMAT_VERSION:
                raise ObjectError(f"format {document.get('format')!r}, this enforcer reads {FORMAT_VERSION}")
            payload = document["object"]
            if _digest(payload) != document.get("sha256"):
                raise ObjectError("content does not match its digest (truncated or altered)")
            maps = tuple(MapSpec(str(name), *(int(v) for v in values)) for name, *values in payload["maps"])
            programs = tuple(
                ProgramSpec(str(p["name"]), str(p["hook"]), base64.b64decode(p["insns"], validate=True),
                            tuple((int(index), str(name)) for index, name in p["map_refs"]))
                for p in payload["programs"]
            )
            obj = cls(maps, programs, str(payload["license"]))
        except ObjectError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ObjectError(f"malformed compiled object: {error!r}") from None
        obj.check()
        return obj

    def check(self) -> None:
        """Every map reference points at a map of the object, and at nothing else."""
        names = {spec.name for spec in self.maps}
        for program in self.programs:
            if len(program.insns) % INSN_SIZE:
                raise ObjectError(f"program {program.name}: {len(program.insns)} bytes is not whole instructions")
            found = tuple(index for index, _fd in map_fd_loads(program.insns))
            if found != tuple(index for index, _name in program.map_refs):
                raise ObjectError(f"program {program.name}: its map references do not match its instructions")
            unknown = {name for _index, name in program.map_refs} - names
            if unknown:
                raise ObjectError(f"program {program.name} refers to maps it does not declare: {sorted(unknown)}")


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def map_fd_loads(insns: bytes) -> Tuple[Tuple[int, int], ...]:
    """(instruction index, fd) of every map-fd load in `insns`.

    Raises ObjectError for what a relocation by map name cannot carry: other
    pseudo loads (map values, BTF ids) and calls to kernel functions.
    """
    found = []
    index = 0
    count = len(insns) // INSN_SIZE
    while index < count:
        code, regs, _off, imm = struct.unpack_from("<BBhi", insns, index * INSN_SIZE)
        src = regs >> 4
        if code == _LD_IMM64:
            if src == _PSEUDO_MAP_FD:
                found.append((index, imm))
            elif src != 0:
                raise ObjectError(f"instruction {index}: a 64-bit load of kind {src} (not a map fd) "
                                  "cannot be relocated")
            index += 2  # the second half of the 64-bit immediate
            continue
        if code == _CALL and src == _PSEUDO_KFUNC_CALL:
            raise ObjectError(f"instruction {index}: a kernel function call cannot be relocated")
        index += 1
    return tuple(found)


def build(maps: Tuple[MapSpec, ...], map_fds: Mapping[str, int], functions: Mapping[str, Tuple[str, bytes]],
          license: str) -> CompiledObject:
    """An object from a compiler's output: `functions` maps a program name to
    (hook, instructions) whose map references are the fds in `map_fds`."""
    by_fd = {fd: name for name, fd in map_fds.items()}
    programs = []
    for name, (hook, insns) in functions.items():
        refs = []
        for index, fd in map_fd_loads(insns):
            if fd not in by_fd:
                raise ObjectError(f"program {name}, instruction {index}: fd {fd} is none of the compiled maps")
            refs.append((index, by_fd[fd]))
        programs.append(ProgramSpec(name, hook, insns, tuple(refs)))
    obj = CompiledObject(maps, tuple(programs), license)
    obj.check()
    return obj
