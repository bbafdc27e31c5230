"""enforcer.kernel.headers where neither bpftool nor kernel BTF is needed:
cache location and the errors that name what is missing.  Generating real
trees is tested in the compile tier (tests/compile/test_header_tree.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import enforcer.kernel.headers as kernel_headers
from enforcer.kernel import btf

HOST_BTF = Path(btf.DEFAULT_BTF_PATH)


def test_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(kernel_headers.CACHE_ENV, str(tmp_path))
    assert kernel_headers.default_cache_root() == tmp_path / "btf"


def test_missing_btf_error(tmp_path: Path) -> None:
    with pytest.raises(btf.BtfNotFoundError, match="CONFIG_DEBUG_INFO_BTF"):
        kernel_headers.generate_headers(tmp_path / "nope", tmp_path)


def test_missing_bpftool_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kernel_headers.shutil, "which", lambda *a, **k: None)
    with pytest.raises(kernel_headers.BpftoolMissingError, match="package 'bpftool'"):
        kernel_headers.dump_btf_c(HOST_BTF if HOST_BTF.exists() else __file__)
