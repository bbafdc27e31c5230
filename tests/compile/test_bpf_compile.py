"""The real BPF program compiles with bcc against BTF-generated headers of the
host's kernel and of Debian's 6.1 and 6.12 kernels (extracted from /boot/vmlinuz-*).

Compile tier: needs root and bcc (libbcc creates the maps while compiling),
not a kernel that accepts LSM programs. Loading and verifying happen in the
kernel tier (tests/kernel), inside the VM.
"""

from __future__ import annotations


import os
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


@pytest.mark.parametrize("which", ["host", "6.1", "6.12"])
def test_the_compiled_object_keeps_every_program_and_map_reference(kernels, which: str, tmp_path) -> None:
    """What the agent caches (enforcer.kernel.bpfobject) describes bcc's output fully:
    every hook's program, every declared map with the attributes the kernel gave
    it, every map reference relocatable by name, and it survives its file form."""
    _require_root_and_bcc()
    from enforcer.kernel.bcc_compat import compile_object
    from enforcer.kernel.bpfobject import CompiledObject, map_fd_loads

    path, release = kernels[which]
    headers = kernel_headers.generate_headers(path, cache_root=tmp_path,
                                              kernel_release=None if which == "host" else release)
    obj = compile_object((BPF_DIR / "enforcer.bpf.c").read_text(), headers,
                         registry.PROGRAM_HOOKS, [*registry.cflags(), f"-I{BPF_DIR}"])
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
