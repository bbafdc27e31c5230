"""enforcer probe: reporting and refusal logic, with fake checks (no kernel)."""

from __future__ import annotations

import json

from enforcer.kernel import probe
from enforcer.kernel.probe import Check, ProbeReport, run_probe


def ok(name):
    return lambda: Check(name, True, f"{name} fine")


def failing(name, fix="do this"):
    return lambda: Check(name, False, f"{name} missing", fix)


def test_all_ok_is_usable() -> None:
    report = run_probe([ok("btf"), ok("lsm list")])
    assert report.usable
    assert report.to_text().splitlines()[-1] == "enforcement: possible"


def test_failure_makes_it_unusable_and_says_what_to_change() -> None:
    report = run_probe([ok("btf"), failing("lsm list", fix="boot with lsm=...,bpf")])
    assert not report.usable
    text = report.explain()
    assert "lsm list: lsm list missing" in text
    assert "fix: boot with lsm=...,bpf" in text


def test_optional_check_does_not_block() -> None:
    report = run_probe([ok("btf"), lambda: Check("lockdown", False, "odd", required=False)])
    assert report.usable
    assert "warn lockdown: odd" in report.to_text()


def test_trial_attach_is_skipped_after_a_failed_prerequisite() -> None:
    called = []

    def trial():
        called.append(True)
        return Check("trial attach", True, "attached")

    original = probe.check_trial_attach
    probe.check_trial_attach = trial
    try:
        report = run_probe([failing("btf"), probe.check_trial_attach])
    finally:
        probe.check_trial_attach = original
    assert called == []
    assert report.checks[-1] == Check("trial attach", False, "skipped: btf failed")


def test_json_output() -> None:
    data = json.loads(ProbeReport((Check("btf", True, "present"),)).to_json())
    assert data == {"usable": True, "checks": [{"name": "btf", "ok": True, "detail": "present", "fix": "", "required": True}]}


def test_lsm_list_without_bpf_names_the_boot_parameter(tmp_path, monkeypatch) -> None:
    lsm = tmp_path / "lsm"
    lsm.write_text("lockdown,capability,apparmor\n")
    monkeypatch.setattr(probe, "LSM_LIST", lsm)
    check = probe.check_lsm_list()
    assert not check.ok
    assert "lsm=lockdown,capability,apparmor,bpf" in check.fix


def test_lsm_list_with_bpf(tmp_path, monkeypatch) -> None:
    lsm = tmp_path / "lsm"
    lsm.write_text("lockdown,capability,bpf")
    monkeypatch.setattr(probe, "LSM_LIST", lsm)
    assert probe.check_lsm_list().ok


def test_lockdown_confidentiality_is_fatal(tmp_path, monkeypatch) -> None:
    lockdown = tmp_path / "lockdown"
    lockdown.write_text("none integrity [confidentiality]")
    monkeypatch.setattr(probe, "LOCKDOWN", lockdown)
    check = probe.check_lockdown()
    assert not check.ok and check.required
    lockdown.write_text("none [integrity] confidentiality")
    assert probe.check_lockdown().ok


def test_execve_check_is_reported_not_required(tmp_path, monkeypatch) -> None:
    from harness.btf_bytes import small_kernel

    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(small_kernel())
    new.write_bytes(small_kernel(is_check_width=1))
    monkeypatch.setattr(probe, "BTF_VMLINUX", old)
    before = probe.check_execve_check()
    assert (before.ok, before.required) == (False, False)
    assert "6.14" in before.detail and "python3 /tmp/x.py" in before.detail
    monkeypatch.setattr(probe, "BTF_VMLINUX", new)
    assert probe.check_execve_check().ok
