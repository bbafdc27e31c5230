"""What ./try does inside the VM, and how it judges what it saw: pure data and functions.

The steps are shell commands, run with `sh -c` as root one at a time, each in
its own process, the way an attacker with a root shell (on the host or in a
container) would type them. Their outcome is read from what the programs
print and their exit status, as the attacker would read it; the agent's
events say what it saw. Nothing here touches the system: the guest side
(trydemo_guest.py) runs the steps, the unit tests (tests/unit/test_trydemo.py)
check the judging and the formatting.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

ENFORCE, AUDIT = "enforce", "audit"
MODES = (ENFORCE, AUDIT)

# An ordinary place (an overlay of /var in the VM): no exec rule covers it, so
# the release_agent rule alone has to stop the escape that runs this payload.
PAYLOAD_DIR = "/var/lib/enftry"
PAYLOAD = f"{PAYLOAD_DIR}/payload.sh"
MARKER = f"{PAYLOAD_DIR}/payload-ran"
# The classic proof of concept mounts its cgroup v1 hierarchy under /tmp.
CGROUP = "/tmp/enftry-cgroup"
CGROUP_CHILD = f"{CGROUP}/escape"
CGROUP_OPTION = "/tmp/enftry-cgroup-option"
CGROUP_PLAIN = "/tmp/enftry-cgroup-plain"
DROPPED_TMP = "/tmp/payload"
DROPPED_SHM = "/dev/shm/payload"
NOTE = "/tmp/enftry-note.txt"
LD_SO = "/lib64/ld-linux-x86-64.so.2"
#: a real ELF binary every Debian host has, harmless to run
BINARY = "/usr/bin/id"

#: The payload the kernel runs (as root, in the host's namespaces) once the
#: escape works. It only writes down who ran it.
PAYLOAD_SCRIPT = f"""#!/bin/sh
# ./try: run by the kernel (call_usermodehelper) when the cgroup empties
echo "$(id), pid $$, mount namespace $(readlink /proc/self/ns/mnt)" > {MARKER}
"""

ATTACK, BENIGN = "attack", "benign"


@dataclass(frozen=True)
class Step:
    kind: str  # ATTACK or BENIGN
    title: str
    command: str  # run with `sh -c`; shown as "$ command"
    rule: str = ""  # an attack: the rule whose event must report it
    reference: str = ""  # the technique, as detection projects name it
    setup: Tuple[str, ...] = ()  # commands run first (must succeed)
    then: Tuple[str, ...] = ()  # run after the command, whatever it did (the trigger)
    marker: str = ""  # a file that exists once the attack's payload ran
    cleanup: Tuple[str, ...] = ()  # run last, whatever happened


def attack_steps() -> List[Step]:
    """The seed attacks, against policies/default.toml. SysRq: only 'h' (help,
    printed to the kernel log) is ever written, and only if the open succeeds."""
    sysrq = "Tracee TRC-1031"
    unusual = "Jibril exec_from_unusual_dir"
    return [
        Step(ATTACK, "SysRq from the host: press a key of the host kernel", "echo h > /proc/sysrq-trigger",
             rule="sysrq-write-host", reference=sysrq),
        Step(ATTACK, "SysRq from the host: enable the keys (writes back the current value)",
             'echo "$(cat /proc/sys/kernel/sysrq)" > /proc/sys/kernel/sysrq',
             rule="sysrq-write-host", reference=sysrq),
        Step(ATTACK, "SysRq from a container-like namespace (new mount and pid namespaces)",
             "unshare -m -p -f --mount-proc sh -c 'echo h > /proc/sysrq-trigger'",
             rule="sysrq-write-container", reference=sysrq),
        Step(ATTACK, "the release_agent container escape: make the kernel run a payload as root",
             f"echo {PAYLOAD} > {CGROUP}/release_agent",
             rule="release-agent", reference="MITRE T1611, Tracee TRC-1010",
             setup=(f"mkdir -p {CGROUP} && mount -t cgroup -o none,name=enftry cgroup {CGROUP}",
                    f"mkdir {CGROUP_CHILD} && echo 1 > {CGROUP_CHILD}/notify_on_release"),
             # the cgroup empties when this shell exits: the kernel then runs release_agent
             then=(f"sh -c 'echo $$ > {CGROUP_CHILD}/cgroup.procs'",),
             marker=MARKER,
             cleanup=(f"rmdir {CGROUP_CHILD}", f"umount {CGROUP}")),
        Step(ATTACK, "the same escape through a mount option: release_agent= at mount time",
             f"mount -t cgroup -o none,name=enftry2,release_agent={PAYLOAD} cgroup {CGROUP_OPTION}",
             rule="release-agent", reference="MITRE T1611",
             setup=(f"mkdir -p {CGROUP_OPTION}",),
             cleanup=(f"! mountpoint -q {CGROUP_OPTION} || umount {CGROUP_OPTION}",)),
        Step(ATTACK, "a payload dropped in /tmp and run", DROPPED_TMP,
             rule="exec-unusual-dir", reference=unusual, setup=(f"cp {BINARY} {DROPPED_TMP}",)),
        Step(ATTACK, "a payload dropped in /dev/shm and run", DROPPED_SHM,
             rule="exec-unusual-dir", reference=unusual, setup=(f"cp {BINARY} {DROPPED_SHM}",)),
        Step(ATTACK, "fileless: a binary copied into a memfd and run with fexecve",
             "python3 -c \"import os; fd = os.memfd_create('payload'); "
             f"os.write(fd, open('{BINARY}', 'rb').read()); os.execve(fd, ['payload'], dict(os.environ))\"",
             rule="exec-memfd", reference="MITRE T1620"),
        Step(ATTACK, "the /tmp payload run by the dynamic loader: no exec of it, only a mapping",
             f"{LD_SO} {DROPPED_TMP}",
             rule="exec-unusual-dir", reference=unusual, setup=(f"cp {BINARY} {DROPPED_TMP}",)),
    ]


def benign_steps() -> List[Step]:
    """What a host does all day: each must work and be reported by nobody."""
    return [
        Step(BENIGN, "run a program from /usr/bin", BINARY),
        Step(BENIGN, "read the SysRq setting", "cat /proc/sys/kernel/sysrq"),
        Step(BENIGN, "write and read a file in /tmp", f"echo hello > {NOTE} && cat {NOTE}"),
        Step(BENIGN, "a shell pipeline", "echo hello world | tr a-z A-Z"),
        Step(BENIGN, "a Python one-liner", "python3 -c 'import platform; print(platform.release())'"),
        Step(BENIGN, "list a cgroup directory", "ls /sys/fs/cgroup | head -n 4"),
        Step(BENIGN, "mount a cgroup v1 hierarchy without release_agent, then unmount it",
             f"mkdir -p {CGROUP_PLAIN} && mount -t cgroup -o none,name=enftry3 cgroup {CGROUP_PLAIN} "
             f"&& umount {CGROUP_PLAIN}"),
    ]


def all_steps() -> List[Step]:
    return attack_steps() + benign_steps()


# --- what happened ------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One finished process: the step's command."""

    returncode: int
    stdout: str
    stderr: str
    pid: int


DENIED, ALLOWED, FAILED = "denied", "allowed", "failed"

#: How the programs the steps run say that the kernel refused: (pattern in
#: their stderr, errno). Python prints "[Errno N]" (handled separately); dash
#: and coreutils print strerror; util-linux mount, as root, says "permission
#: denied" for EPERM; ld.so names the mapping it could not make.
_REFUSALS = (
    (re.compile(r"Operation not permitted"), "EPERM"),
    (re.compile(r"Permission denied"), "EACCES"),
    (re.compile(r"^mount: .*: permission denied\.?$", re.M), "EPERM"),
    (re.compile(r"failed to map segment from shared object"), "EPERM"),
)
_PY_ERRNO = re.compile(r"\[Errno (\d+)\]")
_REFUSED_ERRNOS = {"EPERM", "EACCES"}


@dataclass(frozen=True)
class Outcome:
    kind: str  # DENIED, ALLOWED or FAILED
    errno: str = ""  # EPERM, EACCES, ... (DENIED and FAILED, when the output names one)
    message: str = ""  # the line the program printed about it, or its first output line


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _output(text: str, limit: int = 100) -> str:
    """A program's output on one line, shortened."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[:limit - 3].rstrip() + "..."


def _errno_in(stderr: str) -> Tuple[str, str]:
    """(errno name, the line naming it), or ("", "")."""
    for line in stderr.splitlines():
        number = _PY_ERRNO.search(line)
        if number:
            return errno.errorcode.get(int(number.group(1)), f"errno {number.group(1)}"), line.strip()
    for pattern, name in _REFUSALS:
        found = pattern.search(stderr)
        if found:
            start = stderr.rfind("\n", 0, found.start()) + 1
            end = stderr.find("\n", found.end())
            return name, stderr[start:end if end >= 0 else len(stderr)].strip()
    return "", ""


def classify(result: Result) -> Outcome:
    """DENIED: it failed and said the kernel refused (EPERM/EACCES); ALLOWED:
    exit status 0; FAILED: it failed for some other reason."""
    name, line = _errno_in(result.stderr)
    if result.returncode == 0:
        return Outcome(ALLOWED, message=_output(result.stdout) or _output(result.stderr))
    if name in _REFUSED_ERRNOS:
        return Outcome(DENIED, name, line)
    return Outcome(FAILED, name, line or _first_line(result.stderr) or f"exit status {result.returncode}")


# --- judging ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepReport:
    step: Step
    result: Optional[Result]  # None: the setup failed, the command did not run
    events: Tuple[Mapping[str, object], ...] = ()
    payload_output: Optional[str] = None  # the marker's text if the payload ran
    setup_error: str = ""


@dataclass(frozen=True)
class Judgement:
    ok: bool
    problems: Tuple[str, ...] = ()


def expected_action(mode: str) -> str:
    return "blocked" if mode == ENFORCE else "audited"


def reporting_events(report: StepReport, mode: str) -> List[Mapping[str, object]]:
    """The step's events that report it as the mode says they must."""
    return [e for e in report.events
            if e.get("rule") == report.step.rule and e.get("action") == expected_action(mode)]


def _attack_problems(report: StepReport, mode: str) -> List[str]:
    assert report.result is not None
    outcome = classify(report.result)
    problems = []
    if mode == ENFORCE and outcome.kind != DENIED:
        problems.append("it was not denied" if outcome.kind == ALLOWED
                        else f"it failed, but not because the kernel refused: {outcome.message}")
    if mode == AUDIT and outcome.kind != ALLOWED:
        problems.append(f"audit mode must let it through, but it {outcome.kind}: {outcome.message}")
    if not reporting_events(report, mode):
        problems.append(f"no {expected_action(mode)} event from rule {report.step.rule}")
    if report.step.marker:
        ran = report.payload_output is not None
        if mode == ENFORCE and ran:
            problems.append("the payload ran")
        if mode == AUDIT and not ran:
            problems.append("the payload did not run (audit mode must not stop it)")
    return problems


def _benign_problems(report: StepReport) -> List[str]:
    assert report.result is not None
    outcome = classify(report.result)
    problems = []
    if outcome.kind != ALLOWED:
        problems.append(f"it {outcome.kind}: {outcome.message}")
    if report.events:
        problems.append(f"{len(report.events)} event(s) reported for it")
    return problems


def judge(report: StepReport, mode: str) -> Judgement:
    """An attack must be denied (enforce) or let through (audit) and reported
    either way; a benign action must work with no event at all."""
    if report.result is None:
        return Judgement(False, (f"setup failed: {report.setup_error}",))
    problems = _attack_problems(report, mode) if report.step.kind == ATTACK else _benign_problems(report)
    return Judgement(not problems, tuple(problems))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    mode: str
    attacks: int
    attacks_ok: int
    benign: int
    benign_ok: int
    line: str
    failures: Tuple[str, ...] = field(default=())


def _count(reports: Sequence[StepReport], mode: str, kind: str) -> Tuple[int, int]:
    mine = [r for r in reports if r.step.kind == kind]
    return len(mine), sum(judge(r, mode).ok for r in mine)


def _failures(reports: Sequence[StepReport], mode: str) -> Tuple[str, ...]:
    out = []
    for label, report in zip(step_labels([r.step for r in reports]), reports):
        judgement = judge(report, mode)
        if not judgement.ok:
            out.append(f"{label}: " + "; ".join(judgement.problems))
    return tuple(out)


def verdict(reports: Sequence[StepReport], mode: str) -> Verdict:
    attacks, attacks_ok = _count(reports, mode, ATTACK)
    benign, benign_ok = _count(reports, mode, BENIGN)
    ok = attacks > 0 and attacks_ok == attacks and benign_ok == benign
    if ok and mode == ENFORCE:
        line = (f"PASS: all {attacks} attacks were denied and reported (blocked); "
                f"all {benign} benign actions ran, with no event")
    elif ok:
        line = (f"PASS (audit mode): all {attacks} attacks succeeded and each was reported (audited): "
                f"enforce mode would have denied them; all {benign} benign actions ran, with no event")
    else:
        wanted = "denied and reported" if mode == ENFORCE else "reported as audited"
        line = (f"FAIL: {attacks_ok} of {attacks} attacks {wanted}, "
                f"{benign_ok} of {benign} benign actions ran quietly")
    return Verdict(ok, mode, attacks, attacks_ok, benign, benign_ok, line, _failures(reports, mode))


def agent_failed_verdict(mode: str, why: str) -> Verdict:
    return Verdict(False, mode, 0, 0, 0, 0, f"FAIL: the agent did not start: {why}", (why,))


# --- what a person reads ------------------------------------------------------------------


def step_labels(steps: Sequence[Step]) -> List[str]:
    """"attack 3/9", "benign 2/7": the step's place among its kind."""
    totals: Dict[str, int] = {}
    for step in steps:
        totals[step.kind] = totals.get(step.kind, 0) + 1
    seen: Dict[str, int] = {}
    labels = []
    for step in steps:
        seen[step.kind] = seen.get(step.kind, 0) + 1
        labels.append(f"{step.kind} {seen[step.kind]}/{totals[step.kind]}")
    return labels


def who(event: Mapping[str, object]) -> str:
    """'sh (pid 812, uid 0, host)': the process the kernel judged, and where it ran."""
    container = event.get("container") or {}
    assert isinstance(container, Mapping)
    if not container.get("namespaced"):
        where = "host"
    elif container.get("runtime"):
        where = f"container {container['runtime']} {str(container.get('id') or '')[:12]}".rstrip()
    else:
        where = "container: own mount namespace"
    return f"{event.get('comm')} (pid {event.get('pid')}, uid {event.get('uid')}, {where})"


def format_event(event: Mapping[str, object]) -> str:
    """One line: action, rule, what was done to what, by whom."""
    parts = [f"event: {event.get('action')}", f"rule={event.get('rule')}", f"access={event.get('access')}",
             f"path={event.get('path')}"]
    if event.get("new_path"):
        parts.append(f"new_path={event['new_path']}")
    return "  ".join(parts) + f"  by {who(event)}"


def format_outcome(outcome: Outcome) -> str:
    if outcome.kind == DENIED:
        return f"-> DENIED ({outcome.errno}): {outcome.message}"
    if outcome.kind == ALLOWED:
        shown = f": {outcome.message}" if outcome.message else ""
        return f"-> ALLOWED (exit 0){shown}"
    named = f" ({outcome.errno})" if outcome.errno else ""
    return f"-> FAILED{named}: {outcome.message}"


def format_payload(step: Step, payload_output: Optional[str]) -> str:
    if not step.marker:
        return ""
    if payload_output is None:
        return f"-> the payload did not run ({step.marker} never appeared)"
    return f"-> the payload ran as root on the host: {payload_output.strip()}"


def format_judgement(report: StepReport, mode: str) -> str:
    judgement = judge(report, mode)
    if judgement.ok:
        if report.step.kind == BENIGN:
            return "[ok] ran, no event"
        return "[ok] denied and reported" if mode == ENFORCE else "[ok] let through and reported (audit)"
    return "[FAIL] " + "; ".join(judgement.problems)
