"""Exit statuses of every enforcer command: one table, documented in enforcer(8).

The packaged unit lists INVALID_POLICY and HOST_CANNOT_ENFORCE in
RestartPreventExitStatus= (retrying cannot help either); UNAVAILABLE may be
passing (another agent still running, a load that failed for lack of memory).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    UNAVAILABLE = 1  # could not do it now: loading failed, another agent runs, not root, ...
    INVALID_POLICY = 2  # a policy or allow.d file is invalid; also command-line usage errors
    NOT_ENFORCING = 3  # `status`: no rule enforces (nothing loaded, or every rule audits)
    HOST_CANNOT_ENFORCE = 4  # `run`: the probe failed (no BPF-LSM, no BTF, ...): restarting cannot help
    # `reload`, `allow add|remove`: no agent is running, so nothing new is in force (the pinned programs, if
    # any, keep the policy they had); distinct from 1 so that a script can tell "start it" from "it failed"
    NO_AGENT = 5
