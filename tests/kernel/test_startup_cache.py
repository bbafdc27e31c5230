"""Start-up from the compiled-object cache, on the real kernel.

The first agent on a kernel compiles with bcc and keeps the object; the next
one loads that object without bcc and must enforce exactly as well: these
tests deny a real attack after each kind of start. An object that anyone but
root could have written is not used. Start-up times are printed, never
asserted (the machine is emulated and noisy; tests/bench measures them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import pytest

from harness.agent import Agent, run_action, unload
from actions import DENIED
from scenarios import ACTIONS, PY

pytestmark = pytest.mark.kernel

SYSRQ = "/proc/sysrq-trigger"
#: Names in the shared objects of bcc and of the clang/LLVM it links (Debian:
#: libbcc.so.0, libclang-cpp.so.14, libLLVM-14.so.1)
COMPILER_LIBRARIES = ("libbcc", "libclang", "libLLVM")
POLICY = """version = 1
mode = "enforce"

[[rule]]
id = "sysrq"
kind = "sysrq"
"""


def _start(workdir: Path, cache: Path, log_path: Path, name: str) -> Agent:
    policy = workdir / "policy.toml"
    policy.write_text(POLICY)
    agent = Agent(policy, None, log_path.with_name(f"{log_path.stem}-{name}.log"), workdir, cache_dir=cache)
    return agent.start()


def _started(agent: Agent) -> Dict[str, object]:
    record = agent.wait_for(0, lambda r: r.get("type") == "agent" and r.get("message") == "started")
    startup = record["startup"]
    assert isinstance(startup, dict), record
    return startup


def _denies_sysrq(agent: Agent) -> None:
    mark = agent.mark()
    result = run_action([PY, ACTIONS, "open", SYSRQ, "w"])
    assert result.returncode == DENIED, result
    agent.wait_for(mark, lambda r: r.get("type") == "event" and r.get("rule") == "sysrq" and r.get("action") == "blocked")


def _compiler_libraries_mapped(pid: int) -> List[str]:
    """bcc's, clang's and LLVM's shared objects mapped into process `pid`."""
    mapped = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
              if len(line.split()) >= 6}
    return sorted(path for path in mapped if any(name in Path(path).name for name in COMPILER_LIBRARIES))


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _run(workdir: Path, cache: Path, log_path: Path, name: str) -> Dict[str, object]:
    agent = _start(workdir, cache, log_path, name)
    try:
        startup = _started(agent)
        _denies_sysrq(agent)
        # compiled or not, the agent itself never maps the compiler: a
        # compiling start runs bcc in a process of its own (compile_worker)
        assert _compiler_libraries_mapped(agent.pid) == [], startup
        rss = _status_kb(agent.pid, "VmRSS")
        print(f"{name}: {startup}; agent RSS {rss / 1024:.1f} MiB")
        return startup
    finally:
        agent.stop()
        unload(workdir)


def test_a_second_start_loads_the_cached_object_and_one_others_could_write_is_compiled_anew(
        tmp_path: Path, agent_log_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    first = _run(tmp_path, cache, agent_log_path, "cold")
    assert first["object"] == "compiled" and "compile" in first["phases"], first
    objects = list((cache / "objects").glob("*.json"))
    assert len(objects) == 1, objects
    second = _run(tmp_path, cache, agent_log_path, "warm")
    assert second["object"] == "cached" and "compile" not in second["phases"], second
    print(f"start-up: compiled {first['seconds']} s, from the cache {second['seconds']} s")
    # the same object, now writable by anyone: not used, compiled again, and said why
    os.chmod(objects[0], 0o666)
    again = _run(tmp_path, cache, agent_log_path, "distrusted")
    assert again["object"] == "compiled", again
    log = agent_log_path.with_name(f"{agent_log_path.stem}-distrusted.log").read_text()
    assert "not used" in log and "writable by" in log, log[-2000:]
