"""The single-instance lock: a second agent refused with the first one's pid;
the lock (not a leftover file) says whether an agent runs."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from enforcer import instancelock


def test_second_acquire_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = instancelock.acquire(tmp_path)
    with pytest.raises(instancelock.AgentAlreadyRunning, match=f"pid {os.getpid()}"):
        instancelock.acquire(tmp_path)
    assert instancelock.running_agent(tmp_path) == os.getpid()
    lock.release()
    assert instancelock.running_agent(tmp_path) is None
    instancelock.acquire(tmp_path).release()  # free again


def _hold_and_exit(state_dir: str) -> None:
    instancelock.acquire(Path(state_dir))
    os._exit(0)  # dies holding it, as a killed agent would


def test_a_dead_agent_leaves_no_lock_behind(tmp_path: Path) -> None:
    child = multiprocessing.get_context("fork").Process(target=_hold_and_exit, args=(str(tmp_path),))
    child.start()
    child.join(10)
    assert (tmp_path / instancelock.LOCK_FILE).read_text().strip() == str(child.pid)  # stale file
    assert instancelock.running_agent(tmp_path) is None  # ... that nobody holds
    instancelock.acquire(tmp_path).release()


def test_no_lock_file_means_no_agent(tmp_path: Path) -> None:
    assert instancelock.running_agent(tmp_path / "missing") is None
