"""The agent in a sandbox like its packaged unit's, on the real kernel: exec
places are located where the HOST has them.

The unit runs the agent with PrivateTmp= and PrivateDevices=: in its mount
namespace /tmp is a bind of a private directory and /dev a tmpfs of its own.
Located from that table, "/tmp" would be the private directory, and a chroot
into a directory of the host's /tmp would escape the location check. The
agent reads PID 1's table instead (enforcer.mountinfo.host_mountinfo_path).

Here the agent runs in a mount namespace where /tmp is a bind of a private
directory, as systemd makes it; the attacker chroots into the host's /tmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from harness.agent import REPO, Agent, unload, wait_for_no_enforcer_programs

pytestmark = pytest.mark.kernel

#: Outside /tmp: the agent's files must be reachable in its namespace too.
WORK = Path("/var/lib/enftest-sandbox")
PRIVATE_TMP = WORK / "private-tmp"
JAIL = Path("/tmp/enftest-sandbox/jail")
BUSYBOX = "/bin/busybox"

POLICY = """version = 1
mode = "enforce"

[[rule]]
id = "exec-tmp"
kind = "exec"
dirs = ["/tmp"]
"""

HOST_TMP = WORK / "host-tmp"  # the host's /tmp, held while a private one covers it


def private_tmp_setup() -> str:
    """Shell steps that give the agent a private /tmp, as PrivateTmp=yes does.
    A checkout in /tmp (CI clones there) stays visible at its path, bound
    back from the host's /tmp: the agent runs from it."""
    steps = [f"mkdir -p {HOST_TMP}", f"mount --bind /tmp {HOST_TMP}", f"mount --bind {PRIVATE_TMP} /tmp"]
    if Path("/tmp") in REPO.parents:
        inside = REPO.relative_to("/tmp")
        steps += [f"mkdir -p /tmp/{inside}", f"mount --bind {HOST_TMP / inside} /tmp/{inside}"]
    return " && ".join(steps) + ' && exec "$@"'


class PrivateTmpAgent(Agent):
    """The agent with a /tmp of its own, as PrivateTmp=yes gives it."""

    def command(self) -> List[str]:
        return ["unshare", "--mount", "--propagation", "slave", "sh", "-c", private_tmp_setup(), "sh",
                *super().command()]


def _tmp_mount_root(pid: str) -> str:
    """The root (inside its filesystem) of the mount on /tmp that process `pid` sees."""
    root = ""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/tmp":
            root = fields[3]
    return root


def test_a_chroot_into_the_hosts_tmp_is_denied_by_a_sandboxed_agent(agent_log_path: Path) -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    PRIVATE_TMP.mkdir(parents=True)
    (JAIL / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, JAIL / "bin/busybox")
    os.chmod(JAIL / "bin/busybox", 0o755)
    policy = WORK / "policy.toml"
    policy.write_text(POLICY)
    # an earlier test's agent was unloaded: its programs must be gone, or they deny the control
    left = wait_for_no_enforcer_programs()
    assert not left, f"enforcer programs still loaded before the control: {left}"
    control = subprocess.run(["chroot", str(JAIL), "/bin/busybox", "true"], capture_output=True, text=True)
    assert control.returncode == 0, f"without an agent the chroot must work: {control.stderr}"

    agent = PrivateTmpAgent(policy, None, agent_log_path, WORK).start()
    try:
        # the sandbox is real: the agent's /tmp is not the host's
        assert _tmp_mount_root(str(agent.pid)) != _tmp_mount_root("1"), "the agent's /tmp is the host's"
        mark = agent.mark()
        outcome = subprocess.run(["chroot", str(JAIL), "/bin/busybox", "true"], capture_output=True, text=True)
        assert outcome.returncode != 0 and "Operation not permitted" in outcome.stderr, (
            f"chroot into the host's /tmp was not denied: exit {outcome.returncode}, {outcome.stderr!r}")
        event = agent.wait_for(mark, lambda r: r.get("type") == "event" and r.get("rule") == "exec-tmp")
        assert event["action"] == "blocked" and event["match"] == "location", event
        assert event["path"] == "/bin/busybox", event
        assert str(event["new_path"]).endswith("enftest-sandbox/jail/bin/busybox"), event
        # and the agent's own private /tmp does not count as the host's
        assert not str(event["new_path"]).startswith(str(PRIVATE_TMP)), event
    finally:
        agent.stop()
        unload(WORK)
