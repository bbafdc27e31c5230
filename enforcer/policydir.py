"""The policy directory a tamper rule protects whole (`protect` with "policy").

The kernel judges every entry of the `--policy` file's directory, two levels
down, by that directory's inode: it cannot tell enforcer's files there from
anyone else's. A policy kept in a shared directory (`--policy
/etc/enforcer.toml`) would make all of /etc unwritable from containers: a
false block for every container that manages host configuration (a CNI
installer writing /etc/cni/net.d, a node agent). So such a directory is
refused, at start and at each reload, before anything is applied: the policy
must sit in a directory of its own, which holds no directory but allow.d
(/etc/enforcer under the package; the kubelet's `..data` and `..<time>`
entries of a ConfigMap volume are not counted).

So is a policy directory on btrfs: its subvolumes share one device number
and each numbers its inodes from 256, so the kernel's (device, inode) test
would also match unrelated directories in other subvolumes (/home) and
refuse their changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from enforcer import abi
from enforcer.mountinfo import MOUNTINFO_PATH, MountInfoError, read_mount_table
from enforcer.plan import MapPlan
from enforcer.policyfile.problems import PolicyError, PolicyProblem

__all__ = ["check_policy_directory", "foreign_directories"]

#: the one directory enforcer reads beside its policy file
ALLOW_D = "allow.d"
#: file systems whose inode numbers repeat under one device number
SHARED_INODE_SPACES = frozenset({"btrfs"})


def foreign_directories(directory: Path) -> List[str]:
    """The directories in `directory` that are not enforcer's (all but allow.d), sorted."""
    with os.scandir(directory) as entries:
        return sorted(entry.name for entry in entries
                      if entry.name != ALLOW_D and not entry.name.startswith("..") and entry.is_dir())


def check_policy_directory(plan: MapPlan, policy_path: Path, mountinfo: str = MOUNTINFO_PATH) -> None:
    """Raise PolicyError when `plan` protects the policy directory and that
    directory is not enforcer's own, or is on btrfs."""
    if not plan.watch & abi.Watch.TAMPER_POLICY:
        return
    directory = policy_path.parent
    try:
        mount = read_mount_table(mountinfo).mount_of(os.path.realpath(directory))
    except (OSError, MountInfoError) as error:
        raise PolicyError([PolicyProblem(
            str(policy_path), f'a "tamper" rule protects "policy", but the file system of {directory} cannot be '
                              f"known: {error}")]) from None
    if mount is not None and mount.fstype in SHARED_INODE_SPACES:
        raise PolicyError([PolicyProblem(
            str(policy_path),
            f'a "tamper" rule protects "policy", but {directory} is on {mount.fstype}, whose subvolumes number '
            f"their inodes alike under one device number: the kernel would also refuse changes to unrelated "
            f'directories elsewhere on it. Leave "policy" out of protect on this host')])
    try:
        foreign = foreign_directories(directory)
    except OSError as error:
        raise PolicyError([PolicyProblem(
            str(policy_path), f'a "tamper" rule protects "policy", but its directory {directory} cannot be listed: '
                              f"{error.strerror}")]) from None
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise PolicyError([PolicyProblem(
            str(policy_path),
            f'a "tamper" rule protects "policy" (its protect key, or the default: all), which makes everything in '
            f"the policy file's directory {directory} unwritable from containers, but that directory is not "
            f"enforcer's own: it holds {len(foreign)} other director{'y' if len(foreign) == 1 else 'ies'} ({shown}). "
            f"Keep the policy in a directory of its own (/etc/enforcer/policy.toml, with its allow.d), or leave "
            f'"policy" out of protect')])
