"""A tamper rule with the agent sandboxed as its packaged unit runs it.

The unit's ProtectSystem=/PrivateTmp= give the agent a mount namespace of its
own, so the agent, the next agent that adopts its pins after a restart, and
ExecReload's `kill -HUP` are all in container scope. Only the running agent
is exempt by identity; the next agent and the unit's helpers are recognised
by the unit's cgroup, which the policy allowlists (docs/policy.md). Without
that allowlist the next agent can neither adopt the pins nor retire them: the
second test shows the start failing, as an operator would meet it.

systemd is not PID 1 in the guest, so the test plays its part: each agent is
started in a cgroup of its own (`/enftest-enforcer.service`) and a mount
namespace of its own; the reload's `kill` runs the same way.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from harness.agent import Agent, AgentError, unload
from namespaced import PIN_ROOT, TAMPER_POLICY, in_container

pytestmark = pytest.mark.kernel

CGROUP_NAME = "enftest-enforcer.service"
CGROUP = Path("/sys/fs/cgroup") / CGROUP_NAME

POLICY = TAMPER_POLICY + f"""\
[rule.allow]
cgroup = ["/{CGROUP_NAME}"]
"""


def in_the_unit(*argv: str) -> List[str]:
    """argv as the unit runs its processes: in its cgroup, in a mount namespace of its own."""
    return ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec unshare --mount -- "$@"', "sh", *argv]


class SandboxedAgent(Agent):
    def command(self) -> List[str]:
        return in_the_unit(*super().command())


@pytest.fixture
def unit_cgroup() -> Iterator[Path]:
    if not (CGROUP.parent / "cgroup.procs").exists():
        pytest.fail("cgroup v2 is not mounted at /sys/fs/cgroup in the guest")
    CGROUP.mkdir(exist_ok=True)
    yield CGROUP


def _started(agent: Agent) -> dict:
    return agent.wait_for(0, lambda r: r.get("type") == "agent" and r.get("message") == "started")


def _settings_id() -> int:
    (instance,) = [p for p in PIN_ROOT.iterdir() if p.is_dir()]
    shown = subprocess.run(["bpftool", "map", "show", "pinned", str(instance / "map_settings"), "--json"],
                           check=True, capture_output=True, text=True).stdout
    return int(json.loads(shown)["id"])


def _policy_file(workdir: Path, text: str) -> Path:
    """The policy in a directory of its own, as /etc/enforcer is: the tamper
    rule protects that directory, and the agents' state (workdir/state, as
    /run/enforcer) must not be in it."""
    policy = workdir / "etc" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(text)
    return policy


def test_the_unit_restarts_and_reloads_its_agent_with_the_tamper_rule_on(tmp_path: Path, agent_log_path: Path,
                                                                          unit_cgroup: Path) -> None:
    policy = _policy_file(tmp_path, POLICY)
    first = SandboxedAgent(policy, None, agent_log_path.with_name("agent-first.log"), tmp_path).start()
    second = None
    try:
        assert _started(first)["startup"]["object"] in ("compiled", "cached")
        mark = first.mark()
        reload = subprocess.run(in_the_unit("kill", "-HUP", str(first.pid)), capture_output=True, text=True)
        assert reload.returncode == 0, f"ExecReload's kill was refused: {reload.stderr!r}"
        first.wait_for(mark, lambda r: r.get("type") == "agent" and str(r.get("message")).startswith("reloaded"))
        assert first.stop() == 0
        second = SandboxedAgent(policy, None, agent_log_path.with_name("agent-second.log"), tmp_path).start()
        startup = _started(second)["startup"]
        assert startup["object"] == "adopted", f"the restarted agent did not adopt the pins: {startup}"
        # and a container is still refused
        mark = second.mark()
        attempt = in_container("bpftool", "map", "dump", "id", str(_settings_id()))
        assert attempt.returncode != 0, attempt.stdout
        second.wait_for(mark, lambda r: r.get("type") == "event" and r.get("rule") == "tamper"
                        and r.get("pid") == attempt.pid and r.get("action") == "blocked")
    finally:
        for agent in (second, first):
            if agent is not None:
                agent.stop()
        unload(tmp_path)


def test_without_the_allowlist_the_restarted_agent_cannot_take_over(tmp_path: Path, agent_log_path: Path,
                                                                     unit_cgroup: Path) -> None:
    """What the allowlist is for: the next agent is refused the pins it would
    adopt, loads a second instance, then is refused the removal of the first."""
    policy = _policy_file(tmp_path, POLICY.replace(f'[rule.allow]\ncgroup = ["/{CGROUP_NAME}"]\n', ""))
    first = SandboxedAgent(policy, None, agent_log_path.with_name("agent-first.log"), tmp_path).start()
    try:
        assert first.stop() == 0
        second = SandboxedAgent(policy, None, agent_log_path.with_name("agent-second.log"), tmp_path)
        with pytest.raises(AgentError, match="exited with"):
            second.start()
        log = second.log_path.read_text()
        assert "not adopting the pinned instance" in log, log[-3000:]
        assert "pinning under" in log and "Operation not permitted" in log, log[-3000:]
    finally:
        unload(tmp_path)
