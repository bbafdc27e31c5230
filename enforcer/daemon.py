"""`enforcer run`: establish enforcement, report events, reload on SIGHUP.

States: starting -> running -> stopping. Errors are never hidden: a policy
that does not parse, a host without BPF-LSM, or a program the kernel refuses
ends the start with the reason and a non-zero exit; nothing falls back to
audit on its own.

Exit codes: 0 clean stop, 1 enforcement impossible, 2 invalid policy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from enforcer import __version__, abi
from enforcer.cgrouplayout import CgroupLayout, unusable_cgroup_allowlists
from enforcer.cgrouplayout import detect as detect_cgroup_layout
from enforcer.cgrouplayout import limit as cgroup_limit
from enforcer.compile import compile_policy
from enforcer.fileperms import load_trusted_policy
from enforcer.events import BootClock
from enforcer.exitcodes import ExitCode
from enforcer.generations import DRAIN_BUDGET
from enforcer.kinds.exec_places import indexed_filesystems
from enforcer.parse import PolicyError, ignored_allow_d_files
from enforcer.policydigest import policy_digest
from enforcer.policydir import check_policy_directory
from enforcer.policyfile.problems import PolicyProblem
from enforcer.periodic import Scheduler
from enforcer.ancestry import AncestryEnricher, ProcessDescriber
from enforcer.cnproc import ConnectorUnavailable, ProcessEventListener, unavailable_reason
from enforcer.pipeline import EventPipeline, LetThroughMarker
from enforcer.proccache import ProcessCache
from enforcer.plan import MapPlan
from enforcer.policy import Mode, Policy
from enforcer.mountinfo import MOUNTINFO_PATH, MountInfoError, MountTable, read_mount_table
from enforcer.mountwatch import MountWatch
from enforcer.policywatch import PolicyWatch, WatchMode
from enforcer.metrics import METRICS_EVERY_S, MetricsConfigError, MetricSources, MetricsExporter, parse_address
from enforcer.report import Reporter, default_limiter
from enforcer.sinks import SinkSpecError, open_sinks
from enforcer.instancelock import AgentAlreadyRunning, AgentLock, acquire
from enforcer.state import AgentState, ReloadStatus, default_state_dir, write_state

log = logging.getLogger("enforcer")

POLL_MS = 500
STATS_EVERY_S = 1.0
#: How often a repeat window that ran out is summarised, events or not.
SUMMARY_EVERY_S = 1.0
#: How long a stopping agent keeps reporting what is still queued.
FINAL_DRAIN_S = 2.0
#: How often the mount table is asked whether it changed (a poll(2), no read).
MOUNT_WATCH_EVERY_S = 0.5
#: How often the policy files are looked at (a few stat(2) calls) when watched:
#: a kubelet updates a mounted ConfigMap within about a minute, so a second is plenty.
POLICY_WATCH_EVERY_S = 1.0


def _drain(fd: int) -> None:
    """Read a non-blocking pipe empty (the signal wakeup fd's bytes carry nothing we use)."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


class Notifier:
    """sd_notify, only when systemd asked for it (NOTIFY_SOCKET is set)."""

    def __init__(self) -> None:
        self._notifier = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify  # noqa: PLC0415 - only under systemd

            self._notifier = sdnotify.SystemdNotifier()
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s = int(usec) / 2_000_000 if usec and usec.isdigit() else None
        self._last_ping = 0.0

    def send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ping(self) -> None:
        """Feed the watchdog; called from the main loop only, so a hung loop starves it."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval_s:
            self.send("WATCHDOG=1")
            self._last_ping = now


@dataclass(frozen=True)
class Loaded:
    policy: Policy
    plan: MapPlan

    @property
    def digest(self) -> str:
        return policy_digest(self.policy)


def _mounts(path: Optional[str], purpose: str) -> Optional[MountTable]:
    try:
        return read_mount_table(path)
    except (OSError, MountInfoError) as error:
        log.warning("%s: cannot read the mount table: %s", purpose, error)
        return None


def host_mounts() -> Optional[MountTable]:
    """The host's mount table (PID 1's), for exec places by location; None
    (places by name only, said loudly) if it cannot be read."""
    return _mounts(None, "exec places are matched by name only")


def own_mounts() -> Optional[MountTable]:
    """The agent's own mount table: the cgroup hierarchy it can read and
    match is the one its own namespace shows."""
    return _mounts(MOUNTINFO_PATH, "cgroup layout unknown")


def host_cgroup_layout() -> CgroupLayout:
    mounts = own_mounts()
    return detect_cgroup_layout(mounts) if mounts is not None else CgroupLayout.NONE


def compile_for_host(policy: Policy, override: Optional[Mode]) -> MapPlan:
    plan = compile_policy(policy, override, host_mounts())
    if indexed_filesystems(plan.maps.get("place_devs", {})) >= abi.MAX_PLACE_DEVS:
        log.warning("exec places use all %d filesystem indexes: places on any further filesystem are matched "
                    "by name only", abi.MAX_PLACE_DEVS)
    return plan


def load_and_compile(path: Path, override: Optional[Mode]) -> Loaded:
    """The policy, refused only for errors: its warnings (risky allowlist entries,
    allow.d files not read) are logged at every start and reload, as `check` prints them."""
    policy = load_trusted_policy(path)
    unusable = unusable_cgroup_allowlists(policy, host_cgroup_layout())
    if unusable:
        raise PolicyError([PolicyProblem(
            str(path),
            "cgroup allowlists can never match on this host, whose cgroup layout is legacy (cgroup v1 only: every "
            "process is in the cgroup v2 root): " + "; ".join(unusable) + ". Allowlist by exe, exe_dirs or uid "
            "instead, or boot with systemd.unified_cgroup_hierarchy=1")])
    for ignored in ignored_allow_d_files(str(path)):
        log.warning("%s is not read (allow.d reads only *.toml files)", ignored)
    for warning in policy.warnings:
        log.warning("%s", warning)
    plan = compile_for_host(policy, override)
    check_policy_directory(plan, path)
    return Loaded(policy, plan)


@dataclass(frozen=True)
class MetricsOptions:
    textfile: Optional[Path] = None
    address: Optional[Tuple[str, int]] = None

    @property
    def wanted(self) -> bool:
        return self.textfile is not None or self.address is not None


class Agent:
    def __init__(
        self, policy_path: Path, override: Optional[Mode], reporter: Reporter, state_dir: Optional[Path] = None,
        metrics: MetricsOptions = MetricsOptions(), watch_policy: WatchMode = WatchMode.AUTO,
    ) -> None:
        self.watch_policy_mode = watch_policy
        self.policy_watch: Optional[PolicyWatch] = None
        self.metrics_options = metrics
        self.metrics: Optional[MetricsExporter] = None
        self.metric_sources: Optional[MetricSources] = None
        self.policy_path = policy_path
        self.override = override
        self.reporter = reporter
        self.state_dir = state_dir
        self.notifier = Notifier()
        self.events = EventPipeline(
            lambda generation: self.enforcement.generations.plan(generation),
            BootClock.now(),
            reporter,
            enrichers=[LetThroughMarker(lambda: self.enforcement.plan)],
        )
        # who did it, user-space half: exe and command lines, only for events
        # that are written; the connector's cache is attached once running
        self.describer = ProcessDescriber()
        self.reporter.enrichers.append(AncestryEnricher(self.describer).enrich)
        self.process_events: Optional[ProcessEventListener] = None
        self.scheduler = Scheduler()
        self.scheduler.every(STATS_EVERY_S, "report-kernel-counters", self._report_kernel_counters)
        self.scheduler.every(SUMMARY_EVERY_S, "report-suppressed", self.reporter.tick)
        # Notifier.ping keeps the watchdog's own pace; it is offered every turn.
        self.scheduler.every(0.0, "watchdog", self.notifier.ping)
        self._stop = False
        self._reload = False
        self._reopen = False
        self._lost_seen = 0
        self._sigio_seen = 0
        self._status_line = ""
        #: where this agent's start went, for the state file and the started record
        self.startup: Optional[dict] = None
        self.enforcement = None
        self.loaded: Optional[Loaded] = None
        self.mount_watch: Optional[MountWatch] = None
        self.lock: Optional[AgentLock] = None
        #: published in the state file for `enforcer reload` (enforcer.state.ReloadStatus)
        self.reload_status = ReloadStatus()

    # signal handlers only set flags; the main loop acts on them
    def _on_stop(self, signum, _frame) -> None:
        self._stop = True

    def _on_reload(self, signum, _frame) -> None:
        self._reload = True

    def _on_reopen(self, signum, _frame) -> None:
        self._reopen = True

    def start(self) -> int:
        """Policy, then the single-instance lock, then the kernel: each failure says why."""
        # SIGHUP's default action is to end the process: a reload asked for
        # while the programs compile (minutes under emulation) must not kill
        # the agent. Installed before the lock is taken, so whoever finds the
        # agent through its lock can signal it; the reload runs once the loop
        # starts. SIGTERM keeps its default until READY: stopping a start is fine.
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        try:
            loaded = load_and_compile(self.policy_path, self.override)
        except PolicyError as error:
            print(str(error), file=sys.stderr)
            return ExitCode.INVALID_POLICY
        try:
            self.lock = acquire(self.state_dir or default_state_dir())
        except AgentAlreadyRunning as error:
            print(f"enforcer: {error}", file=sys.stderr)
            return ExitCode.UNAVAILABLE
        except OSError as error:
            print(f"enforcer: cannot take the agent lock: {error}", file=sys.stderr)
            return ExitCode.UNAVAILABLE
        status = self._establish(loaded)
        if status != ExitCode.OK:
            self.lock.release()
        return status

    def _establish(self, loaded: Loaded) -> int:
        from enforcer.kernel.loader import LoadError, load  # noqa: PLC0415 - touches the kernel
        from enforcer.kernel.probe import run_probe  # noqa: PLC0415

        probe_began = time.monotonic()
        report = run_probe()
        probe_s = time.monotonic() - probe_began
        if not report.usable:
            print(report.explain(), file=sys.stderr)
            print("refusing to start: enforcer never falls back to audit on its own", file=sys.stderr)
            missing = ", ".join(check.name for check in report.failures())
            self.notifier.send(f"STATUS=cannot enforce on this host ({missing} failed): see the journal")
            return ExitCode.HOST_CANNOT_ENFORCE
        try:
            self.enforcement = load(loaded.plan, policy_dir=self.policy_path.parent)
        except LoadError as error:
            print(f"enforcer: {error}", file=sys.stderr)
            return ExitCode.UNAVAILABLE
        try:
            self.enforcement.on_event(self.events.on_record)
        except LoadError as error:
            print(f"enforcer: {error}", file=sys.stderr)
            self.enforcement.close()
            return ExitCode.UNAVAILABLE
        self.loaded = loaded
        self._seed_kernel_counters()
        startup = self.enforcement.startup
        self.startup = dataclasses.replace(startup, phases=(("probe", probe_s),) + startup.phases).to_json()
        self._watch_mounts()
        self._watch_policy()
        self._watch_processes()
        self._publish_state(loaded)
        if self.metrics_options.wanted:
            try:
                self._start_metrics(loaded)
            except MetricsConfigError as error:
                print(f"enforcer: {error}", file=sys.stderr)
                self.enforcement.close()
                return ExitCode.UNAVAILABLE
        layout = host_cgroup_layout()
        if cgroup_limit(layout):
            self.reporter.notice(cgroup_limit(layout), level="warning", cgroup_layout=layout.value)
        self.reporter.notice(
            "started",
            cgroup_layout=layout.value,
            policy_digest=loaded.digest,
            policy=str(self.policy_path),
            mode=self.override.value if self.override else loaded.policy.mode.value,
            rules=loaded.plan.mode_summary(),
            generation=self.enforcement.generations.current_generation,
            instance=self.enforcement.instance_dir.name,
            startup=self.startup,
        )
        # From READY on, a stop goes through the loop (its "stopping" record,
        # status.json removed): a SIGTERM sent the moment READY is seen
        # (systemctl stop just after start) must not meet the default action
        # before loop() begins. Caught in the VM: such a stop ended the agent
        # with -15 under a loaded host.
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        # READY only now: every program attached, every map filled.
        self._status_line = self._service_status()
        self.notifier.send(f"READY=1\nSTATUS={self._status_line}")
        return ExitCode.OK

    def _watch_processes(self) -> None:
        """The process-events connector keeps a cache of exe and command lines,
        so that a process gone by the time its event is read is still
        described; without it (said once) /proc is read when the event is."""
        reason = unavailable_reason()
        if reason is None:
            cache = ProcessCache()
            try:
                self.process_events = ProcessEventListener(cache)
            except ConnectorUnavailable as error:
                reason = str(error)
            else:
                self.describer.cache = cache
                self.describer.sync = self.process_events.sync
                return
        log.warning("process events connector unavailable (%s): exe and command lines are read from /proc "
                    "when an event is read; a process that has exited by then is reported unknown", reason)

    def _watch_mounts(self) -> None:
        try:
            self.mount_watch = MountWatch()
        except OSError as error:
            log.warning("mount changes will not move exec places: cannot watch the mount table: %s", error)
            return
        self.scheduler.every(MOUNT_WATCH_EVERY_S, "mount-watch", self._on_mounts)

    def _on_mounts(self) -> None:
        """Where a place lives moved (a filesystem mounted on /tmp, below /run):
        the same policy, located anew, through the reload transaction."""
        from enforcer.kernel.maps import ReloadError  # noqa: PLC0415

        if self.mount_watch is None or not self.mount_watch.changed() or self.loaded is None:
            return
        plan = compile_for_host(self.loaded.policy, self.override)
        if plan.maps == self.loaded.plan.maps:
            return
        try:
            self.enforcement.apply(plan)
        except ReloadError as error:
            self.reporter.notice("mount table changed; exec places could not be relocated, previous ones still "
                                 "in force", level="warning", error=str(error))
            return
        self.loaded = Loaded(self.loaded.policy, plan)
        self.reporter.notice("mount table changed: exec places relocated",
                             generation=self.enforcement.generations.current_generation,
                             filesystems=indexed_filesystems(plan.maps.get("place_devs", {})))
        self._retire_previous_policy()

    def _watch_policy(self) -> None:
        """A policy mounted from a ConfigMap (or any, with --watch-policy on) is
        reloaded when its files are replaced, as if SIGHUP had been sent."""
        self.policy_watch = PolicyWatch.for_mode(self.watch_policy_mode, self.policy_path)
        if self.policy_watch is None:
            return
        log.info("watching %s and its allow.d: a replaced file reloads the policy", self.policy_path)
        self.scheduler.every(POLICY_WATCH_EVERY_S, "policy-watch", self._on_policy_files)

    def _on_policy_files(self) -> None:
        if self.policy_watch is not None and self.policy_watch.changed():
            log.info("policy files changed on disk (%s): reloading", self.policy_path)
            self.reload()

    def _start_metrics(self, loaded: Loaded) -> None:
        def rules_by_mode() -> dict:
            modes = [info.mode.value for info in self.loaded.plan.rules]
            return {mode: modes.count(mode) for mode in ("enforce", "audit")}

        self.metric_sources = MetricSources(
            events_by_rule=lambda: dict(self.reporter.events_by_rule),
            delivery=lambda: dict(self.reporter.counts),
            kernel=self.enforcement.stats,
            rules_by_mode=rules_by_mode,
            info=lambda: {"policy": str(self.policy_path),
                          "policy_digest": self.loaded.digest if self.loaded else "",
                          "mode": self.override.value if self.override else "policy",
                          "version": __version__},
        )
        self.metrics = MetricsExporter(self.metric_sources, self.metrics_options.textfile,
                                       self.metrics_options.address)
        self.metrics.write_textfile()
        self.scheduler.every(METRICS_EVERY_S, "metrics-textfile", self.metrics.write_textfile)

    def _publish_state(self, loaded: Loaded) -> None:
        """The state file, written atomically: the policy in force and the reload status."""
        state = AgentState(
            pid=os.getpid(),
            policy=str(self.policy_path),
            allow_d=tuple(loaded.policy.allow_sources),
            mode_override=self.override.value if self.override else None,
            instance=self.enforcement.instance_dir.name,
            rules=loaded.plan.rules,
            updated=AgentState.now(),
            reload=self.reload_status,
            startup=self.startup,
        )
        write_state(state, self.state_dir)

    def _publish_reload(self, loaded: Loaded) -> None:
        """The state with the reload status; a file that cannot be written is
        logged, never allowed to stop the agent (the kernel enforces either way;
        only `enforcer reload` waits in vain, and says so)."""
        try:
            self._publish_state(loaded)
        except OSError as error:
            log.error("cannot publish the reload status in %s: %s", self.state_dir or default_state_dir(), error)

    def reload(self) -> None:
        """Re-read the policy; apply it only if it parses, compiles and writes cleanly.

        Its number is published before any file is read and its verdict after
        (enforcer.state.ReloadStatus), for `enforcer reload` to wait on.
        """
        from enforcer.kernel.maps import ReloadError  # noqa: PLC0415

        self.notifier.send("RELOADING=1")
        assert self.loaded is not None, "reload before start"
        if self.policy_watch is not None:
            # taken before the files are read: a change made while they are is seen next time
            self.policy_watch.reset()
        self.reload_status = self.reload_status.begun()
        self._publish_reload(self.loaded)
        try:
            loaded = load_and_compile(self.policy_path, self.override)
            changes = self.enforcement.apply(loaded.plan)
        except (PolicyError, ReloadError) as error:
            if self.metric_sources is not None:
                self.metric_sources.reloads.record(False)
            generation = self.enforcement.generations.current_generation
            self.reload_status = self.reload_status.done(
                False, f"reload rejected: {error}", generation,
                failure="policy" if isinstance(error, PolicyError) else "kernel")
            self._publish_reload(self.loaded)
            self.reporter.notice("reload rejected, previous policy still in force", level="warning", error=str(error))
            log.error("reload rejected: %s", error)
        else:
            changed = sum(len(d.added) + len(d.changed) + len(d.deleted) for d in changes.maps.values())
            generation = self.enforcement.generations.current_generation
            self.reload_status = self.reload_status.done(
                True, f"reloaded: generation {generation}, {loaded.plan.mode_summary()}, "
                      f"{changed} map entries changed", generation)
            self.loaded = loaded
            self._publish_reload(loaded)
            if self.metric_sources is not None:
                self.metric_sources.reloads.record(True)
            self.reporter.notice(
                "reloaded",
                rules=loaded.plan.mode_summary(),
                policy_digest=loaded.digest,
                generation=generation,
                map_entries_changed=changed,
            )
        self._status_line = self._service_status()
        self.notifier.send(f"READY=1\nSTATUS={self._status_line}")
        self._retire_previous_policy()

    def _retire_previous_policy(self) -> None:
        """The slot a reload flipped away from, emptied once reported: the wait
        for hook runs still reading it and the clearing need not delay the
        verdict (PolicyMaps.retire)."""
        from enforcer.kernel.maps import ReloadError  # noqa: PLC0415

        try:
            self.enforcement.retire_previous()
        except ReloadError as error:
            log.warning("the previous policy's slot is not emptied yet (the next reload tries again first): %s",
                        error)

    def _reopen_sinks(self) -> None:
        try:
            self.reporter.reopen()
        except OSError as error:
            # the old file stays in use: events are not lost, only not rotated
            log.error("reopening the event file failed, still writing the old one: %s", error)

    def _seed_kernel_counters(self) -> None:
        """Count increments from what the kernel holds at start: an adopted
        instance's pinned counters carry what earlier agents counted, and
        reported (each reports at its stop); only what happens from now on is
        this agent's to report. The totals stay in `enforcer status` and the metrics."""
        stats = self.enforcement.stats()
        self._lost_seen = stats["events_lost"]
        self._sigio_seen = stats["sigio_refused"]

    def _report_kernel_counters(self) -> None:
        """What the kernel counted without an event: records lost to a full ring
        buffer, and signals a file's I/O would have sent this agent (refused,
        bpf/enforcer.bpf.c's file_send_sigiotask: that hook may run where no
        event can be written)."""
        stats = self.enforcement.stats()
        lost = stats["events_lost"]
        if lost > self._lost_seen:
            self.reporter.lost(lost - self._lost_seen)
            self._lost_seen = lost
        sigio = stats["sigio_refused"]
        if sigio > self._sigio_seen:
            self.reporter.notice(
                "refused signals that a file's I/O would have sent this agent: a process named it the owner of a "
                "file (fcntl F_SETOWN), a way to kill it that kill(2) does not take; who did it is not known",
                level="warning", count=sigio - self._sigio_seen)
            self._sigio_seen = sigio
        self._update_service_status(stats)

    def _service_status(self, stats: Optional[dict] = None) -> str:
        """systemd's STATUS= (`systemctl status` shows it): the rules in force and
        their modes, the policy digest, and the kernel's decision counters."""
        stats = stats if stats is not None else self.enforcement.stats()
        return (f"{self.loaded.plan.mode_summary()}; policy {self.loaded.digest}; "
                f"blocked {stats['blocked']}, audited {stats['audited']}, allowlisted {stats['allowlisted']}")

    def _update_service_status(self, stats: dict) -> None:
        if self.loaded is None:
            return
        line = self._service_status(stats)
        if line != self._status_line:
            self._status_line = line
            self.notifier.send(f"STATUS={line}")

    def _serve(self, wake_fd: int) -> None:
        """Events, signals and due tasks until a stop signal."""
        backlog = False
        while not self._stop:
            # With records left over, only look again; otherwise wait for some.
            pending = backlog or self._reload or self._reopen or self._stop
            backlog = not self.enforcement.poll(0 if pending else POLL_MS, DRAIN_BUDGET, wake_fd=wake_fd)
            _drain(wake_fd)
            if self._reload:
                self._reload = False
                self.reload()
            if self._reopen:
                self._reopen = False
                self._reopen_sinks()
            self.scheduler.run_due()

    def loop(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGUSR1, self._on_reopen)  # logrotate moved the event file
        # A signal that comes while the loop is busy (reloading, running due
        # tasks) only sets its flag; the wait must not hold it up to POLL_MS
        # (the bench's back-to-back reloads took 610-660 ms for 110 ms of
        # work). The flags are tested before the wait, and for a signal in the
        # instant between that test and the wait, Python writes a byte to the
        # wakeup fd, which the wait watches beside the ring buffer.
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_wake_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        try:
            self._serve(wake_read)
        finally:
            signal.set_wakeup_fd(previous_wake_fd)
            os.close(wake_read)
            os.close(wake_write)
        self.notifier.send("STOPPING=1")
        deadline = time.monotonic() + FINAL_DRAIN_S  # report what is queued, unless a flood goes on
        while not self.enforcement.poll(0, DRAIN_BUDGET) and time.monotonic() < deadline:
            pass
        self._report_kernel_counters()
        self.reporter.flush()
        self.reporter.notice(
            "stopping; pinned programs keep enforcing until `enforcer unload`",
            instance=self.enforcement.instance_dir.name,
            **self.reporter.counts,
        )
        self.reporter.close()
        self._stop_metrics()
        if self.mount_watch is not None:
            self.mount_watch.close()
        if self.process_events is not None:
            self.process_events.close()
        self.enforcement.close()
        if self.lock is not None:
            self.lock.release()
        return ExitCode.OK

    def _stop_metrics(self) -> None:
        """A stopped agent leaves no figures that look alive: the textfile goes."""
        if self.metrics is None:
            return
        self.metrics.close()
        if self.metrics_options.textfile is not None:
            self.metrics_options.textfile.unlink(missing_ok=True)


def mode_override(value: Optional[str]) -> Optional[Mode]:
    """`--mode`: "enforce"/"audit" override the policy (Policy.effective_mode);
    "policy" or nothing keeps the policy's own modes."""
    return Mode(value) if value not in (None, "policy") else None


def run_command(args) -> int:
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        stream=sys.stderr,
        format="enforcer: %(levelname)s %(message)s",
    )
    override = mode_override(getattr(args, "mode", None))
    try:
        address = getattr(args, "metrics_address", None)
        textfile = getattr(args, "metrics_textfile", None)
        metrics = MetricsOptions(Path(textfile) if textfile else None, parse_address(address) if address else None)
        sinks = open_sinks(getattr(args, "events", None) or "stdout", sys.stdout)
    except (SinkSpecError, MetricsConfigError, OSError) as error:
        print(f"enforcer: {error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    agent = Agent(Path(args.policy), override, Reporter(sinks, default_limiter()), metrics=metrics,
                  watch_policy=WatchMode(getattr(args, "watch_policy", None) or WatchMode.AUTO.value))
    status = agent.start()
    if status != ExitCode.OK:
        return status
    return agent.loop()
