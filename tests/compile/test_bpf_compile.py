"""The real BPF program compiles with bcc against BTF-generated headers of the
host's kernel and of Debian's 6.1 kernel (extracted from /boot/vmlinuz-*).

Compile tier: needs root and bcc (libbcc creates the maps while compiling),
not a kernel that accepts LSM programs. Loading and verifying happen in the
kernel tier (tests/kernel), inside the VM.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer import registry
from enforcer.kernel import btf, loader
from harness import vmlinuz

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
EXPECTED = {spec.program for spec in registry.HOOKS}


def _require_root_and_bcc() -> None:
    if os.geteuid() != 0:
        pytest.skip("compile tier needs root: libbcc creates the program's maps while compiling")
    pytest.importorskip("bcc", reason="bcc's Python binding (python3-bpfcc) is not installed")


def _debian_vmlinuz() -> str:
    images = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    if not images:
        pytest.fail("no Debian kernel image in /boot: install linux-image-amd64 (.ci/run does)")
    return images[-1]


@pytest.fixture(scope="module")
def kernel_btfs(tmp_path_factory) -> dict:
    _require_root_and_bcc()
    out = tmp_path_factory.mktemp("btf")
    extracted = vmlinuz.btf_from_vmlinuz(_debian_vmlinuz(), out / "debian.btf")
    found = {"debian-" + extracted.kernel_release: (str(extracted.btf_path), extracted.kernel_release)}
    if Path("/sys/kernel/btf/vmlinux").is_file():
        found["host"] = ("/sys/kernel/btf/vmlinux", None)
    return found


@pytest.mark.parametrize("which", ["host", "debian"])
def test_enforcer_bpf_compiles(kernel_btfs, which: str, tmp_path) -> None:
    from enforcer.kernel.bcc_compat import compile_only

    matches = {k: v for k, v in kernel_btfs.items() if k.startswith(which)}
    if not matches:
        pytest.fail(f"no {which} kernel BTF available")
    (path, release), = matches.values()
    headers = kernel_headers.generate_headers(path, cache_root=tmp_path, kernel_release=release)
    info = btf.load_btf(path)
    loader.check_hook_signatures(info)
    # compile_only adds the header tree's own flags; the rest is what the loader adds
    module = compile_only((BPF_DIR / "enforcer.bpf.c").read_text(), headers, [*registry.cflags(), f"-I{BPF_DIR}"])
    assert set(module.functions) >= EXPECTED
    # the verifier's limit is on processed instructions, not size; this only
    # catches accidental blow-ups of the program text (each insn is 8 bytes)
    assert all(module.instruction_bytes[name] < 8 * 8192 for name in EXPECTED), module.instruction_bytes
