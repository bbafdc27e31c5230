"""Who did it (issue 12.1), on a real kernel: an attack from a nested process
tree names every link of the tree, and a payload that exits right after its
denied attempt is still described by its executable and command line.

The tree, as an attack through a compromised service looks:

    enftest-svc -c '...'       the "service" (dash under another name)
      sh -c '...; true'        a shell it runs
        enftest-loop -c 'for ...'   a loop in a shell
          enftest-pay -c 'echo b > /proc/sysrq-trigger'   the payload: denied, exits

Each name is a symlink to /bin/dash, so each process has its own comm. The
upper three stay alive (sleep) while the test compares the event with /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from battery import own_agent
from harness.agent import Agent

pytestmark = pytest.mark.kernel

POLICY = """version = 1
mode = "enforce"

[[rule]]
id = "sysrq-write"
kind = "sysrq"
access = ["write"]
files = ["trigger"]
"""

PAYLOAD = "echo b > /proc/sysrq-trigger"
LOOP = f"for i in 1 2 3; do enftest-pay -c '{PAYLOAD}'; done; sleep 120"
SHELL = f'enftest-loop -c "{LOOP}"; true'  # "; true": dash would exec a lone command in place
SERVICE = f"sh -c '{SHELL.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'; sleep 120"
TICKS_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[Agent]:
    workdir = tmp_path_factory.mktemp("ancestry")
    log = workdir / "agent-copy.log"
    yield from own_agent(POLICY, workdir, log)


@pytest.fixture
def tree(tmp_path) -> Iterator[subprocess.Popen]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("enftest-svc", "enftest-loop", "enftest-pay"):
        (bin_dir / name).symlink_to("/bin/dash")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C"}
    service = subprocess.Popen(["enftest-svc", "-c", SERVICE], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield service
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()


def _start_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, after pid and (comm)


def _cmdline(pid: int) -> List[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def _first_payload_event(agent: Agent, service: subprocess.Popen) -> Dict[str, object]:
    """The first event of this test's tree (its service's pid is in the ancestry)."""
    def ours(record: Dict[str, object]) -> bool:
        return (record.get("type") == "event" and record.get("comm") == "enftest-pay"
                and any(a["pid"] == service.pid for a in record["ancestry"]))  # type: ignore[index, union-attr]

    return agent.wait_for(0, ours, timeout_s=60)


def test_ancestry_names_every_link_of_a_nested_tree(agent, tree) -> None:
    event = _first_payload_event(agent, tree)
    ancestry = event["ancestry"]
    comms = [a["comm"] for a in ancestry]
    assert comms[:3] == ["enftest-loop", "sh", "enftest-svc"], event
    loop, shell, service = ancestry[:3]
    assert service["pid"] == tree.pid
    assert event["ppid"] == loop["pid"]
    # the chain goes on through the test runner up to init (pid 1), or to the bound, said so
    if event["ancestry_truncated"]:
        assert len(ancestry) == 8 and ancestry[-1]["pid"] != 1, comms
    else:
        assert ancestry[-1]["pid"] == 1, comms
    # the upper links are alive: their pids and start times are theirs, not a reused pid's
    for link in (loop, shell, service):
        assert link["start_ns"] // TICKS_NS == _start_ticks(link["pid"]), link
    assert event["start_ns"] is not None and event["start_ns"] >= loop["start_ns"]
    assert isinstance(event["loginuid"], int) and isinstance(event["sessionid"], int)
    # user space: each link's exe and command line
    assert shell["cmdline"] == ["sh", "-c", SHELL] == _cmdline(shell["pid"])
    assert loop["cmdline"] == ["enftest-loop", "-c", LOOP] == _cmdline(loop["pid"])
    assert service["cmdline"] == ["enftest-svc", "-c", SERVICE]
    assert {link["exe"] for link in (loop, shell, service)} == {os.path.realpath("/bin/dash")}


def test_a_short_lived_payload_is_described_from_the_connector_cache(agent, tree) -> None:
    event = _first_payload_event(agent, tree)
    payload_pid = int(event["pid"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{payload_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{payload_pid}").exists(), "the payload should have exited right after its attempt"
    assert event["details"] == "connector", event
    assert event["cmdline"] == ["enftest-pay", "-c", PAYLOAD]
    assert event["cmdline_truncated"] is False
    assert event["exe"] == os.path.realpath("/bin/dash")
