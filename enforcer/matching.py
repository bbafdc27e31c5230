"""Policy terms as the kernel matches them: directory nodes and scopes.

Shared by validation (enforcer.policyfile, enforcer.kinds), compilation and
explanation, so that all three agree on what "below" and "overlap" mean.
"""

from __future__ import annotations

from typing import Tuple

from enforcer import abi
from enforcer.policy import Scope

__all__ = ["dir_node", "is_below", "kernel_scopes", "scopes_overlap"]


def dir_node(path: str) -> str:
    """A directory as the kernel tries match it: with a trailing "/" ("/" stays "/")."""
    return path if path == "/" else path + "/"


def is_below(path: str, directory: str) -> bool:
    """`path` is `directory` itself or anywhere below it."""
    return path == directory or path.startswith(dir_node(directory))


def kernel_scopes(scope: Scope) -> Tuple[abi.KernelScope, ...]:
    """The kernel scopes a policy scope covers."""
    if scope is Scope.HOST:
        return (abi.KernelScope.HOST,)
    if scope is Scope.CONTAINER:
        return (abi.KernelScope.CONTAINER,)
    return (abi.KernelScope.HOST, abi.KernelScope.CONTAINER)


def scopes_overlap(a: Scope, b: Scope) -> bool:
    """Some task could be in both scopes."""
    return a == b or Scope.ALL in (a, b)
