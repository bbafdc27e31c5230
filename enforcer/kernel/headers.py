"""Kernel C types for bcc, generated from BTF, and their on-disk cache.

Why this module exists: the machines enforcer runs on may have no kernel
headers at all, but BPF-LSM needs kernel BTF anyway (programs attach by BTF
id).  So the C types bcc compiles against are generated from BTF with
``bpftool btf dump ... format c`` and wrapped in a small include tree that
satisfies what bcc's compile path force-includes (kconfig.h, version.h,
page.h, ...; measured on the project's hosts, see the kernel-facts notes).
The tree is built once per kernel (keyed by the BTF's sha256) and reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from enforcer.kernel.btf import (DEFAULT_BTF_PATH, BtfError, BtfInfo,
                                 BtfNotFoundError, load_btf)
from enforcer.kernel.features import feature_cflags

DEFAULT_CACHE_ROOT = "/var/cache/enforcer"
CACHE_ENV = "ENFORCER_CACHE_DIR"
# Bump when the layout or content of the generated tree changes, so caches
# written by an older enforcer are rebuilt rather than trusted.
LAYOUT_VERSION = 2  # 2: padding runs broken up, enums sized (member offsets fixed)
MANIFEST_NAME = "enforcer-btf.json"
# Temp dirs older than this are leftovers of killed runs and may be removed.
STALE_TMP_SECONDS = 600
# Clang warns about things in generated kernel types we cannot fix.
GENERATED_TYPES_CFLAGS = (
    "-Wno-unused-value", "-Wno-pointer-sign",
    "-Wno-compare-distinct-pointer-types",
    "-Wno-gnu-variable-sized-type-not-at-end",
    "-Wno-address-of-packed-member", "-Wno-unknown-warning-option")


class BpftoolMissingError(BtfError):
    """bpftool is not installed."""


class BpftoolFailedError(BtfError):
    """bpftool ran but failed."""


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


def enforcer_cache_root() -> Path:
    """Where enforcer keeps what it derives per kernel: header trees (btf/) and compiled objects (objects/)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT)


def default_cache_root() -> Path:
    return enforcer_cache_root() / "btf"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise BtfNotFoundError.missing(path) from None
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
        raise BtfNotFoundError.missing(btf_path)
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


# bpftool pads a struct to the offsets BTF records with unnamed bit-fields,
# one `long: 64;` line per 8 bytes.  Clang lays such a run out right (the
# offsets `offsetof` gives), but its code generator merges two adjacent
# 64-bit bit-fields into one 128-bit storage unit, which the BPF target
# aligns to 16 bytes: every member access after the run then lands up to
# 8 bytes per pair too far.  Seen on Debian's 6.12: `mm->exe_file` compiled
# to mm+1184 while BTF and offsetof say 1168 (mm_struct opens with a
# cacheline-aligned block padded by seven `long: 64;`), so every exe read
# was garbage.  A zero-width `long: 0;` between two of them ends the run for
# the code generator and changes no offset (after a `long: 64;` the next
# byte is already 8-aligned).  tests/compile/test_struct_layout.py compares
# the compiled member offsets with BTF on every kernel it has.
_PADDING_LINE = re.compile(r"^(\s*)long: 64;$")


def split_padding_runs(text: str) -> str:
    """Insert `long: 0;` between consecutive `long: 64;` padding lines."""
    out: list[str] = []
    previous_padding = False
    for line in text.splitlines():
        padding = _PADDING_LINE.match(line)
        if padding and previous_padding:
            out.append(f"{padding.group(1)}long: 0;")
        out.append(line)
        previous_padding = padding is not None
    return "\n".join(out) + "\n"


# BTF knows enums narrower or wider than int (`enum rw_hint : u8` since
# 6.12, in struct inode); bpftool 7.1 prints them as plain enums, which C
# makes int-sized, so every member after one moves (inode.i_blocks and the
# 36 members after it on 6.12).  GCC's and clang's `mode` attribute gives an
# enum definition its exact width.
_ENUM_MODES = {1: "QI", 2: "HI", 8: "DI"}
_ENUM_OPENING = re.compile(r"^enum ([A-Za-z_]\w*) \{$")


def size_enums(text: str, enum_sizes: dict[str, int]) -> str:
    """Give each top-level enum definition whose BTF size is not 4 bytes a
    `mode` attribute of that size."""
    out: list[str] = []
    mode = None
    for line in text.splitlines():
        opening = _ENUM_OPENING.match(line)
        if opening:
            mode = _ENUM_MODES.get(enum_sizes.get(opening.group(1), 4))
        elif line == "};" and mode is not None:
            line = f"}} __attribute__((mode({mode})));"
            mode = None
        elif line == "};":
            mode = None
        out.append(line)
    return "\n".join(out) + "\n"


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
    dumped = split_padding_runs(strip_preserve_access_index(dump_btf_c(btf_path)))
    dumped = size_enums(dumped, btf.named_enum_sizes())
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


def _with_cflags(headers: KernelHeaders, btf_path: str | os.PathLike) -> KernelHeaders:
    return dataclasses.replace(
        headers, cflags=GENERATED_TYPES_CFLAGS + feature_cflags(btf_path))
