"""Run the kernel-marked tests inside a QEMU guest booting a stock kernel.

The host cannot load BPF-LSM programs (see shared/design/kernel-facts.md), so
tests marked ``kernel`` are executed by a second pytest process inside a
virtme-ng (``vng``) guest that shares the host's root file system read-only.
This module holds the pure parts (kernel selection, command construction,
result parsing; unit-tested in tests/unit/test_vm_harness.py) and the runner
that starts and bounds the guest.  The pytest wiring is in tests/conftest.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# Environment variables (documented in tests/kernel/README.md).
ENV_IN_GUEST = "ENFORCER_IN_GUEST"  # "1": run kernel tests for real, here
ENV_SKIP = "ENFORCER_SKIP_KERNEL"  # "1": skip kernel tests (refused under CI)
ENV_KERNEL = "ENFORCER_VM_KERNEL"  # path of the kernel image to boot
ENV_TIMEOUT = "ENFORCER_VM_TIMEOUT"  # seconds for the whole guest run
ENV_KVM = "ENFORCER_VM_KVM"  # "1": allow KVM (hangs on these machines)
ENV_VERBOSE = "ENFORCER_VM_VERBOSE"  # "1": kernel console into console.log
ENV_PYTHON = "ENFORCER_VM_PYTHON"  # interpreter to use inside the guest
ENV_RESULTS = "ENFORCER_KERNEL_RESULTS"  # host dir for guest results
ENV_PARALLEL = "ENFORCER_VM_PARALLEL"  # guests running at once (default: one per host CPU)
ENV_ARTIFACTS = "ENFORCER_TEST_ARTIFACTS"  # set inside the guest

# A whole-tier guest took 43 min on 6.1 alone (CI of 2026-12-07, thread per
# vCPU); side by side with the 6.12 guest, each on one host thread, 49-55
# (tests/kernel/README.md, "Timings").  CI has 90 min for everything, about 5
# of which go before the tests.
DEFAULT_TIMEOUT_S = 75 * 60
DEFAULT_MEMORY = "2G"
DEFAULT_CPUS = 2
TCG_ONE_THREAD = "-accel tcg,thread=single"

JUNIT_NAME = "junit.xml"
JSONL_NAME = "results.jsonl"
CONSOLE_NAME = "console.log"
DMESG_NAME = "dmesg.txt"
SCRIPT_NAME = "run-in-guest.sh"
STARTED_NAME = "guest-started"
EXIT_NAME = "guest-exit-code"
ARTIFACTS_SUBDIR = "artifacts"

_FALSE_WORDS = ("", "0", "false", "no", "off")


class HarnessError(Exception):
    """The VM cannot be used; the message says why."""


def env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in _FALSE_WORDS


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    return env_flag(env, "CI")


def guests_at_once(env: Mapping[str, str] = os.environ, cpu_count: Optional[int] = None) -> int:
    """How many guests may run at the same time: $ENFORCER_VM_PARALLEL, else
    one per host CPU.  A guest under software emulation, all its vCPUs on one
    host thread (TCG_ONE_THREAD), keeps one host CPU busy at most (measured,
    test_tamper.py: 92% of one CPU alone; two guests side by side each took
    187-198 s against 185 s for one alone, 354 s one after the other; the
    whole tier 54.6 and 49.7 min side by side against 43 and 40 one after the
    other), so on 2 CPUs two guests take much less than twice the time of one."""
    raw = env.get(ENV_PARALLEL, "").strip()
    if not raw:
        return max(1, cpu_count if cpu_count is not None else (os.cpu_count() or 1))
    try:
        value = int(raw)
    except ValueError:
        raise HarnessError(f"{ENV_PARALLEL}={raw!r} is not a whole number of guests") from None
    if value < 1:
        raise HarnessError(f"{ENV_PARALLEL}={raw!r}: at least one guest must run")
    return value


# ---------------------------------------------------------------- results --


@dataclasses.dataclass(frozen=True)
class GuestResult:
    """The outcome of one test as run inside the guest."""

    outcome: str  # "passed", "failed", "error", "skipped", "xfailed", "incomplete"
    message: str = ""  # skip/xfail reason or failure headline
    text: str = ""  # full failure text (pytest's long representation)
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0


def junit_key(nodeid: str) -> Tuple[str, str]:
    """(classname, name) that pytest's junitxml writes for ``nodeid``.

    Mirrors ``_pytest.junitxml.mangle_test_address`` (no suite prefix).
    """
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def parse_junit(xml_text: str) -> Dict[Tuple[str, str], GuestResult]:
    """Map (classname, name) -> GuestResult from pytest's junit-xml output."""
    root = ET.fromstring(xml_text)
    results: Dict[Tuple[str, str], GuestResult] = {}
    for case in root.iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        outcome, message, texts = "passed", "", []
        for child in case:
            tag = child.tag
            if tag in ("failure", "error"):
                # A failure outranks an error in teardown and vice versa: keep
                # the first as headline, but keep every text.
                if outcome not in ("failed", "error"):
                    outcome = "failed" if tag == "failure" else "error"
                    message = child.get("message", "")
                texts.append(child.text or child.get("message", ""))
            elif tag == "skipped" and outcome == "passed":
                kind = child.get("type", "")
                outcome = "xfailed" if kind == "pytest.xfail" else "skipped"
                message = child.get("message", "") or (child.text or "")
        stdout = "\n".join(c.text or "" for c in case.iter("system-out"))
        stderr = "\n".join(c.text or "" for c in case.iter("system-err"))
        results[key] = GuestResult(
            outcome=outcome,
            message=message,
            text="\n".join(texts),
            stdout=stdout,
            stderr=stderr,
            duration=float(case.get("time", "0") or 0),
        )
    return results


def parse_jsonl(lines: Iterable[str]) -> Dict[str, GuestResult]:
    """Map nodeid -> GuestResult from the per-phase records the guest-side
    conftest appends as each test finishes (survives a killed guest)."""
    phases: Dict[str, List[dict]] = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            # The last line may be cut short when the guest is killed.
            continue
        phases.setdefault(rec["nodeid"], []).append(rec)
    results: Dict[str, GuestResult] = {}
    for nodeid, recs in phases.items():
        results[nodeid] = _fold_phases(recs)
    return results


def _fold_phases(recs: List[dict]) -> GuestResult:
    duration = sum(float(r.get("duration", 0)) for r in recs)
    sections = {}
    for r in recs:
        # A report repeats the sections of the phases before it: keep one.
        for title, content in r.get("sections", []):
            sections[title] = content
    stdout = "".join(v for k, v in sections.items() if "stdout" in k)
    stderr = "".join(v for k, v in sections.items() if "stderr" in k)
    for r in recs:
        if r["outcome"] == "failed":
            kind = "failed" if r["when"] == "call" else "error"
            return GuestResult(kind, f"{r['when']} failed", r.get("longrepr", ""), stdout, stderr, duration)
    for r in recs:
        if r.get("wasxfail") is not None and r["outcome"] == "skipped":
            return GuestResult("xfailed", r["wasxfail"], "", stdout, stderr, duration)
        if r["outcome"] == "skipped":
            return GuestResult("skipped", r.get("skip_reason", ""), "", stdout, stderr, duration)
    if any(r["when"] == "call" and r["outcome"] == "passed" for r in recs):
        return GuestResult("passed", "", "", stdout, stderr, duration)
    last = recs[-1]["when"]
    return GuestResult("incomplete", f"did not finish (last phase recorded: {last})", "", stdout, stderr, duration)


def artifact_dir_name(nodeid: str) -> str:
    """File-system-safe, stable directory name for one test's artifacts."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200]


def tail(text: str, lines: int = 60) -> str:
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return f"[... {len(parts) - lines} earlier lines omitted ...]\n" + "\n".join(parts[-lines:])


SCRIPT_START_MARK = "virtme-ng-init: starting script"


def dmesg_since_script(dmesg: str) -> str:
    """The kernel log after the guest started its script (boot noise cut);
    the whole log if the mark is absent."""
    idx = dmesg.rfind(SCRIPT_START_MARK)
    if idx < 0:
        return dmesg
    nl = dmesg.find("\n", idx)
    return "" if nl < 0 else dmesg[nl + 1:]


# Written to /dev/kmsg by tests/kernel/conftest.py around each test, so the
# host can cut out the kernel log of one test (no clock comparison needed).
KMSG_START = "enforcer-test: start "
KMSG_END = "enforcer-test: end "


def dmesg_for_test(dmesg: str, nodeid: str) -> str:
    """Kernel log lines between this test's start and end marks (to the end
    of the log if the end mark is missing); "" if the test never started."""
    lines = dmesg.splitlines()
    start_mark, end_mark = KMSG_START + nodeid, KMSG_END + nodeid
    starts = [i for i, line in enumerate(lines) if line.endswith(start_mark)]
    if not starts:
        return ""
    out = []
    for line in lines[starts[-1] + 1:]:
        if line.endswith(end_mark):
            break
        out.append(line)
    return "\n".join(out)


# ----------------------------------------------------------------- kernel --

# Debian stock kernel images, no cloud/rt flavour (those are built with a
# smaller configuration): vmlinuz-<a.b.c>-<abi>-amd64 (Debian 12's own 6.1),
# vmlinuz-<a.b.c>+deb<N>-amd64 (a newer kernel built for it: 6.12 from Debian 13).
_DEBIAN_IMAGE = re.compile(r"^vmlinuz-(\d+)\.(\d+)\.(\d+)(?:-(\d+)|\+deb(\d+))-amd64$")


def debian_kernel_version(filename: str) -> Optional[Tuple[int, int, int, int]]:
    """(major, minor, patch, abi-or-deb) of a Debian stock image name, else None."""
    m = _DEBIAN_IMAGE.match(filename)
    if not m:
        return None
    major, minor, patch, abi, deb = m.groups()
    return int(major), int(minor), int(patch), int(abi if abi is not None else deb)


#: Kernel series the kernel tier boots by default, newest image of each:
#: Debian 12's own 6.1 and Debian 13's 6.12 (linux-image-6.12-amd64, built
#: for bookworm).  6.12 was opt-in until 2026-12-06: the generated headers
#: made clang compile mm->exe_file 16 bytes off there (see
#: enforcer.kernel.headers.split_padding_runs), so exe allowlists never matched.
DEFAULT_SERIES: Tuple[Tuple[int, int], ...] = ((6, 1), (6, 12))


def select_kernels(boot_dir: Path = Path("/boot"), env: Mapping[str, str] = os.environ) -> List[Path]:
    """The kernel images to boot, one guest each, oldest first: the paths in
    $ENFORCER_VM_KERNEL (comma-separated), else the newest Debian stock image
    of each series in DEFAULT_SERIES found in ``boot_dir``."""
    override = env.get(ENV_KERNEL, "").strip()
    if override:
        paths = [Path(p.strip()) for p in override.split(",") if p.strip()]
        for path in paths:
            if not path.is_file():
                raise HarnessError(f"{ENV_KERNEL}: {path} is not a file")
        return paths
    try:
        names = [p.name for p in boot_dir.iterdir()]
    except OSError as e:
        raise HarnessError(f"cannot list {boot_dir}: {e}") from e
    newest: Dict[Tuple[int, int], Tuple[Tuple[int, int, int, int], str]] = {}
    for name in names:
        version = debian_kernel_version(name)
        if version is not None and version[:2] in DEFAULT_SERIES:
            if version[:2] not in newest or version > newest[version[:2]][0]:
                newest[version[:2]] = (version, name)
    if not newest:
        wanted = ", ".join(f"{a}.{b}" for a, b in DEFAULT_SERIES)
        raise HarnessError(
            f"no Debian stock kernel image of {wanted} (vmlinuz-X.Y.Z-N-amd64, vmlinuz-X.Y.Z+debN-amd64) in "
            f"{boot_dir}; install linux-image-amd64 or set {ENV_KERNEL}"
        )
    return [boot_dir / name for _, (_, name) in sorted(newest.items())]


def kernel_label(image: Path) -> str:
    """How reports name a kernel: the image's release (6.12.117+deb12-amd64)."""
    return image.name[len("vmlinuz-"):] if image.name.startswith("vmlinuz-") else image.name


def kernel_config_problem(image: Path) -> Optional[str]:
    """Why the kernel next to ``image`` cannot run BPF-LSM, or None if its
    config (when present) says it can."""
    release = image.name[len("vmlinuz-"):] if image.name.startswith("vmlinuz-") else None
    if release is None:
        return None
    config = image.parent / f"config-{release}"
    if not config.is_file():
        return None
    text = config.read_text(errors="replace")
    problems = []
    for opt in ("CONFIG_BPF_LSM", "CONFIG_DEBUG_INFO_BTF", "CONFIG_BPF_SYSCALL"):
        if not re.search(rf"^{opt}=y$", text, re.M):
            problems.append(f"{opt} is not y")
    m = re.search(r'^CONFIG_LSM="([^"]*)"', text, re.M)
    if m and "bpf" not in m.group(1).split(","):
        problems.append('"bpf" is not in CONFIG_LSM (would need lsm=... on the command line)')
    return f"{config}: " + "; ".join(problems) if problems else None


# ---------------------------------------------------------------- command --


def build_vng_command(
    vng: str,
    kernel: Path,
    results_dir: Path,
    script: Path,
    *,
    memory: str = DEFAULT_MEMORY,
    cpus: int = DEFAULT_CPUS,
    kvm: bool = False,
    verbose: bool = False,
    one_thread: bool = True,
) -> List[str]:
    cmd = [vng, "--run", str(kernel)]
    if verbose:
        cmd.append("--verbose")  # the kernel's console (boot, oops, panic)
    if not kvm:
        cmd.append("--disable-kvm")  # KVM hangs at "Probing EDD" on these machines
        # One host thread runs all the guest's vCPUs.  With a thread per vCPU
        # (QEMU's default), two guests side by side on 2 host CPUs ran 2.1x
        # slower each and burnt 4x the CPU (a preempted lock holder's sibling
        # spins); with one, 7% slower than alone on one module and about 27%
        # over the whole tier (CI: 54.6 min against 43 alone), still with 2
        # CPUs as the guest sees them.  The "=" keeps vng's argument
        # parser from taking "-accel" for an option of its own.
        if one_thread:
            cmd.append(f"--qemu-opts={TCG_ONE_THREAD}")
    cmd += [
        "--force-9p",  # no virtiofsd here
        "--memory", memory,
        "--cpus", str(cpus),
        "--rwdir", str(results_dir),
        # The command travels base64-encoded on the kernel command line
        # (2 KiB at most), so only the script's path goes there.
        "--", f"/bin/sh {shlex.quote(str(script))}",
    ]
    return cmd


def build_guest_script(
    python: str,
    repo: Path,
    results_dir: Path,
    nodeids: Sequence[str],
    extra_pytest_args: Sequence[str] = (),
) -> str:
    q = shlex.quote
    res = results_dir
    args = [
        python, "-m", "pytest",
        "-p", "no:cacheprovider",
        "--rootdir", str(repo),
        "-o", "junit_logging=all",
        f"--junitxml={res / JUNIT_NAME}",
        "-v", "-ra",
        *extra_pytest_args,
        *nodeids,
    ]
    return "\n".join([
        "#!/bin/sh",
        "# Generated by tests/harness/vm.py; runs as root inside the guest.",
        f"echo started > {q(str(res / STARTED_NAME))}",
        f"cd {q(str(repo))} || exit 97",
        f"export {ENV_IN_GUEST}=1",
        "export PYTHONDONTWRITEBYTECODE=1",
        f"export PYTHONPATH={q(str(repo))}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"export {ENV_ARTIFACTS}={q(str(res / ARTIFACTS_SUBDIR))}",
        f"mkdir -p {q(str(res / ARTIFACTS_SUBDIR))}",
        # Per-test marks go to /dev/kmsg; without this most are rate-limited away.
        "echo on > /proc/sys/kernel/printk_devkmsg",
        'echo "guest: kernel $(uname -r), uptime $(cut -d" " -f1 /proc/uptime) s"',
        " ".join(q(a) for a in args),
        "rc=$?",
        f"dmesg > {q(str(res / DMESG_NAME))} 2>&1",
        f"echo $rc > {q(str(res / EXIT_NAME))}",
        "exit $rc",
        "",
    ])


# ---------------------------------------------------------------- preflight --


def find_vng(python: str = sys.executable, env: Mapping[str, str] = os.environ) -> Optional[str]:
    """vng next to the running interpreter (a venv's bin/), else on PATH."""
    beside = Path(python).parent / "vng"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("vng", path=env.get("PATH"))


def preflight(python: str, env: Mapping[str, str] = os.environ) -> Tuple[str, List[Path]]:
    """Return (vng, kernel images) or raise HarnessError naming what is missing."""
    problems = []
    vng = find_vng(python, env)
    if vng is None:
        problems.append("vng (PyPI virtme-ng) not found beside the interpreter or on PATH")
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (Debian package {pkg})")
    if shutil.which("bpftool") is None and not Path("/usr/sbin/bpftool").exists():
        problems.append("bpftool not found (Debian package bpftool)")
    if python == sys.executable:
        if importlib.util.find_spec("bcc") is None:
            problems.append(
                f"{python} cannot import bcc (Debian python3-bpfcc); use a venv made by "
                "`/usr/bin/python3 -m venv --system-site-packages .venv`"
            )
    kernels: List[Path] = []
    try:
        kernels = select_kernels(env=env)
        for kernel in kernels:
            if not os.access(kernel, os.R_OK):
                problems.append(f"{kernel} is not readable (run as root)")
            bad = kernel_config_problem(kernel)
            if bad:
                problems.append(bad)
    except HarnessError as e:
        problems.append(str(e))
    if problems:
        raise HarnessError("; ".join(problems))
    assert vng is not None and kernels
    return vng, kernels


# ------------------------------------------------------------------ runner --


@dataclasses.dataclass
class GuestOutcome:
    """What one guest run produced."""

    returncode: Optional[int]
    timed_out: bool
    wall_s: float
    boot_s: Optional[float]  # host wall time until the guest script started
    console: str
    junit: Dict[Tuple[str, str], GuestResult]
    jsonl: Dict[str, GuestResult]
    problem: Optional[str] = None  # why results may be missing

    def result_for(self, nodeid: str) -> Optional[GuestResult]:
        r = self.junit.get(junit_key(nodeid))
        return r if r is not None else self.jsonl.get(nodeid)


def _copy_stream(stream, path: Path) -> None:
    with stream, open(path, "wb") as out:
        for chunk in iter(lambda: stream.read1(65536), b""):
            out.write(chunk)
            out.flush()


class GuestRun:
    """One guest boot that runs the given kernel tests; bounded by a timeout."""

    def __init__(
        self,
        *,
        vng: str,
        kernel: Path,
        repo: Path,
        results_dir: Path,
        nodeids: Sequence[str],
        python: str,
        timeout_s: float,
        kvm: bool = False,
        verbose: bool = False,
        memory: str = DEFAULT_MEMORY,
        cpus: int = DEFAULT_CPUS,
        extra_pytest_args: Sequence[str] = (),
    ) -> None:
        self.vng, self.kernel, self.repo = vng, kernel, repo
        self.results_dir = results_dir
        self.nodeids = list(nodeids)
        self.python = python
        self.timeout_s = timeout_s
        self.kvm, self.verbose, self.memory, self.cpus = kvm, verbose, memory, cpus
        self.extra_pytest_args = list(extra_pytest_args)
        self.proc: Optional[subprocess.Popen] = None
        self._t0 = 0.0
        self._outcome: Optional[GuestOutcome] = None
        self.command: List[str] = []

    def start(self) -> None:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        for name in (JUNIT_NAME, JSONL_NAME, STARTED_NAME, EXIT_NAME, DMESG_NAME):
            (self.results_dir / name).unlink(missing_ok=True)
        script = self.results_dir / SCRIPT_NAME
        script.write_text(build_guest_script(
            self.python, self.repo, self.results_dir, self.nodeids, self.extra_pytest_args))
        self.command = build_vng_command(
            self.vng, self.kernel, self.results_dir, script,
            memory=self.memory, cpus=self.cpus, kvm=self.kvm, verbose=self.verbose)
        env = dict(os.environ)
        # vng runs virtme-run by name: it must be on PATH (it is beside vng).
        env["PATH"] = str(Path(self.vng).parent) + os.pathsep + env.get("PATH", "")
        for name in (ENV_IN_GUEST, ENV_SKIP):
            env.pop(name, None)
        # A pipe, not the file itself: QEMU re-opens /proc/self/fd/1 for the
        # guest's stdout/stderr with O_TRUNC and its own offset, so writers
        # sharing a file clobber each other's output.
        self._t0 = time.monotonic()
        self._t0_wall = time.time()
        self.proc = subprocess.Popen(
            self.command,
            cwd=str(self.repo),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: killed as a whole
        )
        self._copier = threading.Thread(
            target=_copy_stream, args=(self.proc.stdout, self.results_dir / CONSOLE_NAME),
            name="guest-console", daemon=True)
        self._copier.start()

    def _kill(self) -> None:
        assert self.proc is not None
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._kill()

    def ended(self) -> bool:
        """Whether wait() would return at once: QEMU exited or the bound passed."""
        assert self.proc is not None, "start() first"
        return self.proc.poll() is not None or time.monotonic() - self._t0 >= self.timeout_s

    def wait(self) -> GuestOutcome:
        if self._outcome is not None:
            return self._outcome
        assert self.proc is not None, "start() first"
        timed_out = False
        remaining = self.timeout_s - (time.monotonic() - self._t0)
        try:
            rc: Optional[int] = self.proc.wait(timeout=max(remaining, 0))
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill()
            rc = self.proc.returncode
        wall = time.monotonic() - self._t0
        # The pipe closes when every process holding it has exited; a stray
        # holder must not hang the session.
        self._copier.join(timeout=30)
        self._outcome = self._collect(rc, timed_out, wall)
        return self._outcome

    def _collect(self, rc: Optional[int], timed_out: bool, wall: float) -> GuestOutcome:
        res = self.results_dir
        console = (res / CONSOLE_NAME).read_text(errors="replace")
        boot_s = None
        started = res / STARTED_NAME
        if started.exists():
            boot_s = max(0.0, started.stat().st_mtime - self._t0_wall)
        problems = []
        if timed_out:
            problems.append(f"guest run timed out after {self.timeout_s:.0f} s and was killed")
        junit: Dict[Tuple[str, str], GuestResult] = {}
        junit_path = res / JUNIT_NAME
        if junit_path.exists():
            try:
                junit = parse_junit(junit_path.read_text(errors="replace"))
            except ET.ParseError as e:
                problems.append(f"{junit_path} is not valid XML: {e}")
        else:
            problems.append(f"the guest wrote no {JUNIT_NAME}")
        jsonl: Dict[str, GuestResult] = {}
        jsonl_path = res / JSONL_NAME
        if jsonl_path.exists():
            jsonl = parse_jsonl(jsonl_path.read_text(errors="replace").splitlines())
        if not started.exists():
            problems.append("the guest never reached its test script (boot failed?)")
        if rc not in (0, 1) and not timed_out:
            problems.append(f"vng exited with status {rc} (pytest: 0 ok, 1 test failures)")
        return GuestOutcome(
            returncode=rc,
            timed_out=timed_out,
            wall_s=wall,
            boot_s=boot_s,
            console=console,
            junit=junit,
            jsonl=jsonl,
            problem="; ".join(problems) or None,
        )

    def artifacts_for(self, nodeid: str) -> Dict[str, str]:
        d = self.results_dir / ARTIFACTS_SUBDIR / artifact_dir_name(nodeid)
        out: Dict[str, str] = {}
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.is_file():
                    out[str(p.relative_to(d))] = p.read_text(errors="replace")
        return out

    def dmesg(self) -> str:
        p = self.results_dir / DMESG_NAME
        return p.read_text(errors="replace") if p.exists() else ""


class GuestPool:
    """Runs guests with at most `at_once` of them alive; outcomes in the given order."""

    def __init__(self, runs: Sequence["GuestRun"], at_once: int) -> None:
        if at_once < 1:
            raise ValueError("at_once must be at least 1")
        self.at_once = at_once
        self.pending: List[GuestRun] = list(runs)  # not started yet, in order
        self.started: List[GuestRun] = []  # in the order they were started
        self.outcomes: Dict[int, GuestOutcome] = {}  # index in `started` -> outcome

    def _alive(self) -> int:
        return len(self.started) - len(self.outcomes)

    def fill(self) -> Optional[str]:
        """Start pending guests up to `at_once` alive; on a failure to start,
        drop the rest and say why."""
        while self.pending and self._alive() < self.at_once:
            run = self.pending[0]
            try:
                run.start()
            except OSError as e:
                self.pending.clear()
                return f"could not start {run.vng} for {kernel_label(run.kernel)}: {e}"
            self.started.append(self.pending.pop(0))
        return None

    def finish(self, poll_s: float = 0.5) -> Tuple[List[Tuple["GuestRun", GuestOutcome]], Optional[str]]:
        """Wait for every guest, starting a pending one whenever another
        ends (each guest's own timeout bounds it).  Returns the outcomes in
        start order and why a guest could not be started, if one could not."""
        problem = None
        while len(self.outcomes) < len(self.started):
            for index, run in enumerate(self.started):
                if index not in self.outcomes and run.ended():
                    self.outcomes[index] = run.wait()
                    problem = self.fill() or problem
            if len(self.outcomes) < len(self.started):
                time.sleep(poll_s)
        return [(run, self.outcomes[i]) for i, run in enumerate(self.started)], problem

    def abort(self) -> None:
        """Kill every live guest and start no more (Ctrl-C, -x, SIGTERM)."""
        self.pending.clear()
        for run in self.started:
            run.abort()

