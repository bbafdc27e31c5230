"""./try's demo, run for real: the guest side (tests/harness/trydemo_guest.py)
in this guest, enforce mode, policies/default.toml. What CI checks of ./try:
every attack denied and reported as blocked, the escape's payload never run,
every benign action working with no event.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.agent import REPO
from harness import trydemo_steps as steps

pytestmark = pytest.mark.kernel

GUEST_DEMO = REPO / "tests" / "harness" / "trydemo_guest.py"


def test_try_demo_blocks_and_reports_every_attack_and_lets_benign_actions_be(artifacts_dir) -> None:
    results = artifacts_dir / "try"
    proc = subprocess.run([sys.executable, str(GUEST_DEMO), "--mode", "enforce", "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    # on failure the host attaches everything in artifacts_dir: this output,
    # the agent's log, its events and verdict.json
    (artifacts_dir / "try-output.txt").write_text(proc.stdout + proc.stderr)
    verdict = json.loads((results / "verdict.json").read_text())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert verdict["ok"] and verdict["mode"] == "enforce", verdict["failures"]
    expected = steps.all_steps()
    assert [s["command"] for s in verdict["steps"]] == [s.command for s in expected]
    for step, seen in zip(expected, verdict["steps"]):
        if step.kind == steps.ATTACK:
            assert seen["outcome"] == steps.DENIED and seen["errno"] == "EPERM", seen
            assert {(e["rule"], e["action"]) for e in seen["events"]} == {(step.rule, "blocked")}, seen
            assert not seen["payload_ran"], seen
        else:
            assert (seen["outcome"], seen["events"]) == (steps.ALLOWED, []), seen
    assert f"VERDICT: {verdict['line']}" in proc.stdout
