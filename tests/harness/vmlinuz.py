"""Kernel BTF extracted from a compressed kernel image (x86 bzImage).

Lets the compile tier build the BPF program against another kernel's types
(e.g. Debian 6.1's /boot/vmlinuz-6.1.* on a 6.18 host) without booting it.
The agent itself never needs this: it reads the running kernel's
/sys/kernel/btf/vmlinux.
"""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from enforcer.kernel.btf import BtfInfo


class VmlinuzError(Exception):
    """BTF could not be extracted from a compressed kernel image."""


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
    BtfInfo(btf, origin=f"{path}:.BTF")  # fail here, not in a later reader
    out_path = Path(out)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(btf)
    os.replace(tmp, out_path)
    return ExtractedBtf(out_path, release, compression)
