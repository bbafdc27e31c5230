"""The mode the packaged service runs its policy in, read as systemd reads it.

enforcer.service runs `enforcer run --mode ${ENFORCER_MODE}`, with
`Environment=ENFORCER_MODE=audit` in the unit and
`EnvironmentFile=-/etc/default/enforcer` (/etc/sysconfig/enforcer in the RPM)
after it, so a value in that file wins and its absence leaves "audit".
`enforcer check --explain --mode service` uses this to show a policy as the
service will run it, rather than as written: on a fresh install the
difference is every rule ("DENIED" in the file, only reported by the service).

Only that file and the unit's default are read. A `systemctl edit` drop-in
that sets Environment=ENFORCER_MODE is overridden by the file whenever the
file sets it (EnvironmentFile= is applied after Environment=); one that
changes ExecStart= is not seen at all (docs/operations.md says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from enforcer.policy import Mode

__all__ = ["SERVICE_DEFAULTS", "UNIT_DEFAULT", "ServiceMode", "ServiceModeError", "read_service_mode"]

#: Where the packages install the service's settings: Debian, then RPM.
SERVICE_DEFAULTS = ("/etc/default/enforcer", "/etc/sysconfig/enforcer")
#: `Environment=ENFORCER_MODE=audit` in packaging/systemd/enforcer.service.
UNIT_DEFAULT = "audit"
#: What `enforcer run --mode` accepts, hence what the variable may hold.
VALUES = ("enforce", "audit", "policy")
VARIABLE = "ENFORCER_MODE"


class ServiceModeError(Exception):
    """The service's settings cannot be read, or name a mode `enforcer run` would refuse."""


@dataclass(frozen=True)
class ServiceMode:
    value: str  # "enforce" | "audit" | "policy"
    source: str  # where it comes from, for people: "ENFORCER_MODE=audit in /etc/default/enforcer"

    @property
    def override(self) -> Optional[Mode]:
        """As `enforcer run --mode VALUE` takes it: None keeps the policy's own modes."""
        return None if self.value == "policy" else Mode(self.value)


def _unquote(value: str) -> str:
    """systemd strips one pair of matching quotes around a value (systemd.exec(5), EnvironmentFile=)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_service_mode(candidates: Sequence[str] = SERVICE_DEFAULTS) -> ServiceMode:
    """ENFORCER_MODE as the service gets it: the last assignment in the first
    settings file that exists, else the unit's default. Raises ServiceModeError
    naming FILE:LINE for a value `enforcer run --mode` would refuse, or for a
    file that exists but cannot be read (the service would not see it either,
    and guessing its mode is what this is meant to stop)."""
    for path in candidates:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ServiceModeError(f"{path}: cannot read: {error.strerror or error}") from None
        found = None
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                continue
            key, sep, value = stripped.partition("=")
            if sep and key.strip() == VARIABLE:
                found = (number, _unquote(value.strip()))
        if found is None:
            return ServiceMode(UNIT_DEFAULT, f"{VARIABLE}={UNIT_DEFAULT}, the unit's default ({path} does not set it)")
        number, value = found
        if value not in VALUES:
            allowed = ", ".join(f'"{v}"' for v in VALUES)
            raise ServiceModeError(f'{path}:{number}: {VARIABLE}: unknown value "{value}" (allowed: {allowed}); '
                                   "the service's `enforcer run --mode` would refuse it and not start")
        return ServiceMode(value, f"{VARIABLE}={value} in {path}")
    return ServiceMode(UNIT_DEFAULT, f"{VARIABLE}={UNIT_DEFAULT}, the unit's default (no {' or '.join(candidates)})")
