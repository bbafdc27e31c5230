"""bpf/enforcer.bpf.c declares every map and hook of enforcer.registry and
nothing else: read from the source (strictly), and as bcc builds it (map
types, sizes, key and value sizes, programs). The header's index and bit
macros agree with their Python twins.

The bcc part needs root and bcc like tests/compile/test_bpf_compile.py; it
builds against the host's BTF (the Debian build is covered there).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from enforcer import abi, registry
from enforcer.registry_check import mismatches, read_declarations

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"


def test_source_declares_exactly_the_registry() -> None:
    found = read_declarations((BPF_DIR / "enforcer.bpf.c").read_text())
    assert mismatches(found) == []
    assert [decl.name for decl in found.maps] == [spec.name for spec in registry.MAPS]
    assert [decl.name for decl in found.programs] == [spec.name for spec in registry.HOOKS]


# --- what bcc builds ---------------------------------------------------------------


def _libbcc_function(name: str, restype, *argtypes):  # type: ignore[no-untyped-def]
    """A prototype of its own, so bcc's shared declarations stay untouched."""
    from bcc import libbcc  # noqa: PLC0415 - compile tier only

    return ctypes.CFUNCTYPE(restype, *argtypes)((name, libbcc.lib))


@pytest.fixture(scope="module")
def built(headers) -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("compile tier needs root: libbcc creates the program's maps while compiling")
    bcc = pytest.importorskip("bcc", reason="bcc's Python binding (python3-bpfcc) is not installed")
    from enforcer.kernel.bcc_compat import kernel_source_env  # noqa: PLC0415

    class CompiledNotLoaded(bcc.BPF):
        """bcc would load and attach every LSM program in its constructor."""

        def _trace_autoload(self) -> None:
            return None

    host = headers["host"]
    cflags = [*host.cflags, *registry.cflags(), f"-I{BPF_DIR}"]
    with kernel_source_env(host):
        module = CompiledNotLoaded(text=(BPF_DIR / "enforcer.bpf.c").read_bytes(), cflags=cflags)
    yield module
    module.cleanup()


def _tables(module) -> Dict[str, Dict[str, int]]:  # type: ignore[no-untyped-def]
    size_t, ptr = ctypes.c_size_t, ctypes.c_void_p
    count = _libbcc_function("bpf_num_tables", size_t, ptr)
    name_of = _libbcc_function("bpf_table_name", ctypes.c_char_p, ptr, size_t)
    kind_of = _libbcc_function("bpf_table_type_id", ctypes.c_int, ptr, size_t)
    entries_of = _libbcc_function("bpf_table_max_entries_id", size_t, ptr, size_t)
    key_size_of = _libbcc_function("bpf_table_key_size_id", size_t, ptr, size_t)
    value_size_of = _libbcc_function("bpf_table_leaf_size_id", size_t, ptr, size_t)
    tables = {}
    for index in range(count(module.module)):
        tables[name_of(module.module, index).decode()] = {
            "kind": kind_of(module.module, index),
            "entries": entries_of(module.module, index),
            "key": key_size_of(module.module, index),
            "value": value_size_of(module.module, index),
        }
    return tables


def _expected(spec: registry.MapSpec) -> Dict[str, int]:
    expected = {"kind": int(spec.kind), "entries": spec.size_value if spec.kind is not registry.MapKind.RINGBUF else spec.capacity}
    if spec.kind is not registry.MapKind.RINGBUF:  # bcc gives the ring buffer dummy key and value slots
        expected["key"] = ctypes.sizeof(spec.key)  # type: ignore[arg-type]
    if spec.value is not None and spec.kind is not registry.MapKind.RINGBUF:
        expected["value"] = ctypes.sizeof(spec.value)
    return expected


def test_built_maps_are_the_registered_ones(built) -> None:  # type: ignore[no-untyped-def]
    tables = _tables(built)
    assert set(tables) == set(registry.MAPS_BY_NAME)
    for spec in registry.MAPS:
        found = {field: tables[spec.name][field] for field in _expected(spec)}
        assert found == _expected(spec), spec.name


def test_built_programs_are_the_registered_hooks(built) -> None:  # type: ignore[no-untyped-def]
    count = _libbcc_function("bpf_num_functions", ctypes.c_size_t, ctypes.c_void_p)
    name_of = _libbcc_function("bpf_function_name", ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
    functions = {name_of(built.module, index).decode() for index in range(count(built.module))}
    assert functions == {spec.program for spec in registry.HOOKS}


# --- header macros -----------------------------------------------------------------


def _run_c(tmp_path: Path, flags: List[str], body: str) -> subprocess.CompletedProcess:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: install gcc")
    src = tmp_path / "macros.c"
    src.write_text(f'#include <linux/types.h>\n#include <stdio.h>\n#include "{BPF_DIR / "enforcer.h"}"\n'
                   f"int main(void) {{\n{body}\nreturn 0;\n}}\n")
    built = subprocess.run([cc, *flags, "-o", str(tmp_path / "macros"), str(src)], capture_output=True, text=True)
    if built.returncode != 0:
        return built
    return subprocess.run([str(tmp_path / "macros")], capture_output=True, text=True, check=True)


def test_index_macros_are_the_abi_functions(tmp_path: Path) -> None:
    slots = range(abi.POLICY_SLOTS)
    triples = [(slot, target, scope) for slot in slots for target in abi.Target for scope in abi.KernelScope]
    rules = [(slot, rule) for slot in slots for rule in range(abi.MAX_RULES + 1)]
    spaces = [(slot, scope) for slot in slots for scope in abi.KernelScope]
    body = "\n".join(
        [f'printf("%d\\n", ENFORCER_TARGET_INDEX({sl}, {int(t)}, {int(s)}));' for sl, t, s in triples]
        + [f'printf("%d\\n", ENFORCER_RULE_INDEX({sl}, {r}));' for sl, r in rules]
        + [f'printf("%d\\n", ENFORCER_KEY_NS({sl}, {int(s)}));' for sl, s in spaces]
    )
    out = [int(value) for value in _run_c(tmp_path, abi.cflags(), body).stdout.split()]
    expected = (
        [abi.target_index(sl, t, s) for sl, t, s in triples]
        + [abi.rule_index(sl, r) for sl, r in rules]
        + [abi.key_namespace(sl, int(s)) for sl, s in spaces]
    )
    assert out == expected
    assert registry.MAPS_BY_NAME["targets"].size_value == len(triples) == len(set(expected[: len(triples)]))
    assert registry.MAPS_BY_NAME["rules"].size_value == len(rules)


def test_rule_bit_macro_is_one_bit_per_rule(tmp_path: Path) -> None:
    rules = range(1, abi.MAX_RULES + 1)
    body = "\n".join(f'printf("%llu\\n", ENFORCER_RULE_BIT({rule}U));' for rule in rules)
    out = _run_c(tmp_path, abi.cflags(), body).stdout.split()
    assert [int(bit) for bit in out] == [1 << rule for rule in rules]


def test_header_refuses_a_rule_count_that_is_not_a_mask(tmp_path: Path) -> None:
    flags = [flag for flag in abi.cflags() if not flag.startswith("-DENFORCER_MAX_RULES=")]
    result = _run_c(tmp_path, [*flags, "-DENFORCER_MAX_RULES=62"], "")
    assert result.returncode != 0
    assert "ENFORCER_MAX_RULES must be 2^n - 1" in result.stderr
