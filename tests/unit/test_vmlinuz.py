"""The bzImage/ELF extraction of the test harness (tests/harness/vmlinuz.py)
on inputs that need no kernel image; extraction from a real image is in
tests/compile/test_btf_kernels.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import vmlinuz


def test_btf_from_vmlinuz_rejects_non_bzimage(tmp_path: Path) -> None:
    fake = tmp_path / "vmlinuz"
    fake.write_bytes(bytes(4096))
    with pytest.raises(vmlinuz.VmlinuzError, match="bzImage"):
        vmlinuz.btf_from_vmlinuz(fake, tmp_path / "out")
