"""Include trees for bcc generated from real kernels' BTF with bpftool, and
their cache (enforcer.kernel.headers).

Compile tier: needs bpftool and kernel BTF; the error paths that need neither
are in tests/unit/test_headers.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer.kernel import btf

needs_bpftool = pytest.mark.skipif(
    shutil.which("bpftool", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    is None, reason="bpftool not installed")


def test_headers_tree(headers: dict[str, kernel_headers.KernelHeaders]) -> None:
    for h in headers.values():
        root = h.source_dir
        assert h.header_name != "vmlinux.h"
        dumped = (root / "include/linux" / h.header_name).read_text()
        assert "preserve_access_index" not in dumped
        assert "struct task_struct {" in dumped
        kconfig = (root / "include/linux/kconfig.h").read_text()
        assert "_UAPI__LINUX_BPF_H__" in kconfig and h.header_name in kconfig
        for rel in ("include/linux/types.h", "include/linux/bpf_common.h",
                    "include/uapi/linux/if_packet.h", "include/linux/log2.h",
                    "include/generated/uapi/linux/version.h"):
            assert (root / rel).is_file(), rel
        assert h.env == {"BCC_KERNEL_SOURCE": str(root)}
    code = kernel_headers.linux_version_code(headers["6.1"].kernel_version)
    assert f"LINUX_VERSION_CODE {code}" in (
        headers["6.1"].source_dir / "include/linux/version.h").read_text()


def test_missing_helper_ids_computed(headers: dict[str, kernel_headers.KernelHeaders],
                                     kernels: dict) -> None:
    referenced = kernel_headers.bcc_helper_ids()
    if not referenced:
        pytest.skip("libbcc not installed")
    h61 = headers["6.1"]
    # bcc 0.26 names cgroup storage helpers that arrived in 6.2.
    assert "BPF_FUNC_cgrp_storage_get" in h61.missing_helper_ids
    known = btf.load_btf(kernels["6.1"][0]).enum_values("bpf_func_id")
    assert not set(h61.missing_helper_ids) & set(known)
    assert set(h61.missing_helper_ids) <= referenced
    kconfig = (h61.source_dir / "include/linux/kconfig.h").read_text()
    assert "BPF_FUNC_cgrp_storage_get =" in kconfig


def test_cache_reused_and_keyed_by_sha(headers: dict[str, kernel_headers.KernelHeaders],
                                       kernels: dict, header_cache: Path) -> None:
    path, rel = kernels["host"]
    first = headers["host"]
    marker = first.source_dir / "include/linux/kconfig.h"
    mtime = marker.stat().st_mtime_ns
    again = kernel_headers.generate_headers(path, header_cache, kernel_release=rel)
    assert again == first
    assert marker.stat().st_mtime_ns == mtime  # not rewritten
    assert headers["6.1"].source_dir != first.source_dir
    assert first.source_dir.name == kernel_headers.file_sha256(path)


def test_cache_ignores_half_written_tmp(kernels: dict, tmp_path: Path) -> None:
    path, rel = kernels["6.1"]
    sha = kernel_headers.file_sha256(path)
    # What a run killed mid-write leaves: a temp dir and a final dir with no
    # manifest (e.g. copied by hand).  Neither may be used.
    (tmp_path / f".tmp-{sha[:16]}-dead" / "include").mkdir(parents=True)
    (tmp_path / sha / "include/linux").mkdir(parents=True)
    h = kernel_headers.generate_headers(path, tmp_path, kernel_release=rel)
    assert h.source_dir == tmp_path / sha
    assert (h.source_dir / kernel_headers.MANIFEST_NAME).is_file()
    assert (h.source_dir / "include/linux" / h.header_name).is_file()


@needs_bpftool
def test_bpftool_failure_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.btf"
    bogus.write_bytes(b"not btf at all")
    with pytest.raises(kernel_headers.BpftoolFailedError, match="bpftool"):
        kernel_headers.dump_btf_c(bogus)
