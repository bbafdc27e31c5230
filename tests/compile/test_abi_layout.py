"""bpf/enforcer.h and enforcer/abi.py must agree byte for byte.

The header is compiled with the host C compiler and the same -D flags the
BPF build gets; a generated program prints sizeof/offsetof of every field,
which is compared with the ctypes mirror that decodes events and encodes maps.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from enforcer import abi

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "enforcer.h"


def _probe_source() -> str:
    lines = ["#include <linux/types.h>", f'#include "{HEADER}"', "#include <stdio.h>",
             "#include <stddef.h>", "int main(void) {"]
    for name, struct in abi.SHARED_STRUCTS.items():
        c_type = f"struct enforcer_{name}"
        lines.append(f'printf("{name} sizeof %zu\\n", sizeof({c_type}));')
        for field, *_ in struct._fields_:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof({c_type}, {field}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: install gcc (the layout check needs it)")
    work = tmp_path_factory.mktemp("abi")
    src = work / "probe.c"
    src.write_text(_probe_source())
    exe = work / "probe"
    subprocess.run([cc, *abi.cflags(), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    layout = {}
    for line in out.splitlines():
        struct, field, value = line.split()
        layout[(struct, field)] = int(value)
    return layout


@pytest.mark.parametrize("name", sorted(abi.SHARED_STRUCTS))
def test_struct_layout_matches_c(name: str, c_layout: dict) -> None:
    struct = abi.SHARED_STRUCTS[name]
    assert c_layout[(name, "sizeof")] == ctypes.sizeof(struct)
    for field, *_ in struct._fields_:
        assert c_layout[(name, field)] == getattr(struct, field).offset, f"{name}.{field}"


def test_header_refuses_to_compile_without_flags(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    src = tmp_path / "bare.c"
    src.write_text(f'#include <linux/types.h>\n#include "{HEADER}"\nint main(void) {{ return 0; }}\n')
    result = subprocess.run([cc, "-o", str(tmp_path / "bare"), str(src)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "needs the -D flags" in result.stderr


def test_target_slots_are_dense() -> None:
    for slot in range(abi.POLICY_SLOTS):
        indices = {abi.target_index(slot, t, s) for t in abi.Target for s in abi.KernelScope}
        first = slot * abi.TARGET_SLOTS
        assert indices == set(range(first, first + abi.TARGET_COUNT * len(abi.KernelScope)))
