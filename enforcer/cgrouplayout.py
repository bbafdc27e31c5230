"""Which cgroup layout the host runs, and what that means for cgroup identity.

enforcer's BPF programs name a task's cgroup by its place in the cgroup v2
hierarchy (the kernel's default hierarchy, which always exists). What that
name is worth depends on how the host mounts cgroups:

- unified (cgroup2 at /sys/fs/cgroup; systemd's default since v247, Debian 11+,
  RHEL 9): every process has its real cgroup; events name it, container ids
  are derived from it, cgroup allowlists match.
- hybrid (tmpfs at /sys/fs/cgroup with v1 controllers, cgroup2 at
  /sys/fs/cgroup/unified; Ubuntu 20.04, Debian 10): systemd mirrors its units
  into the v2 hierarchy, so services have their cgroup; but containers made by
  a runtime that manages cgroup v1 only (Docker/containerd with the cgroupfs
  driver) are not placed in v2 and appear as the service that started them.
- legacy (v1 hierarchies only; RHEL 7/8 by default): nothing is placed in the
  v2 hierarchy; every process is in its root, "/". Events cannot name a
  cgroup or a container, and a cgroup allowlist can never match.

The agent states the layout at start, refuses a cgroup allowlist on a legacy
host (it would silently never allow what the operator meant to allow), and
docs/threat-model.md lists the limits.
"""

from __future__ import annotations

import enum
from typing import List, Optional

from enforcer.mountinfo import MountTable
from enforcer.policy import Policy

CGROUP_ROOT = "/sys/fs/cgroup"


class CgroupLayout(enum.Enum):
    UNIFIED = "unified"
    HYBRID = "hybrid"
    LEGACY = "legacy"
    NONE = "none"  # no cgroup filesystem at /sys/fs/cgroup


def detect(mounts: MountTable) -> CgroupLayout:
    """The layout, from the mount table (the top mount at each point counts)."""
    top = {}
    for entry in mounts.entries:
        top[entry.mount_point] = entry.fstype  # later lines are mounted over earlier ones
    root = top.get(CGROUP_ROOT)
    if root == "cgroup2":
        return CgroupLayout.UNIFIED
    under = {point: fstype for point, fstype in top.items() if point.startswith(CGROUP_ROOT + "/")}
    if "cgroup2" in under.values():
        return CgroupLayout.HYBRID
    if "cgroup" in under.values() or root == "cgroup":
        return CgroupLayout.LEGACY
    return CgroupLayout.NONE


#: What the agent says at start about each layout but the unified one.
LIMITS = {
    CgroupLayout.HYBRID: (
        "cgroup layout is hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified): events name services' "
        "cgroups, but containers whose runtime manages cgroup v1 only (cgroupfs driver) show the cgroup of the "
        "service that started them, so their container id is unknown and cgroup allowlists cannot tell them apart"
    ),
    CgroupLayout.LEGACY: (
        "cgroup layout is legacy (cgroup v1 only): every process is in the cgroup v2 root, so events name no "
        "cgroup and no container (cgroup \"/\") and cgroup allowlists can never match; exe, exe_dirs and uid "
        "allowlists work. Boot with systemd.unified_cgroup_hierarchy=1 for cgroup identity"
    ),
    CgroupLayout.NONE: (
        "no cgroup filesystem is mounted at /sys/fs/cgroup: cgroup names in events and cgroup allowlists "
        "depend on a cgroup v2 hierarchy that nothing here manages"
    ),
}


def limit(layout: CgroupLayout) -> Optional[str]:
    return LIMITS.get(layout)


def unusable_cgroup_allowlists(policy: Policy, layout: CgroupLayout) -> List[str]:
    """Where the policy allowlists cgroups that cannot match on this layout
    (legacy only): 'the policy' or 'rule N "id"', each with its entries."""
    if layout is not CgroupLayout.LEGACY:
        return []
    found = []
    if policy.allow.cgroup:
        found.append(f"the policy's allow.cgroup {list(policy.allow.cgroup)}")
    for number, rule in enumerate(policy.rules, start=1):
        if rule.meta.allow.cgroup:
            found.append(f'rule {number} "{rule.meta.id}" allow.cgroup {list(rule.meta.allow.cgroup)}')
    return found
