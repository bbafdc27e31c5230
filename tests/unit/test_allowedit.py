"""`enforcer allow add|remove|list`: validated before anything is written, atomic, applied by reload."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agents import FakeAgents
from enforcer import atomicfile, cli
from enforcer.exitcodes import ExitCode

POLICY = """\
version = 1
[[rule]]
id = "sysrq"
kind = "sysrq"
[rule.allow]
exe = ["/usr/lib/systemd/systemd-sysctl"]

[[rule]]
id = "exec-tmp"
kind = "exec"
dirs = ["/tmp"]
"""


@pytest.fixture
def etc(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "policy.toml").write_text(POLICY)
    monkeypatch.setenv("ENFORCER_STATE_DIR", str(tmp_path / "state"))
    return directory


@pytest.fixture
def agents(tmp_path):
    started = FakeAgents(tmp_path / "state")
    yield started
    started.stop_all()


def allow(etc: Path, *argv: str) -> int:
    action, *rest = argv
    return cli.main(["allow", action, *rest, "--policy", str(etc / "policy.toml")])


def snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_add_creates_the_drop_in_and_reloads_the_agent(etc, agents, capsys) -> None:
    agents.start("agent", etc / "policy.toml")
    assert allow(etc, "add", "exec-tmp", "--exe", "/usr/bin/gcc-12") == 0
    target = etc / "allow.d" / "50-local.toml"
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f'added: {target}:5: rule 2 "exec-tmp": exe "/usr/bin/gcc-12"'
    assert lines[1].startswith("reloaded: generation 2, 2 rules (2 enforce, 0 audit), ")
    assert len(lines) == 2
    assert target.read_text().endswith('\n[rule_allow.exec-tmp]\nexe = ["/usr/bin/gcc-12"]\n')
    assert target.read_text().startswith("# Local exceptions, edited by `enforcer allow add|remove`")
    info = target.stat()
    assert stat.S_IMODE(info.st_mode) == 0o644 and (info.st_uid, info.st_gid) == (0, 0)
    assert [p.name for p in target.parent.iterdir()] == ["50-local.toml"]  # no temporary file left
    state = json.loads((etc.parent / "state" / "status.json").read_text())
    assert state["allow_d"] == [str(target)]  # the agent read it


def test_add_without_an_agent_writes_and_says_nothing_is_in_force(etc, capsys) -> None:
    assert allow(etc, "add", "sysrq", "--cgroup", "/system.slice/backup.service") == ExitCode.NO_AGENT
    out, err = capsys.readouterr()
    assert out.startswith("added: ")
    assert "no agent running" in err and "the change applies when the agent starts" in err
    assert 'cgroup = ["/system.slice/backup.service"]' in (etc / "allow.d/50-local.toml").read_text()


def test_add_no_reload(etc, capsys) -> None:
    assert allow(etc, "add", "sysrq", "--uid", "990", "--no-reload") == 0
    assert capsys.readouterr().out.splitlines()[1] == "not reloaded (--no-reload): apply it with: enforcer reload"


@pytest.mark.parametrize("argv,message", [
    (("exec-tmp", "--exe", "bin/x"),
     '{target}:5: rule_allow.exec-tmp.exe[0]: path "bin/x" is not absolute\n'
     "enforcer allow: the policy would be invalid with this entry: nothing changed\n"),
    (("exec-tmp", "--exe-dir", "/"),
     '{target}:5: rule_allow.exec-tmp.exe_dirs[0]: "/" would allow every executable\n'
     "enforcer allow: the policy would be invalid with this entry: nothing changed\n"),
    (("exec-tpm", "--exe", "/usr/bin/x"),
     'enforcer allow: no rule with id "exec-tpm" in {policy}; did you mean "exec-tmp"? (rules: sysrq, exec-tmp)\n'),
    (("exec-tmp", "--exe", "/usr/bin/x", "--file", "10-x.conf"),
     "enforcer allow: --file '10-x.conf': give a file name in allow.d ending in .toml, not starting with \".\" "
     "(allow.d reads only those)\n"),
    (("exec-tmp", "--exe", "/usr/bin/x", "--file", "../policy.toml"),
     "enforcer allow: --file '../policy.toml': give a file name in allow.d ending in .toml, not starting with \".\" "
     "(allow.d reads only those)\n"),
])
def test_bad_input_changes_nothing(etc, capsys, argv, message) -> None:
    before = snapshot(etc)
    assert allow(etc, "add", *argv) == ExitCode.INVALID_POLICY
    out, err = capsys.readouterr()
    assert out == ""
    assert err == message.format(target=etc / "allow.d/50-local.toml", policy=etc / "policy.toml")
    assert snapshot(etc) == before
    assert not (etc / "allow.d").exists()


def test_a_policy_invalid_now_is_not_touched(etc, capsys) -> None:
    (etc / "allow.d").mkdir()
    (etc / "allow.d/10-x.toml").write_text("[rule_allow.gone]\nuid = [5]\n")
    before = snapshot(etc)
    assert allow(etc, "add", "sysrq", "--uid", "7") == ExitCode.INVALID_POLICY
    err = capsys.readouterr().err
    assert f'{etc}/allow.d/10-x.toml:1: rule_allow.gone: no rule with id "gone"' in err
    assert err.endswith(f"enforcer allow: {etc}/policy.toml is invalid as it is: fix it first (enforcer check "
                        f"{etc}/policy.toml); nothing changed\n")
    assert snapshot(etc) == before


def test_a_risky_entry_is_refused_unless_forced_and_always_warned_about(etc, capsys) -> None:
    assert allow(etc, "add", "exec-tmp", "--exe", "/usr/bin/python3") == ExitCode.INVALID_POLICY
    err = capsys.readouterr().err
    target = etc / "allow.d/50-local.toml"
    assert err.startswith(f'{target}:5: warning: rule_allow.exec-tmp.exe[0]: "/usr/bin/python3" is an interpreter')
    assert err.endswith("enforcer allow: refused: this entry is risky (add --force to add it anyway); nothing changed\n")
    assert not target.exists()
    assert allow(etc, "add", "exec-tmp", "--uid", "0", "--force", "--no-reload") == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"{target}:5: warning: rule_allow.exec-tmp.uid[0]: uid 0 exempts every process running as root")
    assert out.startswith(f'added: {target}:5: rule 2 "exec-tmp": uid 0 [risky]\n')


def test_an_entry_already_there_is_not_added_twice(etc, capsys) -> None:
    before = snapshot(etc)
    assert allow(etc, "add", "sysrq", "--exe", "/usr/lib/systemd/systemd-sysctl") == 0
    assert capsys.readouterr().out == (f'already allowed: {etc}/policy.toml:6: rule 1 "sysrq": exe '
                                       '"/usr/lib/systemd/systemd-sysctl"; nothing changed\n')
    assert snapshot(etc) == before


def test_hand_edits_are_kept(etc, capsys) -> None:
    (etc / "allow.d").mkdir()
    hand = etc / "allow.d/20-team.toml"
    hand.write_text('# the build farm\n[rule_allow.exec-tmp]\nexe = [\n    "/usr/bin/cc1",  # gcc\n]\n')
    assert allow(etc, "add", "exec-tmp", "--exe", "/usr/bin/ld", "--file", "20-team.toml", "--no-reload") == 0
    assert hand.read_text() == (
        '# the build farm\n[rule_allow.exec-tmp]\nexe = [\n    "/usr/bin/cc1",  # gcc\n    "/usr/bin/ld",\n]\n')
    assert allow(etc, "remove", "exec-tmp", "--exe", "/usr/bin/cc1", "--no-reload") == 0
    assert hand.read_text() == '# the build farm\n[rule_allow.exec-tmp]\nexe = [\n    "/usr/bin/ld",\n]\n'
    assert capsys.readouterr().out.splitlines()[-2] == f'removed: {hand}:4: rule 2 "exec-tmp": exe "/usr/bin/cc1"'


def test_a_layout_it_cannot_edit_safely_is_refused(etc, capsys) -> None:
    (etc / "allow.d").mkdir()
    odd = etc / "allow.d/50-local.toml"
    odd.write_text('rule_allow = { exec-tmp = { exe = ["/usr/bin/a"] } }\n')
    before = snapshot(etc)
    assert allow(etc, "add", "exec-tmp", "--exe", "/usr/bin/b") == ExitCode.INVALID_POLICY
    assert f"enforcer allow: cannot edit {odd} safely: " in capsys.readouterr().err
    assert snapshot(etc) == before


def test_a_rejected_reload_is_reported_and_the_valid_file_stays(etc, agents, tmp_path, capsys) -> None:
    marker = tmp_path / "fail"
    marker.touch()
    agents.start("agent", etc / "policy.toml", env={"FAKE_AGENT_FAIL_APPLY": str(marker)})
    assert allow(etc, "add", "exec-tmp", "--exe", "/usr/bin/gcc-12") == ExitCode.UNAVAILABLE
    out, err = capsys.readouterr()
    assert out.startswith("added: ")
    assert err == ("reload rejected: applying the new policy failed, previous policy kept: ENOMEM (fake)\n"
                   "(the previous policy, generation 1, stays in force)\n")
    assert (etc / "allow.d/50-local.toml").exists()


def test_an_agent_running_another_policy_is_not_reloaded(etc, agents, tmp_path, capsys) -> None:
    other = tmp_path / "other" / "policy.toml"
    other.parent.mkdir()
    other.write_text(POLICY)
    proc = agents.start("agent", other)
    assert allow(etc, "add", "exec-tmp", "--exe", "/usr/bin/gcc-12") == ExitCode.UNAVAILABLE
    assert capsys.readouterr().err == (f"enforcer allow: the running agent (pid {proc.pid}) enforces {other}, not "
                                       f"{etc}/policy.toml: not reloaded\n")


def test_remove_from_every_drop_in_holding_it_and_say_what_still_allows_it(etc, capsys) -> None:
    (etc / "allow.d").mkdir()
    (etc / "allow.d/10-a.toml").write_text('[allow]\nexe = ["/usr/bin/x"]\n[rule_allow.exec-tmp]\nexe = ["/usr/bin/x"]\n')
    (etc / "allow.d/20-b.toml").write_text('[rule_allow.exec-tmp]\nexe = ["/usr/bin/y", "/usr/bin/x"]\n')
    assert allow(etc, "remove", "exec-tmp", "--exe", "/usr/bin/x", "--no-reload") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [
        f'removed: {etc}/allow.d/10-a.toml:4: rule 2 "exec-tmp": exe "/usr/bin/x"',
        f'removed: {etc}/allow.d/20-b.toml:2: rule 2 "exec-tmp": exe "/usr/bin/x"',
    ]
    assert err == f'note: still allowed by: {etc}/allow.d/10-a.toml:2: every rule (global allowlist): exe "/usr/bin/x"\n'
    assert (etc / "allow.d/10-a.toml").read_text() == '[allow]\nexe = ["/usr/bin/x"]\n'
    assert (etc / "allow.d/20-b.toml").read_text() == '[rule_allow.exec-tmp]\nexe = ["/usr/bin/y"]\n'


def test_remove_only_from_the_file_named(etc, capsys) -> None:
    (etc / "allow.d").mkdir()
    for name in ("10-a.toml", "20-b.toml"):
        (etc / "allow.d" / name).write_text('[rule_allow.exec-tmp]\nuid = [5]\n')
    assert allow(etc, "remove", "exec-tmp", "--uid", "5", "--file", "20-b.toml", "--no-reload") == 0
    assert (etc / "allow.d/10-a.toml").read_text() == '[rule_allow.exec-tmp]\nuid = [5]\n'
    assert (etc / "allow.d/20-b.toml").read_text() == ""
    assert "note: still allowed by: " in capsys.readouterr().err


def test_remove_what_is_not_in_allow_d(etc, capsys) -> None:
    before = snapshot(etc)
    assert allow(etc, "remove", "sysrq", "--exe", "/usr/lib/systemd/systemd-sysctl") == ExitCode.INVALID_POLICY
    assert capsys.readouterr().err == (f"enforcer allow: not in allow.d; it is written at: {etc}/policy.toml:6 "
                                       "(the policy itself: edit it by hand)\n")
    assert allow(etc, "remove", "sysrq", "--exe", "/usr/bin/nothing") == ExitCode.INVALID_POLICY
    assert capsys.readouterr().err == ('enforcer allow: rule "sysrq" has no exe "/usr/bin/nothing" in allow.d; nothing '
                                       "changed (enforcer allow list shows every entry)\n")
    assert snapshot(etc) == before


def test_list_every_entry_with_its_place_and_rule(etc, capsys) -> None:
    (etc / "allow.d").mkdir()
    (etc / "allow.d/10-a.toml").write_text('[allow]\nexe_dirs = ["/opt/agent"]\n\n[rule_allow.exec-tmp]\n'
                                           'uid = [0]\ncgroup = ["/system.slice/x.service"]\n')
    assert allow(etc, "list") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f'{etc}/policy.toml:6: rule 1 "sysrq": exe "/usr/lib/systemd/systemd-sysctl"',
        f'{etc}/allow.d/10-a.toml:2: every rule (global allowlist): exe_dirs "/opt/agent"',
        f'{etc}/allow.d/10-a.toml:5: rule 2 "exec-tmp": uid 0 [risky]',
        f'{etc}/allow.d/10-a.toml:6: rule 2 "exec-tmp": cgroup "/system.slice/x.service"',
    ]
    assert err == f"1 risky entry: enforcer check {etc}/policy.toml says why\n"
    assert cli.main(["allow", "list", "--policy", str(etc / "policy.toml"), "--rule", "sysrq", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["file"], e["line"], e["rule"], e["key"], e["value"]) for e in listed] == [
        (f"{etc}/policy.toml", 6, "sysrq", "exe", "/usr/lib/systemd/systemd-sysctl"),
        (f"{etc}/allow.d/10-a.toml", 2, None, "exe_dirs", "/opt/agent"),
    ]


def test_the_entry_options_are_exclusive_and_required(etc, capsys) -> None:
    for argv in (["allow", "add", "sysrq"], ["allow", "add", "sysrq", "--uid", "1", "--exe", "/x"],
                 ["allow", "add", "sysrq", "--uid", "-1"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
    capsys.readouterr()


# --- the atomic writer ---------------------------------------------------------------------


def test_write_atomic_replaces_or_refuses(tmp_path) -> None:
    target = tmp_path / "x.toml"
    atomicfile.write_atomic(target, b"one\n", mode=0o600)
    assert target.read_bytes() == b"one\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(atomicfile.FileExists):
        atomicfile.write_atomic(target, b"two\n", replace=False)
    assert target.read_bytes() == b"one\n"
    atomicfile.write_atomic(target, b"two\n")
    assert target.read_bytes() == b"two\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["x.toml"]


def test_write_atomic_leaves_nothing_behind_when_it_fails(tmp_path, monkeypatch) -> None:
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomicfile.os, "fsync", full)
    with pytest.raises(OSError):
        atomicfile.write_atomic(tmp_path / "x.toml", b"data")
    assert os.listdir(tmp_path) == []
