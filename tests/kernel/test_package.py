"""The built .deb, installed in the real-kernel guest, blocks a protected action
when started from its own systemd unit's command line.

Runs inside the guest (see tests/kernel/README.md). The .deb must already be in
dist/ (`packaging/build-deb`; packaging/ci-check builds it before the tests).

The guest shares the host's root read-only, with writable overlays on /etc
and /var (virtme-ng also overlays /usr, but the harness does not promise it).
The test mounts its own tmpfs-backed overlay on /usr for the duration of the
test, installs the package there with dpkg, purges it and unmounts the overlay
afterwards, so nothing of the install outlives the test. systemd is not PID 1 in the guest, so the test plays its part: it
reads ExecStart=, Environment= and EnvironmentFile= from the installed unit,
sets ENFORCER_MODE=enforce in the installed /etc/default/enforcer as an
operator would, and hands the agent a NOTIFY_SOCKET of its own.

Slow: the agent compiles its BPF programs with bcc inside the emulated guest,
1-3 minutes; READY is awaited for up to 10 minutes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
UNIT_PATHS = (Path("/lib/systemd/system/enforcer.service"), Path("/usr/lib/systemd/system/enforcer.service"))
PIN_ROOT = Path("/sys/fs/bpf/enforcer")
SYSRQ = "/proc/sysrq-trigger"
READY_TIMEOUT_S = 600  # bcc compiles under TCG emulation: minutes
EVENT_TIMEOUT_S = 30
STOP_TIMEOUT_S = 60
WATCHDOG_USEC = 4_000_000  # ask for a watchdog too: WATCHDOG=1 every 2 s


def _run(cmd: List[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def _find_deb() -> Path:
    debs = sorted(DIST.glob("enforcer_*_all.deb"))
    if not debs:
        pytest.fail(f"no enforcer_*_all.deb in {DIST}: run packaging/build-deb first "
                    "(packaging/ci-check builds it before the kernel tests)")
    return debs[-1]


# --------------------------------------------------------- unit parsing --


def unit_directives(text: str) -> List[tuple]:
    """(key, value) pairs of the [Service] section, continuation lines joined."""
    out, section, pending = [], None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def read_environment_file(path: Path) -> Dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def service_environment(directives: List[tuple]) -> Dict[str, str]:
    """Environment= then EnvironmentFile= (files override, as in systemd)."""
    env: Dict[str, str] = {}
    for key, value in directives:
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, val = assignment.partition("=")
                env[name] = val
    for key, value in directives:
        if key == "EnvironmentFile":
            optional = value.startswith("-")
            path = Path(value.lstrip("-"))
            if path.is_file():
                env.update(read_environment_file(path))
            elif not optional:
                raise AssertionError(f"EnvironmentFile={value} does not exist")
    return env


def expand_exec(value: str, env: Dict[str, str]) -> List[str]:
    """ExecStart= -> argv, with systemd's ${VAR} (one word) and $VAR (split) rules."""
    value = value.lstrip("@-:+!")
    argv: List[str] = []
    for word in shlex.split(value):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


# ------------------------------------------------------------- install --


class UsrOverlay:
    """A writable, throw-away /usr for this test: tmpfs upper over the shared /usr."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="enforcer-usr-", dir="/run"))
        self.mounted: List[str] = []

    def __enter__(self) -> "UsrOverlay":
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(self.base)], check=True)
        self.mounted.append(str(self.base))
        (self.base / "upper").mkdir()
        (self.base / "work").mkdir()
        opts = f"lowerdir=/usr,upperdir={self.base / 'upper'},workdir={self.base / 'work'}"
        _run(["mount", "-t", "overlay", "overlay", "-o", opts, "/usr"], check=True)
        self.mounted.append("/usr")
        return self

    def __exit__(self, *exc) -> None:
        for target in reversed(self.mounted):
            _run(["umount", "-l", target])
        self.mounted.clear()


def _pinned_instances() -> List[Path]:
    return sorted(p for p in PIN_ROOT.iterdir() if p.is_dir()) if PIN_ROOT.is_dir() else []


def _sysrq_open_for_write() -> Optional[OSError]:
    """Open the SysRq trigger for writing and write NOTHING; the error, if any."""
    try:
        fd = os.open(SYSRQ, os.O_WRONLY)
    except OSError as error:
        return error
    os.close(fd)
    return None


def _wait_for_notify(sock: socket.socket, proc: subprocess.Popen, want: str, timeout_s: float,
                     seen: List[str]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            data = sock.recv(4096).decode(errors="replace")
        except socket.timeout:
            continue
        seen.extend(data.splitlines())
        if want in data.splitlines():
            return True
    return False


def _events(path: Path) -> List[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_installed_deb_blocks_sysrq_write_from_its_unit_command_line(artifacts_dir, agent_log_path):
    deb = _find_deb()
    assert os.stat("/proc/self/ns/mnt").st_ino == os.stat("/proc/1/ns/mnt").st_ino, \
        "the test must run in the initial mount namespace (host scope)"
    # Any earlier instance would make this test's result ambiguous.
    assert not _pinned_instances(), f"enforcer instances already pinned: {_pinned_instances()}"

    events_path = artifacts_dir / "agent-stdout.jsonl"
    notify_log = artifacts_dir / "notify.txt"
    proc: Optional[subprocess.Popen] = None
    installed = False
    with UsrOverlay():
        try:
            # man-db's trigger would rebuild the whole man database: minutes under
            # emulation. /var is the guest's own overlay, so this stays in the guest.
            Path("/var/lib/man-db/auto-update").unlink(missing_ok=True)
            res = _run(["dpkg", "-i", str(deb)])
            (artifacts_dir / "dpkg-install.txt").write_text(res.stdout + res.stderr)
            assert res.returncode == 0, f"dpkg -i {deb.name} failed:\n{res.stdout}{res.stderr}"
            installed = True

            unit = next((p for p in UNIT_PATHS if p.is_file()), None)
            assert unit is not None, f"the package installed no unit at {UNIT_PATHS}"
            directives = unit_directives(unit.read_text())
            keys = dict(directives)
            assert keys.get("Type") == "notify"

            # The operator's switch to enforcement (docs/packaging.md).
            defaults = Path("/etc/default/enforcer")
            text = defaults.read_text()
            assert re.search(r"^ENFORCER_MODE=audit$", text, re.M), "a first install must default to audit"
            assert re.search(r"^ENFORCER_EVENTS=journal$", text, re.M), "the service's events go to the journal"
            text = re.sub(r"^ENFORCER_MODE=.*$", "ENFORCER_MODE=enforce", text, flags=re.M)
            # no journald in the guest: this test reads the events from stdout
            # (tests/kernel/test_event_delivery.py reads the journal sink back)
            defaults.write_text(re.sub(r"^ENFORCER_EVENTS=.*$", "ENFORCER_EVENTS=stdout", text, flags=re.M))

            env_vars = service_environment(directives)
            argv = expand_exec(keys["ExecStart"], env_vars)
            assert argv[:2] == ["/usr/bin/enforcer", "run"], argv
            assert "--mode" in argv and argv[argv.index("--mode") + 1] == "enforce", argv
            (artifacts_dir / "command.txt").write_text(shlex.join(argv) + "\n")

            # A clean environment as systemd gives: in particular no PYTHONPATH
            # (the guest's points at the checkout), so the installed copy runs.
            env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "LANG": "C.UTF-8", **env_vars}
            where = _run(["/usr/bin/python3", "-c", "import enforcer; print(enforcer.__file__)"], env=env, cwd="/")
            assert where.stdout.strip() == "/usr/lib/python3/dist-packages/enforcer/__init__.py", where

            notify_path = Path(tempfile.mkdtemp(prefix="enforcer-notify-", dir="/run")) / "notify"
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(str(notify_path))
                sock.settimeout(1.0)
                env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC=str(WATCHDOG_USEC))
                seen: List[str] = []
                started = time.monotonic()
                with open(events_path, "wb") as out, open(agent_log_path, "wb") as err:
                    proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err)
                try:
                    ready = _wait_for_notify(sock, proc, "READY=1", READY_TIMEOUT_S, seen)
                    ready_s = time.monotonic() - started
                    notify_log.write_text("\n".join(seen) + f"\n(READY after {ready_s:.1f} s)\n")
                    assert ready, (f"no READY=1 within {READY_TIMEOUT_S} s (agent exit status "
                                   f"{proc.poll()}); notifications: {seen}; log: {agent_log_path}")
                    print(f"READY=1 after {ready_s:.1f} s")
                    assert len(_pinned_instances()) == 1

                    error = _sysrq_open_for_write()
                    assert isinstance(error, PermissionError) and error.errno == errno.EPERM, \
                        f"opening {SYSRQ} for writing was not denied: {error!r}"

                    deadline = time.monotonic() + EVENT_TIMEOUT_S
                    blocked = []
                    while time.monotonic() < deadline and not blocked:
                        blocked = [e for e in _events(events_path)
                                   if e.get("type") == "event" and e.get("action") == "blocked"
                                   and e.get("rule") == "sysrq-write-host"]
                        time.sleep(0.5)
                    assert blocked, f"no blocked sysrq-write-host event on stdout: {_events(events_path)}"
                    assert any(e.get("pid") == os.getpid() and e.get("path") == SYSRQ for e in blocked), blocked

                    # The watchdog is fed from the main loop once running.
                    assert _wait_for_notify(sock, proc, "WATCHDOG=1", 10, seen), seen
                finally:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                    try:
                        rc = proc.wait(timeout=STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        rc = proc.wait()
                    notify_log.write_text("\n".join(seen) + "\n")
            assert rc == 0, f"agent exited {rc} on SIGTERM (expected 0); log: {agent_log_path}"

            # Pins outlive the agent: still denied with no agent running.
            assert _pinned_instances(), "SIGTERM removed the pins; they must survive a restart"
            error = _sysrq_open_for_write()
            assert isinstance(error, PermissionError), f"not denied after the agent stopped: {error!r}"

            # Removal runs `enforcer unload` (prerm): nothing outlives the package.
            res = _run(["dpkg", "--purge", "enforcer"])
            (artifacts_dir / "dpkg-purge.txt").write_text(res.stdout + res.stderr)
            assert res.returncode == 0, f"dpkg --purge failed:\n{res.stdout}{res.stderr}"
            installed = False
            assert not _pinned_instances(), "pins left after the package was removed"
            assert not Path("/etc/enforcer/policy.toml").exists()
            # Detaching can lag the unpinning (kernel-facts.md): retry.
            for _ in range(50):
                if _sysrq_open_for_write() is None:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"{SYSRQ} still denied 5 s after the package was removed")
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if installed:
                _run(["/usr/bin/enforcer", "unload"], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
                _run(["dpkg", "--purge", "enforcer"])
            if _pinned_instances():  # never leave enforcement behind for the next tests
                _run(["/usr/bin/python3", "-m", "enforcer", "unload"], cwd=str(REPO),
                     env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)})
