"""enforcer run's agent logic without a kernel: reload verdicts, lost-event
reports, sd_notify. The enforcement object is a fake with the loader's API."""

from __future__ import annotations

import logging
import io
import os
import json
import signal
import socket
from pathlib import Path
from typing import List

import pytest

from enforcer import daemon
from enforcer.compile import compile_policy
from enforcer.generations import GenerationTable
from enforcer.kernel.maps import ReloadError
from enforcer.parse import load_policy
from enforcer.plan import MapPlan, diff
from enforcer.events import BootClock, ProcessFacts, decode
from test_events import PLAN, record
from enforcer.report import Reporter

POLICY = """
version = 1
[[rule]]
id = "sysrq"
kind = "sysrq"
"""


class FakeEnforcement:
    def __init__(self, plan: MapPlan, fail_with: Exception = None) -> None:
        self.plan = plan
        self.generations = GenerationTable()
        self.generations.add(1, plan)
        self.instance_dir = Path("/sys/fs/bpf/enforcer/1-1")
        self.applied: List[MapPlan] = []
        self.fail_with = fail_with
        self.lost = 0
        self.sigio_refused = 0
        self.retire_with: Exception = None
        self.on_retire = lambda: None  # called as the old slot would be emptied
        self.retired = 0

    def apply(self, new_plan: MapPlan):
        if self.fail_with is not None:
            raise self.fail_with
        changes = diff(self.plan, new_plan)
        self.applied.append(new_plan)
        self.plan = new_plan
        self.generations.add(self.generations.current_generation + 1, new_plan)
        return changes

    def retire_previous(self) -> None:
        self.on_retire()
        if self.retire_with is not None:
            raise self.retire_with
        self.retired += 1

    def stats(self):
        return {"events_lost": self.lost, "blocked": 0, "audited": 0, "allowlisted": 0,
                "sigio_refused": self.sigio_refused}


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    out = io.StringIO()
    agent = daemon.Agent(policy, None, Reporter.json_lines(out), state_dir=tmp_path / "state")
    loaded = daemon.Loaded(load_policy(policy), compile_policy(load_policy(policy)))
    agent.enforcement = FakeEnforcement(loaded.plan)
    agent.loaded = loaded  # as after start()
    agent.out = out
    return agent


def records(agent) -> List[dict]:
    return [json.loads(line) for line in agent.out.getvalue().splitlines()]


def test_valid_reload_applies_and_publishes(agent, tmp_path) -> None:
    agent.policy_path.write_text(POLICY + '[[rule]]\nid = "tmp"\nkind = "exec"\ndirs = ["/tmp"]\n')
    agent.reload()
    (notice,) = records(agent)
    assert notice["message"] == "reloaded"
    assert notice["map_entries_changed"] > 0
    assert [r.id for r in agent.enforcement.plan.rules] == ["sysrq", "tmp"]
    state = json.loads((tmp_path / "state/status.json").read_text())
    assert [r["id"] for r in state["rules"]] == ["sysrq", "tmp"]


def test_invalid_policy_is_rejected_without_touching_the_kernel(agent) -> None:
    before = agent.enforcement.plan
    agent.policy_path.write_text('version = 1\n[[rule]]\nid = "x"\nkind = "nope"\n')
    agent.reload()
    (notice,) = records(agent)
    assert notice["message"] == "reload rejected, previous policy still in force"
    assert ':4: rule 1 "x" kind: unknown value "nope"' in notice["error"]
    assert agent.enforcement.applied == [] and agent.enforcement.plan is before


def test_failed_map_write_is_reported_and_old_plan_kept(agent) -> None:
    before = agent.enforcement.plan
    agent.enforcement.fail_with = ReloadError("applying the new policy failed, previous policy kept: ENOMEM")
    agent.policy_path.write_text(POLICY.replace('kind = "sysrq"', 'kind = "sysrq"\nmode = "audit"'))
    agent.reload()
    (notice,) = records(agent)
    assert notice["message"].startswith("reload rejected") and "ENOMEM" in notice["error"]
    assert agent.enforcement.plan is before


def test_lost_records_are_reported_as_increments(agent) -> None:
    for total in (0, 3, 3, 5):
        agent.enforcement.lost = total
        agent._report_kernel_counters()
    assert [(r["type"], r["count"]) for r in records(agent)] == [("lost", 3), ("lost", 2)]


def test_counts_an_adopted_instance_holds_from_earlier_agents_are_not_reported_again(agent) -> None:
    """The pinned stats map survives restarts: a new agent reports what
    changes after its start, not the totals its predecessors reported."""
    agent.enforcement.lost, agent.enforcement.sigio_refused = 4, 6
    agent._seed_kernel_counters()
    agent._report_kernel_counters()
    assert records(agent) == []
    agent.enforcement.lost, agent.enforcement.sigio_refused = 5, 8
    agent._report_kernel_counters()
    assert [(r["type"], r["count"]) for r in records(agent)] == [("lost", 1), ("agent", 2)]


def test_refused_sigio_signals_are_reported_as_increments(agent) -> None:
    """The kernel refuses them without an event (the hook may run in an
    interrupt): the agent's warning is the only report."""
    for total in (0, 1, 1, 4):
        agent.enforcement.sigio_refused = total
        agent._report_kernel_counters()
    warnings = [r for r in records(agent) if r["type"] == "agent" and r["level"] == "warning"]
    assert [r["count"] for r in warnings] == [1, 3]
    assert all("F_SETOWN" in r["message"] for r in warnings)


def test_notifier_sends_only_under_systemd(tmp_path, monkeypatch) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    notifier = daemon.Notifier()
    assert notifier.watchdog_interval_s == 2.0
    notifier.send("READY=1")
    notifier.ping()
    notifier.ping()  # within the interval: not sent again
    assert sock.recv(100) == b"READY=1"
    assert sock.recv(100) == b"WATCHDOG=1"
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(100)
    monkeypatch.delenv("NOTIFY_SOCKET")
    silent = daemon.Notifier()
    assert silent._notifier is None
    silent.send("READY=1")  # no socket: nothing is sent, and no error


class PolledEnforcement(FakeEnforcement):
    """Records the loop's poll timeouts; `on_poll(n)` says, at the n-th poll
    (from 1), whether records remain (and may set the agent's signal flags)."""

    def __init__(self, plan: MapPlan, agent) -> None:
        super().__init__(plan)
        self.agent = agent
        self.timeouts: List[int] = []
        self.wake_fds: List[object] = []

    def poll(self, timeout_ms: int, budget: int, wake_fd=None) -> bool:
        self.timeouts.append(timeout_ms)
        self.wake_fds.append(wake_fd)
        return not self.on_poll(len(self.timeouts))

    def on_poll(self, n: int) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FloodedEnforcement(PolledEnforcement):
    """Every poll uses its whole budget: the ring buffer never runs dry."""

    def on_poll(self, n: int) -> bool:
        if n == 3:
            self.agent._reload = True  # what SIGHUP does
        if n == 6:
            self.agent._stop = True  # what SIGTERM does
        return n <= 12  # backlog until the final drain has run a while


class QuietEnforcement(PolledEnforcement):
    """No records ever; stopped at the fourth poll."""

    def on_poll(self, n: int) -> bool:
        if n == 4:
            self.agent._stop = True
        return False


def test_a_signal_that_came_while_the_loop_was_busy_is_handled_without_waiting(agent) -> None:
    """The flag a signal set while the loop was not waiting (here: during a
    due task) is seen before the loop waits again: the next poll does not wait."""
    quiet = QuietEnforcement(agent.enforcement.plan, agent)
    agent.enforcement = quiet
    calls = []

    def busy_task() -> None:
        calls.append(len(quiet.timeouts))
        if len(calls) == 1:
            agent._reload = True  # what SIGHUP's handler does, mid-task

    agent.scheduler.every(0.0, "busy", busy_task)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                                       signal.SIGUSR1)}
    try:
        assert agent.loop() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert quiet.timeouts[:3] == [daemon.POLL_MS, 0, daemon.POLL_MS], quiet.timeouts
    # every wait also watches the signal wakeup fd, which the loop set (and restored)
    (wake_fd,) = set(quiet.wake_fds[:4])
    assert isinstance(wake_fd, int) and signal.set_wakeup_fd(-1) == -1
    assert [r["message"] for r in records(agent) if r["type"] == "agent"][0] == "reloaded"


def test_a_flood_of_records_does_not_starve_reload_or_stop(agent) -> None:
    flooded = FloodedEnforcement(agent.enforcement.plan, agent)
    agent.enforcement = flooded
    agent.policy_path.write_text(POLICY.replace('kind = "sysrq"', 'kind = "sysrq"\nmode = "audit"'))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        assert agent.loop() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    messages = [r["message"] for r in records(agent) if r["type"] == "agent"]
    assert messages[0] == "reloaded" and messages[-1].startswith("stopping")
    assert flooded.applied and flooded.timeouts[0] == daemon.POLL_MS
    assert set(flooded.timeouts[1:]) == {0}  # with a backlog the loop only looks again, never waits


def test_a_second_agent_is_refused_naming_the_first(tmp_path, monkeypatch, capsys) -> None:
    from enforcer import instancelock
    from enforcer.exitcodes import ExitCode

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    held = instancelock.acquire(tmp_path / "state")
    second = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=tmp_path / "state")
    assert second.start() == ExitCode.UNAVAILABLE
    assert f"another enforcer agent is running (pid {os.getpid()}" in capsys.readouterr().err
    held.release()


def test_a_host_that_cannot_enforce_exits_4_and_frees_the_lock(tmp_path, monkeypatch, capsys) -> None:
    from enforcer import instancelock
    from enforcer.exitcodes import ExitCode
    from enforcer.kernel import probe

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setattr(probe, "run_probe", lambda: probe.ProbeReport(
        (probe.Check("lsm list", False, "bpf is not in the active LSM list", "boot with lsm=...,bpf"),)))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=tmp_path / "state")
    assert agent.start() == ExitCode.HOST_CANNOT_ENFORCE == 4
    assert "bpf is not in the active LSM list" in capsys.readouterr().err
    assert instancelock.running_agent(tmp_path / "state") is None


class FakeMountWatch:
    def __init__(self) -> None:
        self.pending = False

    def changed(self) -> bool:
        pending, self.pending = self.pending, False
        return pending


EXEC_POLICY = '[[rule]]\nid = "tmp"\nkind = "exec"\nscope = "host"\ndirs = ["/tmp"]\n'
ROOT_ONLY = "22 1 254:1 / / rw - ext4 /dev/vda1 rw\n"
TMPFS_ON_TMP = ROOT_ONLY + "25 22 0:25 / /tmp rw - tmpfs tmpfs rw\n"


def test_a_mount_on_a_place_relocates_it_through_the_reload_transaction(agent, monkeypatch) -> None:
    from enforcer.mountinfo import parse_mountinfo
    from enforcer.plan import PlaceDev

    table = {"text": ROOT_ONLY}
    monkeypatch.setattr(daemon, "read_mount_table", lambda path=None: parse_mountinfo(table["text"]))
    agent.policy_path.write_text(POLICY + EXEC_POLICY)
    agent.reload()  # /tmp: a directory of the root filesystem
    assert set(agent.enforcement.plan.maps["place_devs"]) == {PlaceDev((254 << 20) | 1)}
    agent.mount_watch = FakeMountWatch()
    applied = len(agent.enforcement.applied)

    agent._on_mounts()  # nothing changed: nothing applied
    assert len(agent.enforcement.applied) == applied

    table["text"] = TMPFS_ON_TMP  # systemd's tmp.mount, after the agent started
    agent.mount_watch.pending = True
    agent._on_mounts()
    assert len(agent.enforcement.applied) == applied + 1
    assert set(agent.enforcement.plan.maps["place_devs"]) == {PlaceDev(25)}
    assert records(agent)[-1]["message"] == "mount table changed: exec places relocated"

    agent.mount_watch.pending = True  # a change elsewhere that moves no place: no new generation
    agent._on_mounts()
    assert len(agent.enforcement.applied) == applied + 1


def test_the_mount_watch_is_quiet_until_the_table_changes() -> None:
    from enforcer.mountwatch import MountWatch

    watch = MountWatch()
    try:
        assert watch.changed() is False
    finally:
        watch.close()

RISKY = POLICY + '[rule.allow]\nuid = [0]\nexe = ["/usr/bin/python3"]\n'


def test_risky_allowlist_is_logged_at_reload_and_applied(agent, caplog) -> None:
    agent.policy_path.write_text(RISKY)
    with caplog.at_level("WARNING", logger="enforcer"):
        agent.reload()
    (notice,) = records(agent)
    assert notice["message"] == "reloaded"  # a warning never refuses
    logged = [r.getMessage() for r in caplog.records]
    assert logged[0].startswith(f'{agent.policy_path}:7: warning: rule 1 "sysrq" allow.uid[0]: uid 0 exempts')
    assert logged[1].startswith(f'{agent.policy_path}:8: warning: rule 1 "sysrq" allow.exe[0]: '
                                '"/usr/bin/python3" is an interpreter')


def test_risky_allowlist_is_logged_at_start(tmp_path, monkeypatch, caplog) -> None:
    from enforcer.kernel import probe

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setattr(probe, "run_probe", lambda: probe.ProbeReport(
        (probe.Check("lsm list", False, "bpf is not in the active LSM list", "boot with lsm=...,bpf"),)))
    policy = tmp_path / "policy.toml"
    policy.write_text(RISKY)
    agent = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=tmp_path / "state")
    with caplog.at_level("WARNING", logger="enforcer"):
        # past the policy (warnings do not refuse) to the probe, which fails here
        assert agent.start() == 4
    assert [r.getMessage().split(": ")[:3] for r in caplog.records] == [
        [f"{policy}:7", "warning", 'rule 1 "sysrq" allow.uid[0]'],
        [f"{policy}:8", "warning", 'rule 1 "sysrq" allow.exe[0]'],
    ]


# --- reload results for `enforcer reload` (enforcer.state.ReloadStatus) --------------


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """Agent.start installs handlers in this process: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _published(tmp_path) -> dict:
    return json.loads((tmp_path / "state/status.json").read_text())["reload"]


def test_a_reload_publishes_its_number_before_reading_and_its_verdict_after(agent, tmp_path, monkeypatch) -> None:
    seen_while_reading = []
    real = daemon.load_and_compile

    def reading(path, override):
        seen_while_reading.append(_published(tmp_path))
        return real(path, override)

    monkeypatch.setattr(daemon, "load_and_compile", reading)
    agent.policy_path.write_text(POLICY + '[[rule]]\nid = "tmp"\nkind = "exec"\ndirs = ["/tmp"]\n')
    agent.reload()
    (during,) = seen_while_reading
    assert (during["requested"], during["finished"], during["ok"]) == (1, 0, None)
    after = _published(tmp_path)
    assert (after["requested"], after["finished"], after["ok"], after["failure"], after["generation"]) == (
        1, 1, True, "", 2)
    assert after["message"].startswith("reloaded: generation 2, 2 rules (2 enforce, 0 audit), ")


def test_the_old_slot_is_retired_after_the_verdict_is_published_and_reported(agent, tmp_path) -> None:
    """The wait for hook runs on the old slot is most of a reload: it comes
    after `enforcer reload`'s verdict and the "reloaded" record, never before."""
    seen = []
    agent.enforcement.on_retire = lambda: seen.append((_published(tmp_path)["finished"],
                                                       [r["message"] for r in records(agent)]))
    agent.policy_path.write_text(POLICY + '[[rule]]\nid = "tmp"\nkind = "exec"\ndirs = ["/tmp"]\n')
    agent.reload()
    assert seen == [(1, ["reloaded"])] and agent.enforcement.retired == 1


def test_an_old_slot_that_cannot_be_retired_yet_is_logged_and_the_agent_goes_on(agent, tmp_path, caplog) -> None:
    agent.enforcement.retire_with = ReloadError("waiting for hook runs on the old policy slot 0 failed, "
                                                "previous policy kept: EINTR")
    agent.policy_path.write_text(POLICY + '[[rule]]\nid = "tmp"\nkind = "exec"\ndirs = ["/tmp"]\n')
    with caplog.at_level(logging.WARNING):
        agent.reload()
    assert _published(tmp_path)["ok"] is True  # the new policy is in force: the flip was done
    assert "the previous policy's slot is not emptied yet (the next reload tries again first)" in caplog.text


def test_a_rejected_reload_publishes_why_and_keeps_the_rules_in_force(agent, tmp_path) -> None:
    agent.policy_path.write_text('version = 1\n[[rule]]\nid = "x"\nkind = "nope"\n')
    agent.reload()
    published = json.loads((tmp_path / "state/status.json").read_text())
    assert [r["id"] for r in published["rules"]] == ["sysrq"]
    reload = published["reload"]
    assert (reload["finished"], reload["ok"], reload["failure"], reload["generation"]) == (1, False, "policy", 1)
    assert reload["message"].startswith("reload rejected: ") and 'kind: unknown value "nope"' in reload["message"]
    agent.enforcement.fail_with = ReloadError("applying the new policy failed, previous policy kept: ENOMEM")
    agent.policy_path.write_text(POLICY)
    agent.reload()
    assert (_published(tmp_path)["finished"], _published(tmp_path)["failure"]) == (2, "kernel")


def test_a_state_file_that_cannot_be_written_does_not_stop_a_reload(agent, tmp_path, caplog) -> None:
    agent.state_dir = tmp_path / "not-a-directory"
    agent.state_dir.write_text("")
    with caplog.at_level("ERROR", logger="enforcer"):
        agent.reload()
    assert records(agent)[0]["message"] == "reloaded"
    assert "cannot publish the reload status" in caplog.text


def test_the_reload_handler_is_in_place_before_the_lock_is_taken(tmp_path, monkeypatch) -> None:
    """Whoever finds the agent through its lock may send SIGHUP at once: it must not end a starting agent."""
    from enforcer import instancelock

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=tmp_path / "state")
    at_lock = []

    def acquire(state_dir):
        at_lock.append(signal.getsignal(signal.SIGHUP))
        raise instancelock.AgentAlreadyRunning(state_dir / "agent.lock", 1)

    monkeypatch.setattr(daemon, "acquire", acquire)
    agent.start()
    assert at_lock == [agent._on_reload]


def test_without_the_connector_process_details_come_from_proc_and_it_is_said_once(agent, monkeypatch, caplog) -> None:
    monkeypatch.setattr(daemon, "unavailable_reason", lambda: "not root (test)")
    with caplog.at_level("WARNING"):
        agent._watch_processes()
    warnings = [r.getMessage() for r in caplog.records if "connector unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "not root (test)" in warnings[0] and "from /proc" in warnings[0]
    assert agent.describer.cache is None and agent.process_events is None


def test_a_connector_that_refuses_falls_back_too(agent, monkeypatch, caplog) -> None:
    def refuse(cache):
        raise daemon.ConnectorUnavailable(93, "process events connector: Protocol not supported")

    monkeypatch.setattr(daemon, "unavailable_reason", lambda: None)
    monkeypatch.setattr(daemon, "ProcessEventListener", refuse)
    with caplog.at_level("WARNING"):
        agent._watch_processes()
    assert any("Protocol not supported" in r.getMessage() for r in caplog.records)
    assert agent.describer.cache is None


def test_events_are_described_only_when_written(agent, monkeypatch) -> None:
    """A suppressed repeat costs no /proc read: the describer runs after the limiter."""
    calls = []
    monkeypatch.setattr(agent.describer, "describe", lambda pid, start: calls.append(pid) or ProcessFacts())
    agent.reporter.limiter.burst = 1
    for _ in range(3):
        agent.reporter.event(decode(record(rule=1, pid=7, action=1), PLAN, BootClock(0)))
    assert calls == [7] and agent.reporter.counts["events"] == 1


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: List[str] = []

    def send(self, message: str) -> None:
        self.sent.append(message)

    def ping(self) -> None:
        pass


def test_service_status_carries_rules_digest_and_counts_and_follows_them(agent) -> None:
    agent.notifier = RecordingNotifier()
    agent._report_kernel_counters()
    counts = {"events_lost": 0, "blocked": 4, "audited": 1, "allowlisted": 2, "sigio_refused": 0}
    agent.enforcement.stats = lambda: counts
    agent._report_kernel_counters()
    agent._report_kernel_counters()  # nothing changed: nothing sent
    assert agent.notifier.sent == [
        f"STATUS=1 rule (1 enforce, 0 audit); policy {agent.loaded.digest}; blocked 0, audited 0, allowlisted 0",
        f"STATUS=1 rule (1 enforce, 0 audit); policy {agent.loaded.digest}; blocked 4, audited 1, allowlisted 2",
    ]
    agent.policy_path.write_text(POLICY.replace('kind = "sysrq"', 'kind = "sysrq"\nmode = "audit"'))
    agent.reload()
    assert agent.notifier.sent[-1].startswith("READY=1\nSTATUS=1 rule (0 enforce, 1 audit); policy ")
    assert agent.loaded.digest not in agent.notifier.sent[1]  # another policy, another digest
    assert records(agent)[-1]["policy_digest"] == agent.loaded.digest


def test_from_ready_on_a_sigterm_goes_through_the_loop(tmp_path, monkeypatch) -> None:
    """A stop sent the moment READY=1 is seen must not meet SIGTERM's default
    action before loop() begins (seen in the VM: the agent ended with -15)."""
    from enforcer.kernel import loader, probe
    from enforcer.kernel.loader import Startup

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setattr(probe, "run_probe", lambda: probe.ProbeReport(()))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    plan = compile_policy(load_policy(policy))
    fake = FakeEnforcement(plan)
    fake.on_event = lambda callback: None
    fake.startup = Startup("cached", (("load", 1.0),))
    fake.close = lambda: None
    monkeypatch.setattr(loader, "load", lambda plan, **options: fake)
    agent = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=tmp_path / "state")
    monkeypatch.setattr(agent, "_watch_mounts", lambda: None)
    monkeypatch.setattr(agent, "_watch_processes", lambda: None)
    at_ready = []

    class Notifier(RecordingNotifier):
        def send(self, message: str) -> None:
            if message.startswith("READY=1"):
                at_ready.append(signal.getsignal(signal.SIGTERM))
            super().send(message)

    agent.notifier = Notifier()
    try:
        assert agent.start() == 0
    finally:
        agent.lock.release()
    assert at_ready == [agent._on_stop]
