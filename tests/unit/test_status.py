"""enforcer status: the verdict from the pinned rule configs, and a refusal for non-root."""

from __future__ import annotations

import pytest

from enforcer import abi, status
from enforcer.exitcodes import ExitCode
from enforcer.plan import RuleValue, encode_value

F = abi.RuleFlag


def _configs(*flags: int):
    return [abi.RuleConfig(flags=f) for f in flags] + [abi.RuleConfig(flags=0)] * 3  # empty slots


@pytest.mark.parametrize("flags,expected", [
    ((F.PRESENT | F.ENFORCE, F.PRESENT | F.ENFORCE | F.EXEC), "enforcing"),
    ((F.PRESENT | F.ENFORCE, F.PRESENT | F.EXEC | F.MAP), "partially enforcing (1 of 2 rules)"),
    ((F.PRESENT, F.PRESENT | F.EXEC), "audit only"),
    ((), "not loaded"),
])
def test_verdict_from_pinned_rules(flags, expected) -> None:
    assert status.verdict(True, status.RuleCounts.of(_configs(*flags))) == expected


def test_detached_programs_are_not_loaded_whatever_the_maps_say() -> None:
    assert status.verdict(False, status.RuleCounts(3, 3)) == "not loaded"


def test_every_compiled_rule_is_marked_present() -> None:
    assert encode_value(RuleValue(False)).flags == F.PRESENT  # an audit rule is visible too
    assert encode_value(RuleValue(True, int(F.EXEC))).flags == F.PRESENT | F.ENFORCE | F.EXEC


def test_non_root_gets_a_sentence_and_exit_1(monkeypatch, capsys) -> None:
    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied", "/sys/fs/bpf/enforcer")

    monkeypatch.setattr(status, "collect", denied)
    assert status.status_command(object()) == ExitCode.UNAVAILABLE
    err = capsys.readouterr().err
    assert "must be root" in err and "Traceback" not in err


def test_the_last_reload_verdict_is_shown(capsys) -> None:
    from enforcer.state import AgentState, ReloadStatus

    reload = ReloadStatus(2, 2, False, "reload rejected: p.toml:3: mode: unknown value", "policy", 4, "2026-11-24T10:00:00Z")
    state = AgentState(42, "/etc/enforcer/policy.toml", (), None, "i", (), "2026-11-24T09:00:00Z", reload)
    status._print_text({"verdict": "enforcing", "instances": [], "agent_running": True, "agent_pid": 42,
                        "agent": state.to_json()})
    out = capsys.readouterr().out
    assert ("  last reload (2 since start, 2026-11-24T10:00:00Z): reload rejected: p.toml:3: mode: unknown value\n"
            in out)
    assert AgentState.from_json(state.to_json()) == state  # the file round-trips
