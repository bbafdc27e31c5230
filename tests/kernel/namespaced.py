"""Commands run the way a privileged container's root runs them, for the tamper tests.

Real root with every capability in the initial user namespace, in a mount
namespace of its own (`unshare --mount`): what a `--privileged` container is
to the kernel's scope test, sharing the host's pid namespace and bpffs. And
the way a host service that is not root, but holds capabilities, runs them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List

#: enforcer's pin directory (enforcer.kernel.loader.PIN_ROOT)
PIN_ROOT = Path("/sys/fs/bpf/enforcer")


@dataclass(frozen=True)
class Ran:
    pid: int
    returncode: int
    stdout: str
    stderr: str


#: A host service that is not root but holds, as ambient capabilities (kept
#: across exec), what tampering needs: a compromised daemon's footing.
HOST_SERVICE_CAPS = "+sys_admin,+bpf,+kill,+sys_ptrace,+dac_override,+sys_resource"
AS_HOST_SERVICE = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   f"--inh-caps={HOST_SERVICE_CAPS}", f"--ambient-caps={HOST_SERVICE_CAPS}", "--")


def in_container(*argv: str, timeout_s: float = 60) -> Ran:
    """argv as root in a mount namespace of its own (unshare execs it: same pid)."""
    return _ran(["unshare", "--mount", "--", *argv], timeout_s)


def as_host_service(*argv: str, timeout_s: float = 60) -> Ran:
    """argv in the host's mount namespace as nobody with capabilities (setpriv execs it: same pid)."""
    return _ran([*AS_HOST_SERVICE, *argv], timeout_s)


def _ran(command: List[str], timeout_s: float) -> Ran:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
