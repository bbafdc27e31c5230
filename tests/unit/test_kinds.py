"""The rule-kind table: every kind has a spec, its keys and defaults are documented,
and nothing outside enforcer/kinds knows one kind from another."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from enforcer.kinds import KINDS
from enforcer.parse import KIND_DEFAULTS
from enforcer.policy import RuleKind

REPO = Path(__file__).resolve().parents[2]
POLICY_DOC = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")


def _kind_section(kind: RuleKind) -> str:
    """The text of docs/policy.md under ### `kind = "KIND"`, up to the next heading."""
    found = re.search(rf'^### `kind = "{kind.value}"`.*?\n(.*?)(?=^#)', POLICY_DOC, re.S | re.M)
    assert found, f'docs/policy.md has no section ### `kind = "{kind.value}"`'
    return found.group(1)


def test_every_kind_has_its_spec_in_kind_order():
    assert list(KINDS) == list(RuleKind)
    assert all(spec.kind is kind for kind, spec in KINDS.items())


@pytest.mark.parametrize("kind", list(RuleKind), ids=lambda k: k.value)
def test_kind_keys_are_documented(kind):
    section = _kind_section(kind)
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert documented == list(KINDS[kind].keys)


@pytest.mark.parametrize("kind", list(RuleKind), ids=lambda k: k.value)
def test_kind_defaults_are_documented(kind):
    row = re.search(rf"^\| `{kind.value}` \| (\w+) \| `(T[\d.]+)`", POLICY_DOC, re.M)
    assert row, f"no row for {kind.value} in the defaults table of docs/policy.md"
    defaults = KIND_DEFAULTS[kind]
    assert (defaults.severity.value, defaults.mitre) == row.groups()
    assert defaults is KINDS[kind].defaults


def test_no_kind_knowledge_outside_the_kinds_package():
    rule_classes = re.compile(r"\b(SysrqRule|ReleaseAgentRule|ExecRule|SysrqFile|SysrqAccess|ReleaseAgentAccess)\b"
                              r"|RuleKind\.[A-Z]")
    offenders = []
    for path in sorted((REPO / "enforcer").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("enforcer/kinds/") or relative == "enforcer/policy.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if rule_classes.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
