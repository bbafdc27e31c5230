"""Where the agent's start-up time goes (guest only): the steps of
enforcer.kernel.loader.load timed one by one in a fresh interpreter, so that
`import bcc` is cold as at a real start.  Prints one JSON object.

Not the agent itself (that is timed launch to READY=1 by guest.py): this
repeats its expensive steps (import bcc, BTF header generation cold and
warm, the clang compile of bpf/enforcer.bpf.c, the verifier per program) and
stops before attaching, so nothing is enforced by it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    out = {}
    t = time.monotonic()
    import bcc  # noqa: F401  (timed: the first thing the agent's loader does)
    out["import_bcc_s"] = time.monotonic() - t

    from enforcer import registry
    from enforcer.kernel import loader
    from enforcer.kernel.bcc_compat import kernel_source_env
    from enforcer.kernel.headers import generate_headers

    btf = "/sys/kernel/btf/vmlinux"
    with tempfile.TemporaryDirectory() as cache:
        t = time.monotonic()
        generate_headers(btf, cache_root=Path(cache))
        out["headers_cold_s"] = time.monotonic() - t
        t = time.monotonic()
        headers = generate_headers(btf, cache_root=Path(cache))
        out["headers_warm_s"] = time.monotonic() - t

        class Unattached(bcc.BPF):
            def _trace_autoload(self) -> None:
                return None

        bpf_dir = loader.default_bpf_dir()
        with kernel_source_env(headers):
            t = time.monotonic()
            bpf = Unattached(text=(bpf_dir / "enforcer.bpf.c").read_text(),
                             cflags=loader.build_cflags(headers, bpf_dir))
            out["compile_s"] = time.monotonic() - t
        verify = {}
        for spec in registry.HOOKS:
            t = time.monotonic()
            bpf.load_func(spec.program.encode(), bcc.BPF.LSM)
            verify[spec.name] = round(time.monotonic() - t, 2)
        out["verify_s"] = verify
        out["verify_total_s"] = sum(verify.values())
        bpf.cleanup()
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
