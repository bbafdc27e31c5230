"""enforcer.kernel.btf (the BTF reader) and enforcer.kernel.features on
synthetic BTF built by tests/harness/btf_bytes.py.

The same queries against real kernels (the host's and Debian 6.1's BTF) are
in the compile tier: tests/compile/test_btf_kernels.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.kernel import btf, features
from harness.btf_bytes import small_kernel


@pytest.fixture(scope="module")
def info() -> btf.BtfInfo:
    return btf.BtfInfo(small_kernel(), origin="synthetic")


def test_hook_params_and_types(info: btf.BtfInfo) -> None:
    assert btf.lsm_hook_params(info, "path_truncate") == ("path",)
    assert btf.lsm_hook_signature(info, "path_truncate") == (
        btf.BtfParam("path", "const struct path *"),)


def test_missing_hook_names_the_hook(info: btf.BtfInfo) -> None:
    with pytest.raises(btf.LsmHookNotFoundError, match="no_such_hook"):
        btf.lsm_hook_params(info, "no_such_hook")


def test_type_names_through_anonymous_members(info: btf.BtfInfo) -> None:
    ids = info.find(btf.KIND_STRUCT, "task_struct")
    assert ids and info.type_name(ids[0]) == "struct task_struct"
    assert info.member_type("task_struct", "comm") == "char[16]"
    assert info.member_type("file", "f_path") == "const struct path"
    assert {"hash", "len", "hash_len", "name"} <= set(info.struct_members("qstr"))
    assert info.struct_has_member("qstr", "len")
    assert not info.struct_has_member("no_such_struct", "x")


def test_enum_values(info: btf.BtfInfo) -> None:
    assert info.enum_values("bpf_func_id") == {
        "BPF_FUNC_unspec": 0, "BPF_FUNC_map_lookup_elem": 1}


@pytest.mark.parametrize("member", ["parent", "__parent"])
def test_kernfs_parent_flag_follows_btf(member: str) -> None:
    info = btf.BtfInfo(small_kernel(kernfs_parent=member))
    assert btf.struct_has_member(info, "kernfs_node", member)
    assert features.feature_cflags(info) == (f"-DENFORCER_KERNFS_PARENT={member}",)  # no task_struct identity members here


def test_bitfield_members_have_bit_offsets() -> None:
    info = btf.BtfInfo(small_kernel(is_check_width=1))
    where = info.member_location("linux_binprm", "is_check")
    assert (where.bit_offset, where.bitfield_bits) == (325, 1)
    assert info.type_name(where.type_id) == "int"
    assert info.member_location("linux_binprm", "file").bit_offset == 0
    with pytest.raises(btf.BtfError, match="no member nope"):
        info.member_location("linux_binprm", "nope")


@pytest.mark.parametrize("width, flags", [
    (-1, ()),  # before Linux 6.14: nothing to answer, no flags
    (1, ("-DENFORCER_BPRM_IS_CHECK_BYTE=40", "-DENFORCER_BPRM_IS_CHECK_MASK=0x20")),
    (0, ("-DENFORCER_BPRM_IS_CHECK_BYTE=41", "-DENFORCER_BPRM_IS_CHECK_MASK=0xff")),
])
def test_execve_check_flags_follow_btf(width: int, flags: tuple) -> None:
    info = btf.BtfInfo(small_kernel(is_check_width=width))
    assert features.feature_cflags(info)[1:] == flags
    assert features.execve_check_supported(info) is (width >= 0)


@pytest.mark.parametrize("members, flags", [
    ((), ()),  # neither: the C reads no start time and no login; events say unknown
    (("start_boottime",), ("-DENFORCER_TASK_START=start_boottime",)),
    (("loginuid",), ()),  # both audit members or neither
    (("start_boottime", "loginuid", "sessionid"),
     ("-DENFORCER_TASK_START=start_boottime", "-DENFORCER_HAS_LOGINUID=1")),
])
def test_process_identity_flags_follow_btf(members: tuple, flags: tuple) -> None:
    info = btf.BtfInfo(small_kernel(task_members=members))
    assert features.feature_cflags(info)[1:] == flags


def test_execve_check_refuses_a_wider_bitfield() -> None:
    with pytest.raises(btf.BtfError, match="is_check is a 2-bit field"):
        features.feature_cflags(btf.BtfInfo(small_kernel(is_check_width=2)))


def test_load_btf_parses_a_file_once(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(small_kernel())
    first = btf.load_btf(path)
    assert btf.load_btf(str(path)) is first
    assert btf.load_btf(first) is first


def test_type_section_ending_inside_a_type() -> None:
    data = bytearray(small_kernel())
    type_len = int.from_bytes(data[12:16], "little")  # btf_header.type_len
    data[12:16] = (type_len - 4).to_bytes(4, "little")
    with pytest.raises(btf.BtfFormatError, match="truncated"):
        btf.BtfInfo(bytes(data))


def test_missing_file_names_the_kernel_option(tmp_path: Path) -> None:
    with pytest.raises(btf.BtfNotFoundError, match="CONFIG_DEBUG_INFO_BTF"):
        btf.load_btf(tmp_path / "nope")


def test_not_btf(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(btf.BtfFormatError):
        btf.BtfInfo.from_file(bogus)
