"""A stand-in for `enforcer run` without a kernel, for `enforcer reload` and `enforcer allow` tests.

    python fake_agent.py MODE STATE_DIR POLICY

It is a separate process, as the real agent is: it holds the single-instance
lock, publishes its state and answers SIGHUP, so the command finds and
signals it exactly as it finds the real one. MODE:

* `agent`: the real agent logic (enforcer.daemon.Agent: its reload, its state
  file, its main loop) over a fake enforcement whose map writes fail while the
  file named by $FAKE_AGENT_FAIL_APPLY exists;
* `silent`: publishes its state, then ignores SIGHUP (an agent that hangs);
* `starting`: holds the lock but has published nothing yet, and SIGHUP keeps
  its default action (ends the process), as before the real agent's handlers;
* `dies`: publishes its state; SIGHUP ends it.

It prints "ready" once it can be signalled. bcc cannot be imported here.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path

sys.modules["bcc"] = None  # type: ignore[assignment] # the unit tier is pure, its helpers too

from enforcer import daemon  # noqa: E402
from enforcer.generations import GenerationTable  # noqa: E402
from enforcer.instancelock import acquire  # noqa: E402
from enforcer.kernel.maps import ReloadError  # noqa: E402
from enforcer.plan import diff  # noqa: E402
from enforcer.report import Reporter  # noqa: E402


class FakeEnforcement:
    def __init__(self, plan) -> None:
        self.plan = plan
        self.generations = GenerationTable()
        self.generations.add(1, plan)
        self.instance_dir = Path("/sys/fs/bpf/enforcer/fake")

    def apply(self, new_plan):
        marker = os.environ.get("FAKE_AGENT_FAIL_APPLY")
        if marker and os.path.exists(marker):
            raise ReloadError("applying the new policy failed, previous policy kept: ENOMEM (fake)")
        changes = diff(self.plan, new_plan)
        self.plan = new_plan
        self.generations.add(self.generations.current_generation + 1, new_plan)
        return changes

    def retire_previous(self) -> None:
        pass

    def poll(self, timeout_ms: int, budget: int, wake_fd=None) -> bool:
        time.sleep(min(timeout_ms, 20) / 1000)
        return True

    def stats(self):
        return {"events_lost": 0, "blocked": 0, "audited": 0, "allowlisted": 0, "sigio_refused": 0}

    def close(self) -> None:
        pass


def main(mode: str, state_dir: Path, policy: Path) -> int:
    agent = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=state_dir)
    if mode == "agent":
        signal.signal(signal.SIGHUP, agent._on_reload)  # as Agent.start does, before the lock
    agent.lock = acquire(state_dir)
    if mode != "starting":
        loaded = daemon.load_and_compile(policy, None)
        agent.enforcement = FakeEnforcement(loaded.plan)
        agent.loaded = loaded
        agent._publish_state(loaded)
    if mode == "silent":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print("ready", flush=True)
    if mode == "agent":
        return agent.loop()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
