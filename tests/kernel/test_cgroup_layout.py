"""The agent on a host whose cgroup layout is legacy (v1 only), on the real kernel.

The VM's own layout is unified. A legacy host is imitated for the agent
alone: it runs in a mount namespace where /sys/fs/cgroup is a tmpfs holding
a cgroup v1 hierarchy, which is what RHEL 8 shows its processes. The agent
must say what it cannot do there, refuse a cgroup allowlist (which could
never match: on a real legacy host every process is in the v2 root), and
enforce everything else exactly as before.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from actions import DENIED
from harness.agent import REPO, Agent, run_action, unload
from scenarios import ACTIONS, PY

pytestmark = pytest.mark.kernel

LEGACY_SETUP = (
    "mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup && mkdir /sys/fs/cgroup/systemd && "
    "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd && exec \"$@\""
)

POLICY = 'version = 1\nmode = "enforce"\n\n[[rule]]\nid = "sysrq"\nkind = "sysrq"\n'


class LegacyHostAgent(Agent):
    """The agent in a mount namespace laid out as a cgroup v1 host."""

    def command(self) -> List[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", LEGACY_SETUP, "sh",
                *super().command()]


def test_on_a_legacy_host_the_agent_says_what_it_cannot_do_and_still_enforces(tmp_path: Path,
                                                                               agent_log_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = LegacyHostAgent(policy, None, agent_log_path, tmp_path).start()
    try:
        started = agent.wait_for(0, lambda r: r.get("type") == "agent" and r.get("message") == "started")
        assert started["cgroup_layout"] == "legacy", started
        warning = agent.wait_for(0, lambda r: r.get("type") == "agent" and r.get("cgroup_layout") == "legacy"
                                 and r.get("level") == "warning")
        assert "cgroup allowlists can never match" in warning["message"], warning
        mark = agent.mark()
        result = run_action([PY, ACTIONS, "open", "/proc/sysrq-trigger", "w"])
        assert result.returncode == DENIED, result
        agent.wait_for(mark, lambda r: r.get("type") == "event" and r.get("rule") == "sysrq")
    finally:
        agent.stop()
        unload(tmp_path)


def test_on_a_legacy_host_a_cgroup_allowlist_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + '[rule.allow]\ncgroup = ["/system.slice/backup.service"]\n')
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", LEGACY_SETUP, "sh",
                           sys.executable, "-m", "enforcer", "run", "--policy", str(policy)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"ENFORCER_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "legacy" in proc.stderr and "backup.service" in proc.stderr, proc.stderr[-3000:]
