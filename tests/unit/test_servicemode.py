"""`enforcer check --mode service`: the mode the packaged unit runs, read as systemd reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer import cli
from enforcer.policy import Mode
from enforcer.servicemode import ServiceModeError, read_service_mode

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "policies" / "default.toml"


def _settings(tmp_path, text: str) -> str:
    path = tmp_path / "enforcer"
    path.write_text(text)
    return str(path)


def test_the_packaged_settings_file_says_audit() -> None:
    mode = read_service_mode((str(REPO / "packaging/default/enforcer"),))
    assert (mode.value, mode.override) == ("audit", Mode.AUDIT)
    assert mode.source == f"ENFORCER_MODE=audit in {REPO}/packaging/default/enforcer"


def test_no_settings_file_is_the_units_default(tmp_path) -> None:
    mode = read_service_mode((str(tmp_path / "a"), str(tmp_path / "b")))
    assert mode.value == "audit"
    assert mode.source == f"ENFORCER_MODE=audit, the unit's default (no {tmp_path}/a or {tmp_path}/b)"


def test_the_first_file_that_exists_counts(tmp_path) -> None:
    second = _settings(tmp_path, "ENFORCER_MODE=enforce\n")
    assert read_service_mode((str(tmp_path / "missing"), second)).value == "enforce"


@pytest.mark.parametrize("text,value", [
    ("ENFORCER_MODE=enforce\n", "enforce"),
    ('ENFORCER_MODE="policy"\n', "policy"),
    ("ENFORCER_MODE='enforce'\n", "enforce"),
    ("  ENFORCER_MODE = enforce  \n", "enforce"),
    ("ENFORCER_MODE=enforce\nENFORCER_MODE=audit\n", "audit"),  # the last assignment wins
    ("# ENFORCER_MODE=enforce\n; ENFORCER_MODE=enforce\nENFORCER_MODE=audit\n", "audit"),  # comments
    ("ENFORCER_EVENTS=journal\n", "audit"),  # not set: the unit's Environment= stays
])
def test_values_as_systemd_reads_them(tmp_path, text, value) -> None:
    assert read_service_mode((_settings(tmp_path, text),)).value == value


def test_not_set_says_which_file_was_read(tmp_path) -> None:
    path = _settings(tmp_path, "ENFORCER_EVENTS=journal\n")
    assert read_service_mode((path,)).source == f"ENFORCER_MODE=audit, the unit's default ({path} does not set it)"


@pytest.mark.parametrize("value", ["enforced", "", "Enforce"])
def test_a_value_run_would_refuse_is_an_error_with_its_line(tmp_path, value) -> None:
    path = _settings(tmp_path, f"# settings\nENFORCER_MODE={value}\n")
    with pytest.raises(ServiceModeError) as error:
        read_service_mode((path,))
    assert str(error.value) == (f'{path}:2: ENFORCER_MODE: unknown value "{value}" (allowed: "enforce", "audit", '
                                '"policy"); the service\'s `enforcer run --mode` would refuse it and not start')


def test_an_unreadable_settings_file_is_an_error(tmp_path) -> None:
    with pytest.raises(ServiceModeError, match="cannot read"):
        read_service_mode((str(tmp_path),))  # a directory


# --- check --mode policy | service -------------------------------------------------------


def test_check_accepts_mode_policy_as_run_does(capsys) -> None:
    assert cli.main(["check", "--mode", "policy", "--explain", str(DEFAULT)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{DEFAULT}: ok: 9 rules (8 enforce, 1 audit), 14 allowlist entries, 0 allow.d files\n")
    assert f"Policy {DEFAULT}: mode enforce (the policy's own modes, by --mode policy), 9 rules.\n" in out
    assert 'Rule 1 "sysrq-write-host" [sysrq]: DENIED (enforce)\n' in out


def test_check_mode_service_shows_what_a_fresh_install_runs(tmp_path, monkeypatch, capsys) -> None:
    """The reproduced defect: the file says DENIED, the packaged service (audit) denies nothing."""
    monkeypatch.setenv("ENFORCER_STATE_DIR", str(tmp_path / "state"))
    settings = str(REPO / "packaging/default/enforcer")
    assert cli.main(["check", "--explain", "--mode", "service", "--service-config", settings, str(DEFAULT)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{DEFAULT}: ok: 9 rules (0 enforce, 9 audit), 14 allowlist entries, 0 allow.d files; "
                          f"as the service runs it: ENFORCER_MODE=audit in {settings}\n")
    assert f"mode enforce (forced to audit by ENFORCER_MODE=audit in {settings}), 9 rules." in out
    assert "DENIED" not in out
    assert 'Rule 1 "sysrq-write-host" [sysrq]: REPORTED ONLY, not denied (audit)\n' in out


def test_check_mode_service_enforce_keeps_the_rules_own_audit(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ENFORCER_STATE_DIR", str(tmp_path / "state"))
    settings = _settings(tmp_path, "ENFORCER_MODE=enforce\n")
    assert cli.main(["check", "--mode", "service", "--service-config", settings, str(DEFAULT)]) == 0
    assert "9 rules (8 enforce, 1 audit)" in capsys.readouterr().out


def test_check_mode_service_with_a_bad_settings_file_exits_2(tmp_path, capsys) -> None:
    settings = _settings(tmp_path, "ENFORCER_MODE=on\n")
    assert cli.main(["check", "--mode", "service", "--service-config", settings, str(DEFAULT)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f'{settings}:1: ENFORCER_MODE: unknown value "on"')


def test_check_mode_service_names_a_running_agent_started_in_another_mode(tmp_path, monkeypatch, capsys) -> None:
    from enforcer.instancelock import acquire
    from enforcer.state import AgentState, ReloadStatus, write_state
    import os

    state_dir = tmp_path / "state"
    monkeypatch.setenv("ENFORCER_STATE_DIR", str(state_dir))
    lock = acquire(state_dir)
    write_state(AgentState(os.getpid(), str(DEFAULT), (), "audit", "i", (), "t", ReloadStatus()), state_dir)
    settings = _settings(tmp_path, "ENFORCER_MODE=enforce\n")
    try:
        assert cli.main(["check", "--mode", "service", "--service-config", settings, str(DEFAULT)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"note: the running agent (pid {os.getpid()}) was started with --mode audit; "
                              f"ENFORCER_MODE=enforce in {settings} takes effect when it restarts "
                              "(systemctl restart enforcer)\n")
        (tmp_path / "enforcer").write_text("ENFORCER_MODE=audit\n")  # the same mode: nothing to say
        assert cli.main(["check", "--mode", "service", "--service-config", settings, str(DEFAULT)]) == 0
        assert "note:" not in capsys.readouterr().out
    finally:
        lock.release()


def test_service_config_without_mode_service_is_refused(tmp_path, capsys) -> None:
    settings = _settings(tmp_path, "ENFORCER_MODE=enforce\n")
    assert cli.main(["check", "--service-config", settings, str(DEFAULT)]) == 2
    assert capsys.readouterr().err == "enforcer check: --service-config is read only with --mode service\n"
