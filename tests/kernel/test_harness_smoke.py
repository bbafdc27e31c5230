"""Proves the real-kernel harness: we are in the guest, BPF-LSM is active, and
a trivial LSM program loaded with bcc really denies an open."""

from __future__ import annotations

import errno
import os
import secrets
import time
from pathlib import Path

import pytest

from harness import vm

pytestmark = pytest.mark.kernel


def test_runs_as_root_in_guest():
    assert os.environ.get(vm.ENV_IN_GUEST) == "1"
    assert os.geteuid() == 0
    # The guest boots a Debian stock kernel (release like 6.1.0-56-amd64).
    assert vm.debian_kernel_version("vmlinuz-" + os.uname().release) is not None, os.uname().release


def test_bpf_lsm_is_active():
    lsms = Path("/sys/kernel/security/lsm").read_text().strip().split(",")
    assert "bpf" in lsms, lsms


def test_bpffs_mounted():
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    assert any(m[1] == "/sys/fs/bpf" and m[2] == "bpf" for m in mounts)


def test_artifacts_reach_the_host(agent_log_path):
    # The host attaches this file to the report if the test fails; here we
    # only check it is writable where the harness expects it.
    agent_log_path.write_text("smoke: agent log line\n")
    assert agent_log_path.read_text() == "smoke: agent log line\n"
    assert Path(os.environ[vm.ENV_ARTIFACTS]) in agent_log_path.parents


LSM_FILE_OPEN = r"""
#ifndef EPERM
#define EPERM 1
#endif
BPF_ARRAY(denials, u64, 1);

/* Deny opening any file whose name is exactly MARKER_NAME (a -D flag). */
LSM_PROBE(file_open, struct file *file)
{
    const char want[] = MARKER_NAME;
    char name[sizeof(want)] = {};
    const unsigned char *p = file->f_path.dentry->d_name.name;

    if (bpf_probe_read_kernel_str(name, sizeof(name), p) != sizeof(want))
        return 0;
#pragma unroll
    for (int i = 0; i < sizeof(want); i++) {
        if (name[i] != want[i])
            return 0;
    }
    int zero = 0;
    u64 *n = denials.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return -EPERM;
}
"""


def test_lsm_program_denies_open_of_marker(tmp_path, bcc_headers, monkeypatch):
    from bcc import BPF

    marker_name = f"enforcer-smoke-{secrets.token_hex(6)}"
    marker = Path("/tmp") / marker_name
    other = tmp_path / "not-the-marker"
    marker.write_text("marker\n")
    other.write_text("other\n")
    for key, value in bcc_headers.env.items():
        monkeypatch.setenv(key, value)
    cflags = [*bcc_headers.cflags, f'-DMARKER_NAME="{marker_name}"']

    assert marker.read_text() == "marker\n"  # allowed before loading
    b = BPF(text=LSM_FILE_OPEN, cflags=cflags)
    try:
        with pytest.raises(PermissionError) as exc:
            marker.open()
        assert exc.value.errno == errno.EPERM
        assert other.read_text() == "other\n"
        assert Path("/etc/hostname").read_text()  # unrelated files still open
        assert b["denials"][0].value >= 1
    finally:
        b.cleanup()
    # Detaching can lag a little (kernel-facts.md); wait before asserting.
    for _ in range(50):
        try:
            assert marker.read_text() == "marker\n"
            break
        except PermissionError:
            time.sleep(0.1)
    else:
        pytest.fail("marker still denied 5 s after the program was detached")
    marker.unlink()
