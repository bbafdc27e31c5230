"""bench-results.json: its shape (issue 15) and how it is made from what the
guest measured (pure: no bcc, no VM).

    {"ops": {WORKLOAD: {CONFIGURATION: ns_per_op}},          medians over rounds
     "ops_spread": {WORKLOAD: {CONFIGURATION: {"low", "high", "rounds"}}},
     "bpf_ns": {HOOK: {CONFIGURATION: ns}},                  kernel's bpf_stats
     "agent": {...}, "reload_ms": N, "startup_s": {"cold": N, "warm": N},
     "kernel": ..., "date": ..., "machine": ..., "run": {...}}

A value that was not measured is absent (or null where the issue fixes the
key), never a made-up number.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .stats import summarize

WORKLOADS: Tuple[str, ...] = ("open_read", "open_write", "open_proc", "stat", "mmap_exec", "exec", "rename")
CONFIGURATIONS: Tuple[str, ...] = ("baseline", "empty_lsm", "enforcer_default", "enforcer_large", "fapolicyd")
#: Configurations made of BPF programs, so with per-program kernel statistics.
BPF_CONFIGURATIONS: Tuple[str, ...] = ("empty_lsm", "enforcer_default", "enforcer_large")


class ShapeError(ValueError):
    """bench-results.json does not have the shape of issue 15."""


@dataclass(frozen=True)
class RunInfo:
    quick: bool
    rounds: int
    iterations: Mapping[str, int]
    wall_s: float


@dataclass(frozen=True)
class Results:
    ops: Mapping[str, Mapping[str, float]]
    ops_spread: Mapping[str, Mapping[str, Mapping[str, float]]]
    bpf_ns: Mapping[str, Mapping[str, float]]
    agent: Mapping[str, Any]
    reload_ms: Optional[float]
    startup_s: Mapping[str, Optional[float]]
    kernel: str
    date: str
    machine: str
    run: RunInfo
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> Dict[str, Any]:
        return {
            "ops": {w: dict(c) for w, c in self.ops.items()},
            "ops_spread": {w: {c: dict(s) for c, s in cs.items()} for w, cs in self.ops_spread.items()},
            "bpf_ns": {h: dict(c) for h, c in self.bpf_ns.items()},
            "agent": dict(self.agent),
            "reload_ms": self.reload_ms,
            "startup_s": dict(self.startup_s),
            "kernel": self.kernel,
            "date": self.date,
            "machine": self.machine,
            "run": {"quick": self.run.quick, "rounds": self.run.rounds,
                    "iterations": dict(self.run.iterations), "wall_s": self.run.wall_s},
            "notes": list(self.notes),
        }


def _median_or_none(values: List[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def from_raw(raw: Mapping[str, Any], *, date: str, machine: str, wall_s: float) -> Results:
    """Fold the guest's raw record (per-round samples, per-program counters)
    into medians and nanoseconds per invocation."""
    ops: Dict[str, Dict[str, float]] = {}
    spread: Dict[str, Dict[str, Dict[str, float]]] = {}
    for workload, by_config in raw.get("samples", {}).items():
        for config, samples in by_config.items():
            if not samples:
                continue
            s = summarize(samples)
            ops.setdefault(workload, {})[config] = round(s.median, 1)
            spread.setdefault(workload, {})[config] = {"low": round(s.low, 1), "high": round(s.high, 1),
                                                       "rounds": s.rounds}
    bpf_ns: Dict[str, Dict[str, float]] = {}
    for config, by_hook in raw.get("bpf_stats", {}).items():
        for hook, counters in by_hook.items():
            if counters.get("run_cnt", 0) > 0:
                bpf_ns.setdefault(hook, {})[config] = round(counters["run_time_ns"] / counters["run_cnt"], 1)
    startup = raw.get("startup_s", {})
    return Results(
        ops=ops, ops_spread=spread, bpf_ns=bpf_ns,
        agent=raw.get("agent", {}),
        reload_ms=_median_or_none(raw.get("reload_ms", [])),
        startup_s={"cold": startup.get("cold"), "warm": startup.get("warm")},
        kernel=str(raw.get("kernel", "unknown")),
        date=date, machine=machine,
        run=RunInfo(bool(raw.get("quick")), int(raw.get("rounds", 0)), dict(raw.get("iterations", {})), wall_s),
        notes=tuple(raw.get("notes", [])),
    )


def _number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ShapeError(f"{where}: expected a number, got {value!r}")


def validate(doc: Mapping[str, Any]) -> None:
    """Raise ShapeError unless `doc` has the shape issue 15 gives."""
    for key in ("ops", "bpf_ns", "agent", "reload_ms", "startup_s", "kernel", "date"):
        if key not in doc:
            raise ShapeError(f"missing top-level key {key!r}")
    for workload, by_config in doc["ops"].items():
        if workload not in WORKLOADS:
            raise ShapeError(f"ops: unknown workload {workload!r}")
        for config, ns in by_config.items():
            if config not in CONFIGURATIONS:
                raise ShapeError(f"ops.{workload}: unknown configuration {config!r}")
            _number(ns, f"ops.{workload}.{config}")
    for hook, by_config in doc["bpf_ns"].items():
        for config, ns in by_config.items():
            if config not in BPF_CONFIGURATIONS:
                raise ShapeError(f"bpf_ns.{hook}: {config!r} has no BPF programs")
            _number(ns, f"bpf_ns.{hook}.{config}")
    if doc["reload_ms"] is not None:
        _number(doc["reload_ms"], "reload_ms")
    if set(doc["startup_s"]) != {"cold", "warm"}:
        raise ShapeError(f"startup_s: keys must be cold and warm, got {sorted(doc['startup_s'])}")
    for key, value in doc["startup_s"].items():
        if value is not None:
            _number(value, f"startup_s.{key}")
    if not isinstance(doc["kernel"], str) or not isinstance(doc["date"], str):
        raise ShapeError("kernel and date must be strings")
