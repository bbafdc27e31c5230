"""enforcer.kernel.objcache: keyed on every input of the bytecode, trusted only if only root could write it."""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import pytest

from enforcer.kernel import objcache
from enforcer.kernel.bpfobject import MapSpec, build
from enforcer.kernel.objcache import ObjectInputs

INPUTS = ObjectInputs(
    btf_sha256="a" * 64, kernel_release="6.1.0-57-amd64", layout_version=2,
    cflags=("-DX=1",), sources={"enforcer.bpf.c": "b" * 64, "enforcer.h": "c" * 64},
    programs={"lsm__file_open": "file_open"}, compiler="/usr/lib/libbcc.so.0:1:2")


def an_object():  # type: ignore[no-untyped-def]
    code = struct.pack("<BBhi", 0x18, 0x11, 0, 9) + bytes(8) + bytes.fromhex("b700000000000000" "9500000000000000")
    return build((MapSpec("rules", 2, 4, 4, 8, 0),), {"rules": 9}, {"lsm__file_open": ("file_open", code)}, "GPL")


@pytest.mark.parametrize("change", [
    {"btf_sha256": "d" * 64},
    {"kernel_release": "6.12.118+deb12-amd64"},
    {"layout_version": 3},
    {"cflags": ("-DX=2",)},
    {"sources": {"enforcer.bpf.c": "b" * 64, "enforcer.h": "e" * 64}},
    {"programs": {"lsm__file_open": "file_open", "lsm__mmap_file": "mmap_file"}},
    {"compiler": "/usr/lib/libbcc.so.0:1:3"},
])
def test_every_input_changes_the_key(change) -> None:  # type: ignore[no-untyped-def]
    assert dataclasses.replace(INPUTS, **change).key() != INPUTS.key()


def test_the_key_does_not_depend_on_mapping_order() -> None:
    reordered = dataclasses.replace(INPUTS, sources=dict(reversed(list(INPUTS.sources.items()))))
    assert reordered.key() == INPUTS.key()


def test_source_digests_cover_c_and_headers_only(tmp_path: Path) -> None:
    (tmp_path / "enforcer.bpf.c").write_text("int x;")
    (tmp_path / "enforcer.h").write_text("#define Y 1")
    (tmp_path / "README").write_text("not compiled")
    digests = objcache.source_digests(tmp_path)
    assert set(digests) == {"enforcer.bpf.c", "enforcer.h"}
    before = digests["enforcer.h"]
    (tmp_path / "enforcer.h").write_text("#define Y 2")
    assert objcache.source_digests(tmp_path)["enforcer.h"] != before


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    return tmp_path / "objects"


@pytest.mark.skipif(os.geteuid() != 0, reason="objects are kept root's; the trust check wants root owners")
def test_store_then_lookup_returns_the_same_object(cache_dir: Path) -> None:
    obj = an_object()
    assert objcache.lookup(cache_dir, "k").obj is None
    assert objcache.store(cache_dir, "k", obj) is None
    found = objcache.lookup(cache_dir, "k")
    assert found.obj == obj and found.why_not == ""
    assert objcache.lookup(cache_dir, "other").obj is None


@pytest.mark.skipif(os.geteuid() != 0, reason="objects are kept root's; the trust check wants root owners")
@pytest.mark.parametrize("target, mode", [("file", 0o664), ("file", 0o646), ("dir", 0o777)])
def test_an_object_someone_else_could_write_is_not_used(cache_dir: Path, target: str, mode: int) -> None:
    objcache.store(cache_dir, "k", an_object())
    os.chmod(cache_dir / "k.json" if target == "file" else cache_dir, mode)
    found = objcache.lookup(cache_dir, "k")
    assert found.obj is None
    assert "not used" in found.why_not and "writable by" in found.why_not


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_an_object_owned_by_another_user_is_not_used(cache_dir: Path) -> None:
    objcache.store(cache_dir, "k", an_object())
    os.chown(cache_dir / "k.json", 65534, 65534)
    found = objcache.lookup(cache_dir, "k")
    assert found.obj is None and "owned by uid 65534" in found.why_not


@pytest.mark.skipif(os.geteuid() != 0, reason="objects are kept root's; the trust check wants root owners")
def test_a_damaged_object_is_not_used_and_says_why(cache_dir: Path) -> None:
    objcache.store(cache_dir, "k", an_object())
    path = cache_dir / "k.json"
    path.write_text(path.read_text()[:100])
    found = objcache.lookup(cache_dir, "k")
    assert found.obj is None and "not usable" in found.why_not


@pytest.mark.skipif(os.geteuid() != 0, reason="objects are kept root's; the trust check wants root owners")
def test_store_refuses_a_directory_others_can_write(cache_dir: Path) -> None:
    cache_dir.mkdir()
    os.chmod(cache_dir, 0o777)
    why = objcache.store(cache_dir, "k", an_object())
    assert why is not None and "writable by" in why
    assert not (cache_dir / "k.json").exists()
