"""`enforcer probe`: what this host offers for BPF-LSM enforcement and what it lacks.

Every check says what it saw; every failed check says what to change. The
final check really loads and attaches a trivial LSM program, because the
other signs (a kernel symbol, the config) do not prove that a program loads,
and `bpf` missing from the active LSM list lets a program attach yet never run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from enforcer import registry
from enforcer.kernel import bpfsys

SECURITYFS = Path("/sys/kernel/security")
LSM_LIST = SECURITYFS / "lsm"
LOCKDOWN = SECURITYFS / "lockdown"
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")

#: The trial program: `r0 = 0; exit`, an LSM program that allows everything.
#: Assembled by hand so that the trial needs neither bcc nor clang: whether
#: this kernel accepts BPF-LSM programs is the question, not the compiler.
TRIAL_INSNS = bytes.fromhex("b700000000000000" "9500000000000000")
TRIAL_HOOK = "file_open"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


@dataclass(frozen=True)
class ProbeReport:
    checks: Tuple[Check, ...]

    @property
    def usable(self) -> bool:
        return all(c.ok for c in self.checks if c.required)

    def failures(self) -> List[Check]:
        return [c for c in self.checks if c.required and not c.ok]

    def explain(self) -> str:
        """Why enforcement is impossible, for the refusal message of `run`."""
        lines = ["BPF-LSM enforcement is not possible on this host:"]
        for check in self.failures():
            lines.append(f"  - {check.name}: {check.detail}")
            if check.fix:
                lines.append(f"    fix: {check.fix}")
        return "\n".join(lines)

    def to_text(self) -> str:
        lines = []
        for check in self.checks:
            mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
            lines.append(f"{mark} {check.name}: {check.detail}")
            if not check.ok and check.fix:
                lines.append(f"     fix: {check.fix}")
        lines.append("enforcement: possible" if self.usable else "enforcement: NOT possible")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"usable": self.usable, "checks": [asdict(c) for c in self.checks]}, indent=2)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def mount_securityfs() -> Optional[str]:
    """Mount securityfs where systemd normally does; None if it is there afterwards, else why not."""
    if LSM_LIST.exists():
        return None
    if os.geteuid() != 0:
        return "not mounted, and only root may mount it"
    try:
        bpfsys.mount("securityfs", str(SECURITYFS))
    except OSError as error:
        return error.strerror or str(error)
    return None if LSM_LIST.exists() else f"mounted, yet {LSM_LIST} is missing"


def check_kernel() -> Check:
    return Check("kernel", True, f"Linux {platform.release()} ({platform.machine()})")


def check_btf() -> Check:
    if BTF_VMLINUX.is_file():
        return Check("btf", True, f"{BTF_VMLINUX} present ({BTF_VMLINUX.stat().st_size} bytes)")
    return Check(
        "btf",
        False,
        f"{BTF_VMLINUX} is missing",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (BPF-LSM attaches by BTF id)",
    )


def check_securityfs() -> Check:
    problem = mount_securityfs()
    if problem is None:
        return Check("securityfs", True, f"mounted at {SECURITYFS}")
    return Check(
        "securityfs",
        False,
        f"{LSM_LIST} is not readable: {problem}",
        f"mount -t securityfs securityfs {SECURITYFS} (as root)",
    )


def check_lsm_list() -> Check:
    active = _read(LSM_LIST)
    if active is None:
        return Check("lsm list", False, "cannot read the active LSM list", "mount securityfs first (see above)")
    names = active.split(",")
    if "bpf" in names:
        return Check("lsm list", True, f"bpf is active ({active})")
    wanted = ",".join(names + ["bpf"])
    return Check(
        "lsm list",
        False,
        f"'bpf' is not in the active LSM list ({active}); programs would attach but never run",
        f"boot with lsm={wanted} (e.g. add it to GRUB_CMDLINE_LINUX in /etc/default/grub, "
        "run update-grub or grub2-mkconfig, reboot); the kernel also needs CONFIG_BPF_LSM=y",
    )


def check_lockdown() -> Check:
    state = _read(LOCKDOWN)
    if state is None:
        return Check("lockdown", True, "no lockdown LSM interface", required=False)
    current = state[state.find("[") + 1 : state.find("]")] if "[" in state else state
    if current == "confidentiality":
        return Check(
            "lockdown",
            False,
            "lockdown=confidentiality forbids reading kernel memory, which BPF tracing needs",
            "boot with lockdown=integrity or none",
        )
    return Check("lockdown", True, f"lockdown mode: {current}", required=False)


def check_bcc() -> Check:
    """bcc is needed to compile (the first start on a kernel, or after an
    upgrade). Found without importing it: its import loads LLVM, seconds
    that a start from a cached object does not need."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        return Check(
            "bcc",
            False,
            "bcc's Python binding is not importable by this interpreter",
            "install python3-bpfcc (Debian/Ubuntu) or python3-bcc (RHEL/Fedora)",
        )
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text())
    except OSError:
        match = None
    return Check("bcc", True, f"bcc {match.group(1) if match else '(unknown version)'}")


def check_bpftool() -> Check:
    path = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None
    )
    if path:
        return Check("bpftool", True, f"{path} (generates kernel types from BTF)")
    return Check("bpftool", False, "bpftool not found", "install the bpftool package")


def check_hooks() -> Check:
    from enforcer.kernel.btf import BtfError, load_btf  # noqa: PLC0415
    from enforcer.kernel.loader import LoadError, check_hook_signatures  # noqa: PLC0415

    try:
        check_hook_signatures(load_btf(str(BTF_VMLINUX)))
    except (BtfError, LoadError) as error:
        return Check("hooks", False, str(error), "this kernel's LSM hooks differ; upgrade enforcer")
    return Check("hooks", True, "signatures match for " + ", ".join(spec.name for spec in registry.HOOKS))


def check_execve_check() -> Check:
    """Whether interpreters can ask the exec rules about a script (not required)."""
    from enforcer.kernel.btf import BtfError  # noqa: PLC0415
    from enforcer.kernel.features import execve_check_supported  # noqa: PLC0415

    try:
        supported = execve_check_supported(str(BTF_VMLINUX))
    except BtfError as error:
        return Check("interpreter checks", False, str(error), required=False)
    if supported:
        return Check("interpreter checks", True,
                     "AT_EXECVE_CHECK: exec rules answer interpreters that ask about a script",
                     required=False)
    return Check(
        "interpreter checks",
        False,
        "this kernel has no execveat(AT_EXECVE_CHECK) (Linux 6.14+): `sh /tmp/x.sh` and "
        "`python3 /tmp/x.py` stay out of reach of exec rules",
        "on Linux 6.14+, interpreters that opt in (SECBIT_EXEC_RESTRICT_FILE) can ask; "
        "see 'Interpreters' in docs/threat-model.md",
        required=False,
    )


def check_trial_attach() -> Check:
    """Load and attach a program that changes nothing, then detach it."""
    if os.geteuid() != 0:
        return Check("trial attach", False, "not running as root", "run as root (CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON)")
    from enforcer.kernel.btf import BtfError, load_btf  # noqa: PLC0415

    try:
        hook_id = load_btf(str(BTF_VMLINUX)).lsm_hook_id(TRIAL_HOOK)
        program = bpfsys.prog_load_lsm("enforcer_trial", TRIAL_INSNS, "GPL", hook_id)
        try:
            os.close(bpfsys.attach_lsm(program, what="the trial program"))
        finally:
            os.close(program)
    except (BtfError, OSError) as error:
        return Check(
            "trial attach",
            False,
            f"a trivial LSM program could not be loaded and attached: {error}",
            "if every check above is ok, this kernel itself refuses BPF_PROG_TYPE_LSM programs "
            "(seen on custom kernels even for root): run a distribution kernel built with "
            "CONFIG_BPF_LSM=y and CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, RHEL 9, Fedora)",
        )
    return Check("trial attach", True, f"loaded and attached a {TRIAL_HOOK} LSM program that allows "
                                       "everything, then detached it")


DEFAULT_CHECKS: Sequence[Callable[[], Check]] = (
    check_kernel,
    check_btf,
    check_securityfs,
    check_lsm_list,
    check_lockdown,
    check_bcc,
    check_bpftool,
    check_hooks,
    check_execve_check,
    check_trial_attach,
)


def run_probe(checks: Sequence[Callable[[], Check]] = DEFAULT_CHECKS) -> ProbeReport:
    results: List[Check] = []
    for check in checks:
        failed = [r.name for r in results if r.required and not r.ok]
        if check is check_trial_attach and failed:
            # A trial attach is pointless (and its error confusing) when a
            # prerequisite already failed; keep its line but say why.
            results.append(Check("trial attach", False, "skipped: " + ", ".join(failed) + " failed"))
            continue
        results.append(check())
    return ProbeReport(tuple(results))


def probe_command(args) -> int:  # argparse.Namespace
    report = run_probe()
    print(report.to_json() if getattr(args, "json", False) else report.to_text())
    return 0 if report.usable else 1
