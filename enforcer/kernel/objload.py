"""Put a CompiledObject into the kernel: maps, then programs (the verifier runs), then links.

Each step is all or none: a failure closes everything this object created,
so nothing is left loaded or attached. Attaching is separate from loading
because the loader fills the policy maps in between: a program never runs
with an empty policy.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Dict, List, Mapping

from enforcer.kernel import bpfsys
from enforcer.kernel.bpfobject import CompiledObject

log = logging.getLogger(__name__)

#: Verifier log kept when a program is refused (level 1). The kernel stops
#: writing when it is full (ENOSPC), and the reason is at the end, so the
#: buffer is large; it exists only while retrying a refused load.
VERIFIER_LOG_BYTES = 16 * 1024 * 1024
VERIFIER_LOG_TAIL_LINES = 40


class ObjectLoadError(RuntimeError):
    """The object could not be loaded or attached; nothing of it remains."""


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


class LoadedObject:
    """The fds of one loaded object: maps by name, programs and links by hook."""

    def __init__(self, obj: CompiledObject, hook_ids: Mapping[str, int], syscalls=bpfsys) -> None:
        """Create the maps and load every program; `hook_ids` gives each hook's BTF id."""
        self._sys = syscalls
        self.map_fds: Dict[str, int] = {}
        self.program_fds: Dict[str, int] = {}
        self.link_fds: Dict[str, int] = {}
        try:
            for spec in obj.maps:
                self.map_fds[spec.name] = syscalls.map_create(
                    spec.map_type, spec.key_size, spec.value_size, spec.max_entries,
                    flags=spec.flags, name=spec.name, what=f"map {spec.name}")
            for program in obj.programs:
                self.program_fds[program.hook] = self._load_program(
                    program.name, program.relocated(self.map_fds), obj.license, hook_ids[program.hook])
        except ObjectLoadError:
            self.close()
            raise
        except KeyError as error:
            self.close()
            raise ObjectLoadError(f"no BTF id for LSM hook {error}") from None
        except OSError as error:
            self.close()
            raise ObjectLoadError(str(error)) from error

    @classmethod
    def from_pins(cls, instance_dir: "os.PathLike[str]", obj: CompiledObject, syscalls=bpfsys) -> "LoadedObject":
        """The maps of an instance pinned earlier (`map_<name>` under
        `instance_dir`), for adoption: its programs stay attached through
        their pinned links and nothing is loaded. Raises ObjectLoadError."""
        adopted = cls.__new__(cls)
        adopted._sys = syscalls
        adopted.map_fds, adopted.program_fds, adopted.link_fds = {}, {}, {}
        try:
            for spec in obj.maps:
                adopted.map_fds[spec.name] = syscalls.obj_get(os.path.join(os.fspath(instance_dir), f"map_{spec.name}"))
        except OSError as error:
            adopted.close()
            raise ObjectLoadError(str(error)) from error
        return adopted

    def _load_program(self, name: str, insns: bytes, license: str, hook_id: int) -> int:
        try:
            return self._sys.prog_load_lsm(name, insns, license, hook_id)
        except bpfsys.BpfSyscallError as first:
            if first.errno == errno.EPERM:
                raise  # not the verifier: no BPF-LSM, lockdown, or privileges
        # Load again with the verifier's log, to say why.
        try:
            fd = self._sys.prog_load_lsm(name, insns, license, hook_id, log_size=VERIFIER_LOG_BYTES)
        except bpfsys.ProgramRefused as refused:
            tail = "\n".join(refused.log.rstrip().splitlines()[-VERIFIER_LOG_TAIL_LINES:])
            raise ObjectLoadError(f"the verifier refused {name}: {refused.strerror}\n{tail}") from None
        return fd  # refused without a log, accepted with one: nothing to report

    def attach(self) -> Dict[str, int]:
        """Attach every program; returns the link fds by hook. All or none."""
        try:
            for hook, fd in self.program_fds.items():
                self.link_fds[hook] = self._sys.attach_lsm(fd, what=f"the {hook} program")
        except OSError as error:
            links = list(self.link_fds.values())
            _close_all(links)
            self.link_fds.clear()
            raise ObjectLoadError(str(error)) from error
        return dict(self.link_fds)

    def map_fd(self, name: str) -> int:
        return self.map_fds[name]

    def close(self) -> None:
        """Close every fd; links pinned elsewhere keep their programs attached."""
        for table in (self.link_fds, self.program_fds, self.map_fds):
            _close_all(list(table.values()))
            table.clear()

