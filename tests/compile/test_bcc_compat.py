"""enforcer.kernel.bcc_compat: compile-only with bcc, telling compile errors
from load refusals.

Compile tier: bcc compilation needs root (libbcc creates the maps) and
Debian's python3-bpfcc.
"""

from __future__ import annotations

import os

import pytest


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
