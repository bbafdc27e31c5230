"""Start and stop tests/unit/fake_agent.py (a process holding the agent lock) for a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")
REPO = Path(__file__).resolve().parents[2]


class FakeAgents:
    """Every fake agent a test started; all ended when the test ends."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.procs: List[subprocess.Popen] = []

    def start(self, mode: str, policy: Path, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(FAKE_AGENT), mode, str(self.state_dir), str(policy)],
            cwd=REPO, env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        line = proc.stdout.readline()
        assert line == "ready\n", f"fake agent did not start: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
