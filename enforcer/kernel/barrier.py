"""Waiting until no BPF program run that started earlier is still going.

A reload flips the policy slot the hooks use; the old slot may only be
cleared once every hook run that read the old slot has ended. Those runs are
RCU read-side sections (non-sleepable BPF programs run under
rcu_read_lock(); bcc 0.26 cannot load sleepable ones), so one RCU grace
period is the wait. User space gets one from bpf(2): an update of an
array-of-maps map calls synchronize_rcu() before returning, "so that
userspace, when we return to it, knows that all programs that could be
running use the new map value" (kernel/bpf/syscall.c, maybe_wait_bpf_programs,
6.1 and 6.12). No program ever reads these two maps; they exist for that wait.
"""

from __future__ import annotations

import ctypes
import os
from typing import Dict

from enforcer.kernel import bpfsys

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12


class RcuBarrier:
    def __init__(self, syscalls=bpfsys) -> None:
        self._sys = syscalls
        u32 = ctypes.sizeof(ctypes.c_uint32)
        self._inner = syscalls.map_create(BPF_MAP_TYPE_ARRAY, u32, u32, 1, what="barrier inner map")
        try:
            self._outer = syscalls.map_create(
                BPF_MAP_TYPE_ARRAY_OF_MAPS, u32, u32, 1, inner_map_fd=self._inner, what="barrier map"
            )
        except OSError:
            os.close(self._inner)
            raise

    def __call__(self) -> None:
        """Return after an RCU grace period (milliseconds; more under emulation)."""
        self._sys.map_update(self._outer, ctypes.c_uint32(0), ctypes.c_uint32(self._inner), what="barrier map")

    def fds(self) -> Dict[str, int]:
        """Its two maps, by what they are (for protected_objects: freezing the
        outer map from elsewhere would make every later reload fail)."""
        return {"barrier": self._outer, "barrier inner": self._inner}

    def close(self) -> None:
        for fd in (self._outer, self._inner):
            os.close(fd)
