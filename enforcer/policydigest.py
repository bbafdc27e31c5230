"""A short, stable name for what a policy means, to compare agents across a fleet.

The digest covers the parsed policy with its allow.d files merged: rules,
modes, scopes, allowlists. It leaves out where the files are and the
warnings, and it is computed from the policy, not from the compiled maps,
whose contents depend on each host's mounts. Two hosts whose agents report
the same digest enforce the same policy; reordering the entries of a set
(say, `access`) or moving an allowlist entry into another allow.d file does
not change it, changing any rule does.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json

from enforcer.policy import Policy

#: Hex digits shown in STATUS= and records; the metrics carry the same prefix.
SHORT = 12


def _canonical(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _canonical(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, (tuple, list)):
        return [_canonical(item) for item in value]
    return value


def policy_digest(policy: Policy) -> str:
    """sha256 of the policy's meaning, first SHORT hex digits."""
    meaning = dataclasses.replace(policy, source="", allow_sources=(), warnings=())
    text = json.dumps(_canonical(meaning), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT]
