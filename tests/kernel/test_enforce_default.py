"""policies/default.toml under `enforcer run --mode enforce`, on a real kernel.

Every protection denies at the caller and reports exactly one `blocked`
event; reads and ordinary execs keep working; allowlisted subjects pass;
scopes, reload, pinning and unload behave as documented.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from battery import agent_fixtures, assert_outcome, assert_single_event, perform, scenario_by_id
from harness.agent import REPO, run_action, unload
from scenarios import ACTIONS, CG2, NORMAL, PY, SCENARIO_IDS, TMP, stage_fixture  # noqa: F401 - the `stage` fixture

pytestmark = pytest.mark.kernel


workdir, agent, agent_log = agent_fixtures("enforce")


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_scenario_under_enforce(agent, stage, scenario_id: str) -> None:
    scenario = scenario_by_id(stage, scenario_id)
    proc, events = perform(agent, scenario)
    assert_outcome(proc, scenario.blocks, scenario, events)
    action = "blocked" if scenario.blocks else "audited"
    assert_single_event(scenario, events, action, proc.pid, proc)


# --- a filesystem mounted below a place after the agent started --------------------


def test_a_filesystem_mounted_below_a_place_later_is_located_within_a_second(agent) -> None:
    """The mount watch moves places: a tmpfs mounted in /tmp after the start,
    reached through a bind mount elsewhere, is still in /tmp."""
    late, bound = TMP / "late", NORMAL / "late-bind"
    for directory in (late, bound):
        directory.mkdir(parents=True, exist_ok=True)
    mark = agent.mark()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(late)], check=True)
    try:
        subprocess.run(["cp", "/bin/true", str(late / "true")], check=True)
        subprocess.run(["mount", "--bind", str(late), str(bound)], check=True)
        relocated = agent.wait_for(
            mark, lambda r: r.get("type") == "agent" and r.get("message") == "mount table changed: exec places relocated")
        assert relocated["generation"] > 1, relocated
        proc = run_action([PY, ACTIONS, "exec", str(bound / "true")])
        events = [e for e in agent.events(mark, lambda r: r.get("type") == "event" and r.get("pid") == proc.pid)
                  if e["pid"] == proc.pid]
        assert proc.returncode == 77, (proc.stderr, events)
        assert [(e["rule"], e["match"], e["path"], e["new_path"]) for e in events] == [
            ("exec-unusual-dir", "location", str(bound / "true"), "/true")]
    finally:
        subprocess.run(["umount", str(bound)], check=False)
        subprocess.run(["umount", str(late)], check=False)


# --- interpreters asking with execveat(AT_EXECVE_CHECK) (Linux 6.14+) ---------------


def test_interpreter_check_is_answered_where_the_kernel_offers_it(agent) -> None:
    from enforcer.kernel.features import execve_check_supported

    mark = agent.mark()
    in_tmp = run_action([PY, ACTIONS, "execve-check", str(TMP / "script.sh")])
    ordinary = run_action([PY, ACTIONS, "execve-check", str(NORMAL / "bin/allowed-sh")])
    events = [e for e in agent.events(mark) if e.get("type") == "event" and e.get("path") == str(TMP / "script.sh")]
    if execve_check_supported("/sys/kernel/btf/vmlinux"):
        assert in_tmp.returncode == 77, in_tmp.stderr
        assert ordinary.returncode == 0, ordinary.stderr
        assert [(e["hook"], e["rule"], e["action"]) for e in events] == [
            ("bprm_creds_for_exec", "exec-unusual-dir", "blocked")]
    else:
        # The kernel cannot be asked (unknown flag): the interpreter learns that
        # (EINVAL) rather than a false "allowed", and nothing is reported.
        assert "Errno 22" in in_tmp.stderr and in_tmp.returncode == 3, in_tmp.stderr
        assert "Errno 22" in ordinary.stderr, ordinary.stderr
        assert events == []
        # The bprm_creds_for_exec program only returns here; a real exec of
        # the same place is still judged, by bprm_check_security.
        assert run_action([PY, ACTIONS, "exec", str(TMP / "true")]).returncode == 77


# --- allowlists: the same exec of /tmp/enftest/true, from different subjects --------


def _exec_events(agent, mark, expected: bool):
    def ours(record):
        return record.get("type") == "event" and record.get("path") == str(TMP / "true")

    return [e for e in agent.events(mark, ours if expected else None) if ours(e)]


@pytest.mark.parametrize(
    "subject,allowed",
    [
        (str(NORMAL / "bin/allowed-sh"), True),  # allow.exe
        (str(NORMAL / "trusted/sh"), True),  # allow.exe_dirs
        (str(NORMAL / "bin/other-sh"), False),  # the same shell, elsewhere
    ],
)
def test_allowlisted_executable(agent, subject: str, allowed: bool) -> None:
    mark = agent.mark()
    proc = run_action([subject, "-c", f"{TMP / 'true'}"])
    events = _exec_events(agent, mark, expected=not allowed)
    if allowed:
        assert proc.returncode == 0, (proc.stderr, events)
        assert events == []
    else:
        assert proc.returncode != 0, (proc.stderr, events)
        assert [e["exe"] for e in events] == [subject]
        assert events[0]["action"] == "blocked"


@pytest.mark.parametrize("uid,allowed", [(4242, True), (4243, False)])
def test_allowlisted_uid(agent, uid: int, allowed: bool) -> None:
    mark = agent.mark()
    proc = run_action([PY, ACTIONS, "uid-exec", str(uid), str(TMP / "true")])
    events = _exec_events(agent, mark, expected=not allowed)
    assert proc.returncode == (0 if allowed else 77), (proc.stderr, events)
    assert [e["uid"] for e in events] == ([] if allowed else [uid])


@pytest.mark.parametrize("cgroup,allowed", [("enftest-allowed", True), ("enftest-other", False)])
def test_allowlisted_cgroup(agent, cgroup: str, allowed: bool) -> None:
    if not (CG2 / cgroup).is_dir():
        pytest.fail(f"cgroup v2 is not mounted at {CG2} in the guest; cannot stage {cgroup}")
    mark = agent.mark()
    proc = run_action([PY, ACTIONS, "cgroup-exec", str(CG2 / cgroup), str(TMP / "true")])
    events = _exec_events(agent, mark, expected=not allowed)
    assert proc.returncode == (0 if allowed else 77), (proc.stderr, events)
    assert [e["cgroup"] for e in events] == ([] if allowed else [f"/{cgroup}"])


# --- scope, via reload (no recompilation) ---------------------------------------------

# keeps the id exec-unusual-dir: the test allow.d adds exceptions to it, and a
# policy whose allow.d names a missing rule is (rightly) rejected
SCOPED = """
version = 1
mode = "enforce"
[[rule]]
id = "exec-unusual-dir"
kind = "exec"
scope = "{scope}"
dirs = ["/tmp/enftest"]
"""


@pytest.mark.parametrize("scope", ["container", "host"])
def test_scope(agent, scope: str) -> None:
    original = agent.policy.read_text()
    verdict = agent.reload(SCOPED.format(scope=scope))
    assert verdict["message"] == "reloaded", verdict
    try:
        on_host = run_action([PY, ACTIONS, "exec", str(TMP / "true")])
        in_namespace = run_action(["unshare", "-m", PY, ACTIONS, "exec", str(TMP / "true")])
    finally:
        assert agent.reload(original)["message"] == "reloaded"
    blocked_on_host = on_host.returncode == 77
    blocked_in_namespace = in_namespace.returncode == 77
    assert {on_host.returncode, in_namespace.returncode} <= {0, 77}, (on_host, in_namespace)
    assert (blocked_on_host, blocked_in_namespace) == (scope == "host", scope == "container"), (
        on_host.stderr,
        in_namespace.stderr,
    )


def test_invalid_reload_keeps_the_old_policy(agent) -> None:
    original = agent.policy.read_text()
    verdict = agent.reload('version = 1\n[[rule]]\nid = "x"\nkind = "nonsense"\n')
    agent.policy.write_text(original)
    assert verdict["message"].startswith("reload rejected"), verdict
    assert "nonsense" in verdict["error"]
    assert run_action([PY, ACTIONS, "exec", str(TMP / "true")]).returncode == 77


def _status(workdir):
    return subprocess.run(
        [sys.executable, "-m", "enforcer", "status", "--json"], cwd=REPO, capture_output=True, text=True,
        env={"ENFORCER_STATE_DIR": str(workdir / "state"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )


def test_status_reports_enforcement(agent, workdir) -> None:
    result = _status(workdir)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    # the truth from the pinned maps: default.toml under --mode enforce keeps
    # exec-run-audit in audit, so 8 of its 9 rules enforce
    assert status["verdict"] == "partially enforcing (8 of 9 rules)", status
    assert status["enforcing"] is True
    assert (status["agent_running"], status["agent_pid"]) == (True, agent.pid), status
    assert status["instances"][-1]["stats"]["blocked"] > 0, status


# --- last: the agent stops, pinned programs keep enforcing, unload ends it -------------


def _bench() -> dict:
    result = run_action([PY, str(Path(__file__).with_name("bench_open.py"))], timeout_s=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_zz_enforcement_survives_agent_exit_until_unload(agent, workdir, artifacts_dir) -> None:
    with_programs = _bench()
    assert agent.stop() == 0, agent.log_tail()
    still = run_action([PY, ACTIONS, "exec", str(TMP / "true")])
    assert still.returncode == 77, "after the agent exited, pinned programs must still deny"
    after_stop = json.loads(_status(workdir).stdout)  # status.json is stale now: the lock tells
    assert (after_stop["agent_running"], after_stop["verdict"]) == (False, "partially enforcing (8 of 9 rules)")
    unload(workdir)
    # detaching can lag the unpin by a moment (kernel-facts.md): retry briefly
    deadline = time.monotonic() + 30
    while True:
        after = run_action([PY, ACTIONS, "exec", str(TMP / "true")])
        if after.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert after.returncode == 0, f"still denied 30s after unload: {after.stderr}"
    # recorded, never asserted: the ratio of open() cost with/without programs
    without = _bench()
    ratios = {key: round(with_programs[key] / without[key], 3) for key in without}
    record = {"with_programs": with_programs, "without": without, "ratio": ratios}
    (artifacts_dir / "bench-open.json").write_text(json.dumps(record, indent=2))
    print("open() cost with/without enforcer:", json.dumps(record))


def test_every_record_the_agent_wrote_conforms_to_the_schema(agent) -> None:
    """docs/events.md's schema against this module's real output, every record type it produced."""
    from harness.event_schema import schema_problems

    records = agent.since(0)
    assert {"event", "agent"} <= {r.get("type") for r in records}, records[:5]
    problems = schema_problems(records)
    assert problems == [], "\n".join(problems[:20])
