"""Synthetic BTF for pure tests of enforcer.kernel.btf.

Real kernel BTF (/sys/kernel/btf/vmlinux, /boot/vmlinuz-*) differs per host;
the unit tier builds the few types it asks about byte by byte instead, in the
layout of include/uapi/linux/btf.h, so the parser is tested everywhere.
"""

from __future__ import annotations

import struct
from typing import Iterable, Tuple

from enforcer.kernel import btf

_HEADER = struct.Struct("<HBBIIIII")


class BtfBuilder:
    """Appends types and returns their ids (1, 2, ...; 0 is void)."""

    def __init__(self) -> None:
        self._strings = bytearray(b"\0")
        self._types = bytearray()
        self._count = 0

    def _name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self._strings)
        self._strings += text.encode() + b"\0"
        return offset

    def _add(self, kind: int, name: str, vlen: int, size_or_type: int,
             extra: bytes = b"", kind_flag: bool = False) -> int:
        info = (int(kind_flag) << 31) | (kind << 24) | vlen
        self._types += struct.pack("<III", self._name(name), info, size_or_type) + extra
        self._count += 1
        return self._count

    def int_type(self, name: str, size: int) -> int:
        return self._add(btf.KIND_INT, name, 0, size, struct.pack("<I", size * 8))

    def ptr(self, target: int) -> int:
        return self._add(btf.KIND_PTR, "", 0, target)

    def const(self, target: int) -> int:
        return self._add(btf.KIND_CONST, "", 0, target)

    def array(self, element: int, index: int, count: int) -> int:
        return self._add(btf.KIND_ARRAY, "", 0, 0, struct.pack("<III", element, index, count))

    def struct_type(self, name: str, members: Iterable[Tuple[str, int]], union: bool = False) -> int:
        packed = [struct.pack("<III", self._name(m_name), m_type, 0) for m_name, m_type in members]
        kind = btf.KIND_UNION if union else btf.KIND_STRUCT
        return self._add(kind, name, len(packed), 8, b"".join(packed))

    def bitfield_struct(self, name: str, members: Iterable[Tuple[str, int, int, int]]) -> int:
        """A struct with the kind flag set: each member is (name, type,
        bit offset, bitfield width or 0), as the kernel's BTF encodes them."""
        packed = [struct.pack("<III", self._name(m_name), m_type, (width << 24) | bits)
                  for m_name, m_type, bits, width in members]
        return self._add(btf.KIND_STRUCT, name, len(packed), 64, b"".join(packed), kind_flag=True)

    def enum(self, name: str, values: Iterable[Tuple[str, int]]) -> int:
        packed = [struct.pack("<Ii", self._name(v_name), value) for v_name, value in values]
        return self._add(btf.KIND_ENUM, name, len(packed), 4, b"".join(packed))

    def func(self, name: str, params: Iterable[Tuple[str, int]], returns: int) -> int:
        packed = [struct.pack("<II", self._name(p_name), p_type) for p_name, p_type in params]
        proto = self._add(btf.KIND_FUNC_PROTO, "", len(packed), returns, b"".join(packed))
        return self._add(btf.KIND_FUNC, name, 0, proto)

    def to_bytes(self) -> bytes:
        types, strings = bytes(self._types), bytes(self._strings)
        header = _HEADER.pack(btf.BTF_MAGIC, 1, 0, _HEADER.size,
                              0, len(types), len(types), len(strings))
        return header + types + strings


def small_kernel(kernfs_parent: str = "__parent", is_check_width: int = -1,
                 task_members: tuple = ()) -> bytes:
    """A few types shaped like the kernel's, with the quirks the agent meets:
    members inside anonymous unions/structs, a const member, a char array,
    an LSM hook, bpf_func_id, and kernfs_node's parent under either name.
    With is_check_width >= 0, linux_binprm has Linux 6.14's is_check (bit 325,
    as on 6.18) of that width (0: a whole member at byte 41). task_members:
    further task_struct members (start_boottime, loginuid, sessionid)."""
    b = BtfBuilder()
    int_t = b.int_type("int", 4)
    char_t = b.int_type("char", 1)
    path_t = b.struct_type("path", [("mnt", int_t), ("dentry", int_t)])
    const_path = b.const(path_t)
    f_path_union = b.struct_type("", [("f_path", const_path)], union=True)
    b.struct_type("file", [("", f_path_union), ("f_flags", int_t)])
    hash_struct = b.struct_type("", [("hash", int_t), ("len", int_t)])
    hash_union = b.struct_type("", [("", hash_struct), ("hash_len", int_t)], union=True)
    b.struct_type("qstr", [("", hash_union), ("name", b.ptr(char_t))])
    b.struct_type("task_struct", [("pid", int_t), ("comm", b.array(char_t, int_t, 16)),
                                  *((name, int_t) for name in task_members)])
    b.struct_type("kernfs_node", [(kernfs_parent, int_t), ("name", b.ptr(char_t))])
    b.enum("bpf_func_id", [("BPF_FUNC_unspec", 0), ("BPF_FUNC_map_lookup_elem", 1)])
    b.func("bpf_lsm_path_truncate", [("path", b.ptr(const_path))], int_t)
    binprm = [("file", b.ptr(int_t), 0, 0), ("have_execfd", int_t, 320, 1)]
    if is_check_width > 0:
        binprm.append(("is_check", int_t, 325, is_check_width))
    elif is_check_width == 0:
        binprm.append(("is_check", int_t, 328, 0))
    b.bitfield_struct("linux_binprm", binprm)
    return b.to_bytes()
