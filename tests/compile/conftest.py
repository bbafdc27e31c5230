"""Fixtures of the compile tier: kernel BTF of two kernels, and bcc include
trees generated from them.

Two kernels: the host's BTF (/sys/kernel/btf/vmlinux, world-readable, so
parsing is rootless) and Debian 6.1's, extracted from
/boot/vmlinuz-6.1.0-*-amd64 once per session.  A test using a kernel this
host lacks is skipped.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer.kernel import btf
from harness import vmlinuz

HOST_BTF = Path(btf.DEFAULT_BTF_PATH)
VMLINUZ_61 = sorted(glob.glob("/boot/vmlinuz-6.1.*"))


@pytest.fixture(scope="session")
def btf61(tmp_path_factory: pytest.TempPathFactory) -> vmlinuz.ExtractedBtf:
    if not VMLINUZ_61:
        pytest.skip("no /boot/vmlinuz-6.1.* to extract Debian 6.1 BTF from")
    out = tmp_path_factory.mktemp("btf61") / "vmlinux-6.1.btf"
    return vmlinuz.btf_from_vmlinuz(VMLINUZ_61[-1], out)


class _Kernels(dict):  # type: ignore[type-arg]
    """name -> (BTF path, kernel release); a test using a kernel this host
    lacks is skipped rather than failed."""

    def __missing__(self, name: str) -> tuple[Path, str]:
        pytest.skip(f"no BTF for kernel {name!r} on this host")


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> _Kernels:
    found = _Kernels()
    if os.access(HOST_BTF, os.R_OK):
        found["host"] = (HOST_BTF, os.uname().release)
    if VMLINUZ_61:
        out = tmp_path_factory.mktemp("btf61") / "vmlinux-6.1.btf"
        extracted = vmlinuz.btf_from_vmlinuz(VMLINUZ_61[-1], out)
        found["6.1"] = (extracted.btf_path, extracted.kernel_release)
    return found


@pytest.fixture(scope="session")
def header_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("btfcache")


@pytest.fixture(scope="session")
def headers(kernels: _Kernels, header_cache: Path) -> dict[str, kernel_headers.KernelHeaders]:
    if shutil.which("bpftool", path="/usr/sbin:/sbin:" + os.environ["PATH"]) is None:
        pytest.skip("bpftool not installed")
    built = {name: kernel_headers.generate_headers(path, header_cache, kernel_release=rel)
             for name, (path, rel) in kernels.items()}
    return _Headers(built)


class _Headers(dict):  # type: ignore[type-arg]
    def __missing__(self, name: str) -> kernel_headers.KernelHeaders:
        pytest.skip(f"no BTF for kernel {name!r} on this host")
