"""kill -9 of the agent under attack, and the next agent's adoption of its pins.

The pinned links keep the programs attached when the agent dies; the next
agent finds that instance (same compiled object), adopts it instead of
loading a second set of programs, and brings its maps to its own policy
through the reload transaction. Throughout, a loop retries a denied open:
not one attempt may succeed, and the kernel must hold one set of programs.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from harness.agent import Agent, enforcer_programs, unload, wait_for_no_enforcer_programs
from scenarios import ACTIONS, PY

pytestmark = pytest.mark.kernel

SYSRQ = "/proc/sysrq-trigger"


def _policy(rule_id: str) -> str:
    return f'version = 1\nmode = "enforce"\n\n[[rule]]\nid = "{rule_id}"\nkind = "sysrq"\n'


def _started(agent: Agent) -> dict:
    return agent.wait_for(0, lambda r: r.get("type") == "agent" and r.get("message") == "started")


def _agent(workdir: Path, rule_id: str, log_path: Path, name: str) -> Agent:
    policy = workdir / f"policy-{name}.toml"
    policy.write_text(_policy(rule_id))
    return Agent(policy, None, log_path.with_name(f"{log_path.stem}-{name}.log"), workdir).start()


def test_kill_9_then_adoption_lets_nothing_through_and_keeps_one_set_of_programs(tmp_path: Path,
                                                                                 agent_log_path: Path) -> None:
    first = _agent(tmp_path, "sysrq-first", agent_log_path, "first")
    one_set = enforcer_programs()
    assert one_set and set(one_set.values()) == {1}, one_set
    stop, result = tmp_path / "stop-loop", tmp_path / "loop.json"
    loop = subprocess.Popen([PY, ACTIONS, "open-loop", SYSRQ, "w", str(stop), str(result), "0.001"])
    second = None
    try:
        time.sleep(1.0)
        first._proc.kill()  # SIGKILL: no clean-up of any kind
        first._proc.wait(30)
        assert enforcer_programs() == one_set, "the programs must stay attached through their pins"
        second = _agent(tmp_path, "sysrq-second", agent_log_path, "second")
        startup = _started(second)["startup"]
        assert startup["object"] == "adopted", startup
        assert enforcer_programs() == one_set, f"a second set of programs was loaded: {enforcer_programs()}"
        mark = second.mark()
        second.wait_for(mark, lambda r: r.get("type") == "event" and r.get("rule") == "sysrq-second"
                        and r.get("action") == "blocked" and r.get("pid") == loop.pid)
        time.sleep(1.0)
    finally:
        stop.touch()
        loop.wait(60)
        if second is not None:
            second.stop()
        unload(tmp_path)
    counts = json.loads(result.read_text())
    print(f"adoption under attack: {counts}; start-up of the adopting agent: {startup}")
    assert counts["attempts"] > 100, counts
    assert counts["successes"] == 0, counts
    # detaching lags the unpin (the kernel frees the links and programs after a
    # grace period: immediate on 6.1, seconds on 6.12), so give it time
    assert wait_for_no_enforcer_programs(timeout_s=30) == {}, "unload left programs attached"
