"""Tests for enforcer.kernel.btf and the bcc compile-only helper.

Two kernels: the host's BTF (/sys/kernel/btf/vmlinux, world-readable, so
parsing is rootless) and Debian 6.1's, extracted from
/boot/vmlinuz-6.1.0-*-amd64 once per session.  bcc compilation needs root
(libbcc creates the maps) and Debian's python3-bpfcc.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from pathlib import Path

import pytest

from enforcer.kernel import btf

HOST_BTF = Path(btf.DEFAULT_BTF_PATH)
VMLINUZ_61 = sorted(glob.glob("/boot/vmlinuz-6.1.*"))

needs_host_btf = pytest.mark.skipif(
    not os.access(HOST_BTF, os.R_OK), reason="no readable /sys/kernel/btf/vmlinux")
needs_bpftool = pytest.mark.skipif(
    shutil.which("bpftool", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    is None, reason="bpftool not installed")


@pytest.fixture(scope="session")
def btf61(tmp_path_factory: pytest.TempPathFactory) -> btf.ExtractedBtf:
    if not VMLINUZ_61:
        pytest.skip("no /boot/vmlinuz-6.1.* to extract Debian 6.1 BTF from")
    out = tmp_path_factory.mktemp("btf61") / "vmlinux-6.1.btf"
    return btf.btf_from_vmlinuz(VMLINUZ_61[-1], out)


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
        extracted = btf.btf_from_vmlinuz(VMLINUZ_61[-1], out)
        found["6.1"] = (extracted.btf_path, extracted.kernel_release)
    return found


@pytest.fixture(scope="session")
def header_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("btfcache")


@pytest.fixture(scope="session")
def headers(kernels: _Kernels, header_cache: Path) -> dict[str, btf.KernelHeaders]:
    if shutil.which("bpftool", path="/usr/sbin:/sbin:" + os.environ["PATH"]) is None:
        pytest.skip("bpftool not installed")
    built = {name: btf.generate_headers(path, header_cache, kernel_release=rel)
             for name, (path, rel) in kernels.items()}
    return _Headers(built)


class _Headers(dict):  # type: ignore[type-arg]
    def __missing__(self, name: str) -> btf.KernelHeaders:
        pytest.skip(f"no BTF for kernel {name!r} on this host")


# -- BTF parsing -----------------------------------------------------------

EXPECTED_HOOKS = {
    "file_open": ("file",),
    "bprm_check_security": ("bprm",),
    "inode_rename": ("old_dir", "old_dentry", "new_dir", "new_dentry"),
    "path_truncate": ("path",),
}


@pytest.mark.parametrize("kernel", ["host", "6.1"])
@pytest.mark.parametrize("hook", sorted(EXPECTED_HOOKS))
def test_lsm_hook_params(kernels: dict, kernel: str, hook: str) -> None:
    assert btf.lsm_hook_params(kernels[kernel][0], hook) == EXPECTED_HOOKS[hook]


@pytest.mark.parametrize("kernel", ["host", "6.1"])
def test_hook_types(kernels: dict, kernel: str) -> None:
    sig = btf.lsm_hook_signature(kernels[kernel][0], "path_truncate")
    assert sig == (btf.BtfParam("path", "const struct path *"),)
    assert btf.lsm_hook_signature(kernels[kernel][0], "file_open")[0].c_type == \
        "struct file *"


def test_array_type_names(kernels: dict) -> None:
    info = btf.load_btf(kernels["6.1"][0])
    ids = info.find(btf.KIND_STRUCT, "task_struct")
    assert ids and info.type_name(ids[0]) == "struct task_struct"
    assert info.member_type("task_struct", "comm") == "char[16]"
    # Found through the anonymous union that 6.18 wraps f_path in, too.
    assert info.member_type("file", "f_path") == "struct path"
    assert btf.load_btf(kernels["host"][0]).member_type("file", "f_path") == \
        "const struct path"


def test_missing_hook_names_the_hook(kernels: dict) -> None:
    with pytest.raises(btf.LsmHookNotFoundError, match="no_such_hook"):
        btf.lsm_hook_params(kernels["host"][0], "no_such_hook")


def test_kernfs_parent_rename(kernels: dict) -> None:
    # 6.1 has kernfs_node.parent; 6.15+ renamed it __parent.
    assert btf.struct_has_member(kernels["6.1"][0], "kernfs_node", "parent")
    assert not btf.struct_has_member(kernels["6.1"][0], "kernfs_node", "__parent")
    assert btf.struct_has_member(kernels["host"][0], "kernfs_node", "__parent")
    assert "-DENFORCER_KERNFS_PARENT=parent" in btf.feature_cflags(kernels["6.1"][0])
    assert "-DENFORCER_KERNFS_PARENT=__parent" in btf.feature_cflags(kernels["host"][0])


def test_members_through_anonymous_unions(kernels: dict) -> None:
    info = btf.load_btf(kernels["6.1"][0])
    # qstr.name sits inside an anonymous struct in an anonymous union.
    assert {"hash", "len", "name"} <= set(info.struct_members("qstr"))
    assert not info.struct_has_member("no_such_struct", "x")


@needs_host_btf
def test_parse_is_fast() -> None:
    start = time.monotonic()
    info = btf.BtfInfo.from_file(HOST_BTF)
    assert time.monotonic() - start < 2.0
    assert info.type_count > 10000
    assert "BPF_FUNC_map_lookup_elem" in info.enum_values("bpf_func_id")


def test_not_btf(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(btf.BtfFormatError):
        btf.BtfInfo.from_file(bogus)


def test_btf_from_vmlinuz(btf61: btf.ExtractedBtf) -> None:
    assert btf61.compression in ("xz", "gzip", "zstd")
    assert btf61.kernel_release.startswith("6.1.")
    assert btf.parse_kernel_version(btf61.kernel_release)[:2] == (6, 1)
    assert btf.BtfInfo.from_file(btf61.btf_path).has_struct("task_struct")


def test_btf_from_vmlinuz_rejects_non_bzimage(tmp_path: Path) -> None:
    fake = tmp_path / "vmlinuz"
    fake.write_bytes(bytes(4096))
    with pytest.raises(btf.VmlinuzError, match="bzImage"):
        btf.btf_from_vmlinuz(fake, tmp_path / "out")


# -- header generation and cache -------------------------------------------

def test_headers_tree(headers: dict[str, btf.KernelHeaders]) -> None:
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
    code = btf.linux_version_code(headers["6.1"].kernel_version)
    assert f"LINUX_VERSION_CODE {code}" in (
        headers["6.1"].source_dir / "include/linux/version.h").read_text()


def test_missing_helper_ids_computed(headers: dict[str, btf.KernelHeaders],
                                     kernels: dict) -> None:
    referenced = btf.bcc_helper_ids()
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


def test_cache_reused_and_keyed_by_sha(headers: dict[str, btf.KernelHeaders],
                                       kernels: dict, header_cache: Path) -> None:
    path, rel = kernels["host"]
    first = headers["host"]
    marker = first.source_dir / "include/linux/kconfig.h"
    mtime = marker.stat().st_mtime_ns
    again = btf.generate_headers(path, header_cache, kernel_release=rel)
    assert again == first
    assert marker.stat().st_mtime_ns == mtime  # not rewritten
    assert headers["6.1"].source_dir != first.source_dir
    assert first.source_dir.name == btf.file_sha256(path)


def test_cache_ignores_half_written_tmp(kernels: dict, tmp_path: Path) -> None:
    path, rel = kernels["6.1"]
    sha = btf.file_sha256(path)
    # What a run killed mid-write leaves: a temp dir and a final dir with no
    # manifest (e.g. copied by hand).  Neither may be used.
    (tmp_path / f".tmp-{sha[:16]}-dead" / "include").mkdir(parents=True)
    (tmp_path / sha / "include/linux").mkdir(parents=True)
    h = btf.generate_headers(path, tmp_path, kernel_release=rel)
    assert h.source_dir == tmp_path / sha
    assert (h.source_dir / btf.MANIFEST_NAME).is_file()
    assert (h.source_dir / "include/linux" / h.header_name).is_file()


def test_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(btf.CACHE_ENV, str(tmp_path))
    assert btf.default_cache_root() == tmp_path / "btf"


def test_missing_btf_error(tmp_path: Path) -> None:
    with pytest.raises(btf.BtfNotFoundError, match="CONFIG_DEBUG_INFO_BTF"):
        btf.generate_headers(tmp_path / "nope", tmp_path)


def test_missing_bpftool_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(btf.shutil, "which", lambda *a, **k: None)
    with pytest.raises(btf.BpftoolMissingError, match="package 'bpftool'"):
        btf.dump_btf_c(HOST_BTF if HOST_BTF.exists() else __file__)


@needs_bpftool
def test_bpftool_failure_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.btf"
    bogus.write_bytes(b"not btf at all")
    with pytest.raises(btf.BpftoolFailedError, match="bpftool"):
        btf.dump_btf_c(bogus)


# -- bcc compile-only ------------------------------------------------------

TINY_LSM = r"""
BPF_RINGBUF_OUTPUT(events, 8);
struct event { u32 pid; u64 ino; char name[32]; };

LSM_PROBE(file_open, struct file *file) {
    struct event e = {};
    e.pid = bpf_get_current_pid_tgid() >> 32;
    e.ino = file->f_inode->i_ino;
    bpf_probe_read_kernel_str(e.name, sizeof(e.name),
                              file->f_path.dentry->d_name.name);
    events.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}

LSM_PROBE(inode_rename, struct inode *old_dir, struct dentry *old_dentry,
          struct inode *new_dir, struct dentry *new_dentry) {
    struct kernfs_node *kn = 0;
    if (kn && kn->ENFORCER_KERNFS_PARENT)
        return -1;
    return 0;
}
"""


@pytest.fixture(scope="session")
def bcc_compat():  # type: ignore[no-untyped-def]
    pytest.importorskip("bcc", reason="needs Debian python3-bpfcc (/usr/bin/python3)")
    if os.geteuid() != 0:
        pytest.skip("bcc creates the program's maps while compiling: needs root")
    from enforcer.kernel import bcc_compat
    return bcc_compat


@pytest.mark.parametrize("kernel", ["host", "6.1"])
def test_tiny_lsm_compiles(bcc_compat, headers: dict, kernel: str) -> None:  # type: ignore[no-untyped-def]
    module = bcc_compat.compile_only(TINY_LSM, headers[kernel])
    assert module.functions == ("lsm__file_open", "lsm__inode_rename")
    assert module.instruction_bytes["lsm__file_open"] > 0


def test_compile_error_is_distinct(bcc_compat, headers: dict) -> None:  # type: ignore[no-untyped-def]
    bad = "LSM_PROBE(file_open, struct file *file) { return file->no_such_field; }"
    with pytest.raises(bcc_compat.BccCompileError) as info:
        bcc_compat.compile_only(bad, headers["host"])
    assert "no_such_field" in info.value.log


def test_load_failure_is_not_a_compile_error(bcc_compat, headers: dict) -> None:  # type: ignore[no-untyped-def]
    # Where the kernel refuses LSM programs (this project's build hosts) the
    # refusal must surface as BccLoadRefusedError; where BPF-LSM works the
    # program loads and is detached again.
    try:
        bpf = bcc_compat.load(TINY_LSM, headers["host"])
    except bcc_compat.BccLoadRefusedError as exc:
        assert "EPERM" in str(exc)
    else:
        bpf.cleanup()
