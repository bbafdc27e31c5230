"""Shared driver for the enforce and audit modules: one agent per module,
one action process per scenario, the outcome and the event both checked."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import pytest

from harness.agent import Agent, run_action, unload
from scenarios import Scenario, Stage, all_scenarios, check_event, events_for, policy_dir


def artifacts_root(fallback: Path) -> Path:
    return Path(os.environ.get("ENFORCER_TEST_ARTIFACTS") or fallback)


def _agent_running(policy: Path, mode: Optional[str], workdir: Path, log_name: str,
                   extra_args: Sequence[str] = ()) -> Iterator[Agent]:
    """`enforcer run` on `policy` in `mode` (None: the policy's), logging under the
    artifacts; stopped and its programs unloaded afterwards."""
    log_path = artifacts_root(workdir) / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    agent = Agent(policy, mode, log_path, workdir, extra_args=extra_args)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
        unload(workdir)


#: `with agent_running(policy, mode, workdir, log_name, extra_args) as agent:` for a test's own agents.
agent_running = contextlib.contextmanager(_agent_running)


def module_agent(stage: Stage, workdir: Path, mode: Optional[str], log_name: str) -> Iterator[Agent]:
    """The agent on policies/default.toml (+ test allow.d) in `mode`."""
    del stage  # staged before the agent starts: the policy refers to staged paths
    yield from _agent_running(policy_dir(workdir) / "policy.toml", mode, workdir, log_name)


def own_agent(policy_text: str, workdir: Path, agent_log_path: Path, log_name: str = "agent.log",
              extra_args: Sequence[str] = ()) -> Iterator[Agent]:
    """A test's own agent on `policy_text` (the policy's modes); its log is
    attached to the test's artifacts."""
    policy = workdir / "policy.toml"
    policy.write_text(policy_text)
    try:
        yield from _agent_running(policy, None, workdir, log_name, extra_args)
    finally:
        log_path = artifacts_root(workdir) / log_name
        if log_path.exists():
            agent_log_path.write_text(log_path.read_text())


def agent_fixtures(mode: str) -> Tuple[object, object, object]:
    """The fixtures of a battery module: its work dir, its agent in `mode`,
    and (autouse) the agent's log copied into every test's artifacts."""

    @pytest.fixture(scope="module")
    def workdir(tmp_path_factory) -> Path:
        return tmp_path_factory.mktemp(mode)

    @pytest.fixture(scope="module")
    def agent(stage, workdir) -> Iterator[Agent]:
        yield from module_agent(stage, workdir, mode, f"agent-{mode}.log")

    @pytest.fixture(autouse=True)
    def agent_log(agent, agent_log_path) -> Iterator[None]:
        yield
        shutil.copy(agent.log_path, agent_log_path)

    return workdir, agent, agent_log


def scenario_by_id(stage: Stage, scenario_id: str) -> Scenario:
    return next(s for s in all_scenarios(stage) if s.id == scenario_id)


def perform(agent: Agent, scenario: Scenario):
    """Run the scenario's action; return (process, its events)."""
    if scenario.setup:
        scenario.setup()
    mark = agent.mark()
    proc = run_action(scenario.argv)
    expect = None
    if scenario.rule is not None:
        def expect(record, rule=scenario.rule):
            return record.get("type") == "event" and record.get("rule") == rule
    return proc, events_for(agent.events(mark, expect), scenario, proc.pid)


def describe(proc, events: List[dict]) -> str:
    return f"exit {proc.returncode}; stderr: {proc.stderr.strip()!r}; events: {events}"


def assert_outcome(proc, denied: bool, scenario: Scenario, events: List[dict]) -> None:
    if denied:
        assert proc.returncode != 0, f"{scenario.id} was allowed: " + describe(proc, events)
        if scenario.argv[1:2] and scenario.argv[1].endswith("actions.py"):
            assert proc.returncode == 77, f"{scenario.id} failed, but not with EPERM/EACCES: " + describe(proc, events)
    else:
        assert proc.returncode == 0, f"{scenario.id} was refused: " + describe(proc, events)


def assert_single_event(scenario: Scenario, events: List[dict], action: str, pid: int, proc) -> None:
    if scenario.rule is None:
        assert events == [], f"{scenario.id} must not report anything: " + describe(proc, events)
        return
    assert len(events) == 1, f"{scenario.id}: expected one event, got: " + describe(proc, events)
    check_event(events[0], scenario, action, pid)
