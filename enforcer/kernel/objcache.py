"""The compiled-object cache: start without clang when nothing that shapes the bytecode changed.

Compiling enforcer's C with bcc is most of an agent's start-up (measured in
the 6.1 guest under emulation: clang 46.6 s of about 70 s; bcc's import
another 7 s). The compiled object (enforcer.kernel.bpfobject) depends only
on the inputs hashed into its key:

- the kernel's BTF (types, layouts, hook signatures) and its release;
- the generated header tree's layout version and the feature flags read
  from that BTF;
- enforcer's C sources and the ABI constants passed as -D flags;
- the programs and hooks registered;
- the compiler: libbcc's file identity (a bcc upgrade recompiles);
- the object format.

Any change yields another key, hence a compile; nothing is ever patched in
place. Objects are files `<root>/objects/<key>.json`, written atomically.

Trust: a cached object is BPF code the agent loads into the kernel as root.
One that anyone but root could have written (the file or any directory above
it owned by another user, or writable by group or others, as for policies:
enforcer.fileperms) is not used: the agent compiles afresh and says why.
The verifier still checks whatever is loaded, and the object carries a
digest of its content, so a truncated file is refused too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from enforcer.atomicfile import write_atomic
from enforcer.fileperms import why_untrusted
from enforcer.kernel import bpfobject, headers
from enforcer.kernel.bpfobject import CompiledObject, ObjectError

log = logging.getLogger(__name__)

OBJECTS_SUBDIR = "objects"


@dataclass(frozen=True)
class ObjectInputs:
    """Everything the compiled bytecode depends on (see the module docstring)."""

    btf_sha256: str
    kernel_release: str
    layout_version: int
    cflags: Sequence[str]
    sources: Mapping[str, str]  # file name -> sha256 of its content
    programs: Mapping[str, str]  # function -> hook
    compiler: str

    def key(self) -> str:
        document = {
            "format": bpfobject.FORMAT_VERSION,
            "btf": self.btf_sha256,
            "release": self.kernel_release,
            "layout": self.layout_version,
            "cflags": list(self.cflags),
            "sources": dict(sorted(self.sources.items())),
            "programs": dict(sorted(self.programs.items())),
            "compiler": self.compiler,
            "machine": platform.machine(),
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def source_digests(bpf_dir: Path) -> Mapping[str, str]:
    """sha256 of every C source and header in `bpf_dir` (what #include can reach there)."""
    return {path.name: headers.file_sha256(path)
            for path in sorted(bpf_dir.iterdir()) if path.suffix in (".c", ".h") and path.is_file()}


def compiler_identity(libbcc: Optional[Path] = None) -> str:
    """libbcc's path, size and modification time: changes with every bcc package upgrade."""
    library = libbcc or headers.find_libbcc()
    if library is None:
        return "libbcc not found"
    st = os.stat(library)
    return f"{library}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class CacheLookup:
    """The cached object, or None and why not (said in the agent's log)."""

    obj: Optional[CompiledObject]
    path: Path
    why_not: str = ""


def lookup(directory: Path, key: str) -> CacheLookup:
    path = directory / f"{key}.json"
    if not path.exists():
        return CacheLookup(None, path, "no object compiled for this kernel and these sources yet")
    untrusted = why_untrusted(path)
    if untrusted:
        return CacheLookup(None, path, f"not used: {untrusted}")
    try:
        obj = CompiledObject.from_json(path.read_text())
    except (OSError, ObjectError) as error:
        return CacheLookup(None, path, f"not usable: {error}")
    return CacheLookup(obj, path)


def store(directory: Path, key: str, obj: CompiledObject) -> Optional[str]:
    """Keep `obj` for the next start; the reason when it could not be kept.

    A cache that cannot be written costs the next start a compile, nothing
    else: the caller logs the reason and goes on.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        untrusted = why_untrusted(directory)
        if untrusted:
            return f"{directory}: {untrusted}"
        write_atomic(directory / f"{key}.json", obj.to_json().encode(), mode=0o644)
    except OSError as error:
        return f"{directory}: {error.strerror or error}"
    return None
