"""The seed attacks from inside real Podman containers, under policies/default.toml enforced.

The threat model's attacker is root in a privileged container: from one
(`--privileged --cgroupns=host`, see tests/harness/containers.py for why the
host cgroup namespace) SysRq, the release_agent escape (the file and the
mount option) and payloads dropped in /tmp and /dev/shm must each be denied
at the caller and reported once, with the event's `container` naming Podman
and the id Podman itself gives. From an unprivileged container, a payload in
/tmp likewise. Starting, exec'ing into and removing containers, and benign
actions inside them, must raise no event at all: a false block breaks
users' services.

One agent and two containers for the whole module: an agent start costs a
minute or more under emulation, a container about 5 s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from battery import agent_running, artifacts_root
from harness.agent import REPO, Agent
from harness.containers import (
    ROOTFS, WORK, Container, ContainerSpec, Outcome, Podman, PodmanDriver, build_busybox_rootfs,
)

pytestmark = pytest.mark.kernel

POLICY = REPO / "policies" / "default.toml"
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

Event = Dict[str, object]


# --- fixtures: one agent, one privileged and one unprivileged container ------------------


@pytest.fixture(scope="module")
def podman() -> PodmanDriver:
    build_busybox_rootfs(ROOTFS)
    # Written aside, then renamed: whoever sees ESCAPED sees all of it.
    PAYLOAD_HOST.write_text(f"#!/bin/sh\nid > {ESCAPED_PART}\nmv {ESCAPED_PART} {ESCAPED}\n")
    PAYLOAD_HOST.chmod(0o755)
    return PodmanDriver()


@pytest.fixture(scope="module")
def timings() -> Iterator[Dict[str, object]]:
    """Figures measured on the way, written to the artifacts for the notes."""
    figures: Dict[str, object] = {}
    yield figures
    out = artifacts_root(WORK) / "container-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")


@pytest.fixture(scope="module")
def control(podman, timings) -> None:
    """Before any agent runs: from the same kind of container the attacks work
    (the payload really runs as root on the host, SysRq is pressed, the mount
    option is taken), so the denials below are enforcer's and not the
    runtime's or the kernel's own."""
    container = podman.start(ContainerSpec(privileged=True, cgroupns_host=True))
    mnt = f"{CG1}-control"
    try:
        podman.setup(container, "echo h > /proc/sysrq-trigger")
        podman.setup(container, f"mkdir -p {mnt}-opt && mount -t cgroup -o "
                                f"none,name=enfctrl2,release_agent={PAYLOAD_HOST} cgroup {mnt}-opt && umount {mnt}-opt")
        _arm(podman, container, "enfctrl", mnt)
        try:
            started = time.monotonic()
            podman.setup(container, f"echo {PAYLOAD_HOST} > {mnt}/release_agent")
            _trigger(podman, container, mnt)
            while not ESCAPED.exists() and time.monotonic() - started < ESCAPE_WAIT_S * 3:
                time.sleep(0.2)
            assert ESCAPED.exists(), (
                "control: with no agent the release_agent escape did not run its payload; "
                "the escape test would prove nothing")
            timings["control_escape_s"] = round(time.monotonic() - started, 1)
            ran_as = ESCAPED.read_text().strip()
            timings["control_payload_ran_as"] = ran_as
            assert ran_as.startswith("uid=0(root)"), f"control: the payload ran, but as {ran_as!r}"
        finally:
            _disarm(podman, container, mnt)
    finally:
        podman.remove(container)
        for leftover in (ESCAPED, ESCAPED_PART):
            if leftover.exists():
                leftover.unlink()


@pytest.fixture(scope="module")
def agent(podman, control, tmp_path_factory, timings) -> Iterator[Agent]:
    workdir = tmp_path_factory.mktemp("containers")
    started = time.monotonic()
    with agent_running(POLICY, "enforce", workdir, "agent-containers.log") as running:
        timings["agent_start_s"] = round(time.monotonic() - started, 1)
        yield running


def _container(podman: PodmanDriver, agent: Agent, timings: Dict[str, object], spec: ContainerSpec,
               label: str) -> Iterator[Container]:
    """A container started under the agent (its start must raise no event)."""
    mark = agent.mark()
    container = podman.start(spec)
    timings[f"{label}_run_s"] = round(container.start_s, 1)
    try:
        assert _all_events(agent, mark) == [], f"starting the {label} container raised events"
        yield container
    finally:
        podman.remove(container)


@pytest.fixture(scope="module")
def privileged(podman, agent, timings) -> Iterator[Container]:
    yield from _container(podman, agent, timings, ContainerSpec(privileged=True, cgroupns_host=True),
                          "privileged")


@pytest.fixture(scope="module")
def unprivileged(podman, agent, timings) -> Iterator[Container]:
    yield from _container(podman, agent, timings, ContainerSpec(), "unprivileged")


@pytest.fixture(autouse=True)
def agent_log(request, agent_log_path) -> Iterator[None]:
    yield
    if "agent" in request.fixturenames:
        running = request.getfixturevalue("agent")
        agent_log_path.write_text(running.log_path.read_text())


# --- helpers -------------------------------------------------------------------------------


def _all_events(agent: Agent, mark: int) -> List[Event]:
    return agent.events(mark)  # waits quiet_s for anything late


def _container_events(agent: Agent, mark: int, container: Container, rule: str) -> List[Event]:
    """Events since `mark` from `container`, once one for `rule` arrived (or the wait ran out)."""

    def from_it(record: Event) -> bool:
        info = record.get("container")
        return record.get("type") == "event" and isinstance(info, dict) and info.get("id") == container.id

    events = agent.events(mark, lambda r: from_it(r) and r.get("rule") == rule)
    return [e for e in events if from_it(e)]


def _arm(podman: PodmanDriver, container: Container, name: str, mnt: str) -> None:
    """The escape's preparation: a cgroup v1 hierarchy, a child cgroup with notify_on_release."""
    podman.setup(container, f"mkdir -p {mnt} && mount -t cgroup -o none,name={name} cgroup {mnt} && "
                            f"mkdir -p {mnt}/x && echo 1 > {mnt}/x/notify_on_release")


def _trigger(podman: PodmanDriver, container: Container, mnt: str) -> None:
    """A process joins the child cgroup and exits: the cgroup empties."""
    podman.setup(container, f"sh -c 'echo $$ > {mnt}/x/cgroup.procs'")


def _disarm(podman: PodmanDriver, container: Container, mnt: str) -> None:
    podman.sh(container, f"rmdir {mnt}/x; umount {mnt}")


def _assert_denied(outcome: Outcome, what: str, denied_text: str = EPERM_TEXT) -> None:
    assert outcome.returncode != 0 and denied_text in outcome.stderr, (
        f"{what} was not denied with EPERM: exit {outcome.returncode}, stdout {outcome.stdout!r}, "
        f"stderr {outcome.stderr!r}")


def _assert_one_event(events: List[Event], container: Container, **expected: object) -> Event:
    assert len(events) == 1, ("expected exactly one event from the container", events)
    event = events[0]
    for key, value in expected.items():
        assert event[key] == value, (key, value, event)
    assert event["action"] == "blocked", event
    assert event["cgroup"] == container.cgroup, (container.cgroup, event)
    assert event["container"] == {
        "namespaced": True, "runtime": "podman", "id": container.id, "pod_uid": None}, event
    return event


def _attack(podman: PodmanDriver, agent: Agent, container: Container, script: str, rule: str,
            denied_text: str = EPERM_TEXT, **expected: object) -> Event:
    mark = agent.mark()
    outcome = podman.sh(container, script)
    _assert_denied(outcome, script, denied_text)
    return _assert_one_event(_container_events(agent, mark, container, rule), container, rule=rule, **expected)


# --- the container is who the runtime says it is ---------------------------------------------


def test_the_runtime_reports_the_id_the_cgroup_names(podman, privileged, unprivileged) -> None:
    """`podman inspect` agrees with `podman run -d`, and the cgroup path has
    the shape containers.py reads (cgroupfs driver, no systemd)."""
    for container in (privileged, unprivileged):
        assert podman.inspect(container.id, "{{.Id}}") == container.id
        assert container.cgroup == f"/libpod_parent/libpod-{container.id}", container


# --- attacks from the privileged container ---------------------------------------------------


@pytest.mark.parametrize("target,script", [
    # press a key ("h": help, harmless were it ever let through)
    ("/proc/sysrq-trigger", "echo h > /proc/sysrq-trigger"),
    # enable the keys (writing the current value back: harmless too)
    ("/proc/sys/kernel/sysrq", 'echo "$(cat /proc/sys/kernel/sysrq)" > /proc/sys/kernel/sysrq'),
])
def test_sysrq_from_a_privileged_container(podman, agent, privileged, target: str, script: str) -> None:
    _attack(podman, agent, privileged, script, "sysrq-write-container", path=target)


def test_release_agent_escape_from_a_privileged_container(podman, agent, privileged) -> None:
    """The whole escape (MITRE T1611): mount a cgroup v1 hierarchy, arm
    notify_on_release, write release_agent, empty the cgroup. The write is
    denied and reported, and the kernel never runs the payload (which it
    did in `control`, with no agent)."""
    _arm(podman, privileged, "enfctr", CG1)
    try:
        _attack(podman, agent, privileged, f"echo {PAYLOAD_HOST} > {CG1}/release_agent", "release-agent",
                path=f"{CG1}/release_agent", access="write")
        _trigger(podman, privileged, CG1)
        time.sleep(ESCAPE_WAIT_S)
        ran = [p for p in (ESCAPED, ESCAPED_PART) if p.exists()]
        assert ran == [], f"the payload ran on the host: {ran}"
    finally:
        _disarm(podman, privileged, CG1)


def test_release_agent_mount_option_from_a_privileged_container(podman, agent, privileged) -> None:
    _attack(podman, agent, privileged,
            f"mkdir -p {CG1}-opt && mount -t cgroup -o none,name=enfctr2,release_agent={PAYLOAD_HOST} cgroup {CG1}-opt",
            "release-agent", denied_text=BUSYBOX_MOUNT_DENIED, access="mount", path="release_agent",
            new_path=str(PAYLOAD_HOST))


def test_payload_in_tmp_of_a_privileged_container(podman, agent, privileged) -> None:
    podman.setup(privileged, "cp /bin/busybox /tmp/payload")
    _attack(podman, agent, privileged, "/tmp/payload true", "exec-unusual-dir", path="/tmp/payload",
            access="exec")


def test_payload_in_dev_shm_of_a_privileged_container(podman, agent, privileged) -> None:
    """Podman mounts /dev/shm noexec; root in a privileged container remounts it."""
    podman.setup(privileged, "mount -o remount,exec /dev/shm && cp /bin/busybox /dev/shm/payload")
    _attack(podman, agent, privileged, "/dev/shm/payload true", "exec-unusual-dir", path="/dev/shm/payload",
            access="exec")


# --- an unprivileged container ----------------------------------------------------------------


def test_payload_in_tmp_of_an_unprivileged_container(podman, agent, unprivileged) -> None:
    podman.setup(unprivileged, "cp /bin/busybox /tmp/payload")
    _attack(podman, agent, unprivileged, "/tmp/payload true", "exec-unusual-dir", path="/tmp/payload",
            access="exec")


def test_dev_shm_of_an_unprivileged_container_is_noexec_before_enforcer(podman, agent, unprivileged) -> None:
    """Recorded fact, not enforcer's doing: the runtime's noexec mount refuses
    first (EACCES), so no LSM hook runs and nothing is reported."""
    podman.setup(unprivileged, "cp /bin/busybox /dev/shm/payload")
    mark = agent.mark()
    outcome = podman.sh(unprivileged, "/dev/shm/payload true")
    assert outcome.returncode != 0 and "Permission denied" in outcome.stderr, outcome
    assert _all_events(agent, mark) == []


# --- benign: nothing denied, nothing reported ---------------------------------------------------


BENIGN: List[List[str]] = [
    ["/bin/true"],
    ["/bin/cat", "/etc/motd"],
    ["/bin/sh", "-c", "echo data > /tmp/file && cat /tmp/file"],
    ["/bin/cat", "/proc/sys/kernel/sysrq"],
    ["/bin/ls", "/sys/fs/cgroup"],
]


@pytest.mark.parametrize("label", ["privileged", "unprivileged"])
def test_benign_actions_in_containers_pass_unreported(podman, agent, request, label: str) -> None:
    container: Container = request.getfixturevalue(label)
    mark = agent.mark()
    outcomes = [(argv, podman.exec_in(container, argv)) for argv in BENIGN]
    failed = [(argv, o) for argv, o in outcomes if o.returncode != 0]
    assert failed == [], failed
    assert _all_events(agent, mark) == []


def test_container_lifecycle_raises_no_event(podman, agent, timings) -> None:
    """Start, exec into, stop and remove an ordinary container under
    enforcement: crun's own re-exec and conmon must pass the default policy."""
    mark = agent.mark()
    container = podman.start(ContainerSpec(name="enforcer-lifecycle"))
    timings["lifecycle_run_s"] = round(container.start_s, 1)
    started = time.monotonic()
    try:
        assert podman.exec_in(container, ["/bin/true"]).returncode == 0
    finally:
        podman.remove(container)
    timings["lifecycle_exec_rm_s"] = round(time.monotonic() - started, 1)
    assert _all_events(agent, mark) == []


def test_runc_container_under_enforcement(agent, timings) -> None:
    """The same runtime with runc 1.1.5 instead of crun: runc re-executes
    itself from a memfd copy of its binary (the CVE-2019-5736 fix), which
    the default policy's exec-memfd rule allows for /usr/sbin/runc only.
    Its lifecycle raises nothing; a payload in its /tmp is denied and
    reported with its id."""
    runc = PodmanDriver(Podman(runtime="runc"))
    mark = agent.mark()
    container = runc.start(ContainerSpec(name="enforcer-runc"))
    timings["runc_run_s"] = round(container.start_s, 1)
    try:
        assert runc.inspect(container.id, "{{.OCIRuntime}}") == "runc"
        assert runc.inspect(container.id, "{{.Id}}") == container.id
        assert runc.exec_in(container, ["/bin/true"]).returncode == 0
        runc.setup(container, "cp /bin/busybox /tmp/payload-runc")
        assert _all_events(agent, mark) == [], "starting or exec'ing into a runc container raised events"
        attack = _attack(runc, agent, container, "/tmp/payload-runc true", "exec-unusual-dir",
                         path="/tmp/payload-runc", access="exec")
    finally:
        runc.remove(container)
    assert _all_events(agent, mark) == [attack]


def test_the_agent_reported_only_what_the_tests_caused(agent) -> None:
    """No lost or rate-limited record hid anything in this module."""
    kinds = {r.get("type") for r in agent.since(0)}
    assert not kinds & {"lost", "suppressed"}, [r for r in agent.since(0) if r.get("type") in ("lost", "suppressed")]

