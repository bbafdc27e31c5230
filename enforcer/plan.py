"""MapPlan: the exact contents of every policy-driven kernel map, as plain data.

`enforcer.compile` builds a MapPlan from a Policy; `enforcer.kernel.loader`
writes it into the maps. Keys and values are small frozen dataclasses that say
what they mean; `encode_key`/`encode_value` turn them into the bytes of the C
structs in bpf/enforcer.h (through the ctypes mirror in enforcer.abi).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Dict, Hashable, Mapping, Tuple

from enforcer import abi, registry
from enforcer.policy import Mode, RuleKind, Severity

#: Names of the kernel maps a MapPlan fills, in registry order.
POLICY_MAPS = tuple(spec.name for spec in registry.MAPS if spec.policy)


@dataclass(frozen=True)
class RuleInfo:
    """User-space facts about rule number `index`, used to enrich events."""

    index: int
    id: str
    description: str
    severity: Severity
    mitre: str
    kind: RuleKind
    mode: Mode  # effective mode, after any --mode override


# --- keys -------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class RuleIndex:
    index: int


@dataclass(frozen=True, order=True)
class TargetSlot:
    target: abi.Target
    scope: abi.KernelScope


@dataclass(frozen=True, order=True)
class Prefix:
    """An LPM trie key: namespace byte + text (+ NUL when `exact`).

    Directory prefixes are stored with a trailing "/", so "/tmp/" never
    matches "/tmpfoo". `exact` entries (executable paths) end with NUL so they
    match only the whole string.
    """

    namespace: int
    text: str
    exact: bool = False

    def data(self) -> bytes:
        return bytes([self.namespace]) + self.text.encode() + (b"\0" if self.exact else b"")


@dataclass(frozen=True, order=True)
class FsTypeSlot:
    name: str
    scope: abi.KernelScope


@dataclass(frozen=True, order=True)
class Uid:
    uid: int


@dataclass(frozen=True, order=True)
class PlaceDev:
    """A filesystem holding a listed exec place (place_devs key)."""

    dev: int  # super_block.s_dev, kernel encoding (enforcer.mountinfo.kernel_dev)


# --- values -----------------------------------------------------------------------


@dataclass(frozen=True)
class RuleValue:
    enforce: bool
    flags: int = 0  # further abi.RuleFlag bits (kind-specific)


@dataclass(frozen=True)
class RuleNumber:
    rule: int


@dataclass(frozen=True)
class FsIndex:
    """A PlaceDev's value: the number exec_places location keys give it
    (abi.location_namespace; 0: it holds no place), and whether it is a
    system overlay whose files are judged by name only (abi.PLACE_DEV_SYSTEM_OVERLAY)."""

    index: int
    system_overlay: bool = False


@dataclass(frozen=True)
class ExecPlaceValue:
    node_len: int
    rule_direct: int
    rule_below: int
    excluded: int  # mask


@dataclass(frozen=True)
class RuleMask:
    mask: int


MapContents = Mapping[Hashable, Hashable]


@dataclass(frozen=True)
class MapPlan:
    """Everything the kernel side needs from a policy, nothing it does not."""

    maps: Mapping[str, MapContents]
    watch: int  # abi.Watch flags for the settings map
    rules: Tuple[RuleInfo, ...] = field(default=())

    def mode_summary(self) -> str:
        """"6 rules (5 enforce, 1 audit)": the one wording for check, run and status."""
        enforcing = sum(1 for info in self.rules if info.mode is Mode.ENFORCE)
        noun = "rule" if len(self.rules) == 1 else "rules"
        return f"{len(self.rules)} {noun} ({enforcing} enforce, {len(self.rules) - enforcing} audit)"

    def rule_info(self, index: int) -> RuleInfo:
        for info in self.rules:
            if info.index == index:
                return info
        raise KeyError(index)


@dataclass(frozen=True)
class MapDiff:
    """Changes that turn one map's contents into another's."""

    added: Mapping[Hashable, Hashable]
    changed: Mapping[Hashable, Hashable]  # key -> new value
    deleted: Tuple[Hashable, ...]

    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.deleted)


@dataclass(frozen=True)
class PlanDiff:
    maps: Mapping[str, MapDiff]
    watch_changed: bool

    def is_empty(self) -> bool:
        return not self.watch_changed and all(d.is_empty() for d in self.maps.values())


def diff(old: MapPlan, new: MapPlan) -> PlanDiff:
    """What to add, change and delete in each map to go from `old` to `new`."""
    maps: Dict[str, MapDiff] = {}
    for name in POLICY_MAPS:
        before = old.maps.get(name, {})
        after = new.maps.get(name, {})
        maps[name] = MapDiff(
            added={k: v for k, v in after.items() if k not in before},
            changed={k: v for k, v in after.items() if k in before and before[k] != v},
            deleted=tuple(sorted((k for k in before if k not in after), key=repr)),
        )
    return PlanDiff(maps=maps, watch_changed=old.watch != new.watch)


# --- encoding to C bytes -----------------------------------------------------------


def _lpm_key(prefix: Prefix, slot: int) -> abi.LpmKey:
    data = bytes([abi.key_namespace(slot, prefix.namespace)]) + prefix.data()[1:]
    if len(data) > abi.LPM_DATA_LEN:
        raise ValueError(f"LPM prefix of {len(data)} bytes exceeds {abi.LPM_DATA_LEN}: {prefix.text!r}")
    key = abi.LpmKey()
    key.prefixlen = len(data) * 8
    ctypes.memmove(key.data, data, len(data))
    return key


def encode_key(key: Hashable, slot: int) -> ctypes.Structure:
    """The C struct (ctypes) for a MapPlan key, in policy slot `slot` (see abi.Settings)."""
    if not 0 <= slot < abi.POLICY_SLOTS:
        raise ValueError(f"policy slot {slot} out of range")
    if isinstance(key, RuleIndex):
        return ctypes.c_uint32(abi.rule_index(slot, key.index))  # type: ignore[return-value]
    if isinstance(key, TargetSlot):
        return ctypes.c_uint32(abi.target_index(slot, key.target, key.scope))  # type: ignore[return-value]
    if isinstance(key, Uid):
        return abi.UidKey(uid=key.uid, slot=slot)
    if isinstance(key, PlaceDev):
        return abi.DevKey(dev=key.dev, slot=slot)
    if isinstance(key, Prefix):
        return _lpm_key(key, slot)
    if isinstance(key, FsTypeSlot):
        return abi.FsTypeKey(name=key.name.encode(), ns=abi.key_namespace(slot, int(key.scope)))
    raise TypeError(f"not a MapPlan key: {key!r}")


def encode_value(value: Hashable) -> ctypes.Structure:
    """The C struct (ctypes) for a MapPlan value."""
    if isinstance(value, RuleValue):
        enforce = int(abi.RuleFlag.ENFORCE) if value.enforce else 0
        return abi.RuleConfig(flags=enforce | int(abi.RuleFlag.PRESENT) | value.flags)
    if isinstance(value, RuleNumber):
        return ctypes.c_uint32(value.rule)  # type: ignore[return-value]
    if isinstance(value, FsIndex):
        flag = abi.PLACE_DEV_SYSTEM_OVERLAY if value.system_overlay else 0
        return ctypes.c_uint32(value.index | flag)  # type: ignore[return-value]
    if isinstance(value, ExecPlaceValue):
        return abi.ExecPlace(
            node_len=value.node_len,
            rule_direct=value.rule_direct,
            rule_below=value.rule_below,
            excluded=value.excluded,
        )
    if isinstance(value, RuleMask):
        return ctypes.c_uint64(value.mask)  # type: ignore[return-value]
    raise TypeError(f"not a MapPlan value: {value!r}")
