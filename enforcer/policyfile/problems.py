"""What a bad (or risky) policy file is reported as: every problem at once, each with a place."""

from __future__ import annotations

import dataclasses
import enum
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["Level", "PolicyProblem", "PolicyError", "in_file_order"]


class Level(str, enum.Enum):
    ERROR = "error"  # the policy is refused
    WARNING = "warning"  # the policy is accepted; `enforcer check --strict` refuses it


@dataclasses.dataclass(frozen=True)
class PolicyProblem:
    """One problem in one file.

    `line` (and `column`, for syntax errors) place it in the file; `where`
    names the key in words (``rule 4 "exec-tmp" allow.exe[0]``), `path` is the
    same key as data (``("rule", 3, "allow", "exe", 0)``). Problems about a
    whole file (unreadable, too big, owned by someone else) have neither.
    """

    file: str
    message: str
    line: Optional[int] = None
    column: Optional[int] = None
    where: str = ""
    path: Tuple[Union[str, int], ...] = ()
    level: Level = Level.ERROR

    @property
    def is_error(self) -> bool:
        return self.level is Level.ERROR

    def as_error(self, why: str) -> "PolicyProblem":
        """This warning refused, e.g. under `check --strict`; the message says why."""
        return dataclasses.replace(self, level=Level.ERROR, message=f"{self.message} ({why})")

    def __str__(self) -> str:
        head = self.file
        if self.line is not None:
            head += f":{self.line}"
            if self.column is not None:
                head += f":{self.column}"
        parts = [head]
        if self.level is Level.WARNING:
            parts.append("warning")
        if self.where:
            parts.append(self.where)
        parts.append(self.message)
        return ": ".join(parts)


def _reading_order(problem: PolicyProblem) -> Tuple[int, Tuple[Tuple[int, Union[str, int]], ...]]:
    # by line, then by key path (entries of one array by index); (type tag,
    # part) keeps keys and indices comparable
    return problem.line or 0, tuple((0, p) if isinstance(p, int) else (1, p) for p in problem.path)


def in_file_order(problems: Sequence[PolicyProblem]) -> List[PolicyProblem]:
    """Files in the order first met, each file's problems by line and key (stable:
    whole-file problems first, in the order found), so output reads top to bottom."""
    by_file: Dict[str, List[PolicyProblem]] = {}
    for problem in problems:
        by_file.setdefault(problem.file, []).append(problem)
    ordered: List[PolicyProblem] = []
    for found in by_file.values():
        ordered += sorted(found, key=_reading_order)
    return ordered


class PolicyError(Exception):
    """A policy (or one of its allow.d files) is invalid.

    `.problems` is everything found, errors and warnings, in file order;
    `.errors` only the errors, why the policy is refused.
    """

    def __init__(self, problems: Sequence[PolicyProblem]):
        self.problems: List[PolicyProblem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def errors(self) -> List[PolicyProblem]:
        return [p for p in self.problems if p.is_error]

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
