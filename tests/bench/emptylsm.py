"""The floor: BPF-LSM programs that return 0 on exactly the hooks enforcer
attaches (enforcer.registry.HOOKS), compiled and loaded with bcc the way the
agent does (headers generated from the kernel's BTF), not attached here."""

from __future__ import annotations

from pathlib import Path
from typing import List

from enforcer import registry
from enforcer.kernel.bcc_compat import kernel_source_env
from enforcer.kernel.headers import generate_headers

from .bpfctl import Program, prog_id_of


def source() -> str:
    """One LSM_PROBE per hook, with the hook's arity (the arguments are
    unused; u64 is what the BPF context holds)."""
    parts = []
    for spec in registry.HOOKS:
        args = ", ".join(f"unsigned long long a{i}" for i in range(len(spec.params)))
        parts.append(f"LSM_PROBE({spec.name}, {args}) {{ return 0; }}")
    return "\n".join(parts) + "\n"


def load(cache_root: Path) -> tuple:
    """(the BPF object, which must be kept alive, and its programs)."""
    import bcc  # guest only

    headers = generate_headers("/sys/kernel/btf/vmlinux", cache_root=cache_root)

    class Unattached(bcc.BPF):
        def _trace_autoload(self) -> None:  # bcc would attach LSM probes itself
            return None

    with kernel_source_env(headers):
        bpf = Unattached(text=source(), cflags=list(headers.cflags))
    programs: List[Program] = []
    for spec in registry.HOOKS:
        fn = bpf.load_func(spec.program.encode(), bcc.BPF.LSM)
        programs.append(Program(spec.name, fn.fd, prog_id_of(fn.fd) or 0))
    return bpf, programs
