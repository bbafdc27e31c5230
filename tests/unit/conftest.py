"""The unit tier is pure: importing bcc from it is an error, not a skip.

tests/unit must pass in a venv without system site packages, where bcc (a
distribution package) does not exist.  On a developer's machine bcc usually
is importable, so a test or code path that needs it would pass here and only
fail in CI's pure venv.  While a unit test (its fixtures included) or a unit
test module's import runs, ``import bcc`` raises ImportError naming the rule;
code that handles a missing bcc behaves as it will without it.  (A test may
still put a fake module into sys.modules["bcc"]: that is pure.)

bcc modules already imported by an earlier tier in the same session are
hidden for that time and restored afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
from typing import Iterator

import pytest

MESSAGE = ("tests/unit must not import bcc (the unit tier runs where bcc is not installed): "
           "move the test to tests/compile, or give it a fake sys.modules['bcc']")


def _is_bcc(name: str) -> bool:
    return name == "bcc" or name.startswith("bcc.")


class _BccBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if _is_bcc(fullname):
            raise ImportError(f"{MESSAGE} (import {fullname!r})", name=fullname)
        return None


@contextlib.contextmanager
def bcc_blocked() -> Iterator[None]:
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if _is_bcc(name)}
    blocker = _BccBlocker()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


@pytest.hookimpl(hookwrapper=True)
def _with_bcc_blocked():  # type: ignore[no-untyped-def]
    with bcc_blocked():
        yield


# Hooks of this conftest run only for nodes under tests/unit: importing a test
# module (its collection), then each test's setup (fixtures), call, teardown.
pytest_make_collect_report = _with_bcc_blocked
pytest_runtest_setup = _with_bcc_blocked
pytest_runtest_call = _with_bcc_blocked
pytest_runtest_teardown = _with_bcc_blocked


class FakeClock:
    """A monotonic clock the test moves by hand: `clock.now += 10`."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
