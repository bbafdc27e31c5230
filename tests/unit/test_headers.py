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


def test_split_padding_runs_puts_long_0_between_consecutive_long_64_lines() -> None:
    # Clang's code generator merges two adjacent `long: 64;` into a 128-bit
    # unit aligned to 16 on the BPF target; `long: 0;` ends the run without
    # moving any member (see headers.split_padding_runs).
    text = "\n".join([
        "struct a {",
        "\tint x;",
        "\tlong: 64;",
        "\tlong: 64;",
        "\tlong: 64;",
        "\tint: 32;",
        "\tlong: 64;",
        "\tstruct {",
        "\t\tlong: 64;",
        "\t\tlong: 64;",
        "\t};",
        "};",
    ])
    assert kernel_headers.split_padding_runs(text).splitlines() == [
        "struct a {",
        "\tint x;",
        "\tlong: 64;",
        "\tlong: 0;",
        "\tlong: 64;",
        "\tlong: 0;",
        "\tlong: 64;",
        "\tint: 32;",
        "\tlong: 64;",
        "\tstruct {",
        "\t\tlong: 64;",
        "\t\tlong: 0;",
        "\t\tlong: 64;",
        "\t};",
        "};",
    ]


def test_size_enums_gives_non_int_enums_their_btf_width() -> None:
    text = "\n".join([
        "enum rw_hint {",
        "\tWRITE_LIFE_NOT_SET = 0,",
        "};",
        "",
        "enum plain {",
        "\tP = 0,",
        "};",
        "",
        "enum wide {",
        "\tW = 0,",
        "};",
        "",
        "struct s {",
        "\tenum rw_hint h;",
        "};",
    ])
    sized = kernel_headers.size_enums(text, {"rw_hint": 1, "plain": 4, "wide": 8})
    assert sized.splitlines() == [
        "enum rw_hint {",
        "\tWRITE_LIFE_NOT_SET = 0,",
        "} __attribute__((mode(QI)));",
        "",
        "enum plain {",
        "\tP = 0,",
        "};",
        "",
        "enum wide {",
        "\tW = 0,",
        "} __attribute__((mode(DI)));",
        "",
        "struct s {",
        "\tenum rw_hint h;",
        "};",
    ]
