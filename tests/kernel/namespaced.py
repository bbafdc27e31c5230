"""Commands run the way a privileged container's root runs them, for the tamper tests.

Real root with every capability in the initial user namespace, in a mount
namespace of its own (`unshare --mount`): what a `--privileged` container is
to the kernel's scope test, sharing the host's pid namespace and bpffs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

#: enforcer's pin directory (enforcer.kernel.loader.PIN_ROOT)
PIN_ROOT = Path("/sys/fs/bpf/enforcer")


@dataclass(frozen=True)
class Ran:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def in_container(*argv: str, timeout_s: float = 60) -> Ran:
    """argv as root in a mount namespace of its own (unshare execs it: same pid)."""
    proc = subprocess.Popen(["unshare", "--mount", "--", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return Ran(proc.pid, proc.returncode, out, err)


#: A SysRq rule for containers, to show enforcement goes on, and the tamper rule.
TAMPER_POLICY = """\
version = 1
mode = "enforce"

[[rule]]
id = "sysrq-container"
kind = "sysrq"
scope = "container"

[[rule]]
id = "tamper"
kind = "tamper"
scope = "container"
"""
