"""Suite-wide pytest wiring: test tiers by directory, and ``kernel``-marked
tests run inside a VM.

Tiers: the first directory under tests/ is a test's tier and is added as its
marker (registered in pyproject.toml): unit (pure Python), compile (bcc,
bpftool, gcc, host kernel BTF), package (dpkg/rpm tooling, systemd-analyze),
kernel (the VM).  So ``-m "not kernel"`` or ``-m unit`` select whole tiers.

On the host (the normal run) every kernel-marked test item is replaced by a
proxy item.  One guest boot per session runs all selected kernel tests (a
pytest process inside the guest, with ENFORCER_IN_GUEST=1), and each proxy
reports the result its test had in the guest.  Inside the guest
(ENFORCER_IN_GUEST=1) nothing is replaced and the tests run for real.
How to run, skip and debug: tests/kernel/README.md.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Optional

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
        self.run: Optional[vm.GuestRun] = None
        self.unavailable: Optional[str] = None  # why the guest could not be started
        self.outcome: Optional[vm.GuestOutcome] = None
        self.sigterm_installed = False
        self.console_attached = False  # the console tail goes to one report only

    def start(self, nodeids: list) -> None:
        try:
            vng, kernel = vm.preflight(self.python)
        except vm.HarnessError as e:
            self.unavailable = str(e)
            return
        if self.results_opt:
            results = Path(self.results_opt).resolve()
        else:
            results = Path(tempfile.mkdtemp(prefix="enforcer-kernel-"))
        self.run = vm.GuestRun(
            vng=vng, kernel=kernel, repo=REPO, results_dir=results, nodeids=nodeids,
            python=self.python, timeout_s=self.timeout_s,
            kvm=vm.env_flag(os.environ, vm.ENV_KVM),
            verbose=vm.env_flag(os.environ, vm.ENV_VERBOSE),
        )
        try:
            self.run.start()
        except OSError as e:
            self.unavailable = f"could not start {vng}: {e}"
            self.run = None
            return
        # QEMU runs in its own process group (so a timeout can kill all of
        # it); a SIGTERM to pytest would otherwise leave it running.  Turn it
        # into an interruption, which ends in pytest_sessionfinish -> abort().
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
            self.sigterm_installed = True

    def finish(self) -> Optional[vm.GuestOutcome]:
        if self.outcome is None and self.run is not None:
            self.outcome = self.run.wait()
        return self.outcome


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
        if state.unavailable:
            raise GuestFailure(f"kernel VM unavailable{ci}: {state.unavailable}{hint}")
        outcome = state.finish()
        assert outcome is not None and state.run is not None
        res = outcome.result_for(self.nodeid)
        if res is None:
            self._attach_logs(outcome, state.run)
            why = outcome.problem or "the guest ran but did not report this test"
            raise GuestFailure(
                f"no result for {self.nodeid} in the guest's results ({why}); "
                f"results dir: {state.run.results_dir}"
            )
        if res.outcome == "passed":
            return
        if res.outcome == "skipped":
            # Reported at the test's own location, as a skip marker would be.
            raise pytest.skip.Exception(f"in guest: {res.message}", _use_item_location=True)
        if res.outcome == "xfailed":
            pytest.xfail(f"in guest: {res.message}")
        self._attach_logs(outcome, state.run, res)
        where = {
            "failed": "failed in the guest",
            "error": "errored in the guest (setup/teardown)",
            "incomplete": f"did not finish in the guest ({outcome.problem or 'no reason known'})",
        }.get(res.outcome, f"had outcome {res.outcome!r} in the guest")
        raise GuestFailure(
            f"{self.nodeid} {where} (kernel {state.run.kernel.name}; "
            f"results dir {state.run.results_dir}):\n{res.text or res.message}"
        )

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
        if unfinished or not state.console_attached:
            state.console_attached = True
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
        if tr is not None and state.run is not None:
            tr.write_line(
                f"kernel VM: booting {state.run.kernel.name} for {len(nodeids)} kernel test(s); "
                f"follow with: tail -f {state.run.results_dir / vm.CONSOLE_NAME}"
            )


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    state: KernelState = session.config.stash[_STATE]
    if state.run is not None and state.outcome is None:
        state.run.abort()  # e.g. -x, Ctrl-C or SIGTERM before any kernel test ran
    if state.sigterm_installed:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state: KernelState = config.stash[_STATE]
    tr = terminalreporter
    if state.unavailable:
        tr.write_sep("-", "kernel VM")
        tr.write_line(f"kernel VM unavailable: {state.unavailable}")
    if state.run is None:
        return
    tr.write_sep("-", "kernel VM")
    tr.write_line(f"kernel image: {state.run.kernel}")
    tr.write_line(f"results dir:  {state.run.results_dir}")
    o = state.outcome
    if o is None:
        tr.write_line("guest run aborted before completion")
        return
    boot = f"{o.boot_s:.1f} s" if o.boot_s is not None else "never reached"
    tr.write_line(
        f"guest: boot to test script {boot}, whole run {o.wall_s:.1f} s, "
        f"exit status {o.returncode}{', TIMED OUT' if o.timed_out else ''}"
    )
    if o.problem:
        tr.write_line(f"guest problem: {o.problem}")
