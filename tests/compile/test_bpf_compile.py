"""The real BPF program compiles with bcc against BTF-generated headers of the
host's kernel and of Debian's 6.1 and 6.12 kernels (extracted from /boot/vmlinuz-*).

Compile tier: needs root and bcc (libbcc creates the maps while compiling),
not a kernel that accepts LSM programs. Loading and verifying happen in the
kernel tier (tests/kernel), inside the VM.
"""

from __future__ import annotations


import os
import struct
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer import registry
from enforcer.kernel import btf, loader


BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
EXPECTED = {spec.program for spec in registry.HOOKS}


def _require_root_and_bcc() -> None:
    if os.geteuid() != 0:
        pytest.skip("compile tier needs root: libbcc creates the program's maps while compiling")
    pytest.importorskip("bcc", reason="bcc's Python binding (python3-bpfcc) is not installed")


@pytest.mark.parametrize("which", ["host", "6.1", "6.12"])
def test_enforcer_bpf_compiles(kernels, which: str, tmp_path) -> None:
    _require_root_and_bcc()
    from enforcer.kernel.bcc_compat import compile_only

    path, release = kernels[which]
    release = None if which == "host" else release
    headers = kernel_headers.generate_headers(path, cache_root=tmp_path, kernel_release=release)
    info = btf.load_btf(path)
    loader.check_hook_signatures(info)
    # compile_only adds the header tree's own flags; the rest is what the loader adds
    module = compile_only((BPF_DIR / "enforcer.bpf.c").read_text(), headers, [*registry.cflags(), f"-I{BPF_DIR}"])
    assert set(module.functions) >= EXPECTED
    # the verifier's limit is on processed instructions, not size; this only
    # catches accidental blow-ups of the program text (each insn is 8 bytes)
    assert all(module.instruction_bytes[name] < 8 * 8192 for name in EXPECTED), module.instruction_bytes


@pytest.fixture(scope="module", params=["host", "6.1", "6.12"])
def compiled(request, kernels, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The object bcc compiles for one kernel, as the agent caches it."""
    _require_root_and_bcc()
    from enforcer.kernel.bcc_compat import compile_object

    path, release = kernels[request.param]
    headers = kernel_headers.generate_headers(path, cache_root=tmp_path_factory.mktemp(f"headers-{request.param}"),
                                              kernel_release=None if request.param == "host" else release)
    return compile_object((BPF_DIR / "enforcer.bpf.c").read_text(), headers,
                          registry.PROGRAM_HOOKS, [*registry.cflags(), f"-I{BPF_DIR}"])


def test_the_compiled_object_keeps_every_program_and_map_reference(compiled) -> None:  # type: ignore[no-untyped-def]
    """What the agent caches (enforcer.kernel.bpfobject) describes bcc's output fully:
    every hook's program, every declared map with the attributes the kernel gave
    it, every map reference relocatable by name, and it survives its file form."""
    from enforcer.kernel.bpfobject import CompiledObject, map_fd_loads

    obj = compiled
    assert {p.hook for p in obj.programs} == {spec.name for spec in registry.HOOKS}
    assert {m.name for m in obj.maps} == {spec.name for spec in registry.MAPS}
    for spec in registry.MAPS:
        expected = spec.capacity if spec.kind is registry.MapKind.RINGBUF else spec.size_value  # bytes / entries
        assert obj.map(spec.name).max_entries == expected, spec.name
    for program in obj.programs:
        # Only a program compiled to a bare return (bprm_creds_for_exec where
        # the kernel has no is_check) may read no map.
        if len(program.insns) > 4 * 8:
            assert program.map_refs, f"{program.name} reads no map: the relocation scan found nothing"
        assert len(map_fd_loads(program.insns)) == len(program.map_refs)
    assert CompiledObject.from_json(obj.to_json()) == obj


#: BPF_ALU64 | BPF_ARSH | BPF_K, BPF_ALU64 | BPF_AND | BPF_X
_ARSH_IMM, _AND_REG = 0xc7, 0x5f


def pointer_masks(insns: bytes) -> list:
    """Where clang turned `p = cond ? p : NULL` into arithmetic: a register
    shifted so that it is all ones or all zeros (`r >>= 63`, arithmetic),
    then ANDed with another register. When that other register is a pointer
    the verifier refuses the program ("bitwise operator &= on pointer
    prohibited"), which the host cannot find out (it loads no LSM program):
    the index pairs found, for the caller to report."""
    found = []
    count = len(insns) // 8
    for i in range(count):
        opcode, regs, imm = insns[8 * i], insns[8 * i + 1], int.from_bytes(insns[8 * i + 4:8 * i + 8], "little",
                                                                              signed=True)
        if opcode != _ARSH_IMM or imm != 63:
            continue
        for j in range(i + 1, min(i + 4, count)):
            if insns[8 * j] == _AND_REG and insns[8 * j + 1] & 0xF == regs & 0xF:
                found.append((i, j))
    return found


def _insn(opcode: int, dst: int, src: int, imm: int) -> bytes:
    return struct.pack("<BBhi", opcode, dst | src << 4, 0, imm)


def test_the_scan_finds_the_select_clang_made() -> None:
    """The shape 6.12's verifier refused in lsm__inode_setattr: r6 <<= 51,
    r6 s>>= 63, r6 &= r0; an arithmetic shift by another amount, or an AND
    of another register, is not it."""
    refused = _insn(0x67, 6, 0, 51) + _insn(_ARSH_IMM, 6, 0, 63) + _insn(_AND_REG, 6, 0, 0)
    assert pointer_masks(refused) == [(1, 2)]
    assert pointer_masks(_insn(_ARSH_IMM, 6, 0, 62) + _insn(_AND_REG, 6, 0, 0)) == []
    assert pointer_masks(_insn(_ARSH_IMM, 6, 0, 63) + _insn(_AND_REG, 7, 0, 0)) == []


def test_no_program_masks_a_pointer_the_verifier_would_refuse(compiled) -> None:  # type: ignore[no-untyped-def]
    """A settings pointer handed to an inlined function that tests it for
    NULL again became such a select in inode_setattr (2026-12-07: refused on
    6.1 and 6.12 in the VM); a NULL test and return at the call site is a
    branch. Found here in seconds instead of a VM run. Only a sign mask ANDed
    within three instructions is looked for: other shapes of the same select
    exist, so passing here is no proof, failing is."""
    masked = {program.name: pointer_masks(program.insns) for program in compiled.programs}
    assert not {name: where for name, where in masked.items() if where}, masked


def test_the_compile_worker_gives_what_compiling_in_process_gives(kernels, tmp_path) -> None:
    """The agent compiles in a child process (enforcer.kernel.compile_worker),
    so that it never maps clang and LLVM; the object it reads back from the
    child is the one an in-process compile makes, equal in every field."""
    _require_root_and_bcc()
    from enforcer.kernel.compile_worker import compile_here, compile_in_worker

    path, _release = kernels["host"]
    in_worker = compile_in_worker(Path(path), BPF_DIR, tmp_path / "worker")
    here = compile_here(Path(path), BPF_DIR, tmp_path / "here")
    assert (in_worker.maps, in_worker.license) == (here.maps, here.license)
    assert _fd_blind(in_worker) == _fd_blind(here)
    assert {p.hook for p in in_worker.programs} == {spec.name for spec in registry.HOOKS}


def _fd_blind(obj):  # type: ignore[no-untyped-def]
    """Each program relocated with fd 0 for every map: the fds bcc's maps had
    in the compiling process differ, and the loader relocates them by name."""
    zeros = {spec.name: 0 for spec in obj.maps}
    return [(p.name, p.hook, p.map_refs, p.relocated(zeros)) for p in obj.programs]


def test_a_compile_error_in_the_worker_comes_back_with_clangs_diagnostics(kernels, tmp_path) -> None:
    _require_root_and_bcc()
    import shutil

    from enforcer.kernel.compile_worker import CompileWorkerError, compile_in_worker

    broken = tmp_path / "bpf"
    shutil.copytree(BPF_DIR, broken)
    source = broken / "enforcer.bpf.c"
    source.write_text(source.read_text() + "\nint enforcer_not_c = undeclared_name_here;\n")
    path, _release = kernels["host"]
    with pytest.raises(CompileWorkerError, match="undeclared_name_here"):
        compile_in_worker(Path(path), broken, tmp_path / "cache")
