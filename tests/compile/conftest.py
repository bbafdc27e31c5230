"""Fixtures of the compile tier: kernel BTF of three kernels, and bcc include
trees generated from them.

The host's BTF (/sys/kernel/btf/vmlinux, world-readable, so parsing is
rootless), and the two Debian stock kernels the VM tests boot, 6.1 and 6.12,
extracted from their /boot/vmlinuz-* images once per session.  A test using a
kernel this host lacks is skipped, except under CI, where .ci/run installs
both images and a missing one is a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer.kernel import btf
from harness import vm, vmlinuz

HOST_BTF = Path(btf.DEFAULT_BTF_PATH)


def _stock_images(major: int, minor: int) -> list:
    """Debian stock images of one kernel series, oldest first ("6.1" must not match 6.12)."""
    found = []
    for path in glob.glob("/boot/vmlinuz-*"):
        version = vm.debian_kernel_version(os.path.basename(path))
        if version is not None and version[:2] == (major, minor):
            found.append((version, path))
    return [path for _, path in sorted(found)]


#: the kernels the VM tests boot, by series name
DEBIAN_SERIES = {"6.1": _stock_images(6, 1), "6.12": _stock_images(6, 12)}
VMLINUZ_61 = DEBIAN_SERIES["6.1"]


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
        if vm.in_ci():
            pytest.fail(f"no BTF for kernel {name!r}: .ci/run installs linux-image-amd64 and linux-image-6.12-amd64")
        pytest.skip(f"no BTF for kernel {name!r} on this host")


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> _Kernels:
    found = _Kernels()
    if os.access(HOST_BTF, os.R_OK):
        found["host"] = (HOST_BTF, os.uname().release)
    for series, images in DEBIAN_SERIES.items():
        if images:
            out = tmp_path_factory.mktemp(f"btf{series}") / f"vmlinux-{series}.btf"
            extracted = vmlinuz.btf_from_vmlinuz(images[-1], out)
            found[series] = (extracted.btf_path, extracted.kernel_release)
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
