"""Where a *compiling* start's time goes (guest only): the steps of
enforcer.kernel.loader.load on a cache miss, timed one by one in a fresh
interpreter, so that `import bcc` is cold as at a real first start. Prints
one JSON object.

Not the agent itself (guest.py times launch to READY=1, and the agent's own
status.json carries the phases of its start, cached or compiled): this
repeats the expensive steps of a compile (import bcc, BTF header generation
cold and warm, the clang compile into a compiled object, reading the object
back from its file form, the verifier per program) and attaches nothing, so
nothing is enforced by it. A start from the cached object runs only the last
two.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    out = {}
    t = time.monotonic()
    import bcc  # noqa: F401  (timed: compile_object imports it on a cache miss)
    out["import_bcc_s"] = time.monotonic() - t

    from enforcer import registry
    from enforcer.kernel import bpfsys, loader
    from enforcer.kernel.bcc_compat import compile_object
    from enforcer.kernel.bpfobject import CompiledObject
    from enforcer.kernel.btf import load_btf
    from enforcer.kernel.headers import generate_headers
    from enforcer.kernel.objload import LoadedObject

    btf_path = "/sys/kernel/btf/vmlinux"
    btf = load_btf(btf_path)
    with tempfile.TemporaryDirectory() as cache:
        t = time.monotonic()
        generate_headers(btf_path, cache_root=Path(cache))
        out["headers_cold_s"] = time.monotonic() - t
        t = time.monotonic()
        headers = generate_headers(btf_path, cache_root=Path(cache))
        out["headers_warm_s"] = time.monotonic() - t

        bpf_dir = loader.default_bpf_dir()
        t = time.monotonic()
        obj = compile_object((bpf_dir / "enforcer.bpf.c").read_text(), headers,
                             registry.PROGRAM_HOOKS,
                             [*registry.cflags(), f"-I{bpf_dir}"])
        out["compile_s"] = time.monotonic() - t
        t = time.monotonic()
        obj = CompiledObject.from_json(obj.to_json())
        out["object_read_s"] = time.monotonic() - t

    maps_only = LoadedObject(CompiledObject(obj.maps, (), obj.license), {})
    verify = {}
    try:
        for program in obj.programs:
            t = time.monotonic()
            fd = bpfsys.prog_load_lsm(program.name, program.relocated(maps_only.map_fds), obj.license,
                                      btf.lsm_hook_id(program.hook))
            verify[program.hook] = round(time.monotonic() - t, 2)
            os.close(fd)
    finally:
        maps_only.close()
    out["verify_s"] = verify
    out["verify_total_s"] = sum(verify.values())
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
