"""Facts read from kernel BTF by a small pure-Python parser.

Why this module exists: BPF-LSM needs kernel BTF anyway (programs attach by
BTF id), and facts that change between kernels (hook arity, renamed struct
members) can be read from it, so the C is specialised with -D flags
(enforcer.kernel.features) instead of guessing from a version number.
The C types bcc compiles against are generated from the same BTF by
enforcer.kernel.headers.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import Iterator, Union

DEFAULT_BTF_PATH = "/sys/kernel/btf/vmlinux"

BtfSource = Union["BtfInfo", str, os.PathLike]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

class BtfError(Exception):
    """Base class of every BTF error (reading it, or generating headers from it)."""


class BtfNotFoundError(BtfError):
    """The BTF file does not exist or cannot be read."""

    @classmethod
    def missing(cls, path: str | os.PathLike) -> BtfNotFoundError:
        return cls(f"BTF file {path} not found: enforcer needs kernel BTF "
                   "(a kernel built with CONFIG_DEBUG_INFO_BTF=y, which also provides "
                   "/sys/kernel/btf/vmlinux); BPF-LSM cannot attach without it")


class BtfFormatError(BtfError):
    """The file is not (little-endian) BTF we can parse."""


class LsmHookNotFoundError(BtfError, LookupError):
    """The kernel has no bpf_lsm_<hook> function in its BTF."""


# --------------------------------------------------------------------------
# BTF parsing
# --------------------------------------------------------------------------

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")

# BTF kinds (include/uapi/linux/btf.h).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

# Size of the data that follows each btf_type: fixed part, per-vlen part.
_EXTRA_SIZE = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}
# Kinds looked up by name; the rest are only reached through type ids.
_NAMED_KINDS = frozenset(
    {KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FUNC, KIND_TYPEDEF})
_MODIFIERS = {KIND_VOLATILE: "volatile", KIND_CONST: "const",
              KIND_RESTRICT: "restrict"}


@dataclass(frozen=True)
class BtfParam:
    """One argument of a function: its name and its C type as text."""

    name: str
    c_type: str


@dataclass(frozen=True)
class MemberLocation:
    """A struct member's type id and place: `bit_offset` from the start of the
    struct; `bitfield_bits` is its width for a bitfield, else 0."""

    type_id: int
    bit_offset: int
    bitfield_bits: int


class BtfInfo:
    """BTF parsed once, answering many queries.

    Only the type table is walked eagerly (one pass, offsets and names of
    named kinds); members and parameters are decoded when asked for.  The
    vmlinux BTF (~5 MB, ~150k types) parses in a fraction of a second.
    """

    def __init__(self, data: bytes, origin: str = "<bytes>") -> None:
        self.origin = origin
        self._data = data
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            self._header(data, origin))
        self._types_start = hdr_len + type_off
        self._strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        # Index 0 is the implicit "void" type.
        self._offsets: list[int] = [0]
        self._by_name: dict[tuple[int, str], list[int]] = {}
        self._walk_types(self._types_start, self._types_start + type_len)

    @staticmethod
    def _header(data: bytes, origin: str) -> tuple[int, ...]:
        if len(data) < _HEADER.size:
            raise BtfFormatError(f"{origin}: too short to be BTF")
        fields = _HEADER.unpack_from(data, 0)
        if fields[0] != BTF_MAGIC:
            # Byte-swapped magic would be a big-endian BTF; not supported.
            raise BtfFormatError(
                f"{origin}: not little-endian BTF (magic {fields[0]:#06x})")
        return fields

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> BtfInfo:
        return cls(_read_btf_bytes(path), origin=str(path))

    def _walk_types(self, pos: int, end: int) -> None:
        data, unpack, offsets = self._data, struct.unpack_from, self._offsets
        by_name, named = self._by_name, _NAMED_KINDS
        extra = _EXTRA_SIZE
        while pos < end:
            name_off, info, _size = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            offsets.append(pos)
            if name_off and kind in named:
                by_name.setdefault((kind, self.string(name_off)), []).append(
                    len(offsets) - 1)
            fixed, per = extra.get(kind, (0, 0))
            pos += 12 + fixed + per * (info & 0xFFFF)
        if pos != end:
            raise BtfFormatError(f"{self.origin}: type section is truncated")

    # -- low level --------------------------------------------------------

    def string(self, offset: int) -> str:
        end = self._strings.index(b"\0", offset)
        return self._strings[offset:end].decode("utf-8", "replace")

    def _type(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(name_off, kind, vlen, size_or_type, data_pos) of a type id."""
        pos = self._offsets[type_id]
        name_off, info, size_type = struct.unpack_from("<III", self._data, pos)
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_type, pos + 12

    @property
    def type_count(self) -> int:
        return len(self._offsets) - 1

    def find(self, kind: int, name: str) -> list[int]:
        return list(self._by_name.get((kind, name), ()))

    # -- queries ----------------------------------------------------------

    def has_struct(self, name: str) -> bool:
        return bool(self.find(KIND_STRUCT, name))

    def struct_members(self, name: str) -> tuple[str, ...]:
        """Member names of struct `name`, looking through anonymous
        structs/unions (C lets code name those members directly)."""
        ids = self.find(KIND_STRUCT, name) or self.find(KIND_UNION, name)
        if not ids:
            raise BtfError(f"{self.origin}: no struct {name} in BTF")
        names: list[str] = []
        for type_id in ids:
            names.extend(n for n in self._member_names(type_id) if n not in names)
        return tuple(names)

    def _member_names(self, type_id: int) -> Iterator[str]:
        _name, _kind, vlen, _size, pos = self._type(type_id)
        for i in range(vlen):
            m_name, m_type, _off = struct.unpack_from(
                "<III", self._data, pos + 12 * i)
            if m_name:
                yield self.string(m_name)
                continue
            inner = self._skip_modifiers(m_type)
            if self._type(inner)[1] in (KIND_STRUCT, KIND_UNION):
                yield from self._member_names(inner)

    def member_type(self, struct_name: str, member: str) -> str:
        """C type of struct_name.member as text (through anonymous members),
        e.g. member_type("task_struct", "comm") == "char[16]"."""
        return self.type_name(self._member(struct_name, member).type_id)

    def member_location(self, struct_name: str, member: str) -> MemberLocation:
        """Where struct_name.member sits: bit offset from the start of the
        struct (through anonymous members) and, for a bitfield, its width."""
        return self._member(struct_name, member)

    def _member(self, struct_name: str, member: str) -> MemberLocation:
        for type_id in self.find(KIND_STRUCT, struct_name):
            found = self._find_member(type_id, member, 0)
            if found is not None:
                return found
        raise BtfError(f"{self.origin}: struct {struct_name} has no member {member}")

    def _find_member(self, type_id: int, member: str, base_bits: int) -> MemberLocation | None:
        _name, _kind, vlen, _size, pos = self._type(type_id)
        # With the kind flag set, a member's offset word holds the bitfield
        # width in its top byte and the bit offset below it.
        split = self._kind_flag(type_id)
        for i in range(vlen):
            m_name, m_type, offset = struct.unpack_from(
                "<III", self._data, pos + 12 * i)
            bits, width = (offset & 0xFFFFFF, offset >> 24) if split else (offset, 0)
            if m_name and self.string(m_name) == member:
                return MemberLocation(m_type, base_bits + bits, width)
            if not m_name:
                inner = self._skip_modifiers(m_type)
                if self._type(inner)[1] in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, member, base_bits + bits)
                    if found is not None:
                        return found
        return None

    def struct_has_member(self, struct_name: str, member: str) -> bool:
        if not (self.find(KIND_STRUCT, struct_name)
                or self.find(KIND_UNION, struct_name)):
            return False
        return member in self.struct_members(struct_name)

    def _skip_modifiers(self, type_id: int) -> int:
        while type_id:
            kind = self._type(type_id)[1]
            if kind not in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST,
                            KIND_RESTRICT, KIND_TYPE_TAG):
                break
            type_id = self._type(type_id)[3]
        return type_id

    def func_params(self, func_name: str) -> tuple[BtfParam, ...]:
        ids = self.find(KIND_FUNC, func_name)
        if not ids:
            raise BtfError(f"{self.origin}: no function {func_name} in BTF")
        proto = self._type(ids[0])[3]
        _name, kind, vlen, _ret, pos = self._type(proto)
        if kind != KIND_FUNC_PROTO:
            raise BtfFormatError(f"{self.origin}: {func_name} has no prototype")
        params = []
        for i in range(vlen):
            p_name, p_type = struct.unpack_from("<II", self._data, pos + 8 * i)
            params.append(BtfParam(self.string(p_name), self.type_name(p_type)))
        return tuple(params)

    def lsm_hook_signature(self, hook: str) -> tuple[BtfParam, ...]:
        try:
            return self.func_params("bpf_lsm_" + hook)
        except BtfError:
            raise LsmHookNotFoundError(
                f"LSM hook {hook!r} not found: {self.origin} has no "
                f"bpf_lsm_{hook} function (unknown hook, or a kernel without "
                "CONFIG_BPF_LSM)") from None

    def lsm_hook_id(self, hook: str) -> int:
        """The BTF id of `bpf_lsm_<hook>`: what a BPF-LSM program attaches to."""
        ids = self.find(KIND_FUNC, "bpf_lsm_" + hook)
        if not ids:
            raise LsmHookNotFoundError(
                f"LSM hook {hook!r} not found: {self.origin} has no bpf_lsm_{hook} function")
        return ids[0]

    def lsm_hook_params(self, hook: str) -> tuple[str, ...]:
        return tuple(p.name for p in self.lsm_hook_signature(hook))

    def enum_values(self, enum_name: str) -> dict[str, int]:
        ids = self.find(KIND_ENUM, enum_name) or self.find(KIND_ENUM64, enum_name)
        if not ids:
            raise BtfError(f"{self.origin}: no enum {enum_name} in BTF")
        _name, kind, vlen, _size, pos = self._type(ids[0])
        values: dict[str, int] = {}
        for i in range(vlen):
            if kind == KIND_ENUM:
                e_name, val = struct.unpack_from("<Ii", self._data, pos + 8 * i)
            else:
                e_name, lo, hi = struct.unpack_from("<III", self._data, pos + 12 * i)
                val = (hi << 32) | lo
            values[self.string(e_name)] = val
        return values

    def named_enum_sizes(self) -> dict[str, int]:
        """Byte size of every named enum (32- and 64-bit kinds alike)."""
        sizes: dict[str, int] = {}
        for type_id in range(1, self.type_count + 1):
            name_off, kind, _vlen, size, _pos = self._type(type_id)
            if kind in (KIND_ENUM, KIND_ENUM64) and name_off:
                sizes.setdefault(self.string(name_off), size)
        return sizes

    def type_name(self, type_id: int) -> str:
        """C-ish spelling of a type, enough to read a signature
        ("struct file *", "const struct path *", "int")."""
        if type_id == 0:
            return "void"
        name_off, kind, _vlen, ref, _pos = self._type(type_id)
        name = self.string(name_off) if name_off else ""
        if kind == KIND_PTR:
            return self.type_name(ref) + " *"
        if kind in _MODIFIERS:
            return f"{_MODIFIERS[kind]} {self.type_name(ref)}"
        if kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
            prefix = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(kind, "enum")
            return f"{prefix} {name}".strip()
        if kind == KIND_FWD:
            return ("union " if self._kind_flag(type_id) else "struct ") + name
        if kind == KIND_FUNC_PROTO:
            return "fn"
        if kind == KIND_TYPE_TAG:
            return self.type_name(ref)
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, _pos)
            return f"{self.type_name(elem)}[{nelems}]"
        return name or f"<type {type_id}>"

    def _kind_flag(self, type_id: int) -> bool:
        info = struct.unpack_from("<I", self._data, self._offsets[type_id] + 4)[0]
        return bool(info >> 31)


def _read_btf_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise BtfNotFoundError.missing(path) from None
    except PermissionError as exc:
        raise BtfNotFoundError(f"cannot read BTF file {path}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _cached_btf(path: str, mtime_ns: int, size: int) -> BtfInfo:
    # Keyed by stat data so a rewritten file is parsed again.
    return BtfInfo.from_file(path)


def forget_parsed() -> None:
    """Drop the parsed BTF kept for repeated queries (~35 MiB for a vmlinux):
    the agent needs it while it compiles and loads, not while it runs."""
    _cached_btf.cache_clear()


def load_btf(btf: BtfSource = DEFAULT_BTF_PATH) -> BtfInfo:
    """A BtfInfo for `btf` (returned as is if it already is one); files are
    parsed once per process."""
    if isinstance(btf, BtfInfo):
        return btf
    path = os.path.realpath(btf)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BtfNotFoundError.missing(btf) from None
    return _cached_btf(path, st.st_mtime_ns, st.st_size)


def lsm_hook_params(btf: BtfSource, hook: str) -> tuple[str, ...]:
    """Argument names of the kernel's bpf_lsm_<hook>, e.g. ("file",)."""
    return load_btf(btf).lsm_hook_params(hook)


def lsm_hook_signature(btf: BtfSource, hook: str) -> tuple[BtfParam, ...]:
    return load_btf(btf).lsm_hook_signature(hook)


def struct_has_member(btf: BtfSource, struct_name: str, member: str) -> bool:
    return load_btf(btf).struct_has_member(struct_name, member)
