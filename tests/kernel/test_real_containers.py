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

Who did it, from inside a container (issue 12): a nested tree (a service, a
shell, a loop, a payload) started with `podman exec` in the privileged
container; its events name every link, on through the exec session's conmon
to init, with the container's id.

One agent and two containers for the whole module: an agent start costs a
minute or more under emulation, a container about 5 s.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from battery import agent_running, artifacts_root
from harness.agent import Agent
from harness.containers import ROOTFS, WORK, Container, ContainerSpec, Podman, PodmanDriver

from container_attacks import (  # podman: a fixture; attach_agent_log: autouse
    BUSYBOX_MOUNT_DENIED, CG1, EPERM_TEXT, ESCAPE_WAIT_S, ESCAPED, ESCAPED_PART, PAYLOAD_HOST, POLICY, SYSRQ_ATTACKS,
    Event, all_events, arm, assert_denied, assert_one_event, attach_agent_log, clear_escape_trace, container_events,
    disarm, podman, started_container, trigger, wait_for_escape,
)

pytestmark = pytest.mark.kernel


# --- fixtures: one agent, one privileged and one unprivileged container ------------------


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
        arm(podman, container, "enfctrl", mnt)
        try:
            started = time.monotonic()
            podman.setup(container, f"echo {PAYLOAD_HOST} > {mnt}/release_agent")
            trigger(podman, container, mnt)
            assert wait_for_escape(started), (
                "control: with no agent the release_agent escape did not run its payload; "
                "the escape test would prove nothing")
            timings["control_escape_s"] = round(time.monotonic() - started, 1)
            ran_as = ESCAPED.read_text().strip()
            timings["control_payload_ran_as"] = ran_as
            assert ran_as.startswith("uid=0(root)"), f"control: the payload ran, but as {ran_as!r}"
        finally:
            disarm(podman, container, mnt)
    finally:
        podman.remove(container)
        clear_escape_trace()


@pytest.fixture(scope="module")
def agent(podman, control, tmp_path_factory, timings) -> Iterator[Agent]:
    workdir = tmp_path_factory.mktemp("containers")
    started = time.monotonic()
    with agent_running(POLICY, "enforce", workdir, "agent-containers.log") as running:
        timings["agent_start_s"] = round(time.monotonic() - started, 1)
        yield running


@pytest.fixture(scope="module")
def privileged(podman, agent, timings) -> Iterator[Container]:
    yield from started_container(podman, agent, timings, ContainerSpec(privileged=True, cgroupns_host=True),
                                 "privileged")


@pytest.fixture(scope="module")
def unprivileged(podman, agent, timings) -> Iterator[Container]:
    yield from started_container(podman, agent, timings, ContainerSpec(), "unprivileged")




# --- helpers -------------------------------------------------------------------------------


def _attack(podman: PodmanDriver, agent: Agent, container: Container, script: str, rule: str,
            denied_text: str = EPERM_TEXT, **expected: object) -> Event:
    mark = agent.mark()
    outcome = podman.sh(container, script)
    assert_denied(outcome, script, denied_text)
    return assert_one_event(container_events(agent, mark, container, rule), container, rule=rule, **expected)


# --- the container is who the runtime says it is ---------------------------------------------


def test_the_runtime_reports_the_id_the_cgroup_names(podman, privileged, unprivileged) -> None:
    """`podman inspect` agrees with `podman run -d`, and the cgroup path has
    the shape containers.py reads (cgroupfs driver, no systemd)."""
    for container in (privileged, unprivileged):
        assert podman.inspect(container.id, "{{.Id}}") == container.id
        assert container.cgroup == f"/libpod_parent/libpod-{container.id}", container


# --- attacks from the privileged container ---------------------------------------------------


@pytest.mark.parametrize("target,script", SYSRQ_ATTACKS)
def test_sysrq_from_a_privileged_container(podman, agent, privileged, target: str, script: str) -> None:
    _attack(podman, agent, privileged, script, "sysrq-write-container", path=target)


def test_release_agent_escape_from_a_privileged_container(podman, agent, privileged) -> None:
    """The whole escape (MITRE T1611): mount a cgroup v1 hierarchy, arm
    notify_on_release, write release_agent, empty the cgroup. The write is
    denied and reported, and the kernel never runs the payload (which it
    did in `control`, with no agent)."""
    arm(podman, privileged, "enfctr", CG1)
    try:
        _attack(podman, agent, privileged, f"echo {PAYLOAD_HOST} > {CG1}/release_agent", "release-agent",
                path=f"{CG1}/release_agent", access="write")
        trigger(podman, privileged, CG1)
        time.sleep(ESCAPE_WAIT_S)
        ran = [p for p in (ESCAPED, ESCAPED_PART) if p.exists()]
        assert ran == [], f"the payload ran on the host: {ran}"
    finally:
        disarm(podman, privileged, CG1)


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


# --- who did it: a nested process tree in the privileged container (issue 12) -----------------
#
# The attack of tests/kernel/test_ancestry.py, from inside a container:
#
#     busybox-svc sh -c '...'          the "service", started with `podman exec --detach`
#       sh -c '...; true'              a shell it runs
#         busybox-loop sh -c 'for ...' a loop in a shell
#           busybox-pay sh -c 'echo h > /proc/sysrq-trigger'   the payload: denied, exits
#
# busybox picks its applet from argv[0], and runs argv[1]'s when argv[0] starts
# with "busybox": each busybox-* name is a symlink to the container's busybox,
# so each link has its own comm. "; true" keeps ash from exec'ing a last
# command in place (the loop would become `sleep`). The upper three links stay
# alive (sleep) while the test compares the event with /proc; the loop waits
# 3 s before its payloads, a service that has been running a while.

TREE_NAMES = ("busybox-svc", "busybox-loop", "busybox-pay")
TREE_PAYLOAD = "echo h > /proc/sysrq-trigger"
TREE_LOOP = f"sleep 3; for i in 1 2 3; do busybox-pay sh -c '{TREE_PAYLOAD}'; done; sleep 120; true"
TREE_SHELL = f'busybox-loop sh -c "{TREE_LOOP}"; true'
TREE_SERVICE = f"sh -c '{TREE_SHELL.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'; sleep 120; true"
TREE_ARGV = ["/bin/busybox-svc", "sh", "-c", TREE_SERVICE]
TICKS_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class NestedTree:
    service: int  # host pid of busybox-svc
    events: List[Event]  # the three events of its payloads, in order


def _stat_fields(pid: int) -> List[str]:
    """/proc/PID/stat from field 3 (state) on: [0] state, [1] ppid, [19] start time."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def _ppid(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def _start_ticks(pid: int) -> int:
    return int(_stat_fields(pid)[19])


def _cmdline(pid: int) -> List[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def _pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _in_container(pid: int, container: Container) -> bool:
    try:
        return f"0::{container.cgroup}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _find_service(container: Container, timeout_s: float = 30) -> int:
    """The host pid of the tree's service: the one busybox-svc in the container's cgroup."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = []
        for pid in _pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "busybox-svc" and _in_container(pid, container):
                    found.append(pid)
            except OSError:
                continue
        if found:
            assert len(found) == 1, f"more than one busybox-svc in the container: {found}"
            return found[0]
        time.sleep(0.2)
    raise AssertionError("the tree's service did not start in the container")


def _kill_tree(root: int) -> None:
    """SIGKILL `root` and every process below it (found by their ppid)."""
    doomed = {root}
    grew = True
    while grew:
        grew = False
        for pid in _pids():
            try:
                if pid not in doomed and _ppid(pid) in doomed:
                    doomed.add(pid)
                    grew = True
            except (OSError, ValueError, IndexError):
                continue
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def nested_tree(podman, agent, privileged) -> Iterator[NestedTree]:
    """The tree, started once in the privileged container; its three denied
    attempts all arrive before a test looks (none spills into a later test)."""
    for name in TREE_NAMES:
        link = ROOTFS / "bin" / name
        if not link.is_symlink():
            link.symlink_to("busybox")
    mark = agent.mark()
    podman._run(podman.podman.base() + ["exec", "--detach", privileged.id] + TREE_ARGV)
    service: Optional[int] = None
    try:
        service = _find_service(privileged)
        deadline = time.monotonic() + 60
        events = container_events(agent, mark, privileged, "sysrq-write-container")
        while len(events) < 3 and time.monotonic() < deadline:
            time.sleep(1)
            events = container_events(agent, mark, privileged, "sysrq-write-container")
        for event in events:
            print("nested-tree event:", json.dumps(event))
        yield NestedTree(service, events)
    finally:
        if service is not None:
            _kill_tree(service)


def test_a_nested_tree_in_a_container_is_named_link_by_link(podman, privileged, nested_tree) -> None:
    """Issue 12's last condition: each event from the nested tree names every
    link (comm, pid, start time: what the kernel captured when it decided,
    each checked against the live process in /proc, and each the parent of
    the one below), goes on through the runtime's process (the exec session's
    conmon) to init or the bound, and carries the container id the runtime gives."""
    events = nested_tree.events
    assert [(e["rule"], e["comm"], e["path"], e["action"]) for e in events] == [
        ("sysrq-write-container", "busybox-pay", "/proc/sysrq-trigger", "blocked")] * 3, events
    runtime_id = podman.inspect(privileged.id, "{{.Id}}")
    for event in events:
        assert_one_event([event], privileged)
        assert event["container"]["id"] == runtime_id  # type: ignore[index]
        ancestry: List[Event] = event["ancestry"]  # type: ignore[assignment]
        comms = [a["comm"] for a in ancestry]
        assert comms[:4] == ["busybox-loop", "sh", "busybox-svc", "conmon"], event
        loop, _shell, svc, conmon = ancestry[:4]
        assert svc["pid"] == nested_tree.service, (nested_tree.service, event)
        assert event["ppid"] == loop["pid"]
        assert event["start_ns"] is not None and event["start_ns"] >= loop["start_ns"]  # type: ignore[operator]
        # the conmon Podman started for this exec session of this container
        conmon_argv = _cmdline(conmon["pid"])  # type: ignore[arg-type]
        assert Path(conmon_argv[0]).name == "conmon" and "--exec-process-spec" in conmon_argv, conmon_argv
        assert conmon_argv[conmon_argv.index("-c") + 1] == privileged.id, conmon_argv
        # and on to init (pid 1), or to the bound, said so
        if event["ancestry_truncated"]:
            assert len(ancestry) == 8 and ancestry[-1]["pid"] != 1, comms
        else:
            assert ancestry[-1]["pid"] == 1, comms
        # each link is the live process that holds its pid (same start time, same
        # comm), and the one above it is its parent: the chain is the real one
        for link, above in zip(ancestry, ancestry[1:] + [None]):
            pid: int = link["pid"]  # type: ignore[assignment]
            assert link["start_ns"] // TICKS_NS == _start_ticks(pid), link  # type: ignore[operator]
            assert Path(f"/proc/{pid}/comm").read_text().strip() == link["comm"], link
            if above is not None:
                assert _ppid(pid) == above["pid"], (link, above)
        # user space: every link's program and command line, the process's own
        # (all are alive, the upper ones for seconds before the payload ran)
        for link in ancestry:
            pid = link["pid"]  # type: ignore[assignment]
            assert link["details"] in ("connector", "proc"), link
            assert link["cmdline"] == _cmdline(pid) and link["exe"] == os.readlink(f"/proc/{pid}/exe"), link
        assert [a["cmdline"] for a in ancestry[:3]] == [
            ["busybox-loop", "sh", "-c", TREE_LOOP], ["sh", "-c", TREE_SHELL], TREE_ARGV], ancestry
        assert {a["exe"] for a in ancestry[:3]} == {"/bin/busybox"}, ancestry  # as the host's /proc names it


def test_a_short_lived_payload_in_a_container_is_described_as_itself_or_unknown(nested_tree) -> None:
    """The payload exits right after its attempt. Each event describes it by
    its own command line, or says it could not be known (it was gone, or
    exiting, before the agent could read it): never by another process's.
    Before the fix, 2 events of 3 carried the loop's command line as
    "connector" on both kernels (the fork's copy of the parent outlived an
    exec that could not be read, and events were described before the
    connector's thread applied the exec)."""
    own = ["busybox-pay", "sh", "-c", TREE_PAYLOAD]
    described = [(e["pid"], e["details"], e["cmdline"]) for e in nested_tree.events]
    # cmdline null with details "connector": the exe was read, the command
    # line no longer (the process was exiting): partly known, never wrong
    assert described and all(
        cmdline in (own, None) and (details in ("connector", "proc") or cmdline is None)
        for _, details, cmdline in described), described


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
    assert all_events(agent, mark) == []


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
    assert all_events(agent, mark) == []


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
    assert all_events(agent, mark) == []


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
        assert all_events(agent, mark) == [], "starting or exec'ing into a runc container raised events"
        attack = _attack(runc, agent, container, "/tmp/payload-runc true", "exec-unusual-dir",
                         path="/tmp/payload-runc", access="exec")
    finally:
        runc.remove(container)
    assert all_events(agent, mark) == [attack]


def test_the_agent_reported_only_what_the_tests_caused(agent) -> None:
    """No lost or rate-limited record hid anything in this module."""
    kinds = {r.get("type") for r in agent.since(0)}
    assert not kinds & {"lost", "suppressed"}, [r for r in agent.since(0) if r.get("type") in ("lost", "suppressed")]

