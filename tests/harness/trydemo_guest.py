"""./try, inside the VM: start the agent on policies/default.toml, run the
attacks and the benign actions of trydemo_steps.py, print what happened, and
write the verdict (verdict.json) into the results directory.

    python tests/harness/trydemo_guest.py --mode enforce|audit --results DIR [--shell]

Runs as root on a kernel with BPF-LSM: inside the ./try VM (started by
tests/harness/trydemo.py) or inside the kernel-tier guest
(tests/kernel/test_try_demo.py). Exit status 0 only when the verdict passes.
With --shell, an interactive shell follows the demo, with the agent still
running; the agent stops when the shell exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Sequence

# Run as a script: make `harness` importable the way tests/conftest.py does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import guestfs  # noqa: E402
from harness import trydemo_steps as steps  # noqa: E402
from harness.agent import REPO, Agent, AgentError, unload  # noqa: E402

POLICY = REPO / "policies" / "default.toml"
STEP_TIMEOUT_S = 60
#: an attack's event normally arrives well within a second; this is the bound
EVENT_WAIT_S = 15
#: how long a benign action is watched for events that must not come
QUIET_S = 2.0
#: the kernel runs release_agent as soon as the cgroup empties: seconds at most
PAYLOAD_WAIT_S = 5.0
PROGRESS_EVERY_S = 10


def say(text: str = "") -> None:
    print(text, flush=True)


def indent(text: str) -> None:
    if text:
        say(f"    {text}")


# --- setting the scene -------------------------------------------------------------------


def stage() -> None:
    """The payload the escape points the kernel at; /dev/shm if it is missing."""
    Path(steps.PAYLOAD_DIR).mkdir(parents=True, exist_ok=True)
    payload = Path(steps.PAYLOAD)
    payload.write_text(steps.PAYLOAD_SCRIPT)
    payload.chmod(0o755)
    Path(steps.MARKER).unlink(missing_ok=True)
    if guestfs.mounted_types().get("/dev/shm") is None:
        guestfs.ensure_mounted("tmpfs", Path("/dev/shm"))


def guest_summary() -> str:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    lsm = Path("/sys/kernel/security/lsm").read_text().strip()
    return f"guest: Linux {platform.release()}, up {uptime:.1f} s; active LSMs: {lsm}"


def start_agent(mode: str, results: Path, workdir: Path) -> Agent:
    events = results / "events.jsonl"
    agent = Agent(POLICY, mode, results / "agent.log", workdir, extra_args=("--events", f"stdout,file:{events}"))
    say(f"agent: {' '.join(['enforcer', *agent.command()[3:]])}")
    say("agent: starting. bcc compiles the BPF programs first: 30-90 s under emulation")
    next_report = [PROGRESS_EVERY_S]

    def progress(elapsed: float) -> None:
        if elapsed >= next_report[0]:
            say(f"agent:   ... {elapsed:.0f} s, still compiling and loading")
            next_report[0] += PROGRESS_EVERY_S

    began = time.monotonic()
    agent.start(progress=progress)
    say(f"agent: ready after {time.monotonic() - began:.1f} s (programs attached and pinned, READY=1); "
        f"events also go to {events}")
    return agent


# --- running a step ------------------------------------------------------------------------


def sh(command: str) -> steps.Result:
    """One process: `sh -c command`, as root, from /."""
    proc = subprocess.Popen(["sh", "-c", command], cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=STEP_TIMEOUT_S)
    return steps.Result(proc.returncode, out, err, proc.pid)


def run_setup(step: steps.Step) -> str:
    """Run the step's setup commands; "" or why one failed."""
    for command in step.setup:
        indent(f"setup: $ {command}")
        result = sh(command)
        if result.returncode != 0:
            return f"`{command}` exited {result.returncode}: {result.stderr.strip()}"
    return ""


def wait_payload(marker: str) -> Optional[str]:
    """The marker's text once the payload wrote it; None if it never did."""
    deadline = time.monotonic() + PAYLOAD_WAIT_S
    while time.monotonic() < deadline:
        path = Path(marker)
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.2)
    return None


def collect_events(agent: Agent, mark: int, step: steps.Step) -> List[dict]:
    """An attack: wait for its rule's event (then one more second, so that
    duplicates would show); a benign action: QUIET_S of silence."""
    if step.kind == steps.ATTACK:
        def expect(record: dict) -> bool:
            return record.get("type") == "event" and record.get("rule") == step.rule
        return agent.events(mark, expect, settle_s=1.0)
    return agent.events(mark, None, quiet_s=QUIET_S)


def run_step(agent: Agent, step: steps.Step) -> steps.StepReport:
    setup_error = run_setup(step)
    if setup_error:
        return steps.StepReport(step, None, setup_error=setup_error)
    mark = agent.mark()
    indent(f"$ {step.command}")
    result = sh(step.command)
    indent(steps.format_outcome(steps.classify(result)))
    for command in step.then:
        indent(f"then: $ {command}")
        trigger = sh(command)
        if trigger.returncode != 0:  # shown: without it, an audit-mode payload cannot run
            indent(f"   (exit {trigger.returncode}: {trigger.stderr.strip()})")
    payload = wait_payload(step.marker) if step.marker else None
    indent(steps.format_payload(step, payload))
    events = collect_events(agent, mark, step)
    for event in events:
        indent(steps.format_event(event))
    if step.kind == steps.ATTACK and not events:
        indent("event: none")
    return steps.StepReport(step, result, tuple(events), payload)


def cleanup(step: steps.Step) -> None:
    for command in step.cleanup:
        result = sh(command)
        if result.returncode != 0:
            indent(f"cleanup: `{command}` exited {result.returncode}: {result.stderr.strip()}")


def run_all(agent: Agent, mode: str, all_steps: Sequence[steps.Step]) -> List[steps.StepReport]:
    reports = []
    labels = steps.step_labels(all_steps)
    for label, step in zip(labels, all_steps):
        if label.startswith(f"{steps.BENIGN} 1/"):
            say("\nBenign actions: each must work, with no event.")
        reference = f" ({step.reference})" if step.reference else ""
        say(f"\n[{label}] {step.title}{reference}")
        try:
            report = run_step(agent, step)
        finally:
            cleanup(step)
        indent(steps.format_judgement(report, mode))
        reports.append(report)
    return reports


# --- the end ---------------------------------------------------------------------------------


def write_verdict(results: Path, verdict: steps.Verdict, reports: Sequence[steps.StepReport],
                  timings: dict) -> None:
    record = {
        **asdict(verdict),
        "timings_s": timings,
        "steps": [
            {"kind": r.step.kind, "title": r.step.title, "command": r.step.command, "rule": r.step.rule,
             "outcome": steps.classify(r.result).kind if r.result else "setup failed",
             "errno": steps.classify(r.result).errno if r.result else "",
             "payload_ran": r.payload_output is not None,
             "events": [dict(e) for e in r.events],
             "ok": steps.judge(r, verdict.mode).ok,
             "problems": list(steps.judge(r, verdict.mode).problems)}
            for r in reports
        ],
    }
    (results / "verdict.json").write_text(json.dumps(record, indent=2) + "\n")


def print_verdict(verdict: steps.Verdict) -> None:
    say("")
    for failure in verdict.failures:
        say(f"  failed: {failure}")
    say(f"VERDICT: {verdict.line}")


def interactive_shell(mode: str, results: Path, workdir: Path) -> None:
    """A root shell on the guest's console, the agent still running."""
    events = results / "events.jsonl"
    say(f"""
You are in a root shell inside the VM; the agent is still running ({mode} mode).
  follow the events:  enforcer events --from $TRY_EVENTS -f      (TRY_EVENTS={events})
                 or:  tail -f $TRY_EVENTS
  try an attack:      echo h > /proc/sysrq-trigger      (only 'h': it prints help to the kernel log)
  agent status:       enforcer status
  the agent's log:    {results / 'agent.log'}
Leave with `exit` or Ctrl-D: the agent stops and the VM powers off.""")
    env = dict(os.environ, PS1=f"(enforcer {mode}, VM) \\w # ",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               ENFORCER_STATE_DIR=str(workdir / "state"), TRY_EVENTS=str(events))
    # Ctrl-C at the prompt is the shell's business, not a reason to stop the agent.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        subprocess.run(["/bin/bash", "--norc", "-i"], env=env, cwd="/root" if os.path.isdir("/root") else "/")
    finally:
        signal.signal(signal.SIGINT, previous)


def demo(mode: str, results: Path, workdir: Path, shell: bool) -> steps.Verdict:
    guestfs.ensure_agent_mounts()  # first: the summary reads the LSM list from securityfs
    say(guest_summary())
    stage()
    began = time.monotonic()
    try:
        agent = start_agent(mode, results, workdir)
    except AgentError as error:
        say(f"agent: did not start:\n{error}")
        verdict = steps.agent_failed_verdict(mode, str(error).splitlines()[0])
        write_verdict(results, verdict, [], {"agent_start": time.monotonic() - began})
        print_verdict(verdict)
        return verdict
    agent_s = time.monotonic() - began
    try:
        say(f"\nAttacks ({mode} mode): one process each, run as root the way an attacker would type them.")
        steps_began = time.monotonic()
        reports = run_all(agent, mode, steps.all_steps())
        verdict = steps.verdict(reports, mode)
        write_verdict(results, verdict, reports,
                      {"agent_start": round(agent_s, 1), "steps": round(time.monotonic() - steps_began, 1)})
        print_verdict(verdict)
        if shell:
            interactive_shell(mode, results, workdir)
    finally:
        agent.stop()
        unload(workdir)
        say("agent: stopped, programs unloaded")
    return verdict


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=steps.MODES, default=steps.ENFORCE)
    parser.add_argument("--results", type=Path, required=True,
                        help="where agent.log, events.jsonl and verdict.json go")
    parser.add_argument("--shell", action="store_true", help="an interactive shell after the demo")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        say("trydemo_guest: must run as root (in the VM it does)")
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    # a local file system: the agent's notify socket and state (not the shared results dir)
    workdir = Path(tempfile.mkdtemp(prefix="enforcer-try-", dir="/run" if os.path.isdir("/run") else None))
    try:
        verdict = demo(args.mode, args.results, workdir, args.shell)
    finally:
        shutil.rmtree(workdir)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
