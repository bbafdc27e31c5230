"""kind = "kernel_helper" on a real kernel: settings that make the kernel run a program.

One agent for the module, started without --mode on policies/default.toml
(+ the test allow.d); the audit half reloads it with policies/audit.toml, so
tests run in file order: enforce first, then audit. For each setting, the
write from the host, from a user+mount+pid namespace, through a second mount
and with the usual tool is denied once (enforce) or reported once (audit);
reads pass; the allowlisted systemd-sysctl and systemd-binfmt work when run
for real; and the end-to-end core_pattern escape runs its payload only when
the rule audits.

Debian's 6.1 kernel is built without CONFIG_UEVENT_HELPER: there is no
/sys/kernel/uevent_helper nor /proc/sys/kernel/hotplug to write, so those
scenarios skip (saying so) on it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from battery import assert_outcome, describe, module_agent, perform
from harness.agent import REPO, Agent, run_action
from scenarios import _mount as mount_once
from scenarios import (  # noqa: F401 - the `stage` fixture
    ACTIONS,
    NORMAL,
    PY,
    Scenario,
    check_event,
    stage_fixture,
)

pytestmark = pytest.mark.kernel

SYSCTL_DIR = Path("/proc/sys/kernel")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT2 = NORMAL / "binfmt2"  # a second binfmt_misc mount (the same superblock)
PROC2 = NORMAL / "proc2"  # staged by scenarios.stage_environment
SYS2 = NORMAL / "sys2"  # a second sysfs mount
PAYLOAD = NORMAL / "core-payload.sh"
PAYLOAD_RAN = NORMAL / "core-payload-ran"
HOST_SYSCTL_RULE = "kernel-helper-sysctl-host"
HOST_BINFMT_RULE = "kernel-helper-binfmt-host"
CONTAINER_RULE = "kernel-helper-container"
#: a new user (root mapped to root), mount and pid namespace with its own /proc
NEW_NAMESPACES = ("unshare", "-U", "-r", "-m", "-p", "-f", "--mount-proc")

#: setting -> (file on the host, the same file in the staged second mount)
FILES: Dict[str, tuple] = {
    "core_pattern": (SYSCTL_DIR / "core_pattern", PROC2 / "sys/kernel/core_pattern"),
    "modprobe": (SYSCTL_DIR / "modprobe", PROC2 / "sys/kernel/modprobe"),
    "hotplug": (SYSCTL_DIR / "hotplug", PROC2 / "sys/kernel/hotplug"),
    "uevent_helper": (Path("/sys/kernel/uevent_helper"), SYS2 / "kernel/uevent_helper"),
    "binfmt_register": (BINFMT / "register", BINFMT2 / "register"),
    "binfmt_status": (BINFMT / "status", BINFMT2 / "status"),
}
SYSCTLS = {"core_pattern", "modprobe", "hotplug"}


def _act(*args: str) -> tuple:
    return (PY, ACTIONS, *args)


def _host_rule(setting: str) -> str:
    return HOST_BINFMT_RULE if setting.startswith("binfmt_") else HOST_SYSCTL_RULE


def helper_scenarios(setting: str) -> List[Scenario]:
    """Every way of writing `setting` the battery tries, and a read."""
    on_host, second = FILES[setting]
    host = dict(rule=_host_rule(setting), access="write", hook="file_open")
    # binfmt_misc is not mounted in a fresh /proc: the namespace uses the second mount
    in_namespace = second if setting.startswith("binfmt_") else on_host
    found = [
        Scenario(f"{setting}-write", _act("open", str(on_host), "w"), path=str(on_host), **host),
        Scenario(f"{setting}-o-trunc", _act("open", str(on_host), "trunc_ro"), path=str(on_host), **host),
        Scenario(
            f"{setting}-truncate", _act("truncate", str(on_host)), path=str(on_host),
            rule=_host_rule(setting), access="write", hook="path_truncate",
        ),
        Scenario(
            f"{setting}-openat-dirfd", _act("open", on_host.name, "w", str(on_host.parent)), path=str(on_host), **host
        ),
        Scenario(f"{setting}-second-mount", _act("open", str(second), "w"), path=str(second), **host),
        Scenario(
            f"{setting}-via-proc-self-root", _act("open", f"/proc/self/root{on_host}", "w"), path=str(on_host), **host
        ),
        Scenario(
            f"{setting}-from-new-namespaces",
            (*NEW_NAMESPACES, *_act("open", str(in_namespace), "w")),
            rule=CONTAINER_RULE, path=str(in_namespace), access="write", hook="file_open",
            same_pid=False, container=True,
        ),
    ]
    if setting in SYSCTLS:
        # writes back the current value: harmless when allowed (audit)
        key = f"kernel.{setting}"
        found.append(Scenario(
            f"{setting}-sysctl-w", ("sh", "-c", f'sysctl -w "{key}=$(cat {on_host})"'),
            path=str(on_host), comm="sysctl", same_pid=False, **host,
        ))
    else:
        # the shell redirection of every escape write-up; writes nothing
        found.append(Scenario(
            f"{setting}-shell-redirect", ("sh", "-c", f": > {on_host}"), path=str(on_host), comm="sh", **host,
        ))
    if setting != "binfmt_register":  # register is write-only (mode 0200)
        found.append(Scenario(f"{setting}-read", _act("open", str(on_host), "r"), rule=None, blocks=False))
    return found


SCENARIOS = {s.id: (setting, s) for setting in FILES for s in helper_scenarios(setting)}


# --- staging and the agent ----------------------------------------------------------


def _mount(fstype: str, target: Path) -> None:
    mount_once(["-t", fstype, fstype], target)


@pytest.fixture(scope="module")
def helpers_stage(stage) -> None:
    """binfmt_misc at its usual place and a second time elsewhere, a second sysfs,
    and the payload of the core_pattern escape in an ordinary place."""
    del stage  # the second procfs and NORMAL come from the shared staging
    _mount("binfmt_misc", BINFMT)
    _mount("binfmt_misc", BINFMT2)
    _mount("sysfs", SYS2)
    PAYLOAD.write_text(f"#!/bin/sh\necho ran > {PAYLOAD_RAN}\ncat > /dev/null\n")
    PAYLOAD.chmod(0o755)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("helpers")


@pytest.fixture(scope="module")
def agent(stage, helpers_stage, workdir) -> Iterator[Agent]:
    # no --mode: the policy file says, so a reload to audit.toml really audits
    yield from module_agent(stage, workdir, None, "agent-kernel-helpers.log")


@pytest.fixture(autouse=True)
def agent_log(agent, agent_log_path) -> Iterator[None]:
    yield
    shutil.copy(agent.log_path, agent_log_path)


def _use_policy(agent: Agent, name: str) -> None:
    text = (REPO / "policies" / name).read_text()
    if agent.policy.read_text() != text:
        verdict = agent.reload(text)
        assert verdict["message"] == "reloaded", verdict


@pytest.fixture
def enforcing(agent) -> Agent:
    _use_policy(agent, "default.toml")
    return agent


@pytest.fixture
def auditing(agent) -> Agent:
    _use_policy(agent, "audit.toml")
    return agent


def _require(setting: str) -> None:
    on_host = FILES[setting][0]
    if not on_host.exists():
        pytest.skip(f"{on_host} does not exist on this kernel (CONFIG_UEVENT_HELPER is not set): nothing to write")


def _check_single(scenario: Scenario, setting: str, events: List[dict], action: str, proc) -> None:
    if scenario.rule is None:
        assert events == [], f"{scenario.id} must not report anything: " + describe(proc, events)
        return
    assert len(events) == 1, f"{scenario.id}: expected one event, got: " + describe(proc, events)
    check_event(events[0], scenario, action, proc.pid)
    assert events[0]["setting"] == setting, events[0]


# --- enforce ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario_id", list(SCENARIOS))
def test_helper_setting_under_enforce(enforcing, scenario_id: str) -> None:
    setting, scenario = SCENARIOS[scenario_id]
    _require(setting)
    proc, events = perform(enforcing, scenario)
    assert_outcome(proc, scenario.blocks, scenario, events)
    _check_single(scenario, setting, events, "blocked" if scenario.blocks else "audited", proc)


def _helper_events(agent: Agent, mark: int) -> List[dict]:
    return [e for e in agent.events(mark) if str(e.get("rule", "")).startswith("kernel-helper")]


def test_systemd_sysctl_sets_core_pattern_under_enforce(enforcing, tmp_path) -> None:
    tool = Path("/lib/systemd/systemd-sysctl")
    if not tool.exists():
        pytest.fail(f"{tool} is missing from the guest (it runs the host's /usr)")
    core_pattern = SYSCTL_DIR / "core_pattern"
    original = core_pattern.read_text().rstrip("\n")
    conf = tmp_path / "enftest-core.conf"
    mark = enforcing.mark()
    try:
        conf.write_text("kernel.core_pattern = enftest-core-%p\n")
        applied = run_action([str(tool), str(conf)])
        value = core_pattern.read_text().rstrip("\n")
    finally:
        conf.write_text(f"kernel.core_pattern = {original}\n")
        restored = run_action([str(tool), str(conf)])
    assert applied.returncode == 0, applied.stderr
    assert value == "enftest-core-%p"
    assert restored.returncode == 0 and core_pattern.read_text().rstrip("\n") == original, restored.stderr
    assert _helper_events(enforcing, mark) == []


def test_systemd_binfmt_registers_and_unregisters_under_enforce(enforcing, tmp_path) -> None:
    tool = Path("/lib/systemd/systemd-binfmt")
    if not tool.exists():
        pytest.fail(f"{tool} is missing from the guest (it runs the host's /usr)")
    conf = tmp_path / "enftest.conf"
    conf.write_text(":enftest:E::enftestx::/bin/true:\n")
    mark = enforcing.mark()
    registered = run_action([str(tool), str(conf)])
    entry_after_register = (BINFMT / "enftest").exists()
    unregistered = run_action([str(tool), "--unregister"])  # writes -1 to status
    assert registered.returncode == 0, registered.stderr
    assert entry_after_register, f"systemd-binfmt did not register: {registered.stderr}"
    assert unregistered.returncode == 0, unregistered.stderr
    assert not (BINFMT / "enftest").exists()
    assert _helper_events(enforcing, mark) == []
    (BINFMT / "status").read_text()  # still readable after all that


def _write_core_pattern(value: str) -> Optional[OSError]:
    try:
        with open(SYSCTL_DIR / "core_pattern", "w") as handle:
            handle.write(value)
    except OSError as error:
        return error
    return None


def _crash_and_wait(seconds: float) -> bool:
    """Crash a process (SIGSEGV, default action: dump core); True when the payload ran."""
    if PAYLOAD_RAN.exists():
        PAYLOAD_RAN.unlink()
    crashed = run_action([PY, "-c", "import os; os.kill(os.getpid(), 11)"])
    assert crashed.returncode == -11, (crashed.returncode, crashed.stderr)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if PAYLOAD_RAN.exists():
            return True
        time.sleep(0.5)
    return False


def test_core_pattern_escape_does_not_run_the_payload_under_enforce(enforcing) -> None:
    original = (SYSCTL_DIR / "core_pattern").read_text().rstrip("\n")
    mark = enforcing.mark()
    error = _write_core_pattern(f"|{PAYLOAD}")
    assert isinstance(error, PermissionError), error
    assert (SYSCTL_DIR / "core_pattern").read_text().rstrip("\n") == original
    assert not _crash_and_wait(8), "the kernel ran the payload: core_pattern was changed"
    events = [e for e in _helper_events(enforcing, mark) if e["pid"] == os.getpid()]
    assert [(e["action"], e["rule"], e["setting"]) for e in events] == [("blocked", HOST_SYSCTL_RULE, "core_pattern")]


# --- audit (the agent reloads audit.toml) ------------------------------------------------


@pytest.mark.parametrize("scenario_id", list(SCENARIOS))
def test_helper_setting_under_audit(auditing, scenario_id: str) -> None:
    setting, scenario = SCENARIOS[scenario_id]
    _require(setting)
    proc, events = perform(auditing, scenario)
    assert_outcome(proc, False, scenario, events)
    _check_single(scenario, setting, events, "audited", proc)


def test_core_pattern_escape_runs_the_payload_under_audit(auditing) -> None:
    """The control: the same escape, reported but allowed, really runs the payload."""
    original = (SYSCTL_DIR / "core_pattern").read_text().rstrip("\n")
    mark = auditing.mark()
    try:
        assert _write_core_pattern(f"|{PAYLOAD}") is None
        ran = _crash_and_wait(30)
    finally:
        assert _write_core_pattern(original) is None
    assert (SYSCTL_DIR / "core_pattern").read_text().rstrip("\n") == original
    assert ran, "the payload did not run although core_pattern pointed at it: the control proves nothing"
    events = [e for e in _helper_events(auditing, mark) if e["pid"] == os.getpid()]
    assert [(e["action"], e["setting"]) for e in events] == [("audited", "core_pattern")] * 2
