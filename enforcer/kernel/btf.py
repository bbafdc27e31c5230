"""Kernel C types for bcc, generated from BTF, and facts read from BTF.

Why this module exists: the machines enforcer runs on may have no kernel
headers at all, but BPF-LSM needs kernel BTF anyway (programs attach by BTF
id).  So the C types bcc compiles against are generated from BTF with
``bpftool btf dump ... format c`` and wrapped in a small include tree that
satisfies what bcc's compile path force-includes (kconfig.h, version.h,
page.h, ...; measured on the project's hosts, see the kernel-facts notes).

Facts that change between kernels (hook arity, renamed struct members) are
read from the same BTF by a small pure-Python parser (:class:`BtfInfo`), so the
C can be specialised with -D flags instead of guessing from a version number.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

DEFAULT_BTF_PATH = "/sys/kernel/btf/vmlinux"
DEFAULT_CACHE_ROOT = "/var/cache/enforcer"
CACHE_ENV = "ENFORCER_CACHE_DIR"
# Bump when the layout or content of the generated tree changes, so caches
# written by an older enforcer are rebuilt rather than trusted.
LAYOUT_VERSION = 1
MANIFEST_NAME = "enforcer-btf.json"
# Temp dirs older than this are leftovers of killed runs and may be removed.
STALE_TMP_SECONDS = 600

BtfSource = Union["BtfInfo", str, os.PathLike]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

class BtfError(Exception):
    """Base class of every error raised by this module."""


class BtfNotFoundError(BtfError):
    """The BTF file does not exist or cannot be read."""


class BpftoolMissingError(BtfError):
    """bpftool is not installed."""


class BpftoolFailedError(BtfError):
    """bpftool ran but failed."""


class BtfFormatError(BtfError):
    """The file is not (little-endian) BTF we can parse."""


class LsmHookNotFoundError(BtfError, LookupError):
    """The kernel has no bpf_lsm_<hook> function in its BTF."""


class VmlinuzError(BtfError):
    """BTF could not be extracted from a compressed kernel image."""


# --------------------------------------------------------------------------
# BTF parsing
# --------------------------------------------------------------------------

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")

# BTF kinds (include/uapi/linux/btf.h).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

# Size of the data that follows each btf_type: fixed part, per-vlen part.
_EXTRA_SIZE = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}
# Kinds looked up by name; the rest are only reached through type ids.
_NAMED_KINDS = frozenset(
    {KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FUNC, KIND_TYPEDEF})
_MODIFIERS = {KIND_VOLATILE: "volatile", KIND_CONST: "const",
              KIND_RESTRICT: "restrict"}


@dataclass(frozen=True)
class BtfParam:
    """One argument of a function: its name and its C type as text."""

    name: str
    c_type: str


class BtfInfo:
    """BTF parsed once, answering many queries.

    Only the type table is walked eagerly (one pass, offsets and names of
    named kinds); members and parameters are decoded when asked for.  The
    vmlinux BTF (~5 MB, ~150k types) parses in a fraction of a second.
    """

    def __init__(self, data: bytes, origin: str = "<bytes>") -> None:
        self.origin = origin
        self._data = data
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            self._header(data, origin))
        self._types_start = hdr_len + type_off
        self._strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        # Index 0 is the implicit "void" type.
        self._offsets: list[int] = [0]
        self._by_name: dict[tuple[int, str], list[int]] = {}
        self._walk_types(self._types_start, self._types_start + type_len)

    @staticmethod
    def _header(data: bytes, origin: str) -> tuple[int, ...]:
        if len(data) < _HEADER.size:
            raise BtfFormatError(f"{origin}: too short to be BTF")
        fields = _HEADER.unpack_from(data, 0)
        if fields[0] != BTF_MAGIC:
            # Byte-swapped magic would be a big-endian BTF; not supported.
            raise BtfFormatError(
                f"{origin}: not little-endian BTF (magic {fields[0]:#06x})")
        return fields

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> BtfInfo:
        return cls(_read_btf_bytes(path), origin=str(path))

    def _walk_types(self, pos: int, end: int) -> None:
        data, unpack, offsets = self._data, struct.unpack_from, self._offsets
        by_name, named = self._by_name, _NAMED_KINDS
        extra = _EXTRA_SIZE
        while pos < end:
            name_off, info, _size = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            offsets.append(pos)
            if name_off and kind in named:
                by_name.setdefault((kind, self.string(name_off)), []).append(
                    len(offsets) - 1)
            fixed, per = extra.get(kind, (0, 0))
            pos += 12 + fixed + per * (info & 0xFFFF)
        if pos != end:
            raise BtfFormatError(f"{self.origin}: type section is truncated")

    # -- low level --------------------------------------------------------

    def string(self, offset: int) -> str:
        end = self._strings.index(b"\0", offset)
        return self._strings[offset:end].decode("utf-8", "replace")

    def _type(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(name_off, kind, vlen, size_or_type, data_pos) of a type id."""
        pos = self._offsets[type_id]
        name_off, info, size_type = struct.unpack_from("<III", self._data, pos)
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_type, pos + 12

    @property
    def type_count(self) -> int:
        return len(self._offsets) - 1

    def find(self, kind: int, name: str) -> list[int]:
        return list(self._by_name.get((kind, name), ()))

    # -- queries ----------------------------------------------------------

    def has_struct(self, name: str) -> bool:
        return bool(self.find(KIND_STRUCT, name))

    def struct_members(self, name: str) -> tuple[str, ...]:
        """Member names of struct `name`, looking through anonymous
        structs/unions (C lets code name those members directly)."""
        ids = self.find(KIND_STRUCT, name) or self.find(KIND_UNION, name)
        if not ids:
            raise BtfError(f"{self.origin}: no struct {name} in BTF")
        names: list[str] = []
        for type_id in ids:
            names.extend(n for n in self._member_names(type_id) if n not in names)
        return tuple(names)

    def _member_names(self, type_id: int) -> Iterator[str]:
        _name, _kind, vlen, _size, pos = self._type(type_id)
        for i in range(vlen):
            m_name, m_type, _off = struct.unpack_from(
                "<III", self._data, pos + 12 * i)
            if m_name:
                yield self.string(m_name)
                continue
            inner = self._skip_modifiers(m_type)
            if self._type(inner)[1] in (KIND_STRUCT, KIND_UNION):
                yield from self._member_names(inner)

    def member_type(self, struct_name: str, member: str) -> str:
        """C type of struct_name.member as text (through anonymous members),
        e.g. member_type("task_struct", "comm") == "char[16]"."""
        for type_id in self.find(KIND_STRUCT, struct_name):
            found = self._find_member_type(type_id, member)
            if found is not None:
                return self.type_name(found)
        raise BtfError(f"{self.origin}: struct {struct_name} has no member {member}")

    def _find_member_type(self, type_id: int, member: str) -> int | None:
        _name, _kind, vlen, _size, pos = self._type(type_id)
        for i in range(vlen):
            m_name, m_type, _off = struct.unpack_from(
                "<III", self._data, pos + 12 * i)
            if m_name and self.string(m_name) == member:
                return m_type
            if not m_name:
                inner = self._skip_modifiers(m_type)
                if self._type(inner)[1] in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member_type(inner, member)
                    if found is not None:
                        return found
        return None

    def struct_has_member(self, struct_name: str, member: str) -> bool:
        if not (self.find(KIND_STRUCT, struct_name)
                or self.find(KIND_UNION, struct_name)):
            return False
        return member in self.struct_members(struct_name)

    def _skip_modifiers(self, type_id: int) -> int:
        while type_id:
            kind = self._type(type_id)[1]
            if kind not in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST,
                            KIND_RESTRICT, KIND_TYPE_TAG):
                break
            type_id = self._type(type_id)[3]
        return type_id

    def func_params(self, func_name: str) -> tuple[BtfParam, ...]:
        ids = self.find(KIND_FUNC, func_name)
        if not ids:
            raise BtfError(f"{self.origin}: no function {func_name} in BTF")
        proto = self._type(ids[0])[3]
        _name, kind, vlen, _ret, pos = self._type(proto)
        if kind != KIND_FUNC_PROTO:
            raise BtfFormatError(f"{self.origin}: {func_name} has no prototype")
        params = []
        for i in range(vlen):
            p_name, p_type = struct.unpack_from("<II", self._data, pos + 8 * i)
            params.append(BtfParam(self.string(p_name), self.type_name(p_type)))
        return tuple(params)

    def lsm_hook_signature(self, hook: str) -> tuple[BtfParam, ...]:
        try:
            return self.func_params("bpf_lsm_" + hook)
        except BtfError:
            raise LsmHookNotFoundError(
                f"LSM hook {hook!r} not found: {self.origin} has no "
                f"bpf_lsm_{hook} function (unknown hook, or a kernel without "
                "CONFIG_BPF_LSM)") from None

    def lsm_hook_params(self, hook: str) -> tuple[str, ...]:
        return tuple(p.name for p in self.lsm_hook_signature(hook))

    def enum_values(self, enum_name: str) -> dict[str, int]:
        ids = self.find(KIND_ENUM, enum_name) or self.find(KIND_ENUM64, enum_name)
        if not ids:
            raise BtfError(f"{self.origin}: no enum {enum_name} in BTF")
        _name, kind, vlen, _size, pos = self._type(ids[0])
        values: dict[str, int] = {}
        for i in range(vlen):
            if kind == KIND_ENUM:
                e_name, val = struct.unpack_from("<Ii", self._data, pos + 8 * i)
            else:
                e_name, lo, hi = struct.unpack_from("<III", self._data, pos + 12 * i)
                val = (hi << 32) | lo
            values[self.string(e_name)] = val
        return values

    def type_name(self, type_id: int) -> str:
        """C-ish spelling of a type, enough to read a signature
        ("struct file *", "const struct path *", "int")."""
        if type_id == 0:
            return "void"
        name_off, kind, _vlen, ref, _pos = self._type(type_id)
        name = self.string(name_off) if name_off else ""
        if kind == KIND_PTR:
            return self.type_name(ref) + " *"
        if kind in _MODIFIERS:
            return f"{_MODIFIERS[kind]} {self.type_name(ref)}"
        if kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
            prefix = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(kind, "enum")
            return f"{prefix} {name}".strip()
        if kind == KIND_FWD:
            return ("union " if self._kind_flag(type_id) else "struct ") + name
        if kind == KIND_FUNC_PROTO:
            return "fn"
        if kind == KIND_TYPE_TAG:
            return self.type_name(ref)
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, _pos)
            return f"{self.type_name(elem)}[{nelems}]"
        return name or f"<type {type_id}>"

    def _kind_flag(self, type_id: int) -> bool:
        info = struct.unpack_from("<I", self._data, self._offsets[type_id] + 4)[0]
        return bool(info >> 31)


def _read_btf_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise BtfNotFoundError(_missing_btf_message(path)) from None
    except PermissionError as exc:
        raise BtfNotFoundError(f"cannot read BTF file {path}: {exc}") from None


def _missing_btf_message(path: str | os.PathLike) -> str:
    return (f"BTF file {path} not found: enforcer needs kernel BTF "
            "(a kernel built with CONFIG_DEBUG_INFO_BTF=y, which also provides "
            "/sys/kernel/btf/vmlinux); BPF-LSM cannot attach without it")


@functools.lru_cache(maxsize=8)
def _cached_btf(path: str, mtime_ns: int, size: int) -> BtfInfo:
    # Keyed by stat data so a rewritten file is parsed again.
    return BtfInfo.from_file(path)


def load_btf(btf: BtfSource = DEFAULT_BTF_PATH) -> BtfInfo:
    """A BtfInfo for `btf` (returned as is if it already is one); files are
    parsed once per process."""
    if isinstance(btf, BtfInfo):
        return btf
    path = os.path.realpath(btf)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BtfNotFoundError(_missing_btf_message(btf)) from None
    return _cached_btf(path, st.st_mtime_ns, st.st_size)


def lsm_hook_params(btf: BtfSource, hook: str) -> tuple[str, ...]:
    """Argument names of the kernel's bpf_lsm_<hook>, e.g. ("file",)."""
    return load_btf(btf).lsm_hook_params(hook)


def lsm_hook_signature(btf: BtfSource, hook: str) -> tuple[BtfParam, ...]:
    return load_btf(btf).lsm_hook_signature(hook)


def struct_has_member(btf: BtfSource, struct_name: str, member: str) -> bool:
    return load_btf(btf).struct_has_member(struct_name, member)


# --------------------------------------------------------------------------
# Header generation
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelHeaders:
    """A generated include tree that bcc can use as its kernel source."""

    source_dir: Path          # value for BCC_KERNEL_SOURCE
    btf_sha256: str
    header_name: str          # the dumped BTF header, include/linux/<name>
    kernel_version: tuple[int, int, int]
    missing_helper_ids: tuple[str, ...]  # BPF_FUNC_* given placeholders
    cflags: tuple[str, ...] = ()

    @property
    def env(self) -> dict[str, str]:
        return {"BCC_KERNEL_SOURCE": str(self.source_dir)}


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT) / "btf"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise BtfNotFoundError(_missing_btf_message(path)) from None
    return digest.hexdigest()


def parse_kernel_version(release: str) -> tuple[int, int, int]:
    """(6, 1, 0) from "6.1.0-56-amd64"; missing parts count as 0."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not match:
        raise ValueError(f"cannot read a kernel version from {release!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def linux_version_code(version: tuple[int, int, int]) -> int:
    major, minor, patch = version
    return (major << 16) + (minor << 8) + min(patch, 255)


def find_bpftool() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH often lacks.
    found = shutil.which("bpftool") or shutil.which(
        "bpftool", path="/usr/sbin:/sbin:/usr/local/sbin")
    if not found:
        raise BpftoolMissingError(
            "bpftool not found: install it (Debian/Ubuntu package 'bpftool', "
            "Fedora/RHEL 'bpftool'); it turns kernel BTF into C types for bcc")
    return found


def dump_btf_c(btf_path: str | os.PathLike) -> str:
    """`bpftool btf dump file <btf> format c` output."""
    if not os.path.exists(btf_path):
        raise BtfNotFoundError(_missing_btf_message(btf_path))
    cmd = [find_bpftool(), "btf", "dump", "file", str(btf_path), "format", "c"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BpftoolFailedError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}): "
            f"{proc.stderr.strip() or 'no output'}")
    return proc.stdout


def strip_preserve_access_index(text: str) -> str:
    # bcc rewrites field accesses itself (probe reads); CO-RE relocations
    # from the pragma would only confuse it, so drop the push and its pop.
    return "\n".join(
        line for line in text.splitlines()
        if "preserve_access_index" not in line
        and not line.startswith("#pragma clang attribute pop")) + "\n"


_BCC_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                 "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/lib64",
                 "/usr/local/lib")
# How bcc's embedded helpers.h uses an id: "(void *)BPF_FUNC_x" or a cast
# ending in "))BPF_FUNC_tail_call".  Lower case excludes macro names.
_HELPER_REF = re.compile(rb"\)\s*BPF_FUNC_([a-z0-9_]+)")


def find_libbcc() -> Path | None:
    for directory in _BCC_LIB_DIRS:
        candidate = Path(directory) / "libbcc.so.0"
        if candidate.exists():
            return candidate
    return None


def bcc_helper_ids(libbcc: str | os.PathLike | None = None) -> frozenset[str]:
    """BPF_FUNC_* names that bcc's built-in helpers.h refers to.

    libbcc embeds its helpers.h as a string, so the set is read from the
    library that will compile, not from a list that may be out of date.
    Empty when bcc is not installed (then nothing will compile anyway).
    """
    path = Path(libbcc) if libbcc else find_libbcc()
    if path is None:
        return frozenset()
    return frozenset("BPF_FUNC_" + m.decode()
                     for m in _HELPER_REF.findall(path.read_bytes()))


def missing_helper_ids(btf: BtfInfo, referenced: Iterable[str]) -> tuple[str, ...]:
    known = btf.enum_values("bpf_func_id")
    return tuple(sorted(set(referenced) - set(known)))


def _kconfig_shim(header_name: str, missing: tuple[str, ...], first_free: int) -> str:
    placeholders = ""
    if missing:
        # Ids bcc's helpers.h names but this kernel lacks.  Values past the
        # kernel's last id: a program that really calls one fails in the
        # verifier ("invalid func"), everything else compiles.
        lines = [f"\t{name} = {first_free + i}," for i, name in enumerate(missing)]
        placeholders = ("enum enforcer_missing_bpf_func_id {\n"
                        + "\n".join(lines) + "\n};\n")
    return f"""/* Generated by enforcer from kernel BTF. Do not edit. */
#ifndef __ENFORCER_KCONFIG_SHIM_H
#define __ENFORCER_KCONFIG_SHIM_H
/* bcc force-includes its own uapi bpf.h after this file; the BTF dump
 * already defines all of it, so claim its include guard. */
#define _UAPI__LINUX_BPF_H__ 1
/* Normally from autoconf.h; bcc's helpers.h refuses to build without it and
 * any kernel with BTF-attached LSM programs has it. */
#ifndef CONFIG_BPF_SYSCALL
#define CONFIG_BPF_SYSCALL 1
#endif
#include "{header_name}"
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif
#ifndef container_of
#define container_of(ptr, type, member) ({{ \\
	void *__mptr = (void *)(ptr); \\
	((type *)(__mptr - offsetof(type, member))); }})
#endif
{placeholders}#endif
"""


def _version_h(version: tuple[int, int, int]) -> str:
    return (f"#define LINUX_VERSION_CODE {linux_version_code(version)}\n"
            "#define KERNEL_VERSION(a,b,c) "
            "(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n")


def _bcc_arch() -> str:
    # bcc picks arch/<dir>/include from the machine name the same way.
    machine = os.uname().machine
    return {"x86_64": "x86", "i686": "x86", "aarch64": "arm64",
            "ppc64le": "powerpc", "s390x": "s390"}.get(machine, machine)


def _tree_files(header_name: str, dumped: str, missing: tuple[str, ...],
                first_free: int, version: tuple[int, int, int]
                ) -> dict[str, str]:
    version_h = _version_h(version)
    page_size = os.sysconf("SC_PAGE_SIZE")
    return {
        f"include/linux/{header_name}": dumped,
        "include/linux/kconfig.h": _kconfig_shim(header_name, missing, first_free),
        # bcc's built-in headers include these; the dump already has it all.
        "include/linux/types.h": "",
        "include/linux/bpf_common.h": "",
        # helpers.h includes <uapi/linux/bpf.h>; its guard is already set.
        "include/uapi/linux/bpf.h": "",
        "include/uapi/linux/if_packet.h": "",
        "include/linux/log2.h": "",
        "include/linux/version.h": version_h,
        "include/generated/uapi/linux/version.h": version_h,
        f"arch/{_bcc_arch()}/include/asm/page.h":
            f"#define PAGE_SIZE {page_size}UL\n"
            f"#define PAGE_SHIFT {page_size.bit_length() - 1}\n",
    }


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _manifest(headers: KernelHeaders) -> dict[str, object]:
    return {"layout": LAYOUT_VERSION, "btf_sha256": headers.btf_sha256,
            "header_name": headers.header_name,
            "kernel_version": list(headers.kernel_version),
            "missing_helper_ids": list(headers.missing_helper_ids)}


def _read_cached(directory: Path, sha: str, version: tuple[int, int, int],
                 helper_ids: frozenset[str]) -> KernelHeaders | None:
    """The cached tree if present, complete and built for the same inputs."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    headers = KernelHeaders(
        source_dir=directory, btf_sha256=sha,
        header_name=str(manifest.get("header_name", "")),
        kernel_version=tuple(manifest.get("kernel_version", ())),  # type: ignore[arg-type]
        missing_helper_ids=tuple(manifest.get("missing_helper_ids", ())))
    if manifest != _manifest(headers) or manifest["layout"] != LAYOUT_VERSION:
        return None
    if headers.kernel_version != version:
        return None
    if not (directory / "include/linux" / headers.header_name).is_file():
        return None
    # A bcc upgrade can name new helper ids: then the placeholders are stale.
    if helper_ids and not set(headers.missing_helper_ids) <= helper_ids:
        return None
    return headers


def _remove_stale_tmp(cache_root: Path) -> None:
    now = time.time()
    for entry in cache_root.glob(".tmp-*"):
        try:
            if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue  # another process removed it first


def _install(tmp: Path, final: Path, is_valid: Callable[[Path], bool]) -> None:
    """Move a complete tree into place; whoever renames first wins."""
    if final.exists():
        if is_valid(final):
            # A concurrent run finished first; its tree may be in use, so
            # keep it and drop ours.
            shutil.rmtree(tmp, ignore_errors=True)
            return
        # An outdated or incomplete tree: move it aside first so the rename
        # below stays atomic for readers.
        trash = Path(tempfile.mkdtemp(prefix=".tmp-old-", dir=final.parent))
        try:
            os.rename(final, trash / "old")
        except FileNotFoundError:
            pass  # a concurrent run already moved it
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        # A concurrent run installed its (equivalent) tree first.
        shutil.rmtree(tmp, ignore_errors=True)


def generate_headers(btf_path: str | os.PathLike = DEFAULT_BTF_PATH,
                     cache_root: str | os.PathLike | None = None,
                     kernel_release: str | None = None,
                     libbcc: str | os.PathLike | None = None) -> KernelHeaders:
    """Build (or reuse) the include tree bcc needs for the kernel whose BTF
    is `btf_path`.

    kernel_release: the kernel the BTF belongs to (for LINUX_VERSION_CODE);
    defaults to the running kernel's release.
    Cache: <cache_root>/<sha256 of the BTF>, default
    $ENFORCER_CACHE_DIR/btf or /var/cache/enforcer/btf.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    sha = file_sha256(btf_path)
    version = parse_kernel_version(kernel_release or os.uname().release)
    helper_ids = bcc_helper_ids(libbcc)
    final = root / sha
    cached = _read_cached(final, sha, version, helper_ids)
    if cached is not None:
        return _with_cflags(cached, btf_path)

    btf = load_btf(btf_path)
    dumped = strip_preserve_access_index(dump_btf_c(btf_path))
    missing = missing_helper_ids(btf, helper_ids)
    known = btf.enum_values("bpf_func_id")
    headers = KernelHeaders(
        source_dir=final, btf_sha256=sha,
        header_name=f"enforcer_btf_{sha[:16]}.h",
        kernel_version=version, missing_helper_ids=missing)

    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{sha[:16]}-", dir=root))
    try:
        _write_tree(tmp, _tree_files(headers.header_name, dumped, missing,
                                     max(known.values(), default=0) + 1, version))
        # The manifest is written last: a tree without it is incomplete.
        (tmp / MANIFEST_NAME).write_text(json.dumps(_manifest(headers)))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _install(tmp, final, lambda d: _read_cached(d, sha, version, helper_ids) is not None)
    installed = _read_cached(final, sha, version, helper_ids)
    if installed is None:
        raise BtfError(f"header cache {final} is unusable after installing it")
    return _with_cflags(installed, btf_path)


# --------------------------------------------------------------------------
# cflags chosen from BTF facts
# --------------------------------------------------------------------------

def feature_cflags(btf: BtfSource) -> tuple[str, ...]:
    """-D flags for kernel differences the C has to know about."""
    info = load_btf(btf)
    flags = []
    # kernfs_node.parent was renamed __parent (RCU-annotated) in 6.15.
    if info.struct_has_member("kernfs_node", "__parent"):
        flags.append("-DENFORCER_KERNFS_PARENT=__parent")
    else:
        flags.append("-DENFORCER_KERNFS_PARENT=parent")
    return tuple(flags)


def _with_cflags(headers: KernelHeaders, btf_path: str | os.PathLike) -> KernelHeaders:
    # Clang warns about things in generated kernel types we cannot fix.
    base = ("-Wno-unused-value", "-Wno-pointer-sign",
            "-Wno-compare-distinct-pointer-types",
            "-Wno-gnu-variable-sized-type-not-at-end",
            "-Wno-address-of-packed-member", "-Wno-unknown-warning-option")
    return dataclasses.replace(headers, cflags=base + feature_cflags(btf_path))


def bcc_build_settings(headers: KernelHeaders) -> tuple[list[str], dict[str, str]]:
    """(cflags, environment) to compile with these headers using bcc."""
    return list(headers.cflags), headers.env


# --------------------------------------------------------------------------
# BTF from a compressed kernel image (bzImage)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractedBtf:
    btf_path: Path
    kernel_release: str   # e.g. "6.1.0-56-amd64", from the bzImage header
    compression: str


def _bzimage_payload(image: bytes, path: str) -> tuple[bytes, str]:
    """The compressed vmlinux inside a bzImage and the release string."""
    if image[0x202:0x206] != b"HdrS":
        raise VmlinuzError(f"{path}: not an x86 bzImage (no HdrS header)")
    setup_sects = image[0x1F1] or 4
    protocol = struct.unpack_from("<H", image, 0x206)[0]
    if protocol < 0x208:
        raise VmlinuzError(f"{path}: boot protocol {protocol:#x} has no payload field")
    payload_off, payload_len = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + payload_off
    version_ptr = struct.unpack_from("<H", image, 0x20E)[0] + 0x200
    release = image[version_ptr:image.index(b"\0", version_ptr)].decode(
        "ascii", "replace").split(" ")[0]
    return image[start:start + payload_len], release


def _decompress(payload: bytes, path: str) -> tuple[bytes, str]:
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload), "xz"
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload), "gzip"
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        # No zstd in the standard library; the zstd command is common.
        zstd = shutil.which("zstd")
        if not zstd:
            raise VmlinuzError(f"{path}: zstd-compressed; install 'zstd'")
        proc = subprocess.run([zstd, "-dc"], input=payload, capture_output=True,
                              check=False)
        if proc.returncode != 0 and not proc.stdout.startswith(b"\x7fELF"):
            raise VmlinuzError(f"{path}: zstd failed: {proc.stderr.decode().strip()}")
        return proc.stdout, "zstd"
    raise VmlinuzError(f"{path}: unknown compression (magic {payload[:6].hex()})")


def elf_section(elf: bytes, name: str) -> bytes:
    """Contents of a section of a little-endian ELF64 file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise VmlinuzError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        sh_name = struct.unpack_from("<I", elf, base)[0]
        sh_offset, sh_size = struct.unpack_from("<QQ", elf, base + 0x18)
        return sh_name, sh_offset, sh_size

    _n, str_off, _s = header(shstrndx)
    wanted = name.encode()
    for index in range(shnum):
        sh_name, offset, size = header(index)
        start = str_off + sh_name
        if elf[start:elf.index(b"\0", start)] == wanted:
            return elf[offset:offset + size]
    raise VmlinuzError(f"ELF has no {name} section (kernel without "
                       "CONFIG_DEBUG_INFO_BTF=y?)")


def btf_from_vmlinuz(path: str | os.PathLike, out: str | os.PathLike) -> ExtractedBtf:
    """Write the .BTF section of the kernel in bzImage `path` to `out`.

    Used to compile against another kernel's types (e.g. Debian 6.1 on a
    6.18 host) without booting it.
    """
    try:
        image = Path(path).read_bytes()
    except FileNotFoundError:
        raise VmlinuzError(f"kernel image {path} not found") from None
    payload, release = _bzimage_payload(image, str(path))
    vmlinux, compression = _decompress(payload, str(path))
    btf = elf_section(vmlinux, ".BTF")
    BtfInfo._header(btf, f"{path}:.BTF")  # fail here, not in a later reader
    out_path = Path(out)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(btf)
    os.replace(tmp, out_path)
    return ExtractedBtf(out_path, release, compression)
