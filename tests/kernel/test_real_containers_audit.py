"""The same attacks from a real privileged Podman container, with the agent in
audit mode (issue 11.2): each attempt succeeds, as it would with no agent,
and is reported exactly once, as `audited`, with the container's id.

Audit mode is how operators roll enforcer out: a missing report here would
hide from them an attack that enforce mode would stop, and a doubled one
would count it twice. The release_agent escape goes all the way: the kernel
runs the payload as root on the host, and the agent said so beforehand, once.

tests/kernel/test_real_containers.py runs them in enforce mode (and proves,
with no agent, that each attack works: its `control`).
"""

from __future__ import annotations

import time
from typing import Dict, Iterator, List

import pytest

from battery import agent_running
from harness.agent import Agent
from harness.containers import Container, ContainerSpec, Outcome, PodmanDriver

from container_attacks import (  # podman: a fixture; attach_agent_log: autouse
    CG1, ESCAPED, PAYLOAD_HOST, POLICY, SYSRQ_ATTACKS, Event, arm, assert_one_event, attach_agent_log,
    clear_escape_trace, container_events, disarm, podman, started_container, trigger, wait_for_escape,
)

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def agent(podman, tmp_path_factory) -> Iterator[Agent]:
    with agent_running(POLICY, "audit", tmp_path_factory.mktemp("containers-audit"),
                       "agent-containers-audit.log") as running:
        yield running


@pytest.fixture(scope="module")
def privileged(podman, agent) -> Iterator[Container]:
    timings: Dict[str, object] = {}
    yield from started_container(podman, agent, timings, ContainerSpec(privileged=True, cgroupns_host=True),
                                 "privileged")


def _assert_succeeded(outcome: Outcome, what: str) -> None:
    assert outcome.returncode == 0, (
        f"in audit mode {what} failed: exit {outcome.returncode}, stdout {outcome.stdout!r}, "
        f"stderr {outcome.stderr!r}")


def _reported_once(agent: Agent, mark: int, container: Container, rule: str, **expected: object) -> Event:
    """One `audited` event from the container for `rule`, and no other event at all since `mark`."""
    event = assert_one_event(container_events(agent, mark, container, rule), container, action="audited",
                             rule=rule, **expected)
    everything: List[Event] = [r for r in agent.since(mark) if r.get("type") == "event"]
    assert everything == [event], everything
    return event


def _audited_attack(podman: PodmanDriver, agent: Agent, container: Container, script: str, rule: str,
                    **expected: object) -> Event:
    mark = agent.mark()
    _assert_succeeded(podman.sh(container, script), script)
    return _reported_once(agent, mark, container, rule, **expected)


@pytest.mark.parametrize("target,script", SYSRQ_ATTACKS)
def test_sysrq_from_a_privileged_container_is_audited(podman, agent, privileged, target: str, script: str) -> None:
    _audited_attack(podman, agent, privileged, script, "sysrq-write-container", path=target)


def test_release_agent_escape_runs_and_is_audited_once(podman, agent, privileged) -> None:
    """The whole escape: the write succeeds and is reported once, then the
    kernel runs the payload as root on the host, and that raises nothing more."""
    clear_escape_trace()
    arm(podman, privileged, "enfctra", CG1)
    try:
        mark = agent.mark()
        started = time.monotonic()
        write = f"echo {PAYLOAD_HOST} > {CG1}/release_agent"
        _assert_succeeded(podman.sh(privileged, write), write)
        event = _reported_once(agent, mark, privileged, "release-agent", path=f"{CG1}/release_agent", access="write")
        trigger(podman, privileged, CG1)
        assert wait_for_escape(started), "in audit mode the release_agent escape did not run its payload"
        assert ESCAPED.read_text().startswith("uid=0(root)"), ESCAPED.read_text()
        assert [r for r in agent.since(mark) if r.get("type") == "event"] == [event]
    finally:
        disarm(podman, privileged, CG1)
        clear_escape_trace()


def test_release_agent_mount_option_is_audited(podman, agent, privileged) -> None:
    mnt = f"{CG1}-opt-audit"
    try:
        _audited_attack(podman, agent, privileged,
                        f"mkdir -p {mnt} && mount -t cgroup -o none,name=enfctra2,release_agent={PAYLOAD_HOST} "
                        f"cgroup {mnt}", "release-agent", access="mount", path="release_agent",
                        new_path=str(PAYLOAD_HOST))
    finally:
        podman.sh(privileged, f"umount {mnt}")


@pytest.mark.parametrize("place,prepare", [
    ("/tmp", ""),
    # Podman mounts /dev/shm noexec; root in a privileged container remounts it.
    ("/dev/shm", "mount -o remount,exec /dev/shm && "),
])
def test_payload_in_a_privileged_container_runs_and_is_audited(podman, agent, privileged, place: str,
                                                                prepare: str) -> None:
    # busybox runs argv[1] as the applet when its own name starts with "busybox"
    payload = f"{place}/busybox-payload"
    podman.setup(privileged, f"{prepare}cp /bin/busybox {payload}")
    event = _audited_attack(podman, agent, privileged, f"{payload} echo ran", "exec-unusual-dir", path=payload,
                            access="exec")
    assert event["hook"] == "bprm_check_security", event


def test_the_audit_agent_reported_only_what_the_tests_caused(agent) -> None:
    kinds = {r.get("type") for r in agent.since(0)}
    assert not kinds & {"lost", "suppressed"}, [r for r in agent.since(0) if r.get("type") in ("lost", "suppressed")]
