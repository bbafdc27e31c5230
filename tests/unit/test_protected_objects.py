"""enforcer.kernel.protected on a real hash map shaped like protected_objects:
an adopting agent forgets the previous agent's barrier ids and keeps the
instance's. Needs root (creating BPF maps needs no BPF-LSM)."""

from __future__ import annotations

import ctypes
import os
from typing import Iterator, List

import pytest

from enforcer import abi
from enforcer.kernel import bpfsys, protected

HASH, ARRAY = 1, 2
MAP, PROG = abi.ObjectKind.MAP, abi.ObjectKind.PROG
INSTANCE, AGENT = abi.ProtectedOwner.INSTANCE, abi.ProtectedOwner.AGENT


@pytest.fixture
def opened() -> Iterator[List[int]]:
    fds: List[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def _map(opened: List[int], map_type: int = ARRAY, key: int = 4, value: int = 4, entries: int = 1) -> int:
    try:
        fd = bpfsys.map_create(map_type, key, value, entries, what="test map")
    except OSError as error:
        pytest.skip(f"cannot create BPF maps here: {error}")
    opened.append(fd)
    return fd


def _id(fd: int) -> int:
    return bpfsys.object_id(fd)


def test_an_adopting_agent_replaces_the_previous_agents_barrier_and_keeps_the_instance(opened) -> None:
    table = _map(opened, HASH, ctypes.sizeof(abi.ObjectKey), 4, abi.MAX_PROTECTED_OBJECTS)
    rules, settings = _map(opened), _map(opened)
    protected.add(table, MAP, {"rules": rules, "settings": settings}, INSTANCE)
    first = {"barrier": _map(opened), "barrier inner": _map(opened)}
    assert protected.replace_agent_objects(table, first) == 0  # a fresh load: nothing to forget
    # a restart: the first agent's barrier is gone, the next one brings its own
    second = {"barrier": _map(opened), "barrier inner": _map(opened)}
    assert protected.replace_agent_objects(table, second) == 2
    assert protected.entries(table) == {
        (MAP, _id(rules)): INSTANCE, (MAP, _id(settings)): INSTANCE,
        (MAP, _id(second["barrier"])): AGENT, (MAP, _id(second["barrier inner"])): AGENT,
    }


def test_ids_are_kept_per_id_space(opened) -> None:
    """A program and a map may have the same number: the key says which."""
    table = _map(opened, HASH, ctypes.sizeof(abi.ObjectKey), 4, abi.MAX_PROTECTED_OBJECTS)
    one = _map(opened)
    protected.add(table, MAP, {"one": one}, INSTANCE)
    key = abi.ObjectKey(kind=int(PROG), id=_id(one))
    assert not bpfsys.map_lookup(table, key, ctypes.c_uint32(), what="test")
