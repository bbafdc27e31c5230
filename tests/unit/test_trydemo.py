"""The pure parts of ./try (tests/harness/trydemo.py, trydemo_steps.py):
judging what the guest saw, the verdict, the lines a person reads, the guest
script and the vng command, and reading `enforcer probe`.

The demo itself runs in the kernel tier (tests/kernel/test_try_demo.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

import pytest

from enforcer.parse import load_policy
from enforcer.policy import Mode
from harness import trydemo, vm
from harness import trydemo_steps as steps

REPO = Path(__file__).resolve().parents[2]


def event(**fields) -> dict:
    base = {"type": "event", "action": "blocked", "rule": "sysrq-write-host", "access": "write",
            "path": "/proc/sysrq-trigger", "new_path": None, "comm": "sh", "pid": 812, "uid": 0,
            "container": {"namespaced": False, "runtime": None, "id": None, "pod_uid": None}}
    base.update(fields)
    return base


DENIED_SH = steps.Result(2, "", "sh: 1: cannot create /proc/sysrq-trigger: Operation not permitted\n", 812)
ALLOWED = steps.Result(0, "uid=0(root) gid=0(root)\n", "", 813)
SYSRQ = steps.attack_steps()[0]


# --- outcomes --------------------------------------------------------------------------------


@pytest.mark.parametrize("result,kind,errno_name", [
    (DENIED_SH, steps.DENIED, "EPERM"),
    (steps.Result(1, "", "Traceback (most recent call last):\n  ...\nPermissionError: [Errno 1] "
                         "Operation not permitted: 3\n", 1), steps.DENIED, "EPERM"),
    (steps.Result(32, "", "mount: /tmp/enftry-cgroup-option: permission denied.\n", 1), steps.DENIED, "EPERM"),
    (steps.Result(127, "", "/tmp/payload: error while loading shared libraries: /tmp/payload: failed to map "
                           "segment from shared object\n", 1), steps.DENIED, "EPERM"),
    (steps.Result(126, "", "sh: 1: /tmp/x: Permission denied\n", 1), steps.DENIED, "EACCES"),
    (ALLOWED, steps.ALLOWED, ""),
    (steps.Result(2, "", "sh: 1: cannot create /nope/x: Directory nonexistent\n", 1), steps.FAILED, ""),
    (steps.Result(1, "", "FileNotFoundError: [Errno 2] No such file or directory: 'x'\n", 1), steps.FAILED, "ENOENT"),
    (steps.Result(3, "", "", 1), steps.FAILED, ""),
])
def test_classify_reads_the_outcome_as_the_attacker_sees_it(result, kind, errno_name):
    outcome = steps.classify(result)
    assert (outcome.kind, outcome.errno) == (kind, errno_name)


def test_the_denial_message_is_the_line_that_names_it():
    result = steps.Result(1, "", "Traceback (most recent call last):\n  File \"<string>\", line 1\n"
                                 "PermissionError: [Errno 1] Operation not permitted: 3\n", 1)
    assert steps.classify(result).message == "PermissionError: [Errno 1] Operation not permitted: 3"
    assert steps.classify(steps.Result(3, "", "", 1)).message == "exit status 3"


def test_allowed_output_is_shown_on_one_shortened_line():
    many = steps.Result(0, "\n".join(f"line{i}" for i in range(50)), "", 1)
    message = steps.classify(many).message
    assert message.startswith("line0 line1 line2") and message.endswith("...") and len(message) <= 100


# --- judging ----------------------------------------------------------------------------------


def test_an_attack_denied_and_reported_passes_in_enforce_mode():
    report = steps.StepReport(SYSRQ, DENIED_SH, (event(),))
    assert steps.judge(report, steps.ENFORCE) == steps.Judgement(True, ())


@pytest.mark.parametrize("result,events,problem", [
    (ALLOWED, (event(),), "it was not denied"),
    (DENIED_SH, (), "no blocked event from rule sysrq-write-host"),
    (DENIED_SH, (event(action="audited"),), "no blocked event from rule sysrq-write-host"),
    (DENIED_SH, (event(rule="exec-unusual-dir"),), "no blocked event from rule sysrq-write-host"),
    (steps.Result(2, "", "sh: 1: cannot create /x: Directory nonexistent", 1), (event(),),
     "it failed, but not because the kernel refused: sh: 1: cannot create /x: Directory nonexistent"),
])
def test_an_attack_fails_in_enforce_mode_unless_denied_and_reported(result, events, problem):
    judgement = steps.judge(steps.StepReport(SYSRQ, result, events), steps.ENFORCE)
    assert not judgement.ok and problem in judgement.problems


def test_in_audit_mode_an_attack_must_succeed_and_be_reported_as_audited():
    ok = steps.StepReport(SYSRQ, ALLOWED, (event(action="audited"),))
    assert steps.judge(ok, steps.AUDIT).ok
    denied = steps.judge(steps.StepReport(SYSRQ, DENIED_SH, (event(action="audited"),)), steps.AUDIT)
    assert not denied.ok and denied.problems[0].startswith("audit mode must let it through, but it denied")
    blocked = steps.judge(steps.StepReport(SYSRQ, ALLOWED, (event(),)), steps.AUDIT)
    assert blocked.problems == ("no audited event from rule sysrq-write-host",)


def _escape() -> steps.Step:
    return next(s for s in steps.attack_steps() if s.marker)


def test_the_escape_fails_in_enforce_mode_if_its_payload_ran():
    ra_event = event(rule="release-agent", path=f"{steps.CGROUP}/release_agent")
    blocked = steps.StepReport(_escape(), DENIED_SH, (ra_event,), payload_output=None)
    assert steps.judge(blocked, steps.ENFORCE).ok
    ran = steps.StepReport(_escape(), DENIED_SH, (ra_event,), payload_output="uid=0(root)")
    assert steps.judge(ran, steps.ENFORCE).problems == ("the payload ran",)


def test_the_escape_must_run_its_payload_in_audit_mode():
    ra_event = event(rule="release-agent", action="audited")
    quiet = steps.StepReport(_escape(), ALLOWED, (ra_event,), payload_output=None)
    assert steps.judge(quiet, steps.AUDIT).problems == ("the payload did not run (audit mode must not stop it)",)
    assert steps.judge(steps.StepReport(_escape(), ALLOWED, (ra_event,), payload_output="uid=0"), steps.AUDIT).ok


@pytest.mark.parametrize("mode", steps.MODES)
def test_a_benign_action_must_work_with_no_event(mode):
    benign = steps.benign_steps()[0]
    assert steps.judge(steps.StepReport(benign, ALLOWED, ()), mode).ok
    reported = steps.judge(steps.StepReport(benign, ALLOWED, (event(action="audited"),)), mode)
    assert reported.problems == ("1 event(s) reported for it",)
    refused = steps.judge(steps.StepReport(benign, DENIED_SH, ()), mode)
    assert refused.problems[0].startswith("it denied")


def test_a_step_whose_setup_failed_fails():
    report = steps.StepReport(_escape(), None, setup_error="`mount ...` exited 32: no")
    assert steps.judge(report, steps.ENFORCE).problems == ("setup failed: `mount ...` exited 32: no",)


# --- the verdict ---------------------------------------------------------------------------------


def _all_passing(mode: str) -> List[steps.StepReport]:
    action = steps.expected_action(mode)
    reports = []
    for step in steps.all_steps():
        if step.kind == steps.BENIGN:
            reports.append(steps.StepReport(step, ALLOWED, ()))
            continue
        result = DENIED_SH if mode == steps.ENFORCE else ALLOWED
        payload = "uid=0(root)" if (step.marker and mode == steps.AUDIT) else None
        reports.append(steps.StepReport(step, result, (event(rule=step.rule, action=action),), payload))
    return reports


def test_verdict_passes_when_every_attack_is_blocked_and_reported_and_benign_is_quiet():
    verdict = steps.verdict(_all_passing(steps.ENFORCE), steps.ENFORCE)
    assert verdict.ok and (verdict.attacks_ok, verdict.benign_ok) == (verdict.attacks, verdict.benign)
    assert verdict.line == ("PASS: all 9 attacks were denied and reported (blocked); "
                            "all 7 benign actions ran, with no event")
    assert verdict.failures == ()


def test_audit_verdict_says_the_attacks_succeeded_and_were_reported():
    verdict = steps.verdict(_all_passing(steps.AUDIT), steps.AUDIT)
    assert verdict.ok and verdict.line.startswith("PASS (audit mode): all 9 attacks succeeded and each was "
                                                  "reported (audited)")


def test_one_unreported_attack_or_one_noisy_benign_action_fails_the_verdict():
    reports = _all_passing(steps.ENFORCE)
    reports[1] = steps.StepReport(reports[1].step, DENIED_SH, ())
    reports[-1] = steps.StepReport(reports[-1].step, ALLOWED, (event(),))
    verdict = steps.verdict(reports, steps.ENFORCE)
    assert not verdict.ok
    assert verdict.line == "FAIL: 8 of 9 attacks denied and reported, 6 of 7 benign actions ran quietly"
    assert verdict.failures == ("attack 2/9: no blocked event from rule sysrq-write-host",
                                "benign 7/7: 1 event(s) reported for it")


def test_no_attacks_is_no_pass():
    assert not steps.verdict([], steps.ENFORCE).ok
    assert steps.agent_failed_verdict(steps.ENFORCE, "no READY=1").line == \
        "FAIL: the agent did not start: no READY=1"


# --- what a person reads --------------------------------------------------------------------------


def test_format_event_names_action_rule_target_and_who():
    assert steps.format_event(event()) == ("event: blocked  rule=sysrq-write-host  access=write  "
                                           "path=/proc/sysrq-trigger  by sh (pid 812, uid 0, host)")
    mount = event(rule="release-agent", access="mount", path="release_agent", new_path="/var/lib/x.sh",
                  comm="mount", pid=9)
    assert steps.format_event(mount) == ("event: blocked  rule=release-agent  access=mount  path=release_agent"
                                         "  new_path=/var/lib/x.sh  by mount (pid 9, uid 0, host)")


def test_who_says_where_the_process_ran():
    unshared = event(container={"namespaced": True, "runtime": None, "id": None, "pod_uid": None})
    assert steps.who(unshared) == "sh (pid 812, uid 0, container: own mount namespace)"
    docker = event(container={"namespaced": True, "runtime": "docker", "id": "0123456789abcdef0123",
                              "pod_uid": None})
    assert steps.who(docker) == "sh (pid 812, uid 0, container docker 0123456789ab)"


def test_outcome_and_payload_lines():
    assert steps.format_outcome(steps.classify(DENIED_SH)) == \
        "-> DENIED (EPERM): sh: 1: cannot create /proc/sysrq-trigger: Operation not permitted"
    assert steps.format_outcome(steps.classify(ALLOWED)) == "-> ALLOWED (exit 0): uid=0(root) gid=0(root)"
    assert steps.format_outcome(steps.Outcome(steps.FAILED, "", "exit status 3")) == "-> FAILED: exit status 3"
    assert steps.format_payload(_escape(), None).startswith("-> the payload did not run")
    assert steps.format_payload(_escape(), "uid=0(root)\n") == \
        "-> the payload ran as root on the host: uid=0(root)"
    assert steps.format_payload(SYSRQ, None) == ""


def test_labels_count_each_kind():
    labels = steps.step_labels(steps.all_steps())
    assert labels[0] == "attack 1/9" and labels[8] == "attack 9/9" and labels[9] == "benign 1/7"


# --- the catalogue ----------------------------------------------------------------------------------


def test_every_attack_names_a_rule_the_default_policy_enforces():
    policy = load_policy(REPO / "policies" / "default.toml")
    for step in steps.attack_steps():
        rule = policy.rule(step.rule)
        assert policy.effective_mode(rule, Mode.ENFORCE) is Mode.ENFORCE, step.rule


def test_sysrq_is_never_pressed_with_a_harmful_key():
    """Only 'h' (help) may reach /proc/sysrq-trigger, in audit mode; 'b', 'c', 'o' ... reboot or crash."""
    for step in steps.all_steps():
        for command in (step.command, *step.setup, *step.then):
            for key in re.findall(r"echo\s+(\S+)\s*>\s*/proc/sysrq-trigger", command):
                assert key == "h", command


def test_the_escape_payload_lives_outside_every_exec_rule():
    """So that only the release_agent rule can stop it."""
    assert not steps.PAYLOAD.startswith(("/tmp/", "/var/tmp/", "/dev/", "/proc/", "/sys/", "/run/"))
    assert steps.MARKER in steps.PAYLOAD_SCRIPT


def test_every_attack_runs_as_its_own_command():
    for step in steps.attack_steps():
        assert step.rule and step.command and step.kind == steps.ATTACK


# --- the host driver -----------------------------------------------------------------------------------


def test_arguments():
    assert trydemo.parse_args([]) == trydemo.Options("enforce", False, None)
    assert trydemo.parse_args(["--audit", "--shell", "--kernel", "/boot/k"]) == \
        trydemo.Options("audit", True, Path("/boot/k"))
    with pytest.raises(SystemExit):
        trydemo.parse_args(["--mode", "audit"])


def test_guest_script_marks_the_start_then_runs_the_demo(tmp_path):
    script = trydemo.build_guest_script("/r/.venv/bin/python", tmp_path, "audit", shell=True)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[2] == f"echo started > {tmp_path / vm.STARTED_NAME}"
    assert lines[-1] == (f"exec /r/.venv/bin/python {trydemo.GUEST_DEMO} --mode audit --results {tmp_path} "
                         "--shell")
    assert "--shell" not in trydemo.build_guest_script("/p", tmp_path, "enforce", shell=False)


def test_vng_command_runs_the_script_or_makes_it_the_login_shell(tmp_path):
    script = tmp_path / "s.sh"
    batch = trydemo.build_command("vng", Path("/boot/k"), tmp_path, script, shell=False, kvm=False)
    assert batch == vm.build_vng_command("vng", Path("/boot/k"), tmp_path, script)
    assert batch[-2:] == ["--", f"/bin/sh {script}"]
    interactive = trydemo.build_command("vng", Path("/boot/k"), tmp_path, script, shell=True, kvm=False)
    assert interactive[-2:] == ["--shell", str(script)] and "--" not in interactive
    assert "--disable-kvm" in interactive and "--rwdir" in interactive
    with_kvm = trydemo.build_command("vng", Path("/boot/k"), tmp_path, script, shell=True, kvm=True)
    assert "--disable-kvm" not in with_kvm


def _probe(usable: bool, checks: list) -> str:
    return json.dumps({"usable": usable, "checks": checks})


def test_read_probe():
    assert trydemo.read_probe(0, _probe(True, [])).usable is True
    failed = trydemo.read_probe(1, _probe(False, [
        {"name": "lockdown", "ok": False, "detail": "confidentiality", "required": False},
        {"name": "trial attach", "ok": False, "detail": "EPERM. More.", "required": True}]))
    assert failed == trydemo.HostProbe(False, "trial attach: EPERM. More.")
    assert trydemo.read_probe(1, "Traceback ...").usable is None
    assert trydemo.read_probe(1, _probe(False, [])).usable is None


def test_a_host_that_can_enforce_is_pointed_at_enforcer_run():
    lines = trydemo.describe_host(trydemo.HostProbe(True, "ok"))
    assert any("enforcer run --policy policies/default.toml" in line for line in lines)
    assert "VM" in lines[-1]
    refused = trydemo.describe_host(trydemo.HostProbe(False, "trial attach: EPERM. More."))
    assert refused[1] == "host:   (enforcer probe says: trial attach: EPERM)"


class FakeProc:
    def __init__(self, ends_after: int) -> None:
        self.polls = 0
        self.ends_after = ends_after

    def poll(self):
        self.polls += 1
        return 0 if self.polls > self.ends_after else None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_boot_progress_every_ten_seconds_until_the_guest_starts(tmp_path):
    started, clock, said = tmp_path / "started", FakeClock(), []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 25:
            started.write_text("started")

    boot = trydemo.wait_for_start(FakeProc(10_000), started, said.append, clock, sleep)
    assert boot == pytest.approx(25, abs=0.3)
    assert said == ["vm:   ... 10 s, still booting", "vm:   ... 20 s, still booting"]


def test_boot_wait_ends_when_vng_does(tmp_path):
    clock = FakeClock()
    assert trydemo.wait_for_start(FakeProc(3), tmp_path / "never", [].append, clock, clock.sleep) is None


def test_summary_and_exit_status(tmp_path):
    verdict = {"ok": True, "line": "PASS: all", "timings_s": {"agent_start": 51.2, "steps": 36.0}}
    lines = trydemo.summary(verdict, 15.6, 137.0, tmp_path)
    assert lines == [f"try: whole run 2 min 17 s (boot 15.6 s, agent start 51.2 s, steps 36.0 s); logs in {tmp_path}",
                     "VERDICT: PASS: all"]
    assert trydemo.exit_status(verdict) == 0
    assert trydemo.exit_status({**verdict, "ok": False}) == 1
    assert trydemo.exit_status(None) == 2
    assert trydemo.summary(None, None, 40.0, tmp_path)[1].startswith("try: no verdict")


def test_relay_copies_the_guest_output_to_ours_and_to_the_console_log(tmp_path):
    import io

    out = io.BytesIO()
    trydemo.relay(io.BufferedReader(io.BytesIO(b"guest: line one\nline two\n")), out, tmp_path / "console.log")
    assert out.getvalue() == b"guest: line one\nline two\n"
    assert (tmp_path / "console.log").read_bytes() == out.getvalue()
