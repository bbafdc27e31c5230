"""enforcer.policydigest: one name per policy meaning, whatever the files look like."""

from __future__ import annotations

from enforcer.parse import loads_policy
from enforcer.policydigest import policy_digest

BASE = """
version = 1
mode = "enforce"
[[rule]]
id = "sysrq"
kind = "sysrq"
access = ["write", "read"]
[[rule]]
id = "tmp"
kind = "exec"
dirs = ["/tmp", "/dev/shm"]
[rule.allow]
uid = [1000]
"""


def digest(text: str, name: str = "a.toml") -> str:
    return policy_digest(loads_policy(text, name))


def test_the_same_meaning_has_the_same_digest() -> None:
    assert digest(BASE) == digest(BASE, "/etc/enforcer/other.toml")
    assert digest(BASE) == digest(BASE.replace('["write", "read"]', '["read", "write"]'))  # a set
    assert len(digest(BASE)) == 12


def test_any_change_of_meaning_changes_it() -> None:
    changed = [
        BASE.replace('mode = "enforce"', 'mode = "audit"'),
        BASE.replace("uid = [1000]", "uid = [1001]"),
        BASE.replace('"/tmp", "/dev/shm"', '"/tmp"'),
        BASE.replace('id = "tmp"', 'id = "exec-tmp"'),
        BASE.replace('["write", "read"]', '["write"]'),
    ]
    digests = {digest(text) for text in changed}
    assert len(digests) == len(changed) and digest(BASE) not in digests
