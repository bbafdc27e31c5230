"""The benchmark of issue 15, host side: one command from the repository root.

    .venv/bin/python -m tests.bench            # full run (about 32 min on 2 cores: 32.0 min end to end from a fresh clone, 2026-12-07)
    .venv/bin/python -m tests.bench --quick    # fewer rounds and iterations (about 10 min)
    .venv/bin/python -m tests.bench --kernel 6.12
    .venv/bin/python -m tests.bench --render RAW.json   # tables again from a guest's raw record, no VM

Boots Debian's stock kernel once in QEMU (tests/harness/vm.py builds the vng
command), runs tests/bench/guest.py inside it, then writes
bench-results.json (repository root) and docs/performance.md.
Takes /tmp/vm.lock (flock) for the guest: one VM at a time on this machine.
Installs Debian's fapolicyd on the host if it is missing, without starting it.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from harness import vm  # noqa: E402

from . import report, results  # noqa: E402

LOCK = Path(os.environ.get("ENFORCER_VM_LOCK", "/tmp/vm.lock"))
FULL_TIMEOUT_S, QUICK_TIMEOUT_S = 45 * 60, 20 * 60


def ensure_fapolicyd() -> None:
    """apt-get install fapolicyd if missing, with its service kept from
    starting: Debian's package ships a rule denying execution of everything
    untrusted, and on Debian nothing is in its trust database, so a started
    fapolicyd would stop the host from running programs.  policy-rc.d (exit
    101: "action forbidden") is Debian's way to install a daemon unstarted."""
    if Path("/usr/sbin/fapolicyd").exists():
        return
    policy_rc = Path("/usr/sbin/policy-rc.d")
    ours = not policy_rc.exists()
    if ours:
        policy_rc.write_text("#!/bin/sh\nexit 101\n")
        policy_rc.chmod(0o755)
    try:
        print("bench: installing fapolicyd (apt-get, not started)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "fapolicyd"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    finally:
        if ours:
            policy_rc.unlink()
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "disable", "--now", "fapolicyd"], check=False)


def pick_kernel(series: str) -> Path:
    major, minor = (int(x) for x in series.split("."))
    images = vm.select_kernels(env={})
    for image in images:
        v = vm.debian_kernel_version(image.name)
        if v and v[:2] == (major, minor):
            return image
    raise SystemExit(f"bench: no Debian stock kernel {series} in /boot (found {[i.name for i in images]})")


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"QEMU TCG (software emulation, no KVM), 2 vCPUs, 2 GiB, on a host with {os.cpu_count()} x {model}: "
            "absolute times are inflated, only ratios between configurations count")


def run_guest(kernel: Path, out: Path, quick: bool, skip: str, rounds: int) -> int:
    python = str(REPO / ".venv/bin/python")
    vng = vm.find_vng(python)
    if vng is None:
        raise SystemExit("bench: vng not found: run packaging/dev-setup")
    args = [python, "-m", "tests.bench.guest", "--out", str(out)] + (["--quick"] if quick else [])
    if skip:
        args += ["--skip", skip]
    if rounds:
        args += ["--rounds", str(rounds)]
    script = out / "run-in-guest.sh"
    script.write_text("\n".join([
        "#!/bin/sh",
        f"cd {shlex.quote(str(REPO))} || exit 97",
        "export PYTHONDONTWRITEBYTECODE=1",
        f"export PYTHONPATH={shlex.quote(str(REPO))}",
        " ".join(shlex.quote(a) for a in args),
        f"echo $? > {shlex.quote(str(out / 'guest-exit-code'))}",
        "",
    ]))
    # A thread per vCPU, as every bench run so far: the bench's guest runs
    # alone, and its flood workload (generator + agent) uses both vCPUs.
    cmd = vm.build_vng_command(vng, kernel, out, script, one_thread=False)
    timeout = QUICK_TIMEOUT_S if quick else FULL_TIMEOUT_S
    with open(LOCK, "w") as lock:
        print(f"bench: waiting for {LOCK}", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"bench: booting {kernel.name}; console: {out / 'console.log'}", flush=True)
        with open(out / "console.log", "w") as console:
            # vng runs virtme-run by name: it must be on PATH (it is beside vng), as in vm.GuestRun.
            env = {**os.environ, "PATH": str(Path(vng).parent) + os.pathsep + os.environ.get("PATH", "")}
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, env=env)
            deadline = time.monotonic() + timeout
            assert proc.stdout is not None
            for line in proc.stdout:
                console.write(line)
                if line.startswith("[bench"):
                    print(line, end="", flush=True)
                if time.monotonic() > deadline:
                    os.killpg(proc.pid, 9)
                    print(f"bench: guest killed after {timeout} s", flush=True)
                    break
            proc.wait()
    code = out / "guest-exit-code"
    return int(code.read_text()) if code.exists() else 99


def write_outputs(raw: dict, wall_s: float, out_json: Path, doc_path: Path, measured_at: float) -> results.Results:
    """`measured_at`: when the guest wrote its record (the date the document gives is the measurement's)."""
    date = raw.get("date") or datetime.datetime.fromtimestamp(measured_at, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    res = results.from_raw(raw, date=date, machine=machine(), wall_s=wall_s)
    doc = res.to_json()
    results.validate(doc)
    out_json.write_text(json.dumps(doc, indent=2) + "\n")
    existing = doc_path.read_text() if doc_path.exists() else None
    doc_path.write_text(report.merge_document(existing, report.render_document(doc, errors=raw.get("errors", []))))
    return res


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 rounds, fewer iterations, 10 s idle and flood (about 10 min)")
    ap.add_argument("--kernel", default="6.1", choices=("6.1", "6.12"), help="Debian stock kernel series to boot")
    ap.add_argument("--skip", default="", help="configurations to leave out, comma-separated (development only)")
    ap.add_argument("--rounds", type=int, default=0, help="override the number of rounds (quick 5, full 11)")
    ap.add_argument("--raw", type=Path, default=REPO / "bench-raw.json", help="where to copy the guest's raw record")
    ap.add_argument("--render", type=Path, help="only write the JSON and the document from this raw.json")
    ap.add_argument("--json", type=Path, default=REPO / "bench-results.json")
    ap.add_argument("--doc", type=Path, default=REPO / "docs/performance.md")
    args = ap.parse_args(argv)

    if args.render:
        raw = json.loads(args.render.read_text())
        write_outputs(raw, raw.get("guest_wall_s", 0.0), args.json, args.doc, args.render.stat().st_mtime)
        print(f"bench: wrote {args.json} and {args.doc}")
        return 0

    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (apt-get, the VM's kernel image)")
    ensure_fapolicyd()
    kernel = pick_kernel(args.kernel)
    out = Path(tempfile.mkdtemp(prefix="enforcer-bench-"))
    rc = run_guest(kernel, out, args.quick, args.skip, args.rounds)
    raw_path = out / "raw.json"
    if not raw_path.exists():
        print(f"bench: the guest wrote no raw.json (exit {rc}); see {out / 'console.log'}", file=sys.stderr)
        return 2
    raw = json.loads(raw_path.read_text())
    shutil.copy(raw_path, args.raw)
    # The run's length without the wait for the VM lock: the guest's own wall time.
    write_outputs(raw, raw.get("guest_wall_s", 0.0), args.json, args.doc, raw_path.stat().st_mtime)
    print(f"bench: wrote {args.json}, {args.doc} and bench-raw.json in {time.monotonic() - t0:.0f} s "
          f"(guest exit {rc}; guest files in {out})")
    for error in raw.get("errors", []):
        print(f"bench: guest error:\n{error}", file=sys.stderr)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
