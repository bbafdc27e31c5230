"""The agent's container image, run as the Kubernetes DaemonSet runs it, denies on the host and in containers.

The image is the root filesystem packaging/kubernetes/build-image makes from
Debian packages (/var/lib/enforcer-image/rootfs); it is started with Podman in
the guest the way packaging/kubernetes/daemonset.yaml starts it: host PID
namespace, the node's /sys/fs/bpf, /sys/kernel/btf and /sys/kernel/security
mounted, the policy and allow.d in directories mounted where the ConfigMap
volumes go, the node's /run/enforcer and /var/cache/enforcer, events as JSON
on stdout (read back with `podman logs`, as a cluster's log pipeline reads
the container's stdout). Then:

- SysRq written from the guest itself (the node) and from another,
  privileged container is denied, and each is reported by the image's agent;
- the DaemonSet's readiness and liveness probe commands succeed in it;
- a bad drop-in appearing in allow.d is rejected through the reload
  transaction (--watch-policy) and the policy stays in force;
- the agent's container stopped (a rolling update's first half), SysRq is
  still denied: the pins are in the node's bpffs; a new agent container
  adopts them.

No cluster runs here: the kubelet, the ConfigMap volume's `..data` swap and
the probes' scheduling are not exercised (tests/unit/test_policywatch.py
simulates the swap). Under --privileged; the DaemonSet's capability set is
tried in test_the_daemonset_capabilities_are_enough.

Skipped when the image has not been built (it needs mmdebstrap and Debian's
mirror; docs/kubernetes.md). .ci/run builds it before the tests, and fails
when it cannot, so under CI the image is there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import pytest

from harness.agent import REPO
from harness.containers import (
    ROOTFS, ContainerSpec, Podman, PodmanDriver, build_busybox_rootfs, check_rootfs_location,
)

pytestmark = pytest.mark.kernel

#: Where packaging/kubernetes/build-image unpacks the image's tree: outside
#: every place an exec rule covers (a checkout may be in /tmp).
IMAGE_ROOTFS = Path("/var/lib/enforcer-image/rootfs")
WORK = Path("/var/lib/enforcer-test-image")
POLICY_DIR = WORK / "policy"  # the enforcer-policy ConfigMap's volume
ALLOW_DIR = WORK / "allow.d"  # the enforcer-allow-d ConfigMap's volume
NODE_RUN = WORK / "run"  # the node's /run/enforcer
NODE_CACHE = WORK / "cache"  # the node's /var/cache/enforcer
START_TIMEOUT_S = 900  # a first start compiles the BPF object: minutes under emulation
EPERM_TEXT = "Operation not permitted"

#: The DaemonSet's container args (packaging/kubernetes/daemonset.yaml), mode enforce.
AGENT_ARGV = ("enforcer", "run", "--policy=/etc/enforcer/policy.toml", "--mode=enforce", "--events=stdout",
              "--watch-policy=on", "--metrics-textfile=/run/enforcer/metrics.prom")
#: The DaemonSet's probes, as its exec probes run them.
READINESS = "enforcer status >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 3 ]"
LIVENESS = '[ -n "$(find /run/enforcer/metrics.prom -mmin -1)" ]'
#: securityContext.capabilities.add, for the non-privileged variant.
DAEMONSET_CAPS = ("BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE")

Record = Dict[str, object]


def agent_run_command(podman: Podman, name: str, privileged: bool = True) -> List[str]:
    # --read-only: the DaemonSet's readOnlyRootFilesystem (Podman puts tmpfs on /tmp
    # and /run, as the DaemonSet's emptyDir on /tmp)
    cmd = podman.base() + ["run", "--detach", "--name", name, "--network", "none", "--pid=host", "--read-only"]
    if privileged:
        cmd.append("--privileged")
    else:
        cmd += ["--cap-drop=all", *(f"--cap-add={cap}" for cap in DAEMONSET_CAPS),
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    for host, inside, mode in (
        ("/sys/fs/bpf", "/sys/fs/bpf", "rw"),
        ("/sys/kernel/btf", "/sys/kernel/btf", "ro"),
        ("/sys/kernel/security", "/sys/kernel/security", "ro"),
        (str(POLICY_DIR), "/etc/enforcer-k8s/policy", "ro"),
        (str(ALLOW_DIR), "/etc/enforcer-k8s/allow.d", "ro"),
        (str(NODE_CACHE), "/var/cache/enforcer", "rw"),
        (str(NODE_RUN), "/run/enforcer", "rw"),
    ):
        cmd += ["-v", f"{host}:{inside}:{mode}"]
    # :O an overlay over the image's tree: the container writes nothing into dist/
    return cmd + ["--rootfs", f"{IMAGE_ROOTFS}:O", *AGENT_ARGV]


class ImageAgent:
    """The agent's container: started, its stdout read back as JSON records."""

    def __init__(self, podman: Podman, name: str, privileged: bool = True) -> None:
        self.podman = podman
        self.name = name
        self.privileged = privileged
        self.started: Record = {}

    def _run(self, cmd: Sequence[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def logs(self) -> str:
        result = self._run(self.podman.base() + ["logs", self.name], check=False)
        return result.stdout + result.stderr

    def records(self) -> List[Record]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def running(self) -> bool:
        state = self._run(self.podman.inspect(self.name, "{{.State.Running}}"), check=False)
        return state.stdout.strip() == "true"

    def start(self) -> Record:
        self._run(agent_run_command(self.podman, self.name, self.privileged))
        return self.wait_for(lambda r: r.get("type") == "agent" and r.get("message") == "started",
                             START_TIMEOUT_S, "the agent's `started` record")

    def wait_for(self, match, timeout_s: float, what: str) -> Record:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in self.records():
                if match(record):
                    return record
            if not self.running():
                raise AssertionError(f"the agent's container stopped before {what}:\n{self.logs()[-4000:]}")
            time.sleep(1)
        raise AssertionError(f"no {what} within {timeout_s} s:\n{self.logs()[-4000:]}")

    def exec_sh(self, script: str) -> subprocess.CompletedProcess:
        return self._run(self.podman.exec_in(self.name, ["sh", "-c", script]), check=False)

    def stop(self) -> None:
        self._run(self.podman.base() + ["stop", "--time", "30", self.name])

    def remove(self) -> None:
        self._run(self.podman.base() + ["rm", "--force", "--time", "0", self.name], check=False)


def sysrq_from_node() -> subprocess.CompletedProcess:
    # 'h' only prints SysRq's help to the kernel log, should the write get through
    return subprocess.run(["sh", "-c", "echo h > /proc/sysrq-trigger"], capture_output=True, text=True, timeout=30)


def unload_pins() -> None:
    """`enforcer unload` from the checkout, for the agent whose state is the node's /run/enforcer."""
    subprocess.run([sys.executable, "-m", "enforcer", "unload"], cwd=REPO, capture_output=True, timeout=120,
                   env={"ENFORCER_STATE_DIR": str(NODE_RUN), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    if not (IMAGE_ROOTFS / "usr" / "bin" / "enforcer").exists():
        pytest.skip(f"no image at {IMAGE_ROOTFS}: build it first, as root: packaging/kubernetes/build-image")
    check_rootfs_location(IMAGE_ROOTFS)
    if WORK.exists():
        shutil.rmtree(WORK)
    for directory in (POLICY_DIR, ALLOW_DIR, NODE_RUN, NODE_CACHE):
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    shutil.copy(REPO / "policies" / "default.toml", POLICY_DIR / "policy.toml")
    build_busybox_rootfs(ROOTFS)
    yield Podman()
    unload_pins()


@pytest.fixture(scope="module")
def agent(podman) -> Iterator[ImageAgent]:
    running = ImageAgent(podman, "enforcer-agent")
    try:
        running.started = running.start()
        yield running
    finally:
        _save(running, "image-agent.log")
        running.remove()


def _save(agent: ImageAgent, name: str) -> None:
    out = Path(os.environ.get("ENFORCER_TEST_ARTIFACTS") or WORK) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(agent.logs())


def test_the_image_agent_starts_and_enforces(agent) -> None:
    assert agent.started["mode"] == "enforce", agent.started
    assert agent.exec_sh(READINESS).returncode == 0, "the DaemonSet's readiness probe failed"
    status = agent.exec_sh("enforcer status --json")
    assert json.loads(status.stdout)["enforcing"] is True, status.stdout + status.stderr


def test_sysrq_from_the_node_is_denied_and_reported(agent) -> None:
    outcome = sysrq_from_node()
    assert outcome.returncode != 0 and EPERM_TEXT in outcome.stderr, outcome
    record = agent.wait_for(lambda r: r.get("type") == "event" and r.get("rule") == "sysrq-write-host",
                            60, "an event for SysRq from the node")
    assert record["action"] == "blocked", record


def test_sysrq_from_another_container_is_denied_and_reported(agent, podman) -> None:
    driver = PodmanDriver(podman)
    container = driver.start(ContainerSpec(privileged=True, cgroupns_host=True, name="attacker"))
    try:
        outcome = driver.sh(container, "echo h > /proc/sysrq-trigger")
        assert outcome.returncode != 0 and EPERM_TEXT in outcome.stderr, outcome
        record = agent.wait_for(
            lambda r: r.get("type") == "event" and isinstance(r.get("container"), dict)
            and r["container"].get("id") == container.id, 60, "an event from the attacker's container")
        assert record["action"] == "blocked" and str(record["rule"]).startswith("sysrq"), record
        assert record["container"]["runtime"] == "podman", record
    finally:
        driver.remove(container)


def test_the_liveness_probe_sees_the_main_loop(agent) -> None:
    deadline = time.monotonic() + 30
    while agent.exec_sh(LIVENESS).returncode != 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert agent.exec_sh(LIVENESS).returncode == 0, "the metrics file is not fresh"


def test_a_bad_drop_in_is_rejected_and_a_fixed_one_reloads(agent) -> None:
    (ALLOW_DIR / "50-bad.toml").write_text("version = 1\n")  # not allowed in a drop-in
    rejected = agent.wait_for(lambda r: r.get("message") == "reload rejected, previous policy still in force",
                              120, "the rejected reload")
    assert "50-bad.toml" in str(rejected.get("error")), rejected
    assert "Operation not permitted" in sysrq_from_node().stderr  # still enforcing
    (ALLOW_DIR / "50-bad.toml").unlink()
    agent.wait_for(lambda r: r.get("message") == "reloaded", 120, "the reload once the bad drop-in is gone")


def test_pins_outlive_the_agent_container_and_a_new_one_adopts_them(agent, podman) -> None:
    agent.stop()  # a rolling update deletes the old pod first
    outcome = sysrq_from_node()
    assert outcome.returncode != 0 and EPERM_TEXT in outcome.stderr, ("no agent running: pins must deny", outcome)
    successor = ImageAgent(podman, "enforcer-agent-2")
    try:
        started = successor.start()
        assert started["startup"]["object"] == "adopted", started
        assert EPERM_TEXT in sysrq_from_node().stderr
    finally:
        _save(successor, "image-agent-2.log")
        successor.remove()


def test_the_daemonset_capabilities_are_enough(podman) -> None:
    """Not privileged: only the DaemonSet's capabilities, seccomp and AppArmor unconfined."""
    unload_pins()  # a fresh start, not an adoption: loading and attaching must work with these capabilities
    capped = ImageAgent(podman, "enforcer-agent-caps", privileged=False)
    try:
        capped.start()
        assert capped.exec_sh(READINESS).returncode == 0
        assert EPERM_TEXT in sysrq_from_node().stderr
    finally:
        _save(capped, "image-agent-caps.log")
        capped.remove()
