"""enforcer.cgrouplayout: the host's cgroup layout from real mountinfo shapes, and cgroup allowlists on legacy hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer import daemon
from enforcer.cgrouplayout import CgroupLayout, detect, limit, unusable_cgroup_allowlists
from enforcer.mountinfo import parse_mountinfo
from enforcer.parse import PolicyError, loads_policy

ROOT = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
SYSFS = "23 22 0:21 / /sys rw,nosuid shared:2 - sysfs sysfs rw\n"

# Debian 12 / RHEL 9 (systemd unified)
UNIFIED = ROOT + SYSFS + "26 23 0:24 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
# Ubuntu 20.04 (systemd hybrid): tmpfs with v1 controllers, cgroup2 at unified/
HYBRID = ROOT + SYSFS + (
    "26 23 0:24 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755\n"
    "27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw,nsdelegate\n"
    "28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd\n"
    "31 26 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory\n")
# RHEL 8 (legacy): v1 only
LEGACY = ROOT + SYSFS + (
    "26 23 0:24 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755\n"
    "28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd\n"
    "31 26 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory\n")


@pytest.mark.parametrize("text, layout", [
    (UNIFIED, CgroupLayout.UNIFIED),
    (HYBRID, CgroupLayout.HYBRID),
    (LEGACY, CgroupLayout.LEGACY),
    (ROOT + SYSFS, CgroupLayout.NONE),
    # a v1 layout mounted over a unified one (what the kernel test does in a mount namespace)
    (UNIFIED + "40 23 0:40 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
     "41 40 0:41 / /sys/fs/cgroup/x rw - cgroup cgroup rw,name=x\n", CgroupLayout.LEGACY),
])
def test_detect(text: str, layout: CgroupLayout) -> None:
    assert detect(parse_mountinfo(text)) is layout


def test_only_unified_has_no_limit_to_state() -> None:
    assert limit(CgroupLayout.UNIFIED) is None
    for layout in (CgroupLayout.HYBRID, CgroupLayout.LEGACY, CgroupLayout.NONE):
        assert limit(layout)


POLICY = """
version = 1
[allow]
cgroup = ["/system.slice/backup.service"]
[[rule]]
id = "sysrq"
kind = "sysrq"
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/tmp"]
[rule.allow]
cgroup = ["/system.slice/ci.service"]
uid = [1000]
"""


def test_cgroup_allowlists_are_unusable_only_on_legacy_hosts() -> None:
    policy = loads_policy(POLICY, "p.toml")
    assert unusable_cgroup_allowlists(policy, CgroupLayout.UNIFIED) == []
    assert unusable_cgroup_allowlists(policy, CgroupLayout.HYBRID) == []
    found = unusable_cgroup_allowlists(policy, CgroupLayout.LEGACY)
    assert found == ["the policy's allow.cgroup ['/system.slice/backup.service']",
                     "rule 2 \"tmp\" allow.cgroup ['/system.slice/ci.service']"]
    without = loads_policy(POLICY.replace('cgroup = ["/system.slice/ci.service"]\n', "")
                           .replace('[allow]\ncgroup = ["/system.slice/backup.service"]\n', ""), "p.toml")
    assert unusable_cgroup_allowlists(without, CgroupLayout.LEGACY) == []


def test_the_agent_refuses_a_cgroup_allowlist_on_a_legacy_host(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    policy.chmod(0o644)
    tmp_path.chmod(0o755)
    monkeypatch.setattr(daemon, "own_mounts", lambda: parse_mountinfo(LEGACY))
    monkeypatch.setattr(daemon, "load_trusted_policy", lambda path: loads_policy(Path(path).read_text(), str(path)))
    with pytest.raises(PolicyError) as raised:
        daemon.load_and_compile(policy, None)
    message = str(raised.value)
    assert "legacy" in message and "backup.service" in message and 'rule 2 "tmp"' in message
    monkeypatch.setattr(daemon, "own_mounts", lambda: parse_mountinfo(UNIFIED))
    assert daemon.load_and_compile(policy, None).policy.allow.cgroup == ("/system.slice/backup.service",)
