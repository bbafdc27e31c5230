"""enforcer.kernel.compile_worker, without bcc: how the agent reads the
worker's answer (the compile itself: tests/compile/test_bpf_compile.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from enforcer.kernel import compile_worker
from enforcer.kernel.bpfobject import CompiledObject, MapSpec
from enforcer.kernel.compile_worker import CompileWorkerError, compile_in_worker


def _worker_printing(monkeypatch, script: str) -> None:
    monkeypatch.setattr(compile_worker, "worker_command", lambda *args: [sys.executable, "-c", script])


def test_the_worker_runs_this_interpreter_on_this_enforcer() -> None:
    argv = compile_worker.worker_command(Path("/sys/kernel/btf/vmlinux"), Path("/usr/share/enforcer/bpf"),
                                         Path("/var/cache/enforcer/btf"))
    assert argv == [sys.executable, "-m", "enforcer.kernel.compile_worker", "/sys/kernel/btf/vmlinux",
                    "/usr/share/enforcer/bpf", "/var/cache/enforcer/btf"]


def test_the_object_the_worker_prints_is_read_back(monkeypatch) -> None:
    obj = CompiledObject((MapSpec("settings", 2, 4, 40, 1, 0),), (), "GPL")
    _worker_printing(monkeypatch, f"import sys; sys.stdout.write({obj.to_json()!r})")
    assert compile_in_worker(Path("btf"), Path("bpf"), Path("cache")) == obj


def test_a_failed_compile_says_what_the_worker_said(monkeypatch) -> None:
    _worker_printing(monkeypatch, "import sys; print('enforcer.bpf.c:12: error: use of undeclared x', "
                                  "file=sys.stderr); sys.exit(1)")
    with pytest.raises(CompileWorkerError, match="enforcer.bpf.c:12: error: use of undeclared x"):
        compile_in_worker(Path("btf"), Path("bpf"), Path("cache"))


def test_output_that_is_no_object_is_refused(monkeypatch) -> None:
    _worker_printing(monkeypatch, "print('{\"format\": 1, \"object\": {}}')")
    with pytest.raises(CompileWorkerError, match="printed no compiled object"):
        compile_in_worker(Path("btf"), Path("bpf"), Path("cache"))


def test_a_worker_killed_without_a_word_is_reported_by_its_status(monkeypatch) -> None:
    _worker_printing(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(CompileWorkerError, match="killed by signal 9: it said nothing"):
        compile_in_worker(Path("btf"), Path("bpf"), Path("cache"))


def test_the_worker_refuses_a_wrong_command_line(capsys) -> None:
    assert compile_worker.main(["only-one"]) == 2
    assert "usage:" in capsys.readouterr().err
