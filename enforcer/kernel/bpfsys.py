"""The bpf(2) commands enforcer uses, called directly, and mount(2).

bcc only compiles (enforcer.kernel.bcc_compat); everything that touches the
running kernel goes through the system call here: creating maps, loading
programs from a compiled object (enforcer.kernel.bpfobject), attaching them,
pins (BPF_OBJ_PIN/BPF_OBJ_GET) and map access. Structures follow
`union bpf_attr` in include/uapi/linux/bpf.h; the kernel accepts an attr
shorter than its own and treats the missing tail as zero. The pseudo
filesystems pins and the LSM list live on (bpf, securityfs) are mounted with
mount(2) itself, not a shell.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import List

# bpf(2) syscall numbers per architecture (arch/*/entry/syscalls).
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17

BPF_PROG_TYPE_LSM = 29
BPF_LSM_MAC = 27  # enum bpf_attach_type

BPF_OBJ_NAME_LEN = 16

BPF_ANY = 0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.mount.restype = ctypes.c_int


class BpfSyscallError(OSError):
    """A bpf(2) command failed; the message names the command and object."""


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _MapCreateAttr(ctypes.Structure):
    # The leading fields of the BPF_MAP_CREATE part of union bpf_attr; the
    # kernel requires the ones after them (not passed) to be zero.
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _ProgLoadAttr(ctypes.Structure):
    # BPF_PROG_LOAD, up to attach_btf_id: what an LSM program needs.
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    ]


class _RawTracepointAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    """The leading fields of struct bpf_map_info: what the kernel made of a map."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None:
        raise BpfSyscallError(errno.ENOSYS, f"bpf(2) syscall number unknown for {platform.machine()}")
    result = _libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise BpfSyscallError(err, f"{what}: {os.strerror(err)}")
    return int(result)


def obj_pin(fd: int, path: str) -> None:
    """Pin a map, program or link fd at `path` on a bpffs mount."""
    name = path.encode()
    buf = ctypes.create_string_buffer(name)
    attr = _ObjAttr(pathname=ctypes.cast(buf, ctypes.c_void_p).value or 0, bpf_fd=fd, file_flags=0)
    _bpf(BPF_OBJ_PIN, attr, f"pin fd {fd} at {path}")


def obj_get(path: str) -> int:
    """Open a pinned object; the caller owns the returned fd."""
    buf = ctypes.create_string_buffer(path.encode())
    attr = _ObjAttr(pathname=ctypes.cast(buf, ctypes.c_void_p).value or 0, bpf_fd=0, file_flags=0)
    return _bpf(BPF_OBJ_GET, attr, f"open pinned object {path}")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, inner_map_fd: int = 0,
               what: str = "map", flags: int = 0, name: str = "") -> int:
    """Create a map; the caller owns the fd. `name` (at most 15 bytes) is what bpftool shows."""
    attr = _MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                          max_entries=max_entries, map_flags=flags, inner_map_fd=inner_map_fd,
                          map_name=name.encode()[:BPF_OBJ_NAME_LEN - 1])
    return _bpf(BPF_MAP_CREATE, attr, f"create {what}")


def map_info(fd: int, what: str = "map") -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"read the attributes of {what}")
    return info


class _ObjectIdInfo(ctypes.Structure):
    """The two fields every bpf_{map,prog,link}_info starts with."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]


def object_id(fd: int, what: str = "object") -> int:
    """The kernel's id of the map, program or link behind `fd` (what bpftool shows)."""
    info = _ObjectIdInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"read the id of {what}")
    return int(info.id)


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to verified_insns (Linux 5.16+): how much of the
    verifier's budget (BPF_COMPLEXITY_LIMIT_INSNS) a program's load used.
    Pointer fields are left 0, so the kernel copies nothing through them."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
    ]


def prog_info(fd: int, what: str = "program") -> ProgInfo:
    info = ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"read the attributes of {what}")
    return info


class ProgramRefused(BpfSyscallError):
    """BPF_PROG_LOAD failed; `log` holds the verifier's log when one was asked for."""

    def __init__(self, err: int, message: str, log: str) -> None:
        super().__init__(err, message)
        self.log = log


def prog_load_lsm(name: str, insns: bytes, license: str, attach_btf_id: int, log_size: int = 0) -> int:
    """Load a BPF-LSM program for the hook whose `bpf_lsm_<hook>` BTF id is
    `attach_btf_id`; the caller owns the fd. With `log_size`, the verifier's
    log (level 1) is kept in the ProgramRefused raised on failure."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _ProgLoadAttr(
        prog_type=BPF_PROG_TYPE_LSM, insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code), license=ctypes.addressof(lic),
        log_level=1 if log else 0, log_size=log_size,
        log_buf=ctypes.addressof(log) if log else 0,
        prog_name=name.encode()[:BPF_OBJ_NAME_LEN - 1],
        expected_attach_type=BPF_LSM_MAC, attach_btf_id=attach_btf_id)
    try:
        return _bpf(BPF_PROG_LOAD, attr, f"load program {name}")
    except BpfSyscallError as error:
        text = log.value.decode("utf-8", "replace") if log else ""
        raise ProgramRefused(error.errno, error.strerror, text) from None


def attach_lsm(prog_fd: int, what: str = "program") -> int:
    """Attach a loaded LSM program; returns the link fd (pinnable), which detaches when its last holder closes it."""
    attr = _RawTracepointAttr(name=0, prog_fd=prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attach {what}")


def map_update(fd: int, key: ctypes.Structure, value: ctypes.Structure, what: str = "map") -> None:
    attr = _MapElemAttr(
        map_fd=fd,
        key=ctypes.addressof(key),
        value=ctypes.addressof(value),
        flags=BPF_ANY,
    )
    _bpf(BPF_MAP_UPDATE_ELEM, attr, f"update {what}")


def map_delete(fd: int, key: ctypes.Structure, what: str = "map") -> bool:
    """Delete a key; False when it was not there."""
    attr = _MapElemAttr(map_fd=fd, key=ctypes.addressof(key))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, attr, f"delete from {what}")
    except BpfSyscallError as error:
        if error.errno == errno.ENOENT:
            return False
        raise
    return True


def map_lookup(fd: int, key: ctypes.Structure, value: ctypes.Structure, what: str = "map") -> bool:
    """Fill `value`; False when the key is absent."""
    attr = _MapElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, f"look up in {what}")
    except BpfSyscallError as error:
        if error.errno == errno.ENOENT:
            return False
        raise
    return True


def map_keys(fd: int, key_type: type, what: str = "map") -> List[ctypes.Structure]:
    """Every key of a hash or LPM map (BPF_MAP_GET_NEXT_KEY from no key on)."""
    keys: List[ctypes.Structure] = []
    previous = None
    while True:
        following = key_type()
        attr = _MapElemAttr(map_fd=fd, key=ctypes.addressof(previous) if previous is not None else 0,
                            value=ctypes.addressof(following))
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr, f"list the keys of {what}")
        except BpfSyscallError as error:
            if error.errno == errno.ENOENT:
                return keys
            raise
        keys.append(following)
        previous = following


def mount(fstype: str, target: str) -> None:
    """Mount a pseudo filesystem of type `fstype` (its source name too) at `target`.

    Raises OSError whose strerror says what failed and why (EPERM without
    CAP_SYS_ADMIN, ENODEV when the kernel lacks the filesystem).
    """
    name = fstype.encode()
    if _libc.mount(name, target.encode(), name, 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} {fstype} {target}: {os.strerror(err)}")


def possible_cpus() -> int:
    """Number of possible CPUs: the slot count of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible") as handle:
        text = handle.read().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count
