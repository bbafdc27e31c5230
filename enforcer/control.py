"""`enforcer reload`: ask the running agent to re-read its policy and wait for its verdict.

The agent is found through its single-instance lock (enforcer.instancelock),
never through a pid file that may be stale. The protocol (the agent's side is
in enforcer.daemon.Agent.reload, the status in enforcer.state.ReloadStatus):

1. read the agent's published state: the reloads it has begun and finished;
2. send SIGHUP;
3. wait until it has finished a reload numbered above every one begun before
   step 1: that one read the policy files after the caller changed them.

Every way this can go wrong has its own sentence: no agent, an agent still
starting (it has not published its state yet: waited for, within the
timeout), an agent of another user (not root), an agent that stops or is
replaced while we wait, and no answer in time.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from enforcer.exitcodes import ExitCode
from enforcer.instancelock import running_agent
from enforcer.state import STATE_FILE, AgentState, default_state_dir, read_state

__all__ = ["DEFAULT_TIMEOUT_S", "ReloadOutcome", "print_outcome", "reload_agent", "reload_command"]

#: A reload parses, compiles and writes maps, then waits for an RCU grace
#: period: well under a second on hardware, a few seconds under emulation.
DEFAULT_TIMEOUT_S = 30.0
POLL_S = 0.05


@dataclass(frozen=True)
class ReloadOutcome:
    status: ExitCode
    message: str  # printed to stdout when status is OK, to stderr otherwise
    agent_pid: Optional[int] = None
    generation: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.status == ExitCode.OK


def _failed(status: ExitCode, message: str, pid: Optional[int] = None) -> ReloadOutcome:
    return ReloadOutcome(status, message, pid)


def _published(state_dir: Path, pid: int) -> Optional[AgentState]:
    """The state the agent holding the lock published, if it is that agent's."""
    state = read_state(state_dir)
    return state if state is not None and state.pid == pid else None


def reload_agent(state_dir: Optional[Path] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 kill: Callable[[int, int], None] = os.kill) -> ReloadOutcome:
    """SIGHUP to the running agent, then its verdict on the reload that read the files as they are now."""
    state_dir = state_dir or default_state_dir()
    deadline = clock() + timeout_s
    pid = running_agent(state_dir)
    if pid is None:
        return _failed(ExitCode.NO_AGENT, f"no agent running (no process holds {state_dir / 'agent.lock'}); "
                                          "start it: systemctl start enforcer")
    if pid == 0:
        return _failed(ExitCode.UNAVAILABLE, f"an agent holds {state_dir / 'agent.lock'} but recorded no pid: "
                                             "cannot signal it; systemctl reload enforcer")
    state_file = state_dir / STATE_FILE
    if state_file.exists() and not os.access(state_file, os.R_OK):
        return _failed(ExitCode.UNAVAILABLE, f"must be root: the agent's state ({state_file}) is root's", pid)
    state = _published(state_dir, pid)
    while state is None:  # holding the lock but still compiling and loading: wait for it
        if running_agent(state_dir) != pid:
            return _failed(ExitCode.UNAVAILABLE, f"the agent (pid {pid}) stopped while starting", pid)
        if clock() >= deadline:
            return _failed(ExitCode.UNAVAILABLE, f"the agent (pid {pid}) is still starting after {timeout_s:g} s "
                                                 "(it has not published its state): not signalled; try again when "
                                                 "`enforcer status` shows it running", pid)
        sleep(POLL_S)
        state = _published(state_dir, pid)
    if state.reload is None:
        return _failed(ExitCode.UNAVAILABLE, f"the agent (pid {pid}) does not publish reload results (an older "
                                             "enforcer): not signalled; use systemctl reload enforcer and read "
                                             "its verdict with: enforcer events --type agent", pid)
    target = max(state.reload.requested, state.reload.finished) + 1
    try:
        kill(pid, signal.SIGHUP)
    except PermissionError:
        return _failed(ExitCode.UNAVAILABLE, f"must be root to signal the agent (pid {pid})", pid)
    except ProcessLookupError:
        return _failed(ExitCode.NO_AGENT, f"the agent (pid {pid}) stopped before it could be signalled", pid)
    while True:
        now_pid = running_agent(state_dir)
        if now_pid != pid:
            what = "stopped" if now_pid is None else f"was replaced by pid {now_pid}"
            return _failed(ExitCode.UNAVAILABLE, f"the agent (pid {pid}) {what} before answering; whether the new "
                                                 "files are in force is not known: enforcer status", pid)
        state = _published(state_dir, pid)
        result = state.reload if state is not None else None
        if result is not None and result.finished >= target and result.ok is not None:
            if result.ok:
                return ReloadOutcome(ExitCode.OK, result.message, pid, result.generation)
            status = ExitCode.INVALID_POLICY if result.failure == "policy" else ExitCode.UNAVAILABLE
            return ReloadOutcome(status, f"{result.message}\n(the previous policy, generation "
                                         f"{result.generation}, stays in force)", pid, result.generation)
        if clock() >= deadline:
            return _failed(ExitCode.UNAVAILABLE, f"no answer from the agent (pid {pid}) within {timeout_s:g} s: "
                                                 "SIGHUP was sent, its verdict is not known; read it with: "
                                                 "enforcer events --type agent", pid)
        sleep(POLL_S)


def print_outcome(outcome: ReloadOutcome) -> None:
    """A verdict on stdout; anything else (rejected, no agent, no answer) on stderr."""
    print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)


def reload_command(args) -> int:  # argparse.Namespace
    outcome = reload_agent(timeout_s=args.timeout)
    print_outcome(outcome)
    return outcome.status
