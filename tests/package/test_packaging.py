"""Fast checks of packaging/: the unit's required directives, declared
dependencies in the Debian control file and the RPM spec, the files both
packages install, and `systemd-analyze verify` on the unit when available.

Building and linting the packages is packaging/ci-check's job (slower; run by
.ci/run); the installed package is exercised in tests/kernel/test_package.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from enforcer.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "packaging"
UNIT = PKG / "systemd" / "enforcer.service"
CONTROL = PKG / "debian" / "control"
SPEC = PKG / "rpm" / "enforcer.spec"


def unit_sections(text: str) -> Dict[str, List[tuple]]:
    sections: Dict[str, List[tuple]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"directive outside a section: {line}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> Dict[str, Dict[str, str]]:
    return {name: dict(pairs) for name, pairs in unit_sections(UNIT.read_text()).items()}


@pytest.fixture(scope="module")
def unit_pairs() -> Dict[str, List[tuple]]:
    return unit_sections(UNIT.read_text())


def test_unit_service_basics(unit):
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\d+(s|min)?", svc["WatchdogSec"])
    assert svc["Restart"] == "on-failure"
    # invalid policy, and a host that cannot enforce: no restart loop
    assert {"2", "4"} <= set(svc["RestartPreventExitStatus"].split())
    assert {int(c) for c in svc["RestartPreventExitStatus"].split()} == {
        ExitCode.INVALID_POLICY, ExitCode.HOST_CANNOT_ENFORCE}
    assert svc["ExecStart"] == (
        "/usr/bin/enforcer run --policy /etc/enforcer/policy.toml --mode ${ENFORCER_MODE} "
        "--events ${ENFORCER_EVENTS} $ENFORCER_OPTIONS")


def test_unit_mode_defaults_to_audit(unit_pairs):
    svc = unit_pairs["Service"]
    assert ("Environment", "ENFORCER_MODE=audit") in svc
    assert ("EnvironmentFile", "-/etc/default/enforcer") in svc
    defaults = (PKG / "default" / "enforcer").read_text()
    assert re.findall(r"^ENFORCER_MODE=(.*)$", defaults, re.M) == ["audit"]


def test_unit_events_default_to_the_journal(unit_pairs):
    svc = unit_pairs["Service"]
    assert ("Environment", "ENFORCER_EVENTS=journal") in svc
    defaults = (PKG / "default" / "enforcer").read_text()
    assert re.findall(r"^ENFORCER_EVENTS=(.*)$", defaults, re.M) == ["journal"]
    assert ("Environment", "ENFORCER_OPTIONS=") in svc  # empty: no metrics unless asked for
    assert re.findall(r"^ENFORCER_OPTIONS=(.*)$", defaults, re.M) == [""]
    # the event file's directory is the one place under /var/log the sandbox opens
    assert ("LogsDirectory", "enforcer") in svc
    rotate = (PKG / "logrotate" / "enforcer").read_text()
    assert "/var/log/enforcer/events.jsonl" in rotate and "--signal=USR1" in rotate


def test_unit_is_ordered_early_without_deadlock(unit):
    u = unit["Unit"]
    assert u["DefaultDependencies"] == "no"
    assert "local-fs.target" in u["After"].split()
    before = u["Before"].split()
    assert "sysinit.target" in before and "shutdown.target" in before
    # No Requires=/Wants= on later units: nothing can pull a cycle in.
    assert "Requires" not in u and "Wants" not in u
    assert unit["Install"]["WantedBy"] == "sysinit.target"


def test_unit_sandbox(unit):
    svc = unit["Service"]
    caps = set(svc["CapabilityBoundingSet"].split())
    assert caps == {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"}  # tested minimum
    assert svc["LimitMEMLOCK"] == "infinity"
    assert "ProtectKernelTunables" not in svc  # breaks pinning: docs/packaging.md
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelModules": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "RestrictAddressFamilies": "AF_UNIX",
    }.items():
        assert svc.get(key) == value, key
    assert "/sys/fs/bpf" in svc["ReadWritePaths"].split()
    assert svc["CacheDirectory"] == "enforcer" and svc["RuntimeDirectory"] == "enforcer"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart's program exists: check a copy whose
    # command is replaced by an existing one, everything else unchanged.
    text = UNIT.read_text().replace("ExecStart=/usr/bin/enforcer ", "ExecStart=/bin/true ")
    copy = tmp_path / "enforcer.service"
    copy.write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def _control_depends(text: str) -> List[str]:
    m = re.search(r"^Depends:(.*?)(?=^\S)", text, re.M | re.S)
    assert m, "no Depends in debian/control"
    return [d.strip() for d in m.group(1).replace("\n", " ").split(",") if d.strip()]


def test_debian_control_dependencies():
    text = CONTROL.read_text()
    deps = _control_depends(text)
    for pkg in ("python3-bpfcc", "bpftool", "python3-sdnotify"):
        assert pkg in deps, pkg
    assert "python3 (>= 3.11) | python3-tomli" in deps
    build = re.search(r"^Build-Depends:(.*?)(?=^\S)", text, re.M | re.S).group(1)
    for pkg in ("debhelper-compat", "dh-python", "pybuild-plugin-pyproject", "python3-all", "python3-setuptools"):
        assert pkg in build, pkg


def test_rpm_spec_dependencies():
    text = SPEC.read_text()
    requires = re.findall(r"^Requires:\s*(.+)$", text, re.M)
    for pkg in ("python3-bcc", "bpftool", "python3-sdnotify"):
        assert pkg in requires, pkg
    assert "(python3-tomli if python3 < 3.11)" in requires
    assert "%config(noreplace) %{_sysconfdir}/enforcer/policy.toml" in text
    assert "%config(noreplace) %{_sysconfdir}/sysconfig/enforcer" in text


def test_package_contents_declared():
    install = (PKG / "debian" / "enforcer.install").read_text()
    assert "bpf/enforcer.bpf.c usr/share/enforcer/bpf" in install
    assert "bpf/enforcer.h usr/share/enforcer/bpf" in install
    rules = (PKG / "debian" / "rules").read_text()
    assert "policies/default.toml debian/enforcer/etc/enforcer/policy.toml" in rules
    assert "packaging/default/enforcer debian/enforcer/etc/default/enforcer" in rules
    manpages = (PKG / "debian" / "enforcer.manpages").read_text().split()
    assert manpages == ["packaging/man/enforcer.8", "packaging/man/enforcer.toml.5"]
    for name in ("default.toml", "audit.toml", "strict.toml"):
        assert f"policies/{name}" in (PKG / "debian" / "enforcer.examples").read_text()
        assert (REPO / "policies" / name).is_file()
    spec = SPEC.read_text()
    for path in ("%{_datadir}/enforcer/bpf/enforcer.bpf.c", "%{_sysconfdir}/enforcer/policy.toml",
                 "%{_unitdir}/enforcer.service", "%{_mandir}/man8/enforcer.8",
                 "%{_mandir}/man5/enforcer.toml.5"):
        assert path in spec, path


def test_removal_unloads_but_upgrade_does_not():
    prerm = (PKG / "debian" / "prerm").read_text()
    block = re.search(r'^if \[ "\$1" = "remove" \].*?^fi$', prerm, re.M | re.S)
    assert block and "/usr/bin/enforcer unload" in block.group(0), prerm
    assert prerm.index("#DEBHELPER#") < prerm.index("enforcer unload")  # stop first
    spec = SPEC.read_text()
    preun = re.search(r"^%preun$(.*?)^%postun$", spec, re.M | re.S).group(1)
    assert "if [ $1 -eq 0 ]; then\n    /usr/bin/enforcer unload" in preun


def test_man_pages_cover_commands_and_exit_codes():
    page = (PKG / "man" / "enforcer.8").read_text()
    for word in ("check", "run", "probe", "status", "unload", "SIGHUP", "SIGTERM", "EXIT STATUS",
                 "/etc/enforcer/policy.toml", "ENFORCER_MODE"):
        assert word in page, word
    fmt = (PKG / "man" / "enforcer.toml.5").read_text()
    assert "policy.md" in fmt and "allow.d" in fmt.lower()


@pytest.mark.skipif(shutil.which("man") is None, reason="man not installed")
@pytest.mark.parametrize("page", ["enforcer.8", "enforcer.toml.5"])
def test_man_pages_render_without_warnings(page):
    res = subprocess.run(["man", "--warnings", "-l", "-Tutf8", str(PKG / "man" / page)],
                         capture_output=True, text=True, timeout=60, env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_build_scripts_are_executable():
    for name in ("build-deb", "build-rpm", "ci-check"):
        path = PKG / name
        assert path.is_file() and path.stat().st_mode & 0o111, f"packaging/{name} missing or not executable"
