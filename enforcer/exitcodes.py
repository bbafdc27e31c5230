"""Exit statuses of every enforcer command: one table, documented in enforcer(8).

The packaged unit lists UNAVAILABLE and INVALID_POLICY in
RestartPreventExitStatus= (retrying cannot help either).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    UNAVAILABLE = 1  # this host cannot enforce (no BPF-LSM, no BTF, refused load)
    INVALID_POLICY = 2  # a policy or allow.d file is invalid; also command-line usage errors
    NOT_ENFORCING = 3  # `status`: nothing pinned is enforcing
