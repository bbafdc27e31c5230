"""Fixtures for kernel tests; these run inside the guest (ENFORCER_IN_GUEST=1).

On the host, kernel tests are stand-ins (see tests/conftest.py) that request
no fixtures, so nothing here runs there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import guestfs, vm


@pytest.fixture(scope="session", autouse=True)
def kernel_mounts():
    """securityfs and bpffs, mounted if the guest has not mounted them."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests must run as root (they do inside the VM)")
    guestfs.ensure_agent_mounts()


@pytest.fixture
def artifacts_dir(request, tmp_path) -> Path:
    """A directory whose files the host attaches to this test's failure report
    (e.g. the agent's log).  Inside the VM it is on the host-shared results
    dir; run elsewhere it falls back to tmp_path."""
    base = os.environ.get(vm.ENV_ARTIFACTS)
    if not base:
        return tmp_path
    d = Path(base) / vm.artifact_dir_name(request.node.nodeid)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def agent_log_path(artifacts_dir) -> Path:
    """Where a test should make the agent write its log (attached on failure)."""
    return artifacts_dir / "agent.log"


@pytest.fixture(scope="session")
def bcc_headers(tmp_path_factory):
    """enforcer's BTF-generated include tree for bcc, for the running kernel."""
    from enforcer.kernel import headers

    return headers.generate_headers(cache_root=tmp_path_factory.mktemp("btf-cache"))


def pytest_runtest_logreport(report) -> None:
    """Append each phase's result to results.jsonl as it happens, so the host
    still learns what finished if the guest is killed (timeout, panic)."""
    base = os.environ.get(vm.ENV_ARTIFACTS)
    if not base or not vm.env_flag(os.environ, vm.ENV_IN_GUEST):
        return
    skip_reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        skip_reason = str(report.longrepr[2])
    rec = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
        "longrepr": report.longreprtext if report.failed else "",
        "skip_reason": skip_reason,
        "wasxfail": getattr(report, "wasxfail", None),
        "sections": [list(s) for s in report.sections],
    }
    # results.jsonl sits beside the artifacts dir, in the results dir.
    with open(Path(base).parent / vm.JSONL_NAME, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _kmsg(line: str) -> None:
    if vm.env_flag(os.environ, vm.ENV_IN_GUEST):
        with open("/dev/kmsg", "w") as f:
            f.write(line + "\n")


def pytest_runtest_logstart(nodeid, location) -> None:
    """Mark each test's start and end in the kernel log (see vm.dmesg_for_test)."""
    _kmsg(vm.KMSG_START + nodeid)


def pytest_runtest_logfinish(nodeid, location) -> None:
    _kmsg(vm.KMSG_END + nodeid)
