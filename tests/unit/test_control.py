"""`enforcer reload`: found through the lock, SIGHUP, the agent's verdict; every way it goes wrong.

The agents are processes (tests/unit/fake_agent.py) that hold the lock and
answer SIGHUP: the `agent` one runs enforcer.daemon.Agent's own reload and
state publishing over a fake kernel.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from agents import FakeAgents
from enforcer import cli, control
from enforcer.exitcodes import ExitCode
from enforcer.instancelock import acquire
from enforcer.state import AgentState, ReloadStatus, write_state

POLICY = 'version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n'
TWO_RULES = POLICY + '[[rule]]\nid = "tmp"\nkind = "exec"\ndirs = ["/tmp"]\n'


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("ENFORCER_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def agents(state_dir):
    started = FakeAgents(state_dir)
    yield started
    started.stop_all()


@pytest.fixture
def policy(tmp_path) -> Path:
    path = tmp_path / "etc" / "policy.toml"
    path.parent.mkdir()
    path.write_text(POLICY)
    return path


def test_no_agent_running(state_dir, capsys) -> None:
    assert cli.main(["reload"]) == ExitCode.NO_AGENT == 5
    assert capsys.readouterr().err == (
        f"no agent running (no process holds {state_dir}/agent.lock); start it: systemctl start enforcer\n")


def test_a_stale_lock_file_is_no_agent(state_dir) -> None:
    acquire(state_dir).release()  # the file stays, nobody holds it
    assert (state_dir / "agent.lock").exists()
    assert control.reload_agent(state_dir, timeout_s=1).status == ExitCode.NO_AGENT


def test_reloaded_prints_the_agents_verdict(agents, policy, capsys) -> None:
    agents.start("agent", policy)
    policy.write_text(TWO_RULES)
    assert cli.main(["reload", "--timeout", "10"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("reloaded: generation 2, 2 rules (2 enforce, 0 audit), ")
    assert out.endswith(" map entries changed\n") and " 0 map entries" not in out
    # the next reload is a new verdict, not the last one read again
    assert cli.main(["reload", "--timeout", "10"]) == 0
    assert capsys.readouterr().out == "reloaded: generation 3, 2 rules (2 enforce, 0 audit), 0 map entries changed\n"


def test_an_invalid_policy_is_rejected_with_its_errors_and_exit_2(agents, policy, state_dir, capsys) -> None:
    agents.start("agent", policy)
    policy.write_text(POLICY + 'mode = "on"\n')
    assert cli.main(["reload", "--timeout", "10"]) == ExitCode.INVALID_POLICY
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f'reload rejected: {policy}:5: rule 1 "s" mode: unknown value "on" (allowed: "enforce", "audit")\n'
                   "(the previous policy, generation 1, stays in force)\n")
    state = json.loads((state_dir / "status.json").read_text())
    assert state["reload"]["ok"] is False and state["reload"]["failure"] == "policy"
    assert [r["id"] for r in state["rules"]] == ["s"]  # what is in force, still
    policy.write_text(TWO_RULES)
    assert cli.main(["reload", "--timeout", "10"]) == 0
    assert capsys.readouterr().out.startswith("reloaded: generation 2, 2 rules")


def test_a_reload_the_kernel_refuses_exits_1(agents, policy, tmp_path, capsys) -> None:
    marker = tmp_path / "fail"
    marker.touch()
    agents.start("agent", policy, env={"FAKE_AGENT_FAIL_APPLY": str(marker)})
    assert control.reload_agent(timeout_s=10).status == ExitCode.UNAVAILABLE
    outcome = control.reload_agent(timeout_s=10)
    assert outcome.message.startswith("reload rejected: applying the new policy failed, previous policy kept: ENOMEM")
    marker.unlink()
    assert control.reload_agent(timeout_s=10).ok


def test_an_agent_that_does_not_answer_times_out(agents, policy, capsys) -> None:
    proc = agents.start("silent", policy)
    assert cli.main(["reload", "--timeout", "0.5"]) == ExitCode.UNAVAILABLE
    assert capsys.readouterr().err == (
        f"no answer from the agent (pid {proc.pid}) within 0.5 s: SIGHUP was sent, its verdict is not known; "
        "read it with: enforcer events --type agent\n")


def test_an_agent_still_starting_is_waited_for_and_never_signalled(agents, policy) -> None:
    proc = agents.start("starting", policy)  # SIGHUP would end it
    outcome = control.reload_agent(timeout_s=0.5)
    assert outcome.status == ExitCode.UNAVAILABLE
    assert outcome.message.startswith(f"the agent (pid {proc.pid}) is still starting after 0.5 s")
    assert proc.poll() is None, "the starting agent was signalled"


def test_an_agent_that_stops_before_answering(agents, policy) -> None:
    proc = agents.start("dies", policy)  # SIGHUP ends it
    outcome = control.reload_agent(timeout_s=10)
    assert proc.wait(10) == -signal.SIGHUP
    assert (outcome.status, outcome.message) == (
        ExitCode.UNAVAILABLE, f"the agent (pid {proc.pid}) stopped before answering; whether the new files are in "
                              "force is not known: enforcer status")


def _state(pid: int, reload: ReloadStatus) -> AgentState:
    return AgentState(pid=pid, policy="/p.toml", allow_d=(), mode_override=None, instance="i", rules=(),
                      updated="t", reload=reload)


def test_a_reload_under_way_when_asked_is_not_taken_for_ours(state_dir) -> None:
    """Reload 3 had begun (and may have read the files) before we looked: only 4 answers us."""
    import os

    lock = acquire(state_dir)  # this process plays the agent
    pid = os.getpid()
    under_way = ReloadStatus(requested=3, finished=2, ok=True, message="reloaded: generation 3, ...", generation=3)
    write_state(_state(pid, under_way), state_dir)
    script = [
        ReloadStatus(3, 3, True, "reloaded: generation 4, old files", "", 4, "t"),  # the one under way ends
        ReloadStatus(4, 3, True, "reloaded: generation 4, old files", "", 4, "t"),  # ours begins
        ReloadStatus(4, 4, True, "reloaded: generation 5, our files", "", 5, "t"),  # ours ends
    ]
    signals = []

    def step(_seconds: float) -> None:
        if script:
            write_state(_state(pid, script.pop(0)), state_dir)

    try:
        outcome = control.reload_agent(state_dir, timeout_s=5, sleep=step,
                                       kill=lambda p, s: signals.append((p, s)))
    finally:
        lock.release()
    assert signals == [(pid, signal.SIGHUP)]
    assert (outcome.status, outcome.message, outcome.generation) == (ExitCode.OK, "reloaded: generation 5, our files", 5)


def test_an_agent_that_publishes_no_reload_results_is_not_signalled(state_dir) -> None:
    import os

    lock = acquire(state_dir)
    write_state(_state(os.getpid(), None), state_dir)  # an agent from before reload results
    try:
        outcome = control.reload_agent(state_dir, timeout_s=1, kill=lambda p, s: pytest.fail("signalled"))
    finally:
        lock.release()
    assert outcome.status == ExitCode.UNAVAILABLE and "does not publish reload results" in outcome.message


def test_not_root_is_a_sentence(state_dir) -> None:
    import os

    lock = acquire(state_dir)
    write_state(_state(os.getpid(), ReloadStatus()), state_dir)

    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    try:
        outcome = control.reload_agent(state_dir, timeout_s=1, kill=denied)
    finally:
        lock.release()
    assert (outcome.status, outcome.message) == (ExitCode.UNAVAILABLE, f"must be root to signal the agent (pid {os.getpid()})")


def test_a_state_file_it_cannot_read_means_not_root(state_dir, monkeypatch) -> None:
    import os

    lock = acquire(state_dir)
    write_state(_state(os.getpid(), ReloadStatus()), state_dir)
    monkeypatch.setattr(control.os, "access", lambda path, mode: False)  # as for a user other than root
    try:
        outcome = control.reload_agent(state_dir, timeout_s=1, kill=lambda p, s: pytest.fail("signalled"))
    finally:
        lock.release()
    assert (outcome.status, outcome.message) == (
        ExitCode.UNAVAILABLE, f"must be root: the agent's state ({state_dir}/status.json) is root's")
