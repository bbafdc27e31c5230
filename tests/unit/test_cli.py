"""`enforcer check` output and exit codes; subcommand wiring; no bcc on import."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from enforcer import cli

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"

VALID = 'version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n[rule.allow]\nuid = [990]\n'


def test_check_valid_prints_one_summary_line_per_file(tmp_path, capsys):
    (tmp_path / "a.toml").write_text(VALID)
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "allow.d" / "x.toml").write_text('[allow]\nexe = ["/x"]\n')
    assert cli.main(["check", str(tmp_path / "a.toml"), str(POLICIES / "default.toml")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"{tmp_path}/a.toml: ok: 1 rule (1 enforce, 0 audit), 2 allowlist entries, 1 allow.d file",
        f"{POLICIES}/default.toml: ok: 9 rules (8 enforce, 1 audit), 14 allowlist entries, 0 allow.d files",
    ]


def test_check_mode_override_counts(capsys):
    assert cli.main(["check", "--mode", "audit", str(POLICIES / "default.toml")]) == 0
    assert capsys.readouterr().out == (
        f"{POLICIES}/default.toml: ok: 9 rules (0 enforce, 9 audit), 14 allowlist entries, 0 allow.d files\n"
    )


def test_check_one_invalid_file_exits_2_but_checks_all(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\nmode = "on"\n[[rule]]\nid = "s"\nkind = "sysrq"\n')
    good = tmp_path / "good.toml"
    good.write_text(VALID)
    assert cli.main(["check", str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    assert err == f'{bad}:2: mode: unknown value "on" (allowed: "enforce", "audit")\n'
    assert out == f"{good}: ok: 1 rule (1 enforce, 0 audit), 1 allowlist entry, 0 allow.d files\n"


def test_check_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path}/none.toml: cannot read: No such file or directory\n"


def test_check_needs_a_policy(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["check"])
    assert exited.value.code == 2
    assert "POLICY" in capsys.readouterr().err


def test_explain_default_policy(capsys):
    assert cli.main(["check", "--explain", str(POLICIES / "default.toml")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].endswith("default.toml: ok: 9 rules (8 enforce, 1 audit), 14 allowlist entries, 0 allow.d files")
    assert "Global allowlist: empty (no process is exempt from every rule)." in lines
    # rules in file order, each with its action
    headers = [line for line in lines if line.startswith("Rule ")]
    assert headers == [
        'Rule 1 "sysrq-write-host" [sysrq]: DENIED (enforce)',
        'Rule 2 "sysrq-write-container" [sysrq]: DENIED (enforce)',
        'Rule 3 "release-agent" [release_agent]: DENIED (enforce)',
        'Rule 4 "exec-unusual-dir" [exec]: DENIED (enforce)',
        'Rule 5 "exec-memfd" [exec]: DENIED (enforce)',
        'Rule 6 "exec-run-audit" [exec]: REPORTED ONLY, not denied (audit)',
        'Rule 7 "kernel-helper-sysctl-host" [kernel_helper]: DENIED (enforce)',
        'Rule 8 "kernel-helper-binfmt-host" [kernel_helper]: DENIED (enforce)',
        'Rule 9 "kernel-helper-container" [kernel_helper]: DENIED (enforce)',
    ]
    rule1 = out[out.index("Rule 1 "):out.index("Rule 2 ")]
    assert "    - writing /proc/sysrq-trigger (in every procfs mount)\n" in rule1
    assert "    - writing /proc/sys/kernel/sysrq (in every procfs mount)\n" in rule1
    assert "  Who: processes on the host only (initial mount namespace)\n" in rule1
    assert "    - the programs /usr/lib/systemd/systemd-sysctl, /lib/systemd/systemd-sysctl\n" in rule1
    rule3 = out[out.index("Rule 3 "):out.index("Rule 4 ")]
    assert "  Except: nobody\n" in rule3
    assert "    - renaming a file to or from the name release_agent, on any filesystem\n" in rule3
    rule4 = out[out.index("Rule 4 "):out.index("Rule 5 ")]
    assert "    - executing a file anywhere under /tmp/\n" in rule4
    assert "    - executing a file from a filesystem of type devtmpfs, mqueue, proc, sysfs, wherever it is mounted\n" in rule4
    rule7 = out[out.index("Rule 7 "):out.index("Rule 8 ")]
    assert "    - writing or truncating /proc/sys/kernel/core_pattern (in every procfs mount)\n" in rule7
    assert "    - writing or truncating /sys/kernel/uevent_helper (in every sysfs mount)\n" in rule7
    assert "    - processes in cgroup /system.slice/apport.service and below\n" in rule7
    rule9 = out[out.index("Rule 9 "):out.index("Deep paths")]
    assert (
        "    - writing or truncating /proc/sys/fs/binfmt_misc/register (in every binfmt_misc mount): "
        "adds an interpreter\n"
    ) in rule9
    assert "  Who: processes in containers only (any other mount namespace)\n  Except: nobody\n" in rule9
    assert out.endswith(
        "Deep paths: the kernel walks at most 64 path components and mount points. An executed file deeper than that cannot "
        "be placed; instead of allowing it, the kernel applies:\n"
        '  - host: rule 4 "exec-unusual-dir" (enforce)\n'
        '  - containers: rule 4 "exec-unusual-dir" (enforce)\n'
        "\n"
        "Risky allowlist entries: none.\n\n"
    )


def test_explain_global_allowlist_excludes_and_forced_mode(tmp_path, capsys):
    policy = tmp_path / "p.toml"
    policy.write_text(
        'version = 1\n[allow]\nexe_dirs = ["/opt/agent"]\nuid = [0, 998]\ncgroup = ["/system.slice/x.service"]\n'
        '[[rule]]\nid = "e"\nkind = "exec"\nscope = "container"\n'
        'dirs = ["/srv", {path = "/home", recursive = false}]\nexclude = ["/srv/ok"]\nfilesystems = ["memfd"]\n'
    )
    assert cli.main(["check", "--explain", "--mode", "audit", str(policy)]) == 0
    out = capsys.readouterr().out
    assert f"Policy {policy}: mode enforce (forced to audit by --mode), 1 rule.\n" in out
    assert (
        "Global allowlist: these may do anything the rules below deny:\n"
        "  - any program under /opt/agent/\n"
        "  - user ids 0, 998\n"
        "  - processes in cgroup /system.slice/x.service and below\n"
    ) in out
    assert (
        "    - executing a file anywhere under /srv/\n"
        "    - executing a file directly in /home/ (not in its subdirectories)\n"
        "    - executing an anonymous in-memory file (memfd_create, or an unlinked shared-memory file)\n"
        "    - but never for files under /srv/ok/ (excluded)\n"
        "  Who: processes in containers only (any other mount namespace)\n"
        "  Except:\n"
        "    - anything in the global allowlist\n"
    ) in out
    assert '  - host: nothing (no exec rule with dirs covers host); such files run\n' in out
    assert '  - containers: rule 1 "e" (audit)\n' in out


@pytest.mark.parametrize(
    "argv,module,function",
    [
        (["run", "--policy", "/p.toml", "--mode", "audit", "--log-level", "debug"], "enforcer.daemon", "run_command"),
        (["probe", "--json"], "enforcer.kernel.probe", "probe_command"),
        (["status", "--json"], "enforcer.status", "status_command"),
        (["unload"], "enforcer.status", "unload_command"),
    ],
)
def test_subcommands_delegate_lazily(monkeypatch, argv, module, function):
    seen = []
    fake = types.ModuleType(module)
    setattr(fake, function, lambda args: seen.append(args) or 7)
    monkeypatch.setitem(sys.modules, module, fake)
    assert cli.main(argv) == 7
    (args,) = seen
    assert args.command == argv[0]
    if argv[0] == "run":
        assert (args.policy, args.mode, args.log_level) == ("/p.toml", "audit", "debug")
    if argv[0] in ("probe", "status"):
        assert args.json is True


def test_run_defaults():
    args = cli.build_parser().parse_args(["run"])
    assert (args.policy, args.mode, args.log_level) == ("/etc/enforcer/policy.toml", None, "info")
    assert cli.build_parser().parse_args(["status"]).json is False


def test_missing_backend_module_is_a_clear_message(monkeypatch, capsys):
    def fail(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(cli.importlib, "import_module", fail)
    assert cli.main(["probe"]) == 1
    assert capsys.readouterr().err == (
        "enforcer probe: not available in this installation (enforcer.kernel.probe is missing)\n"
    )


def test_importing_cli_and_checking_does_not_import_bcc():
    code = (
        "import sys\n"
        "from enforcer import cli\n"
        "assert cli.main(['check', '--explain', 'policies/default.toml']) == 0\n"
        "bad = [m for m in sys.modules if m == 'bcc' or m.startswith('bcc.') or m.startswith('enforcer.kernel')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_python_dash_m_enforcer(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "enforcer", "check", "policies/default.toml", "policies/audit.toml"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "policies/default.toml: ok: 9 rules (8 enforce, 1 audit), 14 allowlist entries, 0 allow.d files",
        "policies/audit.toml: ok: 9 rules (0 enforce, 9 audit), 14 allowlist entries, 0 allow.d files",
    ]
    bad = tmp_path / "x.toml"
    bad.write_bytes(b"\xff")
    result = subprocess.run([sys.executable, "-m", "enforcer", "check", str(bad)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"{bad}:1: not valid UTF-8: byte 0xff at offset 0\n"
    assert "Traceback" not in result.stderr


def test_run_mode_choices_map_to_overrides():
    from enforcer.daemon import mode_override
    from enforcer.policy import Mode

    parser = cli.build_parser()
    chosen = {m: parser.parse_args(["run", "--mode", m]).mode for m in ("enforce", "audit", "policy")}
    assert {m: mode_override(v) for m, v in chosen.items()} == {
        "enforce": Mode.ENFORCE, "audit": Mode.AUDIT, "policy": None,
    }
    assert mode_override(parser.parse_args(["run"]).mode) is None


def test_check_names_allow_d_files_it_does_not_read(tmp_path, capsys) -> None:
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "policy.toml").write_text('version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n')
    (tmp_path / "allow.d" / "10-x.conf").write_text("[allow]\nuid = [1]\n")
    (tmp_path / "allow.d" / "20-y.toml.dpkg-dist").write_text("")
    (tmp_path / "allow.d" / "README").write_text("packaged")
    (tmp_path / "allow.d" / ".hidden").write_text("")
    assert cli.main(["check", str(tmp_path / "policy.toml")]) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'allow.d' / '10-x.conf'}: warning: not read" in err
    assert "20-y.toml.dpkg-dist: warning: not read" in err
    assert "README" not in err and ".hidden" not in err
    assert cli.main(["check", "--strict", str(tmp_path / "policy.toml")]) == 2  # every warning is an error
    assert f"{tmp_path / 'allow.d' / '10-x.conf'}: not read (allow.d reads only *.toml files) (refused by --strict)" \
        in capsys.readouterr().err


# --- a drop-in checked alone is checked as a drop-in (issue 10.4) ---------------------

DROP_IN_POLICY = 'version = 1\n[[rule]]\nid = "s"\nkind = "sysrq"\n[[rule]]\nid = "memfd"\nkind = "exec"\n' \
                 'filesystems = ["memfd"]\n'
DROP_IN = '[allow]\nexe_dirs = ["/opt/agent"]\n[rule_allow.memfd]\nexe = ["/usr/bin/runc", "/usr/bin/crun"]\n'


def test_check_a_drop_in_in_allow_d_as_a_drop_in(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "policy.toml").write_text(DROP_IN_POLICY)
    (tmp_path / "allow.d" / "10-x.toml").write_text(DROP_IN)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", "allow.d/10-x.toml"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == "allow.d/10-x.toml: ok: drop-in, 3 allowlist entries; rule ids checked against policy.toml\n"


def test_check_explains_a_drop_in(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "policy.toml").write_text(DROP_IN_POLICY)
    (tmp_path / "allow.d" / "10-x.toml").write_text(DROP_IN + "uid = [0]\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", "--explain", "allow.d/10-x.toml"]) == 0
    out = capsys.readouterr().out
    assert out.split("\n", 2)[2] == (
        "Drop-in allow.d/10-x.toml, for policy.toml.\n"
        "\n"
        "Adds to the global allowlist (exempt from every rule):\n"
        "  - any program under /opt/agent/\n"
        'Adds to rule 2 "memfd" (exempt from that rule only):\n'
        "  - the programs /usr/bin/runc, /usr/bin/crun\n"
        "  - user id 0\n"
        "\n"
        "Risky allowlist entries (warnings of `enforcer check`, errors under `enforcer check --strict`):\n"
        '  - allow.d/10-x.toml:5: rule_allow.memfd.uid[0]: uid 0 exempts every process running as root: the '
        "protected actions need root, so an attacker who has it is exempt too; allow the specific program (exe) "
        "or the service's cgroup instead\n\n"
    )


def test_check_a_staged_drop_in_with_the_flag(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "policy.toml").write_text(DROP_IN_POLICY)
    (tmp_path / "10-x.toml").write_text(DROP_IN)
    monkeypatch.chdir(tmp_path)
    # not in an allow.d directory: checked as a policy unless told
    assert cli.main(["check", "10-x.toml"]) == 2
    assert "version: missing" in capsys.readouterr().err
    assert cli.main(["check", "--drop-in", "10-x.toml"]) == 0
    assert capsys.readouterr().out == (
        "10-x.toml: ok: drop-in, 3 allowlist entries; rule ids not checked "
        "(policy not known; name the policy with --policy)\n")
    assert cli.main(["check", "--policy", "policy.toml", "10-x.toml"]) == 0
    assert capsys.readouterr().out == (
        "10-x.toml: ok: drop-in, 3 allowlist entries; rule ids checked against policy.toml\n")


def test_check_a_drop_in_for_a_policy_that_cannot_be_read(tmp_path, capsys) -> None:
    (tmp_path / "10-x.toml").write_text(DROP_IN)
    assert cli.main(["check", "--policy", str(tmp_path / "none.toml"), str(tmp_path / "10-x.toml")]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"{tmp_path}/none.toml: cannot read: No such file or directory\n")


def test_an_empty_drop_in_is_fine(tmp_path, capsys) -> None:
    (tmp_path / "allow.d").mkdir()
    (tmp_path / "allow.d" / "10-x.toml").write_text("# nothing yet\n")
    assert cli.main(["check", str(tmp_path / "allow.d" / "10-x.toml")]) == 0
    assert capsys.readouterr().out == (
        f"{tmp_path}/allow.d/10-x.toml: ok: drop-in, 0 allowlist entries; rule ids not checked "
        "(no policy.toml beside its allow.d; name the policy with --policy)\n")
