"""The benchmark inside the VM: runs as root in the guest that __main__ boots,
writes raw.json (per-round samples and counters) into --out.  The host turns
that into bench-results.json and docs/performance.md (results.py, report.py).

Order, chosen so that each expensive thing happens once:
  1. build the load generator and a static `true`, make the workload files;
  2. agent, cold caches, default policy: start-up time, idle cost, flood
     cost, reload times; stop it and keep its programs (enforcer_default);
  3. agent again, caches warm: start-up time; reload to the large policy;
     stop it and keep its programs (enforcer_large);
  4. compile and load the empty programs (empty_lsm); configure fapolicyd;
  5. rounds: every configuration in turn (rotated each round), every workload;
  6. one more pass per BPF configuration with kernel.bpf_stats_enabled=1
     (not during the rounds: the statistics add ~20 ns per program run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from harness.agent import Agent  # noqa: E402

from enforcer import registry  # noqa: E402

from . import emptylsm, fapolicyd, policygen  # noqa: E402
from .bpfctl import ProgramSet, fdinfo, programs_from_pins  # noqa: E402
from .results import CONFIGURATIONS, WORKLOADS  # noqa: E402

ROOT = Path("/var/lib/enforcer-bench")  # /var: a writable overlay in the guest, not a denied place
BIN, WORK, AGENT_DIR = ROOT / "bin", ROOT / "work", ROOT / "agent"
PIN_ROOT = Path("/sys/fs/bpf/enforcer")
TMP_TRUE = Path("/tmp/enforcer-bench-true")  # denied by every enforcing configuration
LARGE_TRUE = Path(policygen.EXEC_ROOT) / "d0000" / "true"  # denied only by enforcer_large
LIBRARY = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
PROC_FILE = "/proc/sys/kernel/ostype"  # a sysctl file, like the ones enforcer protects, opened read-only


@dataclass(frozen=True)
class Plan:
    rounds: int
    iterations: Dict[str, int]
    idle_s: float
    flood_s: float
    flood_rate: int
    reloads: int


QUICK = Plan(rounds=5, iterations={"exec": 150, "rename": 4000, "mmap_exec": 4000, "default": 10000},
             idle_s=10, flood_s=10, flood_rate=10_000, reloads=3)
FULL = Plan(rounds=11, iterations={"exec": 1000, "rename": 20000, "mmap_exec": 20000, "default": 50000},
            idle_s=60, flood_s=30, flood_rate=10_000, reloads=7)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------- setup --


def setup() -> None:
    for d in (BIN, WORK, AGENT_DIR):
        d.mkdir(parents=True, exist_ok=True)
    sh("gcc", "-O2", "-Wall", "-o", str(BIN / "loadgen"), str(REPO / "tests/bench/loadgen.c"))
    (BIN / "true.c").write_text("int main(void) { return 0; }\n")
    sh("gcc", "-O2", "-static", "-o", str(BIN / "true"), str(BIN / "true.c"))
    for name in ("read", "write", "rename_a"):
        (WORK / name).write_text("enforcer bench\n")
    for d in policygen.exec_dirs(1000):
        Path(d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BIN / "true", TMP_TRUE)
    shutil.copy(BIN / "true", LARGE_TRUE)


def loadgen_args(workload: str) -> List[str]:
    return {
        "open_read": [str(WORK / "read")],
        "open_write": [str(WORK / "write")],
        "open_proc": [PROC_FILE],
        "stat": [str(WORK / "read")],
        "mmap_exec": [str(LIBRARY)],
        "exec": [str(BIN / "true")],
        "rename": [str(WORK / "rename_a"), str(WORK / "rename_b")],
    }[workload]


def measure(workload: str, plan: Plan) -> float:
    n = plan.iterations.get(workload, plan.iterations["default"])
    out = sh(str(BIN / "loadgen"), workload, str(n), *loadgen_args(workload))
    name, ns = out.split()
    assert name == workload, out
    return float(ns)


def exec_denied(path: Path) -> bool:
    try:
        subprocess.run([str(path)], check=True, capture_output=True)
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------- agent --


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_mem_mb(pid: int) -> Dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # proc(5): VmHWM starts again from VmRSS


def cost_over(pid: int, seconds: float, during: Optional[Callable[[], Dict]] = None) -> Dict:
    reset_peak_rss(pid)
    cpu0, t0 = proc_cpu_s(pid), time.monotonic()
    extra = during() if during else {}
    remaining = seconds - (time.monotonic() - t0)
    if remaining > 0:
        time.sleep(remaining)
    cpu1, t1 = proc_cpu_s(pid), time.monotonic()
    mem = proc_mem_mb(pid)
    return {"cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 2), "window_s": round(t1 - t0, 1),
            "rss_mb": round(mem["VmRSS"], 1), "peak_rss_mb": round(mem["VmHWM"], 1), **extra}


def start_agent(policy: Path, name: str) -> tuple:
    agent = Agent(policy, None, AGENT_DIR / f"{name}.log", AGENT_DIR)
    t0 = time.monotonic()
    agent.start()
    took = time.monotonic() - t0
    status = AGENT_DIR / "state" / "status.json"
    phases = None
    if status.is_file():
        doc = json.loads(status.read_text())
        phases = doc.get("startup") or doc.get("startup_phases")
    log(f"agent {name}: READY=1 after {took:.1f} s")
    return agent, took, phases


def take_programs(agent: Agent, name: str) -> ProgramSet:
    """Stop the agent (its pins keep enforcing), take its programs as our own
    descriptors, then unpin: the programs are ours to attach and detach."""
    agent.stop()
    instances = sorted(p for p in PIN_ROOT.iterdir() if p.is_dir())
    if len(instances) != 1:
        raise RuntimeError(f"expected one pinned instance, found {instances}")
    programs = programs_from_pins(instances[0], [spec.name for spec in registry.HOOKS])
    subprocess.run([sys.executable, "-m", "enforcer", "unload"], check=True, cwd=REPO)
    time.sleep(0.5)
    return ProgramSet(name, programs)


def reload_timed(agent: Agent, text: str, timeout_s: float = 60) -> float:
    """Milliseconds from SIGHUP to the agent's verdict record on stdout.

    Not Agent.reload: it polls every 200 ms, coarser than the 100 ms target.
    The agent prints "reloaded" after the new maps are written (a reload is
    all or nothing), so the verdict is the policy in force; the large
    policy's reload is also checked by an exec (agent_phases)."""
    mark = agent.mark()
    agent.policy.write_text(text)
    t0 = time.monotonic()
    os.kill(agent.pid, signal.SIGHUP)
    while time.monotonic() - t0 < timeout_s:
        for record in agent.since(mark):
            message = str(record.get("message", ""))
            if record.get("type") == "agent" and message.startswith("reloaded"):
                return 1000 * (time.monotonic() - t0)
            if record.get("type") == "agent" and message.startswith("reload rejected"):
                raise RuntimeError(f"reload rejected: {record}")
        time.sleep(0.002)
    raise RuntimeError(f"no reload verdict within {timeout_s} s")


def agent_phases(plan: Plan, raw: Dict, sets: Dict[str, ProgramSet]) -> None:
    """Fills `sets` with enforcer_default, then enforcer_large, as each is taken."""
    default_text = (REPO / "policies/default.toml").read_text()
    policy = AGENT_DIR / "policy.toml"
    policy.write_text(default_text)
    shutil.rmtree(AGENT_DIR / "cache", ignore_errors=True)

    agent, cold, phases = start_agent(policy, "cold")
    raw["startup_s"]["cold"] = round(cold, 2)
    raw["agent"]["startup_phases_cold"] = phases
    pid = agent.pid
    mem = proc_mem_mb(pid)
    raw["agent"]["after_start"] = {"rss_mb": round(mem["VmRSS"], 1), "peak_rss_mb_incl_start": round(mem["VmHWM"], 1)}
    time.sleep(3)  # let start-up work (threads, first scans) finish before "idle"
    raw["agent"]["idle"] = cost_over(pid, plan.idle_s)
    log(f"idle: {raw['agent']['idle']}")

    def flood() -> Dict:
        mark = agent.mark()
        out = sh(str(BIN / "loadgen"), "flood", str(plan.flood_rate), str(plan.flood_s))
        counts = dict(kv.split("=") for kv in out.split()[1:])
        # Wait for the agent to drain what it has not read yet (bounded).
        last, quiet_since, drain_start = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - quiet_since < 2 and time.monotonic() - drain_start < 30:
            n = len(agent.since(mark))
            if n != last:
                last, quiet_since = n, time.monotonic()
            time.sleep(0.5)
        events = [r for r in agent.since(mark) if r.get("type") == "event"]
        attempts, seconds = int(counts["attempts"]), float(counts["seconds"])
        return {"attempts": attempts, "denied": int(counts["denied"]), "other_errors": int(counts["other"]),
                "seconds": seconds,
                "attempts_per_s": round(attempts / seconds), "events": len(events),
                "records": len(agent.since(mark))}

    raw["agent"]["flood"] = cost_over(pid, plan.flood_s, flood)
    log(f"flood: {raw['agent']['flood']}")

    extra_rule = (f'\n[[rule]]\nid = "bench-reload"\nkind = "exec"\n'
                  f'dirs = ["{policygen.EXEC_ROOT}/d0001"]\n')
    each = []
    for i in range(plan.reloads):
        each.append(reload_timed(agent, default_text + (extra_rule if i % 2 == 0 else "")))
    if plan.reloads % 2:
        reload_timed(agent, default_text)  # end on the default policy, which these programs stand for
    raw["reload_ms"] = [round(x, 1) for x in each]
    raw["agent"]["reload_ms_each"] = raw["reload_ms"]
    log(f"reloads: {each}")
    sets["enforcer_default"] = take_programs(agent, "enforcer_default")

    agent, warm, phases = start_agent(policy, "warm")
    raw["startup_s"]["warm"] = round(warm, 2)
    raw["agent"]["startup_phases_warm"] = phases
    large = policygen.large_policy(default_text)
    raw["agent"]["reload_large_ms"] = round(reload_timed(agent, large.text), 1)
    # In force, not only announced: the large policy denies its own directories.
    raw["agent"]["large_in_force_after_reload"] = exec_denied(LARGE_TRUE)
    sets["enforcer_large"] = take_programs(agent, "enforcer_large")


# ---------------------------------------------------------------- rounds --


class Configs:
    def __init__(self, sets: Dict[str, ProgramSet], fapo: Optional[fapolicyd.Daemon]) -> None:
        self.sets, self.fapo = sets, fapo

    def available(self) -> List[str]:
        return [c for c in CONFIGURATIONS if c == "baseline" or c in self.sets or (c == "fapolicyd" and self.fapo)]

    def enable(self, config: str) -> None:
        if config in self.sets:
            self.sets[config].attach()
        elif config == "fapolicyd":
            self.fapo.start(lambda: exec_denied(TMP_TRUE))

    def disable(self, config: str) -> None:
        if config in self.sets:
            self.sets[config].detach()
        elif config == "fapolicyd":
            self.fapo.stop()

    def check(self, config: str) -> None:
        """Each configuration is what it claims: a cheap exec proves it."""
        want_tmp = config in ("enforcer_default", "enforcer_large", "fapolicyd")
        want_large = config == "enforcer_large"
        got_tmp, got_large = exec_denied(TMP_TRUE), exec_denied(LARGE_TRUE)
        if (got_tmp, got_large) != (want_tmp, want_large):
            raise RuntimeError(f"{config}: exec from /tmp denied={got_tmp} (want {want_tmp}), "
                               f"from the large policy's dirs denied={got_large} (want {want_large})")


def rounds(configs: Configs, plan: Plan, raw: Dict) -> None:
    names = configs.available()
    samples = raw["samples"]
    for r in range(plan.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no configuration always first
        for config in order:
            try:
                configs.enable(config)
                try:
                    configs.check(config)
                    for w in WORKLOADS:
                        samples.setdefault(w, {}).setdefault(config, []).append(measure(w, plan))
                finally:
                    configs.disable(config)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
                # One configuration failing must not cost the others their rounds:
                # it is dropped, with what it measured so far, and the error kept.
                raw["errors"].append(f"round {r + 1}, {config}: {error!r}")
                log(f"dropping {config}: {error!r}")
                names.remove(config)
                for w in samples:
                    samples[w].pop(config, None)
        log(f"round {r + 1}/{plan.rounds} done: " +
            ", ".join(f"{c} open_read {samples['open_read'][c][-1]:.0f}" for c in names))


def bpf_stats(configs: Configs, plan: Plan, raw: Dict) -> None:
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        for name, progs in configs.sets.items():
            before = {p.hook: fdinfo(p.fd) for p in progs.programs}
            progs.attach()
            try:
                for w in WORKLOADS:
                    measure(w, plan)
            finally:
                progs.detach()
            out = {}
            for p in progs.programs:
                after = fdinfo(p.fd)
                out[p.hook] = {k: int(after.get(k, 0)) - int(before[p.hook].get(k, 0)) for k in ("run_time_ns", "run_cnt")}
            raw["bpf_stats"][name] = out
            log(f"bpf_stats {name}: {out}")
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("0")


# ---------------------------------------------------------------- main --


def fs_types(paths: List[str]) -> str:
    """fapolicyd's watch_fs for these paths: the kernel's filesystem type
    names (as in /proc/mounts) of the mounts that hold them."""
    mounts = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mounts[parts[1]] = parts[2]
    names = set()
    for p in paths:
        best = max((m for m in mounts if p == m or p.startswith(m.rstrip("/") + "/")), key=len)
        names.add(mounts[best])
    return ",".join(sorted(names))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated configurations to leave out (development)")
    ap.add_argument("--rounds", type=int, default=0, help="override the plan's number of rounds")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.monotonic()
    raw: Dict = {"kernel": os.uname().release, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "quick": args.quick, "rounds": plan.rounds,
                 "iterations": plan.iterations, "samples": {}, "bpf_stats": {}, "agent": {},
                 "reload_ms": [], "startup_s": {}, "notes": [], "errors": []}
    out = args.out / "raw.json"

    def save() -> None:
        raw["guest_wall_s"] = round(time.monotonic() - t0, 1)
        out.write_text(json.dumps(raw, indent=1))

    keep_alive = []

    def step(what: str, fn: Callable[[], object]) -> object:
        """Run one step; a failure is recorded and the run goes on without
        what the step would have provided (partial results beat none: a
        guest run is minutes of emulated time)."""
        try:
            return fn()
        except Exception as error:  # any failure of a step: recorded in raw.json, reported by the host
            raw["errors"].append(f"{what}: " + "".join(traceback.format_exception(error)))
            log(f"FAILED {what}: {error}")
            return None
        finally:
            save()

    step("setup", setup)
    if raw["errors"]:
        return 1
    log("setup done")
    sets: Dict[str, ProgramSet] = {}
    if not skip & {"enforcer_default", "enforcer_large"}:
        step("agent", lambda: agent_phases(plan, raw, sets))
    if "empty_lsm" not in skip:
        def empty() -> None:
            t = time.monotonic()
            bpf, programs = emptylsm.load(AGENT_DIR / "cache")
            keep_alive.append(bpf)
            sets["empty_lsm"] = ProgramSet("empty_lsm", programs)
            log(f"empty programs loaded in {time.monotonic() - t:.1f} s")
        step("empty_lsm", empty)
    fapo: List[fapolicyd.Daemon] = []
    if "fapolicyd" not in skip:
        def fapo_setup() -> None:
            # Not /proc: fapolicyd does not watch procfs by default (Debian: ext*, tmpfs, xfs, ...),
            # so open_proc under fapolicyd is the kernel alone, as on a real fapolicyd host.
            watch = fs_types([str(WORK), str(BIN), str(LIBRARY), "/tmp"])
            fapolicyd.configure(watch)
            raw["fapolicyd_watch_fs"] = watch
            fapo.append(fapolicyd.Daemon(AGENT_DIR / "fapolicyd.log"))
        step("fapolicyd setup", fapo_setup)
    configs = Configs(sets, fapo[0] if fapo else None)
    step("rounds", lambda: rounds(configs, plan, raw))
    step("bpf_stats", lambda: bpf_stats(configs, plan, raw))

    def phases() -> None:
        log("start-up phases (a fresh interpreter repeating the loader's steps)")
        out = sh(sys.executable, "-m", "tests.bench.startup_phases")
        raw["agent"]["startup_phases"] = json.loads(out.strip().splitlines()[-1])
        log(f"start-up phases: {raw['agent']['startup_phases']}")
    step("startup phases", phases)
    return 1 if raw["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
