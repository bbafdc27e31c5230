"""Notice changes of the agent's mount table, without reading it every time.

The kernel marks a mountinfo file (the host's: PID 1's) for poll(2) with POLLPRI (and POLLERR)
when a mount or unmount changes the mount namespace; each poll that reports
it also clears the mark (proc(5), "/proc/pid/mounts"). The agent asks a few
times a second and, when told, recompiles where exec places live
(enforcer.kinds.exec_places.located_places): a tmpfs mounted on /tmp after
the agent started must move /tmp's location with it.
"""

from __future__ import annotations

import os
import select
from typing import Optional

from enforcer.mountinfo import host_mountinfo_path


class MountWatch:
    def __init__(self, path: Optional[str] = None) -> None:
        self._fd = os.open(path or host_mountinfo_path(), os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLPRI | select.POLLERR)

    def changed(self) -> bool:
        """Whether the mount table changed since the last call (or since opening)."""
        return any(mask & (select.POLLPRI | select.POLLERR) for _, mask in self._poll.poll(0))

    def close(self) -> None:
        os.close(self._fd)
