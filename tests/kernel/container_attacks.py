"""The seed attacks from inside a real container, shared by the enforce
(test_real_containers.py) and audit (test_real_containers_audit.py) modules:
the escape's payload and where it leaves its trace, the escape's steps, and
how a container's events are picked out of the agent's stream and checked."""

from __future__ import annotations

import time
from typing import Dict, Iterator, List

import pytest

from harness.agent import REPO, Agent
from harness.containers import (
    ROOTFS, WORK, Container, ContainerSpec, Outcome, PodmanDriver, build_busybox_rootfs,
)

Event = Dict[str, object]

POLICY = REPO / "policies" / "default.toml"  # every container test runs the default policy

EPERM_TEXT = "Operation not permitted"
#: The escape's payload, as the host sees it (the container sees /payload.sh):
#: when the kernel runs it as release agent it leaves ESCAPED behind.
PAYLOAD_HOST = ROOTFS / "payload.sh"
ESCAPED = WORK / "escaped"
ESCAPED_PART = WORK / "escaped.part"
#: busybox mount says this for EPERM and EACCES alike; the event (blocked, from
#: this container) and `control` (the same mount succeeds with no agent) say whose.
BUSYBOX_MOUNT_DENIED = "mount: permission denied"
#: The kernel runs a release agent as soon as the cgroup empties: in `control` the
#: payload's file was there 4-6 s after the release_agent write, two `podman exec`
#: calls (1-2 s each) included.
ESCAPE_WAIT_S = 5
CG1 = "/tmp/enfctr-cg"  # where the attacker mounts a cgroup v1 hierarchy, in the container

#: The two SysRq controls, each with a harmless write: press "h" (help), and
#: write the keys' current value back.
SYSRQ_ATTACKS = [
    ("/proc/sysrq-trigger", "echo h > /proc/sysrq-trigger"),
    ("/proc/sys/kernel/sysrq", 'echo "$(cat /proc/sys/kernel/sysrq)" > /proc/sys/kernel/sysrq'),
]


def write_payload() -> None:
    """The escape's payload, written aside and renamed: whoever sees ESCAPED sees all of it."""
    PAYLOAD_HOST.write_text(f"#!/bin/sh\nid > {ESCAPED_PART}\nmv {ESCAPED_PART} {ESCAPED}\n")
    PAYLOAD_HOST.chmod(0o755)


def clear_escape_trace() -> None:
    for leftover in (ESCAPED, ESCAPED_PART):
        if leftover.exists():
            leftover.unlink()


def wait_for_escape(started: float) -> bool:
    """Whether the payload ran (as release agent) within three escape waits of `started`."""
    while not ESCAPED.exists() and time.monotonic() - started < ESCAPE_WAIT_S * 3:
        time.sleep(0.2)
    return ESCAPED.exists()


def arm(podman: PodmanDriver, container: Container, name: str, mnt: str) -> None:
    """The escape's preparation: a cgroup v1 hierarchy, a child cgroup with notify_on_release."""
    podman.setup(container, f"mkdir -p {mnt} && mount -t cgroup -o none,name={name} cgroup {mnt} && "
                            f"mkdir -p {mnt}/x && echo 1 > {mnt}/x/notify_on_release")


def trigger(podman: PodmanDriver, container: Container, mnt: str) -> None:
    """A process joins the child cgroup and exits: the cgroup empties."""
    podman.setup(container, f"sh -c 'echo $$ > {mnt}/x/cgroup.procs'")


def disarm(podman: PodmanDriver, container: Container, mnt: str) -> None:
    podman.sh(container, f"rmdir {mnt}/x; umount {mnt}")


def container_events(agent: Agent, mark: int, container: Container, rule: str) -> List[Event]:
    """Events since `mark` from `container`, once one for `rule` arrived (or the wait ran out)."""

    def from_it(record: Event) -> bool:
        info = record.get("container")
        return record.get("type") == "event" and isinstance(info, dict) and info.get("id") == container.id

    events = agent.events(mark, lambda r: from_it(r) and r.get("rule") == rule)
    return [e for e in events if from_it(e)]


def assert_denied(outcome: Outcome, what: str, denied_text: str = EPERM_TEXT) -> None:
    assert outcome.returncode != 0 and denied_text in outcome.stderr, (
        f"{what} was not denied with EPERM: exit {outcome.returncode}, stdout {outcome.stdout!r}, "
        f"stderr {outcome.stderr!r}")


def assert_one_event(events: List[Event], container: Container, action: str = "blocked",
                     **expected: object) -> Event:
    """Exactly one event, `action`, from `container` (its cgroup, its runtime's id), with `expected`."""
    assert len(events) == 1, ("expected exactly one event from the container", events)
    event = events[0]
    for key, value in expected.items():
        assert event[key] == value, (key, value, event)
    assert event["action"] == action, event
    assert event["cgroup"] == container.cgroup, (container.cgroup, event)
    assert event["container"] == {
        "namespaced": True, "runtime": "podman", "id": container.id, "pod_uid": None}, event
    return event


def all_events(agent: Agent, mark: int) -> List[Event]:
    return agent.events(mark)  # waits quiet_s for anything late


# --- fixtures' bodies (each module has its own agent, in its own mode) ------------------------


@pytest.fixture(scope="module")
def podman() -> PodmanDriver:
    """The busybox root filesystem with the escape's payload in it, and Podman to run it."""
    build_busybox_rootfs(ROOTFS)
    write_payload()
    return PodmanDriver()


def started_container(podman: PodmanDriver, agent: Agent, timings: Dict[str, object], spec: ContainerSpec,
                      label: str) -> Iterator[Container]:
    """A container started under the agent (its start must raise no event, in either mode)."""
    mark = agent.mark()
    container = podman.start(spec)
    timings[f"{label}_run_s"] = round(container.start_s, 1)
    try:
        assert all_events(agent, mark) == [], f"starting the {label} container raised events"
        yield container
    finally:
        podman.remove(container)


@pytest.fixture(autouse=True)
def attach_agent_log(request, agent_log_path) -> Iterator[None]:
    """The module's agent log, attached to each test's artifacts (bind it in a module as `agent_log`)."""
    yield
    if "agent" in request.fixturenames:
        running = request.getfixturevalue("agent")
        agent_log_path.write_text(running.log_path.read_text())
