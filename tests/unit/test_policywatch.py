"""The policy watch (enforcer.policywatch) and the agent's reload on a ConfigMap update.

`ConfigMapVolume` writes a directory the way the kubelet's atomic writer
does: the payload in a timestamped directory, `..data` a symlink to it, and
one symlink per top-level key pointing through `..data`; an update writes a
new timestamped directory, renames a fresh `..data` symlink over the old one
and removes the old directory.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

from enforcer import daemon
from enforcer.policywatch import PolicyWatch, WatchMode, fingerprint, is_kubernetes_volume
from enforcer.report import Reporter
from test_daemon import POLICY, FakeEnforcement

MORE = POLICY + '[[rule]]\nid = "tmp"\nkind = "exec"\ndirs = ["/tmp"]\n'
BROKEN = 'version = 1\n[[rule]]\nid = "x"\nkind = "nope"\n'
DROP_IN = '[rule_allow.tmp]\nexe = ["/usr/bin/true"]\n'


class ConfigMapVolume:
    """A ConfigMap volume as the kubelet lays it out; keys may hold one '/' (items' paths)."""

    def __init__(self, root: Path, files: Dict[str, str]) -> None:
        self.root = root
        self.serial = 0
        root.mkdir()
        self.update(files)

    def update(self, files: Dict[str, str]) -> None:
        self.serial += 1
        payload = self.root / f"..2026_12_07_01_02_{self.serial:02d}.{self.serial:09d}"
        for name, text in files.items():
            (payload / name).parent.mkdir(parents=True, exist_ok=True)
            (payload / name).write_text(text)
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        os.symlink(payload.name, self.root / "..data_tmp")
        os.rename(self.root / "..data_tmp", data)  # the one atomic step
        for top in {name.split("/")[0] for name in files}:
            link = self.root / top
            if not link.is_symlink():
                os.symlink(f"..data/{top}", link)
        if old is not None:
            shutil.rmtree(self.root / old)

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"


def settled(watch: PolicyWatch) -> List[bool]:
    """What three successive looks say."""
    return [watch.changed() for _ in range(3)]


def test_a_configmap_volume_is_recognised_by_its_data_link(tmp_path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.toml": POLICY})
    plain = tmp_path / "plain.toml"
    plain.write_text(POLICY)
    assert is_kubernetes_volume(volume.policy) and not is_kubernetes_volume(plain)
    assert PolicyWatch.for_mode(WatchMode.AUTO, volume.policy) is not None
    assert PolicyWatch.for_mode(WatchMode.AUTO, plain) is None
    assert PolicyWatch.for_mode(WatchMode.ON, plain) is not None
    assert PolicyWatch.for_mode(WatchMode.OFF, volume.policy) is None


def test_a_swap_is_reported_once_after_it_settles(tmp_path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.toml": POLICY})
    watch = PolicyWatch(volume.policy)
    assert settled(watch) == [False, False, False]
    # the same text again: still a new payload directory, so a reload (harmless: the same plan)
    volume.update({"policy.toml": MORE})
    assert settled(watch) == [False, True, False]


def test_a_file_still_moving_is_not_reported_until_two_looks_agree(tmp_path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.toml": POLICY})
    watch = PolicyWatch(volume.policy)
    volume.update({"policy.toml": MORE})
    assert watch.changed() is False
    volume.update({"policy.toml": POLICY})  # changed again before the second look
    assert watch.changed() is False
    assert watch.changed() is True


def test_an_allow_d_drop_in_added_or_removed_is_a_change(tmp_path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.toml": MORE})
    watch = PolicyWatch(volume.policy)
    volume.update({"policy.toml": MORE, "allow.d/site.toml": DROP_IN})
    assert settled(watch) == [False, True, False]
    before = fingerprint(volume.policy)
    assert any(view[0].endswith("/allow.d/site.toml") for view in before)


def test_an_edit_in_place_is_seen_with_watch_on(tmp_path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    watch = PolicyWatch.for_mode(WatchMode.ON, policy)
    policy.write_text(MORE)
    os.utime(policy, ns=(1, 1))  # the same second as the first write on a coarse clock: force a new mtime
    assert settled(watch) == [False, True, False]


# --- the agent: a ConfigMap update reloads through the SIGHUP transaction -------------


@pytest.fixture
def k8s_agent(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.toml": POLICY})
    out = io.StringIO()
    agent = daemon.Agent(volume.policy, None, Reporter.json_lines(out), state_dir=tmp_path / "state")
    loaded = daemon.load_and_compile(volume.policy, None)
    agent.enforcement = FakeEnforcement(loaded.plan)
    agent.loaded = loaded  # as after start()
    agent._watch_policy()
    agent.out, agent.volume = out, volume
    return agent


def messages(agent) -> List[str]:
    return [json.loads(line)["message"] for line in agent.out.getvalue().splitlines()]


def look(agent, times: int = 2) -> None:
    for _ in range(times):
        agent._on_policy_files()


def test_the_agent_watches_a_configmap_policy_by_default(k8s_agent) -> None:
    assert k8s_agent.policy_watch is not None
    assert "policy-watch" in [task.name for task in k8s_agent.scheduler.tasks]


def test_an_updated_configmap_is_applied(k8s_agent, tmp_path) -> None:
    k8s_agent.volume.update({"policy.toml": MORE})
    look(k8s_agent)
    assert messages(k8s_agent) == ["reloaded"]
    assert [rule.id for rule in k8s_agent.enforcement.plan.rules] == ["sysrq", "tmp"]
    published = json.loads((tmp_path / "state/status.json").read_text())["reload"]
    assert (published["finished"], published["ok"]) == (1, True)


def test_a_bad_configmap_never_replaces_the_good_policy_and_is_not_retried(k8s_agent) -> None:
    before = k8s_agent.enforcement.plan
    k8s_agent.volume.update({"policy.toml": BROKEN})
    look(k8s_agent, 5)
    assert messages(k8s_agent) == ["reload rejected, previous policy still in force"]  # once, not every second
    assert k8s_agent.enforcement.applied == [] and k8s_agent.enforcement.plan is before
    k8s_agent.volume.update({"policy.toml": MORE})  # the operator fixes it
    look(k8s_agent)
    assert messages(k8s_agent)[-1] == "reloaded"
    assert [rule.id for rule in k8s_agent.enforcement.plan.rules] == ["sysrq", "tmp"]


def test_a_drop_in_in_the_configmap_reaches_the_kernel(k8s_agent) -> None:
    k8s_agent.volume.update({"policy.toml": MORE, "allow.d/site.toml": DROP_IN})
    look(k8s_agent)
    assert messages(k8s_agent) == ["reloaded"]
    assert "allow.d/site.toml" in " ".join(k8s_agent.loaded.policy.allow_sources)


def test_a_sighup_reload_of_the_new_files_is_not_followed_by_a_second(k8s_agent) -> None:
    k8s_agent.volume.update({"policy.toml": MORE})
    k8s_agent.reload()  # `enforcer reload` got there first
    look(k8s_agent, 3)
    assert messages(k8s_agent) == ["reloaded"]


def test_a_plain_policy_is_not_watched_unless_asked(tmp_path, monkeypatch) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = daemon.Agent(policy, None, Reporter.json_lines(io.StringIO()), state_dir=tmp_path / "state")
    agent._watch_policy()
    assert agent.policy_watch is None
    assert "policy-watch" not in [task.name for task in agent.scheduler.tasks]
