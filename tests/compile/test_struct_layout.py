"""The compiled BPF reads kernel structs at the offsets the kernel's BTF gives.

bcc compiles the program against a C header that bpftool prints from BTF.
Clang's `offsetof` and its generated code can disagree about that header: on
Debian's 6.12 a run of `long: 64;` padding lines made every member access
after it in `struct mm_struct` land 16 bytes too far (see
enforcer.kernel.headers.split_padding_runs), so `mm->exe_file` read garbage
while every layout query looked right.  Only the generated code tells, so
this test compiles a probe that stores `&p->member - p` for every member of
every kernel struct the real program names (and of the structs embedded in
them), decodes the BPF instructions bcc produced, and compares each constant
with the member's BTF offset, on each kernel whose BTF the tier has.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer.kernel import btf

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
KERNELS = ["host", "6.1", "6.12"]

_STRUCT_NAME = re.compile(r"\bstruct\s+([A-Za-z_]\w*)")
_STRUCT_DEFINITION = re.compile(r"\bstruct\s+([A-Za-z_]\w*)\s*\{")
_EMBEDDED_STRUCT = re.compile(r"^struct ([A-Za-z_]\w*)$")

# BPF instruction encodings the probe's stores compile to.
_MOV64_IMM = 0xB7          # dst = imm
_LD_IMM64 = 0x18           # dst = imm64 (two slots)
_STX_MEM_DW = 0x7B         # *(u64 *)(dst + off) = src
_ST_MEM_DW = 0x7A          # *(u64 *)(dst + off) = imm


@dataclass(frozen=True)
class Member:
    struct: str
    name: str
    btf_offset: int  # bytes


def _program_structs(info: btf.BtfInfo) -> list[str]:
    """Kernel structs the BPF program names (its own definitions excluded)."""
    sources = [(BPF_DIR / name).read_text() for name in ("enforcer.bpf.c", "enforcer.h")]
    own = {name for text in sources for name in _STRUCT_DEFINITION.findall(text)}
    named = {name for text in sources for name in _STRUCT_NAME.findall(text)}
    return sorted(name for name in named - own if info.find(btf.KIND_STRUCT, name))


def _members(info: btf.BtfInfo, struct_names: list[str]) -> list[Member]:
    """Every addressable member of the given structs and of the structs
    embedded (not pointed to) in them, with its BTF byte offset."""
    todo, seen, members = list(struct_names), set(), []
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for member in info.struct_members(name):
            where = info.member_location(name, member)
            if where.bitfield_bits:
                continue  # a bit-field has no address
            members.append(Member(name, member, where.bit_offset // 8))
            embedded = _EMBEDDED_STRUCT.match(info.member_type(name, member))
            if embedded and name in struct_names and info.find(btf.KIND_STRUCT, embedded.group(1)):
                todo.append(embedded.group(1))
    return members


def _probe_source(members: list[Member]) -> str:
    lines = [
        f"struct layout_out {{ unsigned long v[{len(members)}]; }};",
        "BPF_ARRAY(layout_out, struct layout_out, 1);",
        "int layout_probe(void *ctx)",
        "{",
        "\tint zero = 0;",
        "\tstruct layout_out *out = layout_out.lookup(&zero);",
        "\tchar *base = (char *)bpf_get_current_task();",
        "\tif (!out)",
        "\t\treturn 0;",
    ]
    for i, m in enumerate(members):
        lines.append(f"\tout->v[{i}] = (unsigned long)((char *)&((struct {m.struct} *)base)->{m.name} - base);")
    lines += ["\treturn 0;", "}", ""]
    return "\n".join(lines)


def _stored_constants(insns: bytes) -> dict[int, int]:
    """{store offset: constant} for the 64-bit stores of constants in `insns`
    (a constant reaches a store directly or through a register)."""
    regs: dict[int, int] = {}
    stores: dict[int, int] = {}
    i = 0
    while i < len(insns):
        code, regs_byte, off, imm = struct.unpack_from("<BBhi", insns, i)
        dst, src = regs_byte & 0x0F, regs_byte >> 4
        if code == _MOV64_IMM:
            regs[dst] = imm
        elif code == _LD_IMM64:
            high = struct.unpack_from("<i", insns, i + 12)[0]
            regs[dst] = (imm & 0xFFFFFFFF) | (high << 32)
            i += 8
        elif code == _ST_MEM_DW:
            stores[off] = imm
        elif code == _STX_MEM_DW and src in regs:
            stores[off] = regs[src]
        else:
            regs.pop(dst, None)  # anything else may have changed dst
        i += 8
    return stores


def _compile_probe(source: str, headers: kernel_headers.KernelHeaders) -> bytes:
    from enforcer.kernel.bcc_compat import compile_only

    return compile_only(source, headers).bytecode["layout_probe"]


@pytest.mark.parametrize("which", KERNELS)
def test_compiled_member_offsets_match_btf(kernels, which: str, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("compile tier needs root: libbcc creates the probe's map while compiling")
    pytest.importorskip("bcc", reason="bcc's Python binding (python3-bpfcc) is not installed")
    path, release = kernels[which]
    headers = kernel_headers.generate_headers(
        path, cache_root=tmp_path, kernel_release=None if which == "host" else release)
    info = btf.load_btf(path)
    structs = _program_structs(info)
    # The structs the exe, path and cgroup walks depend on must be among them.
    assert {"task_struct", "mm_struct", "file", "dentry", "mount", "linux_binprm"} <= set(structs), structs
    members = _members(info, structs)
    stores = _stored_constants(_compile_probe(_probe_source(members), headers))
    wrong = []
    for i, m in enumerate(members):
        compiled = stores.get(8 * i)
        if compiled != m.btf_offset:
            wrong.append(f"{m.struct}.{m.name}: BTF {m.btf_offset}, compiled {compiled}")
    assert not wrong, f"{len(wrong)} of {len(members)} members misplaced on {which}:\n" + "\n".join(wrong[:40])
    assert len(members) > 300  # the probe really covered the structs, not a handful
