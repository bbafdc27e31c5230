"""`enforcer suggest`: the narrowest safe entry per subject, grouped and counted, checked, written atomically."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from enforcer import cli
from enforcer.exitcodes import ExitCode
from enforcer.parse import load_drop_in, loads_policy
from enforcer.suggest import Proposal, propose, render, service_cgroup, suggest

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

POLICY = """\
version = 1
[[rule]]
id = "sysrq"
kind = "sysrq"
[rule.allow]
exe_dirs = ["/opt/trusted"]

[[rule]]
id = "exec-tmp"
kind = "exec"
dirs = ["/tmp"]
[rule.allow]
cgroup = ["/system.slice/known.service"]
"""
SESSION = "/user.slice/user-1000.slice/session-2.scope"


def event(rule="exec-tmp", exe="/usr/bin/gcc-12", path="/tmp/build/a", cgroup=SESSION, action="audited", uid=1000,
          time="2026-11-24T08:00:00.000000Z", runtime=None, **extra) -> dict:
    record = {"type": "event", "time": time, "action": action, "rule": rule, "mode": "audit", "generation": 1,
              "attributed": True, "path": path, "exe": exe, "comm": Path(exe).name[:15] if exe else "x",
              "uid": uid, "cgroup": cgroup, "exe_truncated": False, "cgroup_truncated": False,
              "container": {"namespaced": runtime is not None, "runtime": runtime, "id": None, "pod_uid": None}}
    record.update(extra)
    return record


def suppressed(count, rule="exec-tmp", exe="/usr/bin/gcc-12", path="/tmp/build/a", coarse=False) -> dict:
    return {"type": "suppressed", "time": "2026-11-24T09:00:00.000000Z", "rule": rule, "action": "audited",
            "exe": None if coarse else exe, "path": None if coarse else path, "count": count, "coarse": coarse,
            "window_start": "a", "window_end": "b"}


@pytest.fixture
def policy():
    return loads_policy(POLICY, "policy.toml")


# --- one subject, one entry -------------------------------------------------------------------


@pytest.mark.parametrize("cgroup,service", [
    ("/system.slice/apport.service", "/system.slice/apport.service"),
    ("/system.slice/backup.service/worker", "/system.slice/backup.service"),
    ("/system.slice/x.slice/y.service", "/system.slice/x.slice/y.service"),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", None),  # the user's own units
    (SESSION, None),
    ("/system.slice/docker-abc.scope", None),  # a container
    ("/system.slice", None),
    ("/system.slice/.service", None),
    ("/machine.slice/systemd-nspawn@c.service", None),
    ("/", None),
    ("", None),
])
def test_service_cgroup(cgroup, service) -> None:
    assert service_cgroup(cgroup) == service


def test_an_ordinary_program_is_proposed_by_its_path() -> None:
    decision = propose(event())
    assert (decision.proposal, decision.why) == (Proposal("exec-tmp", "exe", "/usr/bin/gcc-12"), "")


@pytest.mark.parametrize("exe", ["/usr/bin/bash", "/usr/bin/python3.11", "/usr/bin/env",
                                 "/lib64/ld-linux-x86-64.so.2", "/tmp/tool", "/home/u/bin/tool"])
def test_a_program_that_runs_anything_gets_its_service_instead(exe) -> None:
    decision = propose(event(exe=exe, cgroup="/system.slice/backup.service"))
    assert decision.proposal == Proposal("exec-tmp", "cgroup", "/system.slice/backup.service")
    assert decision.why.startswith((f'"{exe}" is ', f'"{exe}" runs ', "users other than root can create files"))


def test_a_shell_in_a_login_session_gets_nothing_and_a_reason() -> None:
    decision = propose(event(exe="/usr/bin/dash"))
    assert decision.proposal is None
    assert decision.why.startswith('"/usr/bin/dash" is a shell')
    assert decision.why.endswith(f"; and its cgroup {SESSION} is not a system service's")


def test_a_containers_program_is_never_proposed_by_path() -> None:
    decision = propose(event(exe="/usr/bin/tool", runtime="docker", cgroup="/system.slice/docker-ab.scope"))
    assert decision.proposal is None
    assert decision.why.startswith('"/usr/bin/tool" is a path in a docker container\'s own filesystem')


@pytest.mark.parametrize("changes,why", [
    ({"exe": ""}, "the event names no executable"),
    ({"exe_truncated": True}, 'the executable\'s path "/usr/bin/gcc-12" was cut short by the kernel'),
    ({"exe": "/opt/a[1]/tool"}, 'path "/opt/a[1]/tool" contains the wildcard "["'),
])
def test_an_unusable_path_falls_back_to_the_service(changes, why) -> None:
    in_service = propose(event(cgroup="/system.slice/x.service", **changes))
    assert in_service.proposal == Proposal("exec-tmp", "cgroup", "/system.slice/x.service")
    assert in_service.why.startswith(why)
    assert propose(event(cgroup="/system.slice/x.service", cgroup_truncated=True, **changes)).why.endswith(
        "; and its cgroup path was cut short by the kernel")


def test_never_a_uid_whatever_the_subject() -> None:
    for exe in ("/usr/bin/gcc-12", "/usr/bin/bash", ""):
        for uid in (0, 1000):
            proposal = propose(event(exe=exe, uid=uid, cgroup="/system.slice/x.service")).proposal
            assert proposal is not None and proposal.key in ("exe", "cgroup")


# --- grouping and counting -------------------------------------------------------------------


def test_events_are_grouped_counted_and_ordered(policy) -> None:
    records = [event(path=f"/tmp/build/{i % 3}", time=f"2026-11-24T08:0{i}:00.000000Z") for i in range(6)]
    records += [
        event(rule="sysrq", exe="/usr/sbin/tool", path="/proc/sysrq-trigger", action="blocked"),
        event(exe="/usr/bin/python3.11", cgroup="/system.slice/backup.service/x"),
        event(exe="/usr/bin/bash", cgroup="/system.slice/backup.service"),  # the same service: one entry
        event(exe="/usr/bin/ld"),
        {"type": "agent", "message": "started"},
        {"type": "lost", "count": 3},
    ]
    found = suggest(records, policy)
    shown = [(g.rule, g.proposal.key, g.proposal.value, g.count) for g in found.proposed]
    assert shown == [  # the policy's rule order; exe before cgroup; most events first
        ("sysrq", "exe", "/usr/sbin/tool", 1),
        ("exec-tmp", "exe", "/usr/bin/gcc-12", 6),
        ("exec-tmp", "exe", "/usr/bin/ld", 1),
        ("exec-tmp", "cgroup", "/system.slice/backup.service", 2),
    ]
    gcc = found.proposed[1]
    assert gcc.paths == (("/tmp/build/0", 2), ("/tmp/build/1", 2), ("/tmp/build/2", 2))
    assert (gcc.first, gcc.last, gcc.uids, gcc.actions) == (
        "2026-11-24T08:00:00.000000Z", "2026-11-24T08:05:00.000000Z", (1000,), (("audited", 6),))
    service = found.proposed[3]
    assert [w.split(" is ")[0] for w in service.whys] == ['"/usr/bin/python3.11"', '"/usr/bin/bash"']
    assert found.events == 10 and found.proposed[0].actions == (("blocked", 1),)


def test_suppressed_repeats_count_for_the_entry_of_their_offender(policy) -> None:
    records = [event(exe="/usr/bin/bash", cgroup="/system.slice/b.service"), suppressed(40, exe="/usr/bin/bash"),
               suppressed(5, exe="/usr/bin/other", path="/tmp/o"), suppressed(9, coarse=True)]
    found = suggest(records, policy)
    assert [(g.proposal.value, g.count) for g in found.proposed] == [
        ("/usr/bin/other", 5),  # its written events are not in the input: judged on the summary
        ("/system.slice/b.service", 41),
    ]
    assert (found.coarse, found.events) == (9, 46)


def test_entries_the_policy_has_now_and_rules_it_lacks_are_left_out(policy) -> None:
    records = [
        event(rule="sysrq", exe="/opt/trusted/bin/x"),  # below exe_dirs
        event(exe="/usr/bin/python3", cgroup="/system.slice/known.service/sub"),  # below an allowed cgroup
        event(rule="renamed", exe="/usr/bin/x"),
        event(rule="rule#3", attributed=False),
    ]
    found = suggest(records, policy)
    assert found.proposed == ()
    assert [(g.rule, g.proposal.value) for g in found.already] == [
        ("sysrq", "/opt/trusted/bin/x"), ("exec-tmp", "/system.slice/known.service")]
    assert (found.unknown_rules, found.unattributed) == ((("renamed", 1),), 1)


# --- the drop-in -----------------------------------------------------------------------


def test_the_drop_in_is_valid_toml_that_check_accepts(policy, tmp_path) -> None:
    records = [event(path="/tmp/a\nb"), event(exe="/opt/vendor/bin/a"), event(exe="/opt/vendor/bin/b"),
               event(exe="/usr/bin/dash"), event(rule="sysrq", exe="/usr/bin/perl", cgroup="/system.slice/p.service")]
    text = render(suggest(records, policy), "events.jsonl", "policy.toml")
    assert tomllib.loads(text) == {"rule_allow": {
        "sysrq": {"cgroup": ["/system.slice/p.service"]},
        "exec-tmp": {"exe": ["/opt/vendor/bin/a", "/opt/vendor/bin/b", "/usr/bin/gcc-12"]},  # 1 event each: by path
    }}
    (tmp_path / "policy.toml").write_text(POLICY)
    drop_in = load_drop_in("s.toml", str(tmp_path / "policy.toml"), text.encode())
    assert drop_in.warnings == ()
    assert "# alternative to the 2 programs above: exe_dirs = [\"/opt/vendor/bin\"]" in text
    assert "/tmp/a\\x0ab" in text  # a line break in a path cannot end the comment
    assert "# - rule exec-tmp: no safe entry: \"/usr/bin/dash\" is a shell" in text


def test_no_directory_alternative_for_a_system_directory(policy) -> None:
    text = render(suggest([event(exe="/usr/bin/a"), event(exe="/usr/bin/b")], policy), "x", "p")
    assert "alternative" not in text


# --- the command -------------------------------------------------------------------------


@pytest.fixture
def etc(tmp_path) -> Path:
    directory = tmp_path / "etc"
    (directory / "allow.d").mkdir(parents=True)
    (directory / "policy.toml").write_text(POLICY)
    return directory


def write_events(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(etc: Path, *argv: str) -> int:
    return cli.main(["suggest", "--policy", str(etc / "policy.toml"), *argv])


def test_print_from_a_file(etc, tmp_path, capsys) -> None:
    events = write_events(tmp_path / "events.jsonl", [event(), event(rule="sysrq", exe="/usr/bin/x")])
    assert run(etc, "--from", str(events)) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Proposed by `enforcer suggest` from 2 events at 2026-11-24T08:00:00.000000Z,\n"
                          f"# read from {tmp_path}/events.jsonl; rule ids and existing exceptions from "
                          f"{etc}/policy.toml.\n")
    assert tomllib.loads(out) == {"rule_allow": {"sysrq": {"exe": ["/usr/bin/x"]},
                                                 "exec-tmp": {"exe": ["/usr/bin/gcc-12"]}}}


def test_read_journal_json_from_standard_input_and_filter(etc, monkeypatch, capsys) -> None:
    entries = [{"MESSAGE": "x", "ENFORCER_RECORD": json.dumps(event(exe=f"/usr/bin/t{i}", time=t))}
               for i, t in enumerate(("2026-11-24T07:00:00.000000Z", "2026-11-24T09:00:00.000000Z"))]
    entries.append({"MESSAGE": "y", "ENFORCER_RECORD": json.dumps(event(rule="sysrq", exe="/usr/bin/s",
                                                                        time="2026-11-24T09:30:00Z"))})
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(e) + "\n" for e in entries)))
    assert run(etc, "--from", "-", "--rule", "exec-tmp", "--since", "2026-11-24T08:00:00Z") == 0
    out = capsys.readouterr().out
    assert "read from standard input" in out
    assert tomllib.loads(out) == {"rule_allow": {"exec-tmp": {"exe": ["/usr/bin/t1"]}}}


def test_write_checks_then_writes_atomically_and_never_replaces_unasked(etc, tmp_path, capsys) -> None:
    events = write_events(tmp_path / "events.jsonl", [event()])
    target = etc / "allow.d" / "60-suggested.toml"
    assert run(etc, "--from", str(events), "--write", str(target)) == 0
    assert capsys.readouterr().out == (f"written: {target} (1 entry for 1 rule, from 1 event)\n"
                                       "next: review it; enforcer check --explain --mode service POLICY; "
                                       "enforcer reload\n")
    info = target.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o644, 0, 0)
    assert cli.main(["check", str(target)]) == 0
    capsys.readouterr()
    before = target.read_bytes()
    other = write_events(tmp_path / "more.jsonl", [event(exe="/usr/bin/ld")])
    assert run(etc, "--from", str(other), "--write", str(target)) == ExitCode.UNAVAILABLE
    assert capsys.readouterr().err == f"enforcer suggest: {target} exists: not replaced (--force replaces it)\n"
    assert target.read_bytes() == before
    assert run(etc, "--from", str(other), "--write", str(target), "--force") == 0
    assert '"/usr/bin/ld"' in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["60-suggested.toml"]


def test_nothing_to_propose_writes_nothing(etc, tmp_path, capsys) -> None:
    events = write_events(tmp_path / "events.jsonl", [event(exe="/usr/bin/dash")])
    target = etc / "allow.d" / "60-suggested.toml"
    assert run(etc, "--from", str(events), "--write", str(target)) == 0
    out, err = capsys.readouterr()
    assert "# Nothing to propose." in out and "no safe entry" in out
    assert err == f"enforcer suggest: nothing to propose: {target} not written\n"
    assert not target.exists()


def test_a_place_check_would_refuse_is_not_written_to(etc, tmp_path, capsys) -> None:
    events = write_events(tmp_path / "events.jsonl", [event()])
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)  # anyone could replace what is written there
    assert run(etc, "--from", str(events), "--write", str(loose / "s.toml")) == ExitCode.INVALID_POLICY
    err = capsys.readouterr().err
    assert f"directory {loose} is writable by group and others (mode 0777)" in err
    assert err.endswith("enforcer suggest: the proposal does not pass `enforcer check`; nothing written\n")
    assert list(loose.iterdir()) == []


@pytest.mark.parametrize("argv,status,message", [
    (("--from", "/nonexistent/events"), ExitCode.UNAVAILABLE,
     "enforcer suggest: /nonexistent/events: No such file or directory\n"),
    (("--from", "-", "--since", "yesterday"), ExitCode.UNAVAILABLE,
     "enforcer suggest: --since 'yesterday': not a time like 2026-11-24T10:00:00Z\n"),
    (("--from", "-", "--write", "/nonexistent/dir/s.toml"), ExitCode.UNAVAILABLE,
     "enforcer suggest: cannot write /nonexistent/dir/s.toml: its directory does not exist\n"),
])
def test_bad_input_is_a_sentence(etc, monkeypatch, capsys, argv, status, message) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(event()) + "\n"))
    assert run(etc, *argv) == status
    assert capsys.readouterr().err == message


def test_an_invalid_policy_is_refused(etc, tmp_path, capsys) -> None:
    (etc / "policy.toml").write_text("version = 2\n")
    assert run(etc, "--from", str(write_events(tmp_path / "e", [event()]))) == ExitCode.INVALID_POLICY
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"enforcer suggest: {etc}/policy.toml must be valid: its rule ids and exceptions "
                                    "decide what to propose")
