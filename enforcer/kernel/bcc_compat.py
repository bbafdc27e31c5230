"""Compile BPF C with bcc against BTF-generated headers, telling compile
failures apart from load failures.

Why: bcc 0.26's ``BPF(text=...)`` compiles *and* loads+attaches every
``LSM_PROBE`` (``lsm__*``) function in its constructor (``_trace_autoload``),
and reports both kinds of failure as a bare ``Exception``.  On hosts whose
kernel refuses LSM programs (EPERM) a compile check would then always fail.
bcc's own constructor calls ``libbcc.bpf_module_create_c_from_string`` to
compile; calling it directly (then ``bpf_module_destroy``) compiles without
loading any program.  Maps declared in the C are created by libbcc during
that call, which needs root (or CAP_BPF) but works on such hosts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from enforcer.kernel import bpfobject, bpfsys
from enforcer.kernel.bpfobject import CompiledObject, MapSpec, ObjectError
from enforcer.kernel.headers import KernelHeaders


class BccError(Exception):
    """Base class for bcc failures."""


class BccUnavailableError(BccError):
    """bcc's Python binding is not importable."""


class BccCompileError(BccError):
    """The C did not compile; `log` holds clang's diagnostics."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n{log}".rstrip())
        self.log = log


class BccLoadRefusedError(BccError):
    """The C compiled but the kernel refused to load a program (EPERM):
    BPF-LSM unavailable, lockdown, or missing privileges."""


class BccLoadError(BccError):
    """The C compiled but loading failed otherwise (verifier, attach)."""


@dataclass(frozen=True)
class CompiledModule:
    """What a compile-only run produced."""

    functions: tuple[str, ...]        # e.g. ("lsm__file_open",)
    bytecode: dict[str, bytes]        # per function, its BPF instructions
    log: str                          # clang warnings, if any

    @property
    def instruction_bytes(self) -> dict[str, int]:
        """Per function, the size of its bytecode."""
        return {name: len(code) for name, code in self.bytecode.items()}


def _libbcc():  # type: ignore[no-untyped-def]
    try:
        from bcc import libbcc  # imported lazily: bcc is a distro package
    except ImportError as exc:
        raise BccUnavailableError(
            "bcc's Python binding is missing: install python3-bpfcc (Debian/"
            "Ubuntu) or python3-bcc (Fedora/RHEL), and run the distribution's "
            f"/usr/bin/python3 ({exc})") from None
    return libbcc.lib


@contextlib.contextmanager
def kernel_source_env(headers: KernelHeaders) -> Iterator[None]:
    """Point bcc at the generated tree; libbcc reads the variable at compile
    time from the process environment, so it must be set in os.environ."""
    saved = {key: os.environ.get(key) for key in headers.env}
    os.environ.update(headers.env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what libbcc/clang write to fd 2 (diagnostics go there, not
    to Python), still forwarding nothing to the real stderr."""
    out: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            out.append(sink.read().decode("utf-8", "replace"))


def _cflags_array(cflags: Sequence[str]) -> ctypes.Array:  # type: ignore[type-arg]
    array = (ctypes.c_char_p * len(cflags))()
    for index, flag in enumerate(cflags):
        array[index] = flag.encode()
    return array


@contextlib.contextmanager
def _module(text: str, headers: KernelHeaders, extra_cflags: Sequence[str]) -> Iterator[tuple]:
    """(libbcc, module, clang's diagnostics) for `text` compiled against
    `headers`; the module (and the maps libbcc created for it) is destroyed
    on exit. Raises BccCompileError when it does not compile."""
    lib = _libbcc()
    cflags = list(headers.cflags) + list(extra_cflags)
    array = _cflags_array(cflags)
    with kernel_source_env(headers), _captured_stderr() as log:
        module = lib.bpf_module_create_c_from_string(
            text.encode(), 0, array, len(cflags), True, None)
    diagnostics = log[0] if log else ""
    if not module:
        raise BccCompileError("bcc failed to compile the BPF program", diagnostics)
    try:
        yield lib, module, diagnostics
    finally:
        lib.bpf_module_destroy(module)


def compile_only(text: str, headers: KernelHeaders,
                 extra_cflags: Sequence[str] = ()) -> CompiledModule:
    """Compile `text` with bcc against `headers`; load nothing.

    Raises BccCompileError with clang's diagnostics when it does not compile.
    """
    with _module(text, headers, extra_cflags) as (lib, module, diagnostics):
        names = tuple(lib.bpf_function_name(module, i).decode()
                      for i in range(lib.bpf_num_functions(module)))
        bytecode = {name: _function_bytecode(lib, module, name) for name in names}
    return CompiledModule(names, bytecode, diagnostics)


def compile_object(text: str, headers: KernelHeaders, programs: Mapping[str, str],
                   extra_cflags: Sequence[str] = ()) -> CompiledObject:
    """Compile `text` into a CompiledObject holding the functions named in
    `programs` (function name -> LSM hook) and every map the C declares.

    The maps' attributes are read back from the kernel (the maps libbcc
    created while compiling), so the object describes exactly what bcc would
    have loaded; those maps are closed again when this returns.
    """
    with _module(text, headers, extra_cflags) as (lib, module, _diagnostics):
        map_fds: dict[str, int] = {}
        specs = []
        for index in range(_table_count(lib, module)):
            name = _table_name(lib, module, index)
            fd = int(_table_fd(lib, module, index))
            info = bpfsys.map_info(fd, what=f"compiled map {name}")
            map_fds[name] = fd
            specs.append(MapSpec(name, info.type, info.key_size, info.value_size, info.max_entries, info.map_flags))
        functions = {}
        for function, hook in programs.items():
            code = _function_bytecode(lib, module, function)
            if not code:
                raise BccCompileError(f"the compiled module has no function {function} (for hook {hook})", "")
            functions[function] = (hook, code)
        license_text = (lib.bpf_module_license(module) or b"GPL").decode()
        try:
            return bpfobject.build(tuple(specs), map_fds, functions, license_text)
        except ObjectError as error:
            raise BccCompileError(f"bcc's output cannot be kept as a compiled object: {error}", "") from None


def _function_bytecode(lib, module, name: str) -> bytes:  # type: ignore[no-untyped-def]
    # bcc declares bpf_function_start's result as a void pointer: copy the
    # bytes out before the module (which owns them) is destroyed.
    start = lib.bpf_function_start(module, name.encode())
    size = int(lib.bpf_function_size(module, name.encode()))
    return ctypes.string_at(start, size) if start and size else b""


def _table_count(lib, module) -> int:  # type: ignore[no-untyped-def]
    # bcc's binding declares neither these three functions' types nor the
    # first: size_t bpf_num_tables(void *), const char *bpf_table_name(void *,
    # size_t), int bpf_table_fd_id(void *, size_t) (bcc's bcc_common.h).
    function = lib.bpf_num_tables
    function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_size_t
    return int(function(module))


def _table_name(lib, module, index: int) -> str:  # type: ignore[no-untyped-def]
    function = lib.bpf_table_name
    function.argtypes, function.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_char_p
    return function(module, index).decode()


def _table_fd(lib, module, index: int) -> int:  # type: ignore[no-untyped-def]
    function = lib.bpf_table_fd_id
    function.argtypes, function.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int
    return int(function(module, index))


def load(text: str, headers: KernelHeaders,
         extra_cflags: Sequence[str] = ()):  # type: ignore[no-untyped-def]
    """Compile, load and attach with bcc.BPF, mapping bcc's bare Exceptions
    to BccCompileError / BccLoadRefusedError / BccLoadError.

    The C is compiled first on its own so that a compile failure is known
    for what it is, whatever bcc's message says.
    """
    compile_only(text, headers, extra_cflags)
    try:
        from bcc import BPF
    except ImportError as exc:
        raise BccUnavailableError(str(exc)) from None
    cflags = list(headers.cflags) + list(extra_cflags)
    ctypes.set_errno(0)
    with kernel_source_env(headers):
        try:
            return BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for everything
            raise _classify_load_failure(exc) from exc


def _classify_load_failure(exc: Exception) -> BccError:
    message = str(exc)
    # bcc turns EPERM from BPF_PROG_LOAD into this text (BPF.load_func).
    if "Need super-user privileges" in message or (
            ctypes.get_errno() == errno.EPERM):
        return BccLoadRefusedError(
            f"kernel refused to load the BPF program (EPERM): {message}. "
            "BPF-LSM needs 'bpf' in the active LSM list "
            "(/sys/kernel/security/lsm), no lockdown=confidentiality, and root")
    return BccLoadError(f"bcc failed to load/attach: {message}")
