"""The agent's state file: what the running agent publishes for `enforcer status`
and `enforcer reload` (the result of each reload, numbered).

One owner for the format: the daemon writes it, `status` (and any later
command) reads it. It is a convenience for humans; the truth about what is
enforced lives in the kernel's pinned maps, and readers must treat a missing,
stale or unreadable file as "unknown", never as an error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from enforcer.plan import RuleInfo
from enforcer.policy import Mode, RuleKind, Severity

STATE_FILE = "status.json"


def default_state_dir() -> Path:
    """$ENFORCER_STATE_DIR, else /run/enforcer (the unit's RuntimeDirectory=)."""
    return Path(os.environ.get("ENFORCER_STATE_DIR", "/run/enforcer"))


@dataclass(frozen=True)
class ReloadStatus:
    """Where the agent's reloads stand, for `enforcer reload` to wait on.

    Reloads are numbered from 1 in each agent's life. `requested` is published
    when the agent takes a SIGHUP and before it reads any file; `finished` and
    the result after it decided. A command that changed a file, then read this,
    then sent SIGHUP therefore knows that the reload numbered
    max(requested, finished) + 1 or later read its change (a reload already
    under way may have read the files before the change), and waits until
    `finished` reaches it.
    """

    requested: int = 0  # reloads begun
    finished: int = 0  # the last reload decided; the fields below are its result
    ok: Optional[bool] = None  # None: no reload finished yet
    message: str = ""  # "reloaded: generation 3, ..." or "reload rejected: ..."
    #: why it was refused: "policy" (invalid: what `check` reports) or "kernel" (the maps could not be written)
    failure: str = ""
    generation: int = 0  # the generation in force after it
    time: str = ""  # when it finished, RFC 3339

    def begun(self) -> "ReloadStatus":
        return replace(self, requested=self.requested + 1)

    def done(self, ok: bool, message: str, generation: int, failure: str = "") -> "ReloadStatus":
        return ReloadStatus(self.requested, self.requested, ok, message, failure, generation, AgentState.now())

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "ReloadStatus":
        ok = data["ok"]
        return cls(int(data["requested"]), int(data["finished"]), None if ok is None else bool(ok),
                   str(data["message"]), str(data["failure"]), int(data["generation"]), str(data["time"]))


@dataclass(frozen=True)
class AgentState:
    pid: int
    policy: str
    allow_d: Tuple[str, ...]
    mode_override: Optional[str]  # "enforce" | "audit" | None (the policy's own modes)
    instance: str  # name of the pinned instance directory
    rules: Tuple[RuleInfo, ...]
    updated: str  # RFC 3339, UTC, seconds
    #: None only in a file written by an agent that predates reload results
    reload: Optional[ReloadStatus] = None
    #: where this agent's start went (enforcer.kernel.loader.Startup.to_json): object, seconds, phases
    startup: Optional[Dict[str, Any]] = None

    @staticmethod
    def now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["allow_d"] = list(self.allow_d)
        data["reload"] = asdict(self.reload) if self.reload is not None else None
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
            reload=ReloadStatus.from_json(data["reload"]) if data.get("reload") is not None else None,
            startup=dict(data["startup"]) if data.get("startup") is not None else None,
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
