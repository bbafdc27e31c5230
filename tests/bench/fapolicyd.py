"""fapolicyd, the user-space peer (guest only).

Debian's fapolicyd 1.1.7 (installed on the host by the bench command; the
guest sees the host's /usr and has writable overlays on /etc and /var).
Configured as close to enforcer's exec rule as its rule language allows:

    deny_audit perm=execute all : dir=/tmp/
    allow perm=any all : all

Everything else is allowed, so its trust database is irrelevant and is set
to the `file` backend (Debian's default adds `rpmdb`, absent on Debian).
Debian ships rules.d/90-deny-execute.rules ("deny execution of anything
untrusted"), which would deny every program: it is removed in the guest.
`watch_fs` must name the guest's filesystems (its root is 9p), or fapolicyd
would never see the workloads' files: it is given every type mounted in
the guest where the workloads run.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

ETC = Path("/etc/fapolicyd")
RULES = "deny_audit perm=execute all : dir=/tmp/\nallow perm=any all : all\n"
BINARY = "/usr/sbin/fapolicyd"


def configure(watch_fs: str) -> None:
    conf = ETC / "fapolicyd.conf"
    lines = []
    for line in conf.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "trust":
            line = "trust = file"
        elif key == "watch_fs":
            line = f"watch_fs = {watch_fs}"
        lines.append(line)
    conf.write_text("\n".join(lines) + "\n")
    rules_d = ETC / "rules.d"
    for old in rules_d.glob("*.rules"):
        old.unlink()
    (rules_d / "10-bench.rules").write_text(RULES)
    # fagenrules concatenates rules.d into compiled.rules, which the daemon reads.
    subprocess.run(["/usr/sbin/fagenrules"], check=True, capture_output=True, text=True)
    # The daemon drops to its own user and writes its fifo and trust database there.
    for directory in (Path("/run/fapolicyd"), Path("/var/lib/fapolicyd")):
        directory.mkdir(exist_ok=True)
        shutil.chown(directory, "fapolicyd", "fapolicyd")


class Daemon:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: Optional[subprocess.Popen] = None

    def start(self, is_denying, timeout_s: float = 120) -> float:
        """Start in the foreground (--debug-deny logs only denials, so the
        log stays quiet for the allowed workloads) and return the seconds
        until `is_denying()` says the /tmp rule is in force."""
        t0 = time.monotonic()
        log = open(self.log_path, "a")
        self._proc = subprocess.Popen([BINARY, "--debug-deny"], stdout=log, stderr=log)
        while time.monotonic() - t0 < timeout_s:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fapolicyd exited with {self._proc.returncode}; see {self.log_path}")
            if is_denying():
                return time.monotonic() - t0
            time.sleep(0.5)
        raise RuntimeError(f"fapolicyd did not deny exec from /tmp within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        # fanotify marks go with the daemon's fanotify fd; give the kernel a moment.
        time.sleep(0.5)
