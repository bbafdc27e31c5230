"""What a bad policy file is reported as: every problem at once, each with a place."""

from __future__ import annotations

import dataclasses
import re
from typing import List, Sequence

__all__ = ["PolicyProblem", "PolicyError"]


@dataclasses.dataclass(frozen=True)
class PolicyProblem:
    """One problem: `location` is "LINE:COL" (syntax), a key path, or "" (whole file)."""

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        if not self.location:
            return f"{self.file}: {self.message}"
        if re.fullmatch(r"\d+:\d+", self.location):
            return f"{self.file}:{self.location}: {self.message}"
        return f"{self.file}: {self.location}: {self.message}"


class PolicyError(Exception):
    """A policy (or one of its allow.d files) is invalid; `.errors` says every way it is."""

    def __init__(self, errors: Sequence[PolicyProblem]):
        self.errors: List[PolicyProblem] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
