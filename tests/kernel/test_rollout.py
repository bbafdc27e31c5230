"""The road from audit to enforce (issue 10, "Done when"), on a real kernel.

policies/default.toml runs under --mode audit while legitimate subjects do
things it would deny: a program executes a file in /tmp and opens
/proc/sysrq-trigger for writing, and a Python job of a system service
executes a file in /tmp. `enforcer suggest` reads the recorded events and
writes a drop-in into allow.d; `enforcer reload` has the audit agent accept
it; `enforcer check --explain --mode service` shows the result as an
enforcing service runs it; the agent restarts under --mode enforce (as the
service does after ENFORCER_MODE=enforce). Then exactly those actions pass,
and the same actions by another subject (the same program elsewhere, the
same job in another service) are blocked, as is the allowed program's write
to another rule's file: exemptions are per subject and per rule.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest

from battery import agent_running, artifacts_root
from harness.agent import REPO, Agent, run_action
from scenarios import ACTIONS, CG2, NORMAL, PY, TMP, stage_fixture  # noqa: F401 - the `stage` fixture

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = pytest.mark.kernel

ROLLOUT = NORMAL / "rollout"
#: a legitimate tool (a copy of dash under a name no risk list knows), and the same program elsewhere
RUNNER = ROLLOUT / "bin" / "backup-runner"
OTHER = ROLLOUT / "elsewhere" / "backup-runner"
SERVICE = "/system.slice/enftest-backup.service"
OTHER_SERVICE = "/system.slice/enftest-other.service"
SYSRQ = "/proc/sysrq-trigger"
CORE_PATTERN = "/proc/sys/kernel/core_pattern"


def _stage_subjects() -> None:
    dash = os.path.realpath(shutil.which("dash") or "/bin/sh")
    for program in (RUNNER, OTHER):
        program.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dash, program)
        program.chmod(0o755)
    if not (CG2 / "cgroup.procs").exists():
        pytest.fail(f"cgroup v2 is not mounted at {CG2} in the guest; cannot stage the services' cgroups")
    for cgroup in (SERVICE, OTHER_SERVICE):
        (CG2 / cgroup.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _exec_tmp(subject: Path) -> List[str]:
    return [str(subject), "-c", str(TMP / "true")]


def _open_for_append(subject: Path, path: str) -> List[str]:
    # opened for writing, nothing written: the open is the protected action
    return [str(subject), "-c", f"exec 3>>{path}"]


def _service_exec_tmp(cgroup: str) -> List[str]:
    # python (an interpreter) moves itself into the service's cgroup, then executes the file
    return [PY, ACTIONS, "cgroup-exec", str(CG2 / cgroup.lstrip("/")), str(TMP / "true")]


#: what the legitimate subjects do during the audit run: (argv, rule it matches)
LEGITIMATE = [
    (_exec_tmp(RUNNER), "exec-unusual-dir"),
    (_open_for_append(RUNNER, SYSRQ), "sysrq-write-host"),
    (_service_exec_tmp(SERVICE), "exec-unusual-dir"),
]


def _enforcer(*argv: str, state_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *argv], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, ENFORCER_STATE_DIR=str(state_dir)), timeout=300)


def _events_of(agent: Agent, mark: int, rule: str, expected: bool) -> List[dict]:
    def ours(record: dict) -> bool:
        return record.get("type") == "event" and record.get("rule") == rule

    return [e for e in agent.events(mark, ours if expected else None) if ours(e)]


def _run(agent: Agent, argv: Sequence[str], rule: str, expect_event: bool):
    mark = agent.mark()
    proc = run_action(argv)
    return proc, _events_of(agent, mark, rule, expect_event)


def test_audit_suggest_review_enforce(stage, tmp_path) -> None:
    _stage_subjects()
    workdir = tmp_path
    etc = workdir / "etc"
    (etc / "allow.d").mkdir(parents=True)
    shutil.copy(REPO / "policies/default.toml", etc / "policy.toml")
    policy = etc / "policy.toml"
    events_file = artifacts_root(workdir) / "rollout-events.jsonl"
    events_file.parent.mkdir(parents=True, exist_ok=True)
    events_file.unlink(missing_ok=True)
    drop_in = etc / "allow.d" / "60-suggested.toml"
    state_dir = workdir / "state"

    # 1. audit: everything is let through and reported
    with agent_running(policy, "audit", workdir, "agent-rollout-audit.log",
                       extra_args=["--events", f"file:{events_file},stdout"]) as agent:
        for argv, rule in LEGITIMATE:
            proc, events = _run(agent, argv, rule, expect_event=True)
            assert proc.returncode == 0, (argv, proc.stderr, events)
            assert [e["action"] for e in events] == ["audited"], (argv, events)

        # 2. suggest, written into allow.d after the checks of `enforcer check`
        suggested = _enforcer("suggest", "--from", str(events_file), "--policy", str(policy),
                              "--write", str(drop_in), state_dir=state_dir)
        assert suggested.returncode == 0, suggested.stderr
        assert suggested.stdout.startswith(f"written: {drop_in} (3 entries for 2 rules, from 3 events)"), \
            suggested.stdout
        (artifacts_root(workdir) / "60-suggested.toml").write_text(drop_in.read_text())
        assert tomllib.loads(drop_in.read_text()) == {"rule_allow": {
            "sysrq-write-host": {"exe": [str(RUNNER)]},
            "exec-unusual-dir": {"exe": [str(RUNNER)], "cgroup": [SERVICE]},
        }}, drop_in.read_text()

        # 3. the running agent takes it: its own verdict
        reloaded = _enforcer("reload", "--timeout", "120", state_dir=state_dir)
        assert reloaded.returncode == 0, (reloaded.stdout, reloaded.stderr)
        # generation 2, or later if the mount watch relocated places meanwhile
        assert re.fullmatch(r"reloaded: generation \d+, 9 rules \(0 enforce, 9 audit\), [1-9]\d* map entries "
                            r"changed\n", reloaded.stdout), reloaded.stdout

    # 4. review: the policy as an enforcing service will run it
    settings = workdir / "enforcer-defaults"
    settings.write_text("ENFORCER_MODE=enforce\n")
    explained = _enforcer("check", "--explain", "--mode", "service", "--service-config", str(settings),
                          str(policy), state_dir=state_dir)
    assert explained.returncode == 0, explained.stderr
    assert "9 rules (8 enforce, 1 audit)" in explained.stdout.splitlines()[0]
    rule4 = explained.stdout[explained.stdout.index('Rule 4 "exec-unusual-dir"'):explained.stdout.index("Rule 5 ")]
    assert rule4.startswith('Rule 4 "exec-unusual-dir" [exec]: DENIED (enforce)')
    assert f"    - the program {RUNNER}\n" in rule4 and f"    - processes in cgroup {SERVICE} and below\n" in rule4

    # 5. enforce: exactly those subjects pass; the same actions by others are blocked
    with agent_running(policy, "enforce", workdir, "agent-rollout-enforce.log") as agent:
        for argv, rule in LEGITIMATE:
            proc, events = _run(agent, argv, rule, expect_event=False)
            assert proc.returncode == 0, (argv, proc.stderr, events)
            assert events == [], (argv, events)
        blocked = [
            (_exec_tmp(OTHER), "exec-unusual-dir", ("exe", str(OTHER))),
            (_open_for_append(OTHER, SYSRQ), "sysrq-write-host", ("exe", str(OTHER))),
            (_service_exec_tmp(OTHER_SERVICE), "exec-unusual-dir", ("cgroup", OTHER_SERVICE)),
            # allowed for two rules, not for a third
            (_open_for_append(RUNNER, CORE_PATTERN), "kernel-helper-sysctl-host", ("exe", str(RUNNER))),
        ]
        for argv, rule, (field, subject) in blocked:
            proc, events = _run(agent, argv, rule, expect_event=True)
            assert proc.returncode != 0, (argv, "was let through", events)
            assert [(e["action"], e[field]) for e in events] == [("blocked", subject)], (argv, events)
