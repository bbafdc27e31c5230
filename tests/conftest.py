"""Suite-wide pytest wiring: test tiers by directory, and ``kernel``-marked
tests run inside a VM.

Tiers: the first directory under tests/ is a test's tier and is added as its
marker (registered in pyproject.toml): unit (pure Python), compile (bcc,
bpftool, gcc, host kernel BTF), package (dpkg/rpm tooling, systemd-analyze),
kernel (the VM).  So ``-m "not kernel"`` or ``-m unit`` select whole tiers.

On the host (the normal run) every kernel-marked test item is replaced by a
proxy item.  One guest boot per installed stock kernel (6.1 and 6.12 on
Debian 12; as many at once as the host has CPUs, $ENFORCER_VM_PARALLEL) runs all selected kernel
tests (a pytest process inside the guest, with ENFORCER_IN_GUEST=1), and each
proxy reports the results its test had in the guests: it fails if it failed
on any kernel, naming the kernel; it passes if it passed on at least one and
failed on none; it is skipped only if every kernel skipped it.  Inside the guest
(ENFORCER_IN_GUEST=1) nothing is replaced and the tests run for real.
How to run, skip and debug: tests/kernel/README.md.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import vm  # noqa: E402  (needs the path above)

REPO = Path(__file__).resolve().parent.parent
_STATE = pytest.StashKey["KernelState"]()
# Markers whose evaluation belongs to the guest: on the host their conditions
# would be evaluated against the wrong kernel, and the guest already applied them.
_GUEST_DECIDES = frozenset({"skip", "skipif", "xfail"})
TIERS = ("unit", "compile", "package", "kernel")


def pytest_itemcollected(item: pytest.Item) -> None:
    # Before -m deselects (pytest_collection_modifyitems), so the marker counts.
    tier = Path(item.path).resolve().relative_to(REPO / "tests").parts[0]
    if tier not in TIERS:
        raise pytest.UsageError(
            f"{item.nodeid}: tests live in a tier directory, one of tests/{{{','.join(TIERS)}}}/")
    item.add_marker(tier)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("kernel", "real-kernel tests in a VM (tests/kernel/README.md)")
    g.addoption(
        "--no-kernel", action="store_true", default=False,
        help=f"skip kernel-marked tests explicitly (also: {vm.ENV_SKIP}=1); refused when CI is set",
    )
    g.addoption(
        "--kernel-timeout", type=float, default=None,
        help=f"seconds for the whole guest run (default {vm.DEFAULT_TIMEOUT_S}, env {vm.ENV_TIMEOUT})",
    )
    g.addoption(
        "--kernel-results-dir", default=None,
        help=f"host directory for guest results and logs (default: new dir in /tmp; env {vm.ENV_RESULTS})",
    )


class GuestFailure(Exception):
    """Raised by a proxy item; its text is the whole failure report."""


class KernelState:
    """Per-session: whether/how the guest runs, and its outcome."""

    def __init__(self, config: pytest.Config) -> None:
        self.in_guest = vm.env_flag(os.environ, vm.ENV_IN_GUEST)
        self.skip_reason: Optional[str] = None
        if config.getoption("--no-kernel"):
            self.skip_reason = "kernel tests skipped explicitly (--no-kernel)"
        elif vm.env_flag(os.environ, vm.ENV_SKIP):
            self.skip_reason = f"kernel tests skipped explicitly ({vm.ENV_SKIP}=1)"
        if self.skip_reason and vm.in_ci():
            raise pytest.UsageError(
                f"CI is set: kernel tests must run; refusing to skip them ({self.skip_reason})"
            )
        timeout = config.getoption("--kernel-timeout")
        if timeout is None:
            raw = os.environ.get(vm.ENV_TIMEOUT, str(vm.DEFAULT_TIMEOUT_S))
            try:
                timeout = float(raw)
            except ValueError:
                raise pytest.UsageError(f"{vm.ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
        if timeout <= 0:
            raise pytest.UsageError(f"kernel VM timeout must be positive, got {timeout}")
        self.timeout_s = timeout
        self.results_opt = config.getoption("--kernel-results-dir") or os.environ.get(vm.ENV_RESULTS)
        self.python = os.environ.get(vm.ENV_PYTHON) or sys.executable
        self.pool: Optional[vm.GuestPool] = None  # one guest per kernel
        self.unavailable: Optional[str] = None  # why the guests could not be started
        self.outcomes: Dict[str, vm.GuestOutcome] = {}  # kernel label -> outcome
        self.finished = False
        self.sigterm_installed = False
        self.console_attached: set = set()  # the console tail goes to one report per kernel
        self.results_root: Optional[Path] = None

    @property
    def runs(self) -> List[vm.GuestRun]:
        """The guests started so far, in order."""
        return self.pool.started if self.pool is not None else []

    def start(self, nodeids: list) -> None:
        try:
            vng, kernels = vm.preflight(self.python)
            at_once = vm.guests_at_once()
        except vm.HarnessError as e:
            self.unavailable = str(e)
            return
        if self.results_opt:
            self.results_root = Path(self.results_opt).resolve()
        else:
            self.results_root = Path(tempfile.mkdtemp(prefix="enforcer-kernel-"))
        self.pool = vm.GuestPool([
            vm.GuestRun(
                vng=vng, kernel=kernel, repo=REPO, results_dir=self.results_root / vm.kernel_label(kernel),
                nodeids=nodeids, python=self.python, timeout_s=self.timeout_s,
                kvm=vm.env_flag(os.environ, vm.ENV_KVM),
                verbose=vm.env_flag(os.environ, vm.ENV_VERBOSE),
            )
            for kernel in kernels
        ], at_once)
        self.unavailable = self.pool.fill()
        if not self.runs:
            return
        # QEMU runs in its own process group (so a timeout can kill all of
        # it); a SIGTERM to pytest would otherwise leave it running.  Turn it
        # into an interruption, which ends in pytest_sessionfinish -> abort().
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
            self.sigterm_installed = True

    def finish(self) -> List[Tuple[vm.GuestRun, vm.GuestOutcome]]:
        """Wait for every guest (the first proxy to ask waits; the rest read)."""
        assert self.pool is not None
        if not self.finished:
            done, problem = self.pool.finish()
            self.unavailable = self.unavailable or problem
            self.outcomes = {vm.kernel_label(run.kernel): outcome for run, outcome in done}
            self.finished = True
        return [(run, self.outcomes[vm.kernel_label(run.kernel)]) for run in self.runs]


class KernelProxyItem(pytest.Item):
    """Stands in on the host for a kernel test; reports the guest's result."""

    def setup_proxy(self, original: pytest.Item) -> None:
        self._location_info = original.reportinfo()
        self.extra_keyword_matches.update(original.listextrakeywords())
        self.own_markers.extend(getattr(original, "own_markers", []))

    def iter_markers_with_node(self, name=None):
        for node, mark in super().iter_markers_with_node(name):
            if mark.name not in _GUEST_DECIDES:
                yield node, mark

    def reportinfo(self):
        return self._location_info

    def runtest(self) -> None:
        state: KernelState = self.config.stash[_STATE]
        if state.skip_reason:
            raise pytest.skip.Exception(state.skip_reason, _use_item_location=True)
        ci = " (CI is set: kernel tests are required)" if vm.in_ci() else ""
        hint = f"; to skip kernel tests explicitly use --no-kernel or {vm.ENV_SKIP}=1" if not ci else ""
        if state.unavailable and not state.runs:
            raise GuestFailure(f"kernel VM unavailable{ci}: {state.unavailable}{hint}")
        failures, skips, passed = [], [], []
        for run, outcome in state.finish():
            label = vm.kernel_label(run.kernel)
            res = outcome.result_for(self.nodeid)
            if res is None:
                self._attach_logs(outcome, run)
                why = outcome.problem or "the guest ran but did not report this test"
                failures.append(f"[{label}] no result in the guest's results ({why}); results dir {run.results_dir}")
            elif res.outcome == "passed":
                passed.append(label)
            elif res.outcome in ("skipped", "xfailed"):
                skips.append(f"[{label}] {res.outcome}: {res.message}")
            else:
                self._attach_logs(outcome, run, res)
                where = {
                    "failed": "failed in the guest",
                    "error": "errored in the guest (setup/teardown)",
                    "incomplete": f"did not finish in the guest ({outcome.problem or 'no reason known'})",
                }.get(res.outcome, f"had outcome {res.outcome!r} in the guest")
                failures.append(f"[{label}] {where} (results dir {run.results_dir}):\n{res.text or res.message}")
        if state.unavailable:
            failures.append(f"kernel VM unavailable{ci}: {state.unavailable}")
        if failures:
            raise GuestFailure(f"{self.nodeid}:\n" + "\n".join(failures))
        if passed:
            if skips:  # passed where the kernel has the feature; say where it did not
                self.add_report_section("call", "kernels that skipped it", "\n".join(skips))
            return
        # Every kernel skipped it: reported at the test's own location, as a skip marker would be.
        raise pytest.skip.Exception("in guest: " + "; ".join(skips), _use_item_location=True)

    def _attach_logs(self, outcome: vm.GuestOutcome, run: vm.GuestRun,
                     res: Optional[vm.GuestResult] = None) -> None:
        state: KernelState = self.config.stash[_STATE]
        raw = outcome.jsonl.get(self.nodeid, res)
        if raw is not None:
            # The per-phase records hold the raw captured output; junit-xml
            # wraps it in headings, so it is only the fallback.
            if raw.stdout.strip():
                self.add_report_section("call", "guest stdout", raw.stdout)
            if raw.stderr.strip():
                self.add_report_section("call", "guest stderr", raw.stderr)
        for name, text in run.artifacts_for(self.nodeid).items():
            self.add_report_section("call", f"guest artifact {name} (tail)", vm.tail(text, 200))
        dmesg = run.dmesg()
        if res is not None:
            during = vm.dmesg_for_test(dmesg, self.nodeid)
            if during.strip():
                self.add_report_section("call", "guest kernel log during this test (tail)",
                                        vm.tail(during, 60))
        # The console and the whole kernel log are the session's, not this
        # test's: shown with the first failure, and with every test the guest
        # did not finish (there they are the only clue).
        unfinished = res is None or res.outcome == "incomplete"
        label = vm.kernel_label(run.kernel)
        if unfinished or label not in state.console_attached:
            state.console_attached.add(label)
            self.add_report_section(
                "call", f"guest console (tail; whole: {run.results_dir / vm.CONSOLE_NAME})",
                vm.tail(outcome.console, 60))
            since = vm.dmesg_since_script(dmesg)
            if since.strip():
                self.add_report_section(
                    "call", f"guest kernel log since the tests started (tail; whole: {run.results_dir / vm.DMESG_NAME})",
                    vm.tail(since, 60))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GuestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = KernelState(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    state: KernelState = config.stash[_STATE]
    if state.in_guest:
        return
    host, proxies = [], []
    for item in items:
        if item.get_closest_marker("kernel") is None:
            host.append(item)
            continue
        if not str(item.path).startswith(str(REPO / "tests" / "kernel") + os.sep):
            # Proxying needs the guest to collect the same test under tests/kernel.
            raise pytest.UsageError(f"{item.nodeid}: kernel-marked tests must live under tests/kernel/")
        proxy = KernelProxyItem.from_parent(item.parent, name=item.name)
        proxy.setup_proxy(item)
        proxies.append(proxy)
    # Host tests first: they run while the guest boots and works.
    items[:] = host + proxies


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    config = session.config
    state: KernelState = config.stash[_STATE]
    if state.in_guest or state.skip_reason or config.option.collectonly:
        return
    nodeids = [i.nodeid for i in session.items if isinstance(i, KernelProxyItem)]
    if nodeids:
        state.start(nodeids)  # in the background; proxies wait for it
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and state.pool is not None and state.runs:
            kernels = [vm.kernel_label(r.kernel) for r in state.runs + state.pool.pending]
            tr.write_line(
                f"kernel VM: {len(nodeids)} kernel test(s) on {len(kernels)} kernel(s), at most "
                f"{state.pool.at_once} guest(s) at once ({vm.ENV_PARALLEL}): {', '.join(kernels)}; "
                f"follow with: tail -f {state.results_root}/*/{vm.CONSOLE_NAME}"
            )


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    state: KernelState = session.config.stash[_STATE]
    if state.pool is not None and not state.finished:
        state.pool.abort()  # e.g. -x, Ctrl-C or SIGTERM before every kernel test ran
    if state.sigterm_installed:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state: KernelState = config.stash[_STATE]
    tr = terminalreporter
    if state.unavailable:
        tr.write_sep("-", "kernel VM")
        tr.write_line(f"kernel VM unavailable: {state.unavailable}")
    if not state.runs:
        return
    tr.write_sep("-", "kernel VM")
    tr.write_line(f"results dir: {state.results_root}")
    for run in state.runs:
        label = vm.kernel_label(run.kernel)
        o = state.outcomes.get(label)
        if o is None:
            tr.write_line(f"{label}: guest run aborted before completion")
            continue
        boot = f"{o.boot_s:.1f} s" if o.boot_s is not None else "never reached"
        counts: Dict[str, int] = {}
        for res in o.junit.values():
            counts[res.outcome] = counts.get(res.outcome, 0) + 1
        tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        tr.write_line(
            f"{label}: boot to test script {boot}, whole run {o.wall_s:.1f} s, "
            f"exit status {o.returncode}{', TIMED OUT' if o.timed_out else ''}; {tally}"
        )
        if o.problem:
            tr.write_line(f"{label}: guest problem: {o.problem}")
