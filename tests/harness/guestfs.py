"""File systems the agent needs inside a guest: securityfs (the active LSM
list) and bpffs (where the agent pins its programs). virtme-ng's init mounts
securityfs but not bpffs. Used by tests/kernel/conftest.py and the ./try demo.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict

SECURITYFS = Path("/sys/kernel/security")
BPFFS = Path("/sys/fs/bpf")


def mounted_types() -> Dict[str, str]:
    """mount point -> file-system type, from /proc/self/mounts."""
    out = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out[fields[1]] = fields[2]
    return out


def ensure_mounted(fstype: str, target: Path) -> None:
    if mounted_types().get(str(target)) == fstype:
        return
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", fstype, fstype, str(target)], check=True,
                   capture_output=True, text=True)
    if mounted_types().get(str(target)) != fstype:
        raise RuntimeError(f"{fstype} not mounted at {target}")


def ensure_agent_mounts() -> None:
    """securityfs and bpffs, mounted if they are not."""
    ensure_mounted("securityfs", SECURITYFS)
    ensure_mounted("bpf", BPFFS)
