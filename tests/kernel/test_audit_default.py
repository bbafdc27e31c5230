"""policies/default.toml under `enforcer run --mode audit`: nothing is denied,
and every action enforce mode would deny is reported once as `audited`."""

from __future__ import annotations


import pytest

from battery import agent_fixtures, assert_outcome, assert_single_event, perform, scenario_by_id
from scenarios import ACTIONS, PY, SCENARIO_IDS, TMP, stage_fixture  # noqa: F401 - the `stage` fixture
from harness.agent import run_action

pytestmark = pytest.mark.kernel


workdir, agent, agent_log = agent_fixtures("audit")


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_scenario_under_audit(agent, stage, scenario_id: str) -> None:
    scenario = scenario_by_id(stage, scenario_id)
    proc, events = perform(agent, scenario)
    assert_outcome(proc, False, scenario, events)
    assert_single_event(scenario, events, "audited", proc.pid, proc)


def test_allowlisted_uid_is_not_reported_in_audit(agent) -> None:
    mark = agent.mark()
    allowed = run_action([PY, ACTIONS, "uid-exec", "4242", str(TMP / "true")])
    other = run_action([PY, ACTIONS, "uid-exec", "4243", str(TMP / "true")])
    events = [e for e in agent.events(mark, lambda r: r.get("uid") == 4243) if e["path"] == str(TMP / "true")]
    assert (allowed.returncode, other.returncode) == (0, 0)
    assert [e["uid"] for e in events] == [4243]


def test_status_says_audit_only(agent, workdir) -> None:
    import json
    import subprocess
    import sys

    from harness.agent import REPO

    result = subprocess.run(
        [sys.executable, "-m", "enforcer", "status", "--json"], cwd=REPO, capture_output=True, text=True,
        env={"ENFORCER_STATE_DIR": str(workdir / "state"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert result.returncode == 3, (result.stdout, result.stderr)  # NOT_ENFORCING: nothing denies
    status = json.loads(result.stdout)
    assert (status["verdict"], status["enforcing"]) == ("audit only", False), status


def test_every_record_the_agent_wrote_conforms_to_the_schema(agent) -> None:
    """docs/events.md's schema against this module's real output, every record type it produced."""
    from harness.event_schema import schema_problems

    records = agent.since(0)
    assert {"event", "agent"} <= {r.get("type") for r in records}, records[:5]
    problems = schema_problems(records)
    assert problems == [], "\n".join(problems[:20])
