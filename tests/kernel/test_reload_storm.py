"""Policy reloads under attack, on a real kernel (issues 9 and 16).

A process opens /proc/sysrq-trigger for writing over and over while the agent
is reloaded again and again between policies that number, scope and allowlist
the SysRq rules differently, with broken files in between. A reload switches
the kernel from one complete policy to the next in one step (bpf/enforcer.h),
so under enforcing policies not one attempt may get through; every event must
name the rule of the policy generation that decided it; a reload is answered
while the loop floods the agent with denials; and when a policy audits, every
attempt that got through is reported (written or counted in a summary).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Tuple

import pytest

from battery import own_agent
from harness.agent import REPO, Agent
from scenarios import ACTIONS, PY

pytestmark = pytest.mark.kernel

SYSRQ = "/proc/sysrq-trigger"


class Variant(NamedTuple):
    text: str
    rule: str  # the rule that decides a host process's write to /proc/sysrq-trigger
    mode: str


def _sysrq(rule_id: str, scope: str, extra: str = "") -> str:
    return f'[[rule]]\nid = "{rule_id}"\nkind = "sysrq"\nscope = "{scope}"\n{extra}'


_EXEC = '[[rule]]\nid = "exec-tmp"\nkind = "exec"\ndirs = ["/tmp"]\n'
_RELEASE = '[[rule]]\nid = "release-agent"\nkind = "release_agent"\n'

VARIANTS: Dict[str, Variant] = {
    # the SysRq rule for the host is number 1 of 3
    "P": Variant("version = 1\n" + _sysrq("sysrq-host", "host") + _EXEC + _sysrq("sysrq-container", "container"),
                 "sysrq-host", "enforce"),
    # renumbered: one rule for all scopes, last of 3, with an allowlist
    "Q": Variant("version = 1\n" + _RELEASE + _EXEC + _sysrq("sysrq-all", "all", "[rule.allow]\nuid = [4242]\n"),
                 "sysrq-all", "enforce"),
    # other ids, an exe allowlist, the exec rule gone
    "R": Variant("version = 1\n" + _sysrq("sysrq-container-2", "container") + _RELEASE
                 + _sysrq("sysrq-host-2", "host", '[rule.allow]\nexe = ["/usr/bin/true"]\n'),
                 "sysrq-host-2", "enforce"),
    # P with the host rule in audit mode: attempts get through, and must all be reported
    "S": Variant("version = 1\n" + _sysrq("sysrq-host", "host", 'mode = "audit"\n') + _EXEC
                 + _sysrq("sysrq-container", "container"), "sysrq-host", "audit"),
}
BROKEN = {
    "unknown-kind": 'version = 1\n[[rule]]\nid = "x"\nkind = "nonsense"\n',
    "syntax": "version = 1\n[[rule\n",
    # a writer caught halfway through: the file ends in the middle of a rule
    "half-written": VARIANTS["Q"].text[: VARIANTS["Q"].text.index("[rule.allow]") + 8],
}


def _reload_command(agent: Agent, workdir: Path, text: str, name: str) -> dict:
    """Replace the policy file, run `enforcer reload`, check its exit status
    against the verdict, and return the agent's verdict record."""
    mark = agent.mark()
    agent.policy.write_text(text)
    proc = subprocess.run([PY, "-m", "enforcer", "reload"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, ENFORCER_STATE_DIR=str(workdir / "state")))
    expected = 2 if name in BROKEN else 0
    assert proc.returncode == expected, (name, proc.returncode, proc.stdout, proc.stderr)
    return agent.wait_for(
        mark, lambda r: r.get("type") == "agent" and str(r.get("message", "")).startswith(("reloaded", "reload rejected")))


class StormResult(NamedTuple):
    counts: Dict[str, int]  # from the attacking loop: attempts, successes, denied, other
    pid: int
    policy_of_generation: Dict[int, str]
    reload_s: List[float]  # SIGHUP to the agent's verdict, each reload by signal
    command_s: List[float]  # each `enforcer reload`, launch to exit (a new interpreter under the flood)
    records: List[dict]


@pytest.fixture
def storm_agent(tmp_path: Path, agent_log_path: Path) -> Iterator[Agent]:
    yield from own_agent(VARIANTS["P"].text, tmp_path, agent_log_path, f"agent-storm-{tmp_path.name}.log")


def _storm(agent: Agent, workdir: Path, sequence: List[str], pause_s: float) -> StormResult:
    started = next(r for r in agent.since(0) if r.get("message") == "started")
    policy_of_generation = {int(started["generation"]): "P"}
    stop, result = workdir / "stop-loop", workdir / "loop.json"
    worker = subprocess.Popen([PY, ACTIONS, "open-loop", SYSRQ, "w", str(stop), str(result), str(pause_s)])
    reload_s: List[float] = []
    command_s: List[float] = []
    try:
        time.sleep(1.0)  # the loop is running before the first reload
        for number, name in enumerate(sequence):
            text = BROKEN[name] if name in BROKEN else VARIANTS[name].text
            begin = time.monotonic()
            # one reload in ten the way an operator does it: `enforcer reload`, which waits for the
            # verdict (not more: each starts an interpreter, seconds under emulation beside the
            # flood); the 5th of one ten, the 10th of the next, and so on
            by_command = number % 10 == (4 if number // 10 % 2 == 0 else 9)
            verdict = _reload_command(agent, workdir, text, name) if by_command else agent.reload(text)
            (command_s if by_command else reload_s).append(time.monotonic() - begin)
            assert worker.poll() is None, "the attacking loop ended early"
            if name in BROKEN:
                assert verdict["message"] == "reload rejected, previous policy still in force", verdict
                assert verdict["error"], verdict
            else:
                assert verdict["message"] == "reloaded", verdict
                policy_of_generation[int(verdict["generation"])] = name
        # the last policy in force is enforcing or not; leave the loop a moment under it
        time.sleep(1.0)
    finally:
        stop.touch()
        worker.wait(120)
    agent.stop()  # flushes the suppressed-repeat summaries
    return StormResult(json.loads(result.read_text()), worker.pid, policy_of_generation, reload_s, command_s,
                       agent.since(0))


def _worker_events(storm: StormResult) -> List[dict]:
    return [r for r in storm.records if r.get("type") == "event" and r.get("pid") == storm.pid]


def _check_labels(storm: StormResult) -> None:
    """Every event of the loop names the rule and mode of the generation that decided it."""
    wrong = []
    for event in _worker_events(storm):
        name = storm.policy_of_generation.get(event["generation"])
        expected = VARIANTS[name] if name else None
        if (
            expected is None
            or not event["attributed"]
            or event["rule"] != expected.rule
            or event["mode"] != expected.mode
            or event["action"] != ("blocked" if expected.mode == "enforce" else "audited")
        ):
            wrong.append(event)
    assert not wrong, f"{len(wrong)} mislabelled events, e.g. {wrong[:3]}"


def _summary(storm: StormResult) -> str:
    times, commands = sorted(storm.reload_s), sorted(storm.command_s)
    return (f"attempts {storm.counts['attempts']}, successes {storm.counts['successes']}, "
            f"reloads {len(times) + len(commands)}: {len(times)} by SIGHUP, verdict median "
            f"{statistics.median(times):.3f}s max {times[-1]:.3f}s; {len(commands)} by `enforcer reload`, "
            f"launch to exit median {statistics.median(commands):.1f}s max {commands[-1]:.1f}s")


def test_100_reloads_under_a_flood_let_nothing_through_and_label_every_event(storm_agent, tmp_path) -> None:
    # by `enforcer reload`: "R" (applied) and "half-written" (rejected) in turn
    names = ["Q", "R", "unknown-kind", "P", "R", "Q", "syntax", "P", "R", "half-written"]
    storm = _storm(storm_agent, tmp_path, list(islice(cycle(names), 100)), pause_s=0)
    print(_summary(storm))
    assert storm.counts["successes"] == 0, _summary(storm)
    assert storm.counts["other"] == 0, storm.counts
    assert storm.counts["attempts"] > 100, storm.counts
    assert len(set(storm.policy_of_generation.values())) == 3
    _check_labels(storm)
    # control is never starved: each verdict came while the loop was still flooding
    # (checked in _storm); the bound here is generous for an emulated guest. A
    # command's time is mostly a new interpreter starting on 2 emulated CPUs that
    # the loop keeps busy (5-15 s seen on 6.1); it only has to answer, in time.
    assert max(storm.reload_s) < 10.0, _summary(storm)
    assert max(storm.command_s) < 60.0, _summary(storm)


def test_reloads_between_enforce_and_audit_report_every_attempt_let_through(storm_agent, tmp_path) -> None:
    names = ["S", "P", "S", "Q", "unknown-kind", "S", "R", "S"]
    storm = _storm(storm_agent, tmp_path, list(islice(cycle(names), 40)), pause_s=0.002)
    print(_summary(storm))
    _check_labels(storm)
    events = _worker_events(storm)
    # repeats are counted per offender (rule, action, executable, target): the loop is the only
    # process writing SYSRQ, and one offender per rule cannot overflow into coarse summaries
    suppressed = [r for r in storm.records if r.get("type") == "suppressed" and r.get("path") == SYSRQ]
    assert not any(r.get("type") == "suppressed" and r["coarse"] for r in storm.records)
    lost = sum(int(r["count"]) for r in storm.records if r.get("type") == "lost")
    assert lost == 0, f"{lost} records lost: the accounting below cannot be exact"

    def reported(action: str) -> int:
        written = sum(1 for e in events if e["action"] == action)
        return written + sum(int(s["count"]) for s in suppressed if s["action"] == action)

    assert storm.counts["successes"] > 0, "no audit window was hit: the test proves nothing"
    assert reported("audited") == storm.counts["successes"], (_summary(storm), reported("audited"))
    assert reported("blocked") == storm.counts["denied"], (_summary(storm), reported("blocked"))
    let_through = [e for e in events if e["let_through_enforce_rule"]]
    assert all(e["action"] == "audited" for e in let_through)
