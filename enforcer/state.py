"""The agent's state file: what the running agent publishes for `enforcer status`.

One owner for the format: the daemon writes it, `status` (and any later
command) reads it. It is a convenience for humans; the truth about what is
enforced lives in the kernel's pinned maps, and readers must treat a missing,
stale or unreadable file as "unknown", never as an error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from enforcer.plan import RuleInfo
from enforcer.policy import Mode, RuleKind, Severity

STATE_FILE = "status.json"


def default_state_dir() -> Path:
    """$ENFORCER_STATE_DIR, else /run/enforcer (the unit's RuntimeDirectory=)."""
    return Path(os.environ.get("ENFORCER_STATE_DIR", "/run/enforcer"))


@dataclass(frozen=True)
class AgentState:
    pid: int
    policy: str
    allow_d: Tuple[str, ...]
    mode_override: Optional[str]  # "enforce" | "audit" | None (the policy's own modes)
    instance: str  # name of the pinned instance directory
    rules: Tuple[RuleInfo, ...]
    updated: str  # RFC 3339, UTC, seconds

    @staticmethod
    def now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["allow_d"] = list(self.allow_d)
        data["rules"] = [
            dict(asdict(rule), severity=rule.severity.value, kind=rule.kind.value, mode=rule.mode.value)
            for rule in self.rules
        ]
        return data

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "AgentState":
        """Raises KeyError, TypeError or ValueError for a file of another shape."""
        rules = tuple(
            RuleInfo(
                index=int(r["index"]),
                id=str(r["id"]),
                description=str(r["description"]),
                severity=Severity(r["severity"]),
                mitre=str(r["mitre"]),
                kind=RuleKind(r["kind"]),
                mode=Mode(r["mode"]),
            )
            for r in data["rules"]
        )
        return cls(
            pid=int(data["pid"]),
            policy=str(data["policy"]),
            allow_d=tuple(str(p) for p in data["allow_d"]),
            mode_override=data["mode_override"],
            instance=str(data["instance"]),
            rules=rules,
            updated=str(data["updated"]),
        )


def write_state(state: AgentState, directory: Optional[Path] = None) -> None:
    """Replace the state file atomically (readers never see half a file)."""
    directory = directory or default_state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    tmp.replace(directory / STATE_FILE)


def read_state(directory: Optional[Path] = None) -> Optional[AgentState]:
    """The published state, or None when there is none or it cannot be understood."""
    directory = directory or default_state_dir()
    try:
        return AgentState.from_json(json.loads((directory / STATE_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
