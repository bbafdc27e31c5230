"""Facts read from real kernels' BTF (the host's and Debian 6.1's) by
enforcer.kernel.btf, and BTF extraction from a bzImage (tests/harness/vmlinuz.py).

Compile tier: needs the host's /sys/kernel/btf/vmlinux and /boot/vmlinuz-6.1.*,
not bcc.  The parser itself is covered on synthetic BTF in tests/unit/test_btf.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer.kernel import btf, features
from harness import vmlinuz

HOST_BTF = Path(btf.DEFAULT_BTF_PATH)
needs_host_btf = pytest.mark.skipif(
    not os.access(HOST_BTF, os.R_OK), reason="no readable /sys/kernel/btf/vmlinux")


EXPECTED_HOOKS = {
    "file_open": ("file",),
    "bprm_check_security": ("bprm",),
    "inode_rename": ("old_dir", "old_dentry", "new_dir", "new_dentry"),
    "path_truncate": ("path",),
    "fs_context_parse_param": ("fc", "param"),
    "bprm_creds_for_exec": ("bprm",),
    "mmap_file": ("file", "reqprot", "prot", "flags"),
    "file_mprotect": ("vma", "reqprot", "prot"),
}


@pytest.mark.parametrize("kernel", ["host", "6.1", "6.12"])
@pytest.mark.parametrize("hook", sorted(EXPECTED_HOOKS))
def test_lsm_hook_params(kernels: dict, kernel: str, hook: str) -> None:
    assert btf.lsm_hook_params(kernels[kernel][0], hook) == EXPECTED_HOOKS[hook]


#: The tamper hooks, the same on the three kernels but for bpf's `kernel` (6.14+).
TAMPER_HOOKS = {
    "bpf_map": ("map", "fmode"),
    "bpf_prog": ("prog",),
    "inode_unlink": ("dir", "dentry"),
    "inode_rmdir": ("dir", "dentry"),
    "inode_create": ("dir", "dentry", "mode"),
    "inode_mkdir": ("dir", "dentry", "mode"),
    "inode_symlink": ("dir", "dentry", "old_name"),
    "inode_link": ("old_dentry", "dir", "new_dentry"),
    "task_kill": ("p", "info", "sig", "cred"),
    "ptrace_access_check": ("child", "mode"),
    "task_setrlimit": ("p", "resource", "new_rlim"),
    "task_setscheduler": ("p",),
    "task_setnice": ("p", "nice"),
    "sb_umount": ("mnt", "flags"),
    "sb_mount": ("dev_name", "path", "type", "flags", "data"),
    "move_mount": ("from_path", "to_path"),
    "inode_mknod": ("dir", "dentry", "mode", "dev"),
    "sb_remount": ("sb", "mnt_opts"),
    "file_send_sigiotask": ("tsk", "fown", "sig"),
}


@pytest.mark.parametrize("kernel", ["host", "6.1", "6.12"])
@pytest.mark.parametrize("hook", sorted(TAMPER_HOOKS))
def test_tamper_hook_params(kernels: dict, kernel: str, hook: str) -> None:
    assert btf.lsm_hook_params(kernels[kernel][0], hook) == TAMPER_HOOKS[hook]


@pytest.mark.parametrize("kernel, tail", [("host", True), ("6.1", False), ("6.12", False)])
def test_the_bpf_hook_tail_follows_btf(kernels: dict, kernel: str, tail: bool) -> None:
    """The host (6.18) passes `kernel` after bpf's three arguments: the C must
    declare it, or its `ret` would be read from the wrong position."""
    params = btf.lsm_hook_params(kernels[kernel][0], "bpf")
    assert params == (("cmd", "attr", "size", "kernel") if tail else ("cmd", "attr", "size"))
    flags = features.feature_cflags(kernels[kernel][0])
    assert ("-DENFORCER_HOOK_WITH_TAIL_BPF=1" in flags) is tail


@pytest.mark.parametrize("kernel, head", [("host", True), ("6.1", False), ("6.12", True)])
def test_the_inode_setattr_head_follows_btf(kernels: dict, kernel: str, head: bool) -> None:
    """6.3+ passes the mount's idmap before inode_setattr's two arguments."""
    params = btf.lsm_hook_params(kernels[kernel][0], "inode_setattr")
    assert params == (("idmap", "dentry", "attr") if head else ("dentry", "attr"))
    flags = features.feature_cflags(kernels[kernel][0])
    assert ("-DENFORCER_HOOK_WITH_HEAD_INODE_SETATTR=1" in flags) is head


@pytest.mark.parametrize("kernel", ["host", "6.1", "6.12"])
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
    assert "-DENFORCER_KERNFS_PARENT=parent" in features.feature_cflags(kernels["6.1"][0])
    assert "-DENFORCER_KERNFS_PARENT=parent" in features.feature_cflags(kernels["6.12"][0])
    assert "-DENFORCER_KERNFS_PARENT=__parent" in features.feature_cflags(kernels["host"][0])


def test_execve_check_only_where_the_kernel_has_it(kernels: dict) -> None:
    # AT_EXECVE_CHECK arrived in 6.14: the host (6.18) has linux_binprm.is_check,
    # Debian's 6.1 does not (the program then only returns).
    assert not features.execve_check_supported(kernels["6.1"][0])
    assert not features.execve_check_supported(kernels["6.12"][0])  # 6.12 predates it too
    assert not any("IS_CHECK" in f for f in features.feature_cflags(kernels["6.1"][0]))
    host = btf.load_btf(kernels["host"][0])
    if not host.struct_has_member("linux_binprm", "is_check"):
        pytest.skip(f"the host kernel ({host.origin}) predates AT_EXECVE_CHECK")
    where = host.member_location("linux_binprm", "is_check")
    assert where.bitfield_bits == 1
    assert f"-DENFORCER_BPRM_IS_CHECK_BYTE={where.bit_offset // 8}" in features.feature_cflags(host)


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


def test_btf_from_vmlinuz(btf61: vmlinuz.ExtractedBtf) -> None:
    assert btf61.compression in ("xz", "gzip", "zstd")
    assert btf61.kernel_release.startswith("6.1.")
    assert kernel_headers.parse_kernel_version(btf61.kernel_release)[:2] == (6, 1)
    assert btf.BtfInfo.from_file(btf61.btf_path).has_struct("task_struct")
