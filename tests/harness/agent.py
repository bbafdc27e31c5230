"""Drive a real `enforcer run` inside the guest: start, wait for READY, read events, reload, stop.

The agent is started the way systemd starts it: with NOTIFY_SOCKET pointing at
a datagram socket of ours, and it counts as started only when READY=1 arrives
(sent after every program is attached and every map filled).

Used by the kernel tests (tests/kernel) and by the ./try demo
(tests/harness/trydemo_guest.py); only the standard library.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]

#: bcc compiles the BPF C inside the emulated guest: that alone takes a minute.
START_TIMEOUT_S = 900
EVENT_TIMEOUT_S = 20

Event = Dict[str, object]


class AgentError(AssertionError):
    pass


class Agent:
    def __init__(self, policy: Path, mode: Optional[str], log_path: Path, workdir: Path,
                 extra_args: Sequence[str] = (), cache_dir: Optional[Path] = None) -> None:
        """cache_dir: the agent's ENFORCER_CACHE_DIR; by default the one the
        environment names, else the agent's own default (/var/cache/enforcer):
        shared by the agents of one guest, so that only the first compiles."""
        self.policy = policy
        self.cache_dir = cache_dir
        self.mode = mode
        self.extra_args = tuple(extra_args)
        self.log_path = log_path
        self.workdir = workdir
        self.records: List[Event] = []
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._log = None

    # --- lifecycle ----------------------------------------------------------------

    def command(self) -> List[str]:
        cmd = [sys.executable, "-m", "enforcer", "run", "--policy", str(self.policy)]
        if self.mode:
            cmd += ["--mode", self.mode]
        return cmd + list(self.extra_args)

    def start(self, timeout_s: float = START_TIMEOUT_S,
              progress: Optional[Callable[[float], None]] = None) -> "Agent":
        """Start the agent; return once it sent READY=1.

        `progress`, if given, is called about once a second with the seconds
        waited so far: bcc compiles for a minute or more under emulation, and
        a person watching should see that it is still going."""
        notify_path = self.workdir / "notify.sock"
        if notify_path.exists():
            notify_path.unlink()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(1.0)
        env = dict(os.environ)
        env.update(
            NOTIFY_SOCKET=str(notify_path),
            ENFORCER_STATE_DIR=str(self.workdir / "state"),
            PYTHONUNBUFFERED="1",
        )
        if self.cache_dir is not None:
            env["ENFORCER_CACHE_DIR"] = str(self.cache_dir)
        self._log = open(self.log_path, "a")
        self._log.write(f"$ {' '.join(self.command())}\n")
        self._log.flush()
        self._proc = subprocess.Popen(
            self.command(), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        started = time.monotonic()
        deadline = started + timeout_s
        try:
            while True:
                if progress is not None:
                    progress(time.monotonic() - started)
                if self._proc.poll() is not None:
                    raise AgentError(f"agent exited with {self._proc.returncode} before READY=1:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise AgentError(f"no READY=1 within {timeout_s:.0f}s:\n{self.log_tail()}")
                try:
                    message = notify.recv(4096).decode()
                except socket.timeout:
                    continue
                self._log.write(f"[notify] {message!r}\n")
                if "READY=1" in message.split("\n"):
                    return self
        finally:
            notify.close()

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._log.write(line)
            self._log.flush()
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.records.append(record)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self, timeout_s: float = 60) -> int:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
                raise AgentError(f"agent did not stop within {timeout_s}s of SIGTERM")
        return self._proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- events ---------------------------------------------------------------------

    def mark(self) -> int:
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> List[Event]:
        with self._lock:
            return list(self.records[mark:])

    def wait_for(self, mark: int, predicate: Callable[[Event], bool], timeout_s: float = EVENT_TIMEOUT_S) -> Event:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in self.since(mark):
                if predicate(record):
                    return record
            time.sleep(0.2)
        raise AgentError(
            f"no matching record within {timeout_s}s; records since mark:\n"
            + "\n".join(json.dumps(r) for r in self.since(mark))
        )

    def events(self, mark: int, expect: Optional[Callable[[Event], bool]] = None, settle_s: float = 1.0,
               quiet_s: float = 3.0) -> List[Event]:
        """Security events since `mark`.

        With `expect`: wait until such an event arrives (at most
        EVENT_TIMEOUT_S), then `settle_s` more so duplicates would show. Without:
        give the ring buffer `quiet_s` to prove that nothing comes.
        """
        if expect is None:
            time.sleep(quiet_s)
        else:
            deadline = time.monotonic() + EVENT_TIMEOUT_S
            while time.monotonic() < deadline and not any(expect(r) for r in self.since(mark)):
                time.sleep(0.1)
            time.sleep(settle_s)
        return [r for r in self.since(mark) if r.get("type") == "event"]

    def reload(self, policy_text: str) -> Event:
        """Replace the policy file, SIGHUP, and return the agent's verdict record."""
        assert self._proc is not None
        mark = self.mark()
        self.policy.write_text(policy_text)
        self._proc.send_signal(signal.SIGHUP)
        return self.wait_for(
            mark, lambda r: r.get("type") == "agent" and str(r.get("message", "")).startswith(("reloaded", "reload rejected"))
        )


@dataclass(frozen=True)
class ActionResult:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def run_action(args: Sequence[str], timeout_s: float = 60) -> ActionResult:
    """Start one action process (tests/kernel/actions.py or any command) and wait for it."""
    proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout_s)
    return ActionResult(proc.pid, proc.returncode, out, err)


def unload(workdir: Path) -> None:
    """Remove pinned programs so that later tests run without enforcement."""
    subprocess.run([sys.executable, "-m", "enforcer", "unload"], cwd=REPO, check=True, capture_output=True,
                   env=dict(os.environ, ENFORCER_STATE_DIR=str(workdir / "state")))


def enforcer_programs() -> Dict[str, int]:
    """Loaded BPF programs of enforcer's (their C names start with lsm__), by name: how many of each."""
    shown = json.loads(subprocess.run(["bpftool", "prog", "show", "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    counts: Dict[str, int] = {}
    for program in shown:
        name = str(program.get("name", ""))
        if name.startswith("lsm__"):
            counts[name] = counts.get(name, 0) + 1
    return counts


def wait_for_no_enforcer_programs(timeout_s: float = 60) -> Dict[str, int]:
    """Wait until no enforcer program is loaded; what is still loaded then.

    An unloaded agent's programs go when the kernel frees them: at once on
    6.1, after a grace period of seconds on 6.12. Until then they still decide."""
    deadline = time.monotonic() + timeout_s
    left = enforcer_programs()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = enforcer_programs()
    return left
