"""Compiling enforcer's BPF programs in a process of their own.

bcc links clang and LLVM: a compile maps their code and leaves their heap in
the process that ran it (the agent measured 143.6 MB resident for the rest of
its life after a compiling start, against about 43 MB after a start from the
cached object: docs/performance.md). The agent runs for months, so it asks
this worker instead, reads the compiled object back in CompiledObject's JSON
form on the worker's stdout, and never maps bcc at all: a start that compiles
leaves the agent as small as one that did not.

    python3 -m enforcer.kernel.compile_worker BTF_PATH BPF_DIR HEADERS_CACHE

Exit 0 with the object on stdout; exit 1 with the reason on stderr. The
worker needs what compiling needs (bcc creates the maps it compiles against,
hence CAP_BPF), nothing more; the agent keeps loading, attaching and pinning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from enforcer import registry
from enforcer.kernel import headers
from enforcer.kernel.bpfobject import CompiledObject, ObjectError

__all__ = ["CompileWorkerError", "compile_here", "compile_in_worker"]


class CompileWorkerError(RuntimeError):
    """The worker could not compile, or what it printed is not a compiled object."""


def compile_here(btf_path: Path, bpf_dir: Path, headers_cache: Path) -> CompiledObject:
    """Compile in this process (the worker's body): BTF headers, then bcc's clang."""
    from enforcer.kernel.bcc_compat import compile_object  # noqa: PLC0415 - bcc only here

    tree = headers.generate_headers(str(btf_path), cache_root=headers_cache)
    source = (bpf_dir / "enforcer.bpf.c").read_text()
    return compile_object(source, tree, registry.PROGRAM_HOOKS, [*registry.cflags(), f"-I{bpf_dir}"])


def worker_command(btf_path: Path, bpf_dir: Path, headers_cache: Path) -> List[str]:
    return [sys.executable, "-m", __name__, str(btf_path), str(bpf_dir), str(headers_cache)]


def compile_in_worker(btf_path: Path, bpf_dir: Path, headers_cache: Path) -> CompiledObject:
    """Compile in a child process and return its object; CompileWorkerError says why not.

    The child imports the same enforcer as this process (this process's
    module path, passed as PYTHONPATH) and starts in / so that nothing in the
    agent's working directory is imported in its place."""
    argv = worker_command(btf_path, bpf_dir, headers_cache)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", check=False)
    except OSError as error:
        raise CompileWorkerError(f"cannot start the compiler process {argv[0]}: {error}") from error
    if done.returncode < 0:
        raise CompileWorkerError(f"the compiler process was killed by signal {-done.returncode}: "
                                 f"{done.stderr.strip() or 'it said nothing'}")
    if done.returncode != 0:
        raise CompileWorkerError(done.stderr.strip() or f"the compiler process exited with status {done.returncode}")
    try:
        return CompiledObject.from_json(done.stdout)
    except ObjectError as error:
        raise CompileWorkerError(f"the compiler process printed no compiled object: {error}") from error


def main(argv: Sequence[str]) -> int:
    from enforcer.kernel.bcc_compat import BccError  # noqa: PLC0415
    from enforcer.kernel.btf import BtfError  # noqa: PLC0415

    if len(argv) != 3:
        print("usage: python3 -m enforcer.kernel.compile_worker BTF_PATH BPF_DIR HEADERS_CACHE", file=sys.stderr)
        return 2
    try:
        obj = compile_here(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    except (BccError, BtfError, OSError) as error:
        print(error, file=sys.stderr)
        return 1
    sys.stdout.write(obj.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
