"""Targets of issue 15 judged on bench-results.json, and the markdown tables
of docs/performance.md (pure: from the JSON document alone).

A target is "met", "not met" or "not measured"; never guessed.  Ratios of
added costs are only stated when the denominator is a cost that the
measurement can see: an added cost smaller than the rounds' own spread is
noise, and a ratio of two noises says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from .results import CONFIGURATIONS, WORKLOADS

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
#: The difference is smaller than the rounds' own disagreement: this run
#: cannot tell met from not met (more rounds, or a quieter machine, can).
WITHIN_NOISE = "within noise"

#: The enforcer hook a workload's operation runs, for the per-program
#: comparison; stat runs none of the hooks enforcer attaches (no inode_getattr).
WORKLOAD_HOOK = {"open_read": "file_open", "open_write": "file_open", "open_proc": "file_open",
                 "stat": None, "mmap_exec": "mmap_file", "exec": "bprm_check_security", "rename": "inode_rename"}


@dataclass(frozen=True)
class Verdict:
    target: str
    status: str
    detail: str


def _ns(doc: Mapping[str, Any], workload: str, config: str) -> Optional[float]:
    return doc.get("ops", {}).get(workload, {}).get(config)


def _noise(doc: Mapping[str, Any], workload: str, config: str) -> float:
    """Half the spread of the rounds of `config` plus that of baseline: an
    added cost below this is not distinguishable from zero."""
    total = 0.0
    for c in (config, "baseline"):
        s = doc.get("ops_spread", {}).get(workload, {}).get(c)
        if s:
            total += (s["high"] - s["low"]) / 2
    return total


def added(doc: Mapping[str, Any], workload: str, config: str) -> Optional[float]:
    """ns/op over baseline, or None if either was not measured."""
    ns, base = _ns(doc, workload, config), _ns(doc, workload, "baseline")
    return None if ns is None or base is None else ns - base


def _floor_target(doc: Mapping[str, Any], workload: str, limit: float) -> Verdict:
    name = f"{workload}: enforcer's added cost <= {limit:g} x the empty program's"
    enf, empty = added(doc, workload, "enforcer_default"), added(doc, workload, "empty_lsm")
    if enf is None or empty is None:
        return Verdict(name, NOT_MEASURED, "a configuration was not measured")
    noise = _noise(doc, workload, "empty_lsm")
    if empty <= noise:
        return Verdict(name, WITHIN_NOISE,
                       f"the empty program's added cost ({empty:+.0f} ns) is within the rounds' spread "
                       f"({noise:.0f} ns): no floor to compare with (enforcer added {enf:+.0f} ns)"
                       + _per_run(doc, workload))
    ratio = enf / empty
    return Verdict(name, MET if ratio <= limit else NOT_MET,
                   f"enforcer +{enf:.0f} ns, empty +{empty:.0f} ns: {ratio:.2f} x")


def _per_run(doc: Mapping[str, Any], workload: str) -> str:
    """The kernel's own per-program figures for the workload's hook: these
    are precise where ns/op differences drown in the emulator's noise."""
    hook = WORKLOAD_HOOK.get(workload)
    if hook is None:
        return "; stat runs none of the hooks enforcer attaches"
    per = doc.get("bpf_ns", {}).get(hook, {})
    enf, empty = per.get("enforcer_default"), per.get("empty_lsm")
    if enf is None or empty is None:
        return ""
    return f"; per program run ({hook}): enforcer {enf:.0f} ns, empty {empty:.0f} ns ({enf / empty:.1f} x)"


def _relative_noise_pct(doc: Mapping[str, Any], workload: str, config: str, reference: str) -> float:
    """Half the rounds' range of both, summed, as a percentage of the reference."""
    ref = _ns(doc, workload, reference)
    total = 0.0
    for c in (config, reference):
        s = doc.get("ops_spread", {}).get(workload, {}).get(c)
        if s:
            total += (s["high"] - s["low"]) / 2
    return 100.0 * total / ref if ref else 0.0


def _judge_pct(pct: float, noise: float, limit: float) -> str:
    if pct + noise <= limit:
        return MET
    if pct - noise > limit:
        return NOT_MET
    return WITHIN_NOISE


def _relative(doc: Mapping[str, Any], workload: str, config: str, reference: str, limit_pct: float) -> Optional[float]:
    ns, ref = _ns(doc, workload, config), _ns(doc, workload, reference)
    return None if ns is None or ref is None else 100.0 * (ns / ref - 1.0)


def verdicts(doc: Mapping[str, Any]) -> List[Verdict]:
    out = [_floor_target(doc, w, 1.2) for w in ("open_read", "open_write", "stat")]
    out.append(_floor_target(doc, "open_proc", 1.5))

    pct = _relative(doc, "exec", "enforcer_default", "baseline", 2.0)
    name = "exec: enforcer_default within 2% of baseline"
    if pct is None:
        out.append(Verdict(name, NOT_MEASURED, "not measured"))
    else:
        noise = _relative_noise_pct(doc, "exec", "enforcer_default", "baseline")
        out.append(Verdict(name, _judge_pct(pct, noise, 2.0),
                           f"{pct:+.1f}% (rounds' noise ±{noise:.0f}%)" + _per_run(doc, "exec")))

    name = "enforcer_large within 10% of enforcer_default on every workload"
    diffs = {w: _relative(doc, w, "enforcer_large", "enforcer_default", 10.0) for w in WORKLOADS}
    measured = {w: d for w, d in diffs.items() if d is not None}
    if not measured:
        out.append(Verdict(name, NOT_MEASURED, "not measured"))
    else:
        missing = sorted(set(WORKLOADS) - set(measured))
        noise = {w: _relative_noise_pct(doc, w, "enforcer_large", "enforcer_default") for w in measured}
        each = {w: _judge_pct(d, noise[w], 10.0) for w, d in measured.items()}
        if NOT_MET in each.values():
            status = NOT_MET
        elif WITHIN_NOISE in each.values():
            status = WITHIN_NOISE
        else:
            status = NOT_MEASURED if missing else MET
        detail = ", ".join(f"{w} {d:+.1f}% (±{noise[w]:.0f}%)" for w, d in measured.items())
        per = [(h, v["enforcer_large"] / v["enforcer_default"]) for h, v in sorted(doc.get("bpf_ns", {}).items())
               if v.get("enforcer_large") and v.get("enforcer_default")]
        if per:
            detail += "; per program run, large / default: " + ", ".join(f"{h} {r:.2f}" for h, r in per)
        out.append(Verdict(name, status, detail + (f"; not measured: {', '.join(missing)}" if missing else "")))

    for w in ("exec", "open_read"):
        name = f"{w}: lower added cost than fapolicyd"
        enf, fapo = added(doc, w, "enforcer_default"), added(doc, w, "fapolicyd")
        if enf is None or fapo is None:
            out.append(Verdict(name, NOT_MEASURED, "a configuration was not measured"))
        elif fapo <= enf:
            out.append(Verdict(name, NOT_MET, f"enforcer +{enf:.0f} ns, fapolicyd +{fapo:.0f} ns"))
        elif enf <= _noise(doc, w, "enforcer_default"):
            ratio = f"{fapo / enf:.1f} x by medians" if enf > 0 else "enforcer's median at or below baseline"
            out.append(Verdict(name, MET, f"fapolicyd +{fapo:.0f} ns, enforcer +{enf:.0f} ns (within the "
                                          f"rounds' spread, so the factor is rough): {ratio}"))
        else:
            out.append(Verdict(name, MET, f"fapolicyd +{fapo:.0f} ns, enforcer +{enf:.0f} ns: "
                                          f"{fapo / enf:.1f} x lower"))

    agent = doc.get("agent", {})
    out.append(_limit(agent.get("idle", {}), "agent idle: < 1% of a core and < 60 MB RSS", 1.0, 60.0))
    out.append(_limit(agent.get("flood", {}), "agent under flood: < 1 core and < 100 MB RSS", 100.0, 100.0))
    reload_ms = doc.get("reload_ms")
    name = "reload (SIGHUP to new policy in force) < 100 ms"
    out.append(Verdict(name, NOT_MEASURED, "not measured") if reload_ms is None else
               Verdict(name, MET if reload_ms < 100 else NOT_MET, f"{reload_ms:.0f} ms (median)"))
    st = doc.get("startup_s", {})
    cold, warm = st.get("cold"), st.get("warm")
    out.append(Verdict("start-up to READY=1: reported, explained, cut", NOT_MEASURED if cold is None else "reported",
                       "not measured" if cold is None else
                       f"cold {cold:.1f} s, warm {warm:.1f} s" if warm is not None else f"cold {cold:.1f} s"))
    return out


def _limit(m: Mapping[str, Any], name: str, cpu_pct: float, rss_mb: float) -> Verdict:
    cpu, rss = m.get("cpu_pct"), m.get("peak_rss_mb")
    if cpu is None or rss is None:
        return Verdict(name, NOT_MEASURED, "not measured")
    ok = cpu < cpu_pct and rss < rss_mb
    return Verdict(name, MET if ok else NOT_MET, f"{cpu:.1f}% of a core, peak RSS {rss:.1f} MB")


# ------------------------------------------------------------------ tables --


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ops_table(doc: Mapping[str, Any]) -> str:
    """ns/op medians, each non-baseline cell with its ratio to baseline and
    the rounds' range."""
    configs = [c for c in CONFIGURATIONS if any(c in doc["ops"].get(w, {}) for w in WORKLOADS)]
    rows = []
    for w in WORKLOADS:
        if w not in doc["ops"]:
            continue
        base = doc["ops"][w].get("baseline")
        cells = [w]
        for c in configs:
            ns = doc["ops"][w].get(c)
            if ns is None:
                cells.append("–")
                continue
            s = doc.get("ops_spread", {}).get(w, {}).get(c)
            rng = f" [{s['low']:.0f}–{s['high']:.0f}]" if s else ""
            ratio = f" ({ns / base:.3f}x)" if base and c != "baseline" else ""
            cells.append(f"{ns:.0f}{ratio}{rng}")
        rows.append(cells)
    return _table(["workload (ns/op, median [min–max])", *configs], rows)


def bpf_table(doc: Mapping[str, Any]) -> str:
    configs = [c for c in ("empty_lsm", "enforcer_default", "enforcer_large")
               if any(c in v for v in doc["bpf_ns"].values())]
    rows = [[h, *[f"{doc['bpf_ns'][h][c]:.0f}" if c in doc["bpf_ns"][h] else "–" for c in configs]]
            for h in sorted(doc["bpf_ns"])]
    return _table(["hook (ns per program run)", *configs], rows)


def verdict_table(vs: Sequence[Verdict]) -> str:
    return _table(["target", "status", "numbers"], [[v.target, f"**{v.status}**", v.detail] for v in vs])


def agent_table(doc: Mapping[str, Any]) -> str:
    rows: List[Tuple[str, str]] = []
    agent = doc.get("agent", {})
    for phase in ("idle", "flood"):
        m = agent.get(phase)
        if m:
            extra = ""
            if phase == "flood":
                extra = (f"; {m.get('attempts', 0)} attempts in {m.get('seconds', 0):.0f} s "
                         f"({m.get('attempts_per_s', 0):.0f}/s), {m.get('events', 0)} events read")
            rows.append((phase, f"{m['cpu_pct']:.1f}% of a core over {m['window_s']:.0f} s, "
                                f"RSS {m.get('rss_mb', 0):.1f} MB, peak {m['peak_rss_mb']:.1f} MB{extra}"))
    if doc.get("reload_ms") is not None:
        each = agent.get("reload_ms_each")
        rows.append(("reload (SIGHUP to verdict)", f"{doc['reload_ms']:.0f} ms median"
                     + (f" (each: {', '.join(f'{x:.0f}' for x in each)})" if each else "")))
    if agent.get("reload_large_ms") is not None:
        rows.append(("reload to the large policy", f"{agent['reload_large_ms']:.0f} ms"))
    st = doc.get("startup_s", {})
    for k in ("cold", "warm"):
        if st.get(k) is not None:
            rows.append((f"start-up to READY=1, {k}", f"{st[k]:.1f} s"))
    ph = agent.get("startup_phases")
    if ph:
        read = f", reading the cached object {ph['object_read_s']:.1f} s" if "object_read_s" in ph else ""
        rows.append(("where a compiling start goes (loader steps, fresh interpreter)",
                     f"import bcc {ph['import_bcc_s']:.1f} s, BTF headers {ph['headers_cold_s']:.1f} s cold / "
                     f"{ph['headers_warm_s']:.1f} s warm, clang compile {ph['compile_s']:.1f} s{read}, "
                     f"verifier {ph['verify_total_s']:.1f} s over {len(ph['verify_s'])} programs"))
    return _table(["agent", "measured"], rows)


# ---------------------------------------------------------------- document --

_METHOD = """\
### How it is measured

One command from the repository root, as root:

```sh
.venv/bin/python -m tests.bench            # full: 11 rounds (about 30 minutes on 2 cores)
.venv/bin/python -m tests.bench --quick    # 5 rounds, fewer iterations (about 10 minutes)
.venv/bin/python -m tests.bench --kernel 6.12
```

It boots Debian's stock kernel once in QEMU (the kernel tier's harness,
`tests/harness/vm.py`; it waits for `/tmp/vm.lock` first) and, inside:

* builds `tests/bench/loadgen.c` with `gcc -O2` and a static `true`; each
  workload is a C loop timed with `CLOCK_MONOTONIC` after a warm-up of a
  tenth of its iterations: `open_read` (open+close `O_RDONLY` of a regular
  file under `/var`, a writable overlay in the guest), `open_write` (`O_WRONLY`, not a protected
  file), `open_proc` (`/proc/sys/kernel/ostype`, read-only), `stat`,
  `mmap_exec` (mmap `PROT_READ|PROT_EXEC` of one page of libc.so.6, then
  munmap), `exec` (fork, execve of the static `true`, waitpid), `rename`
  (one rename, back and forth);
* configurations: `baseline` (nothing), `empty_lsm` (bcc-compiled
  programs returning 0 on exactly the eight hooks of
  `enforcer/registry.py` HOOKS), `enforcer_default` (the agent on
  `policies/default.toml`, its own modes: enforce, one broad rule audit),
  `enforcer_large` (the default policy plus a rule over 1,000 exec
  directories and a global allowlist of 500 `exe` and 500 `exe_dirs`
  entries: `tests/bench/policygen.py`), `fapolicyd` (Debian's 1.1.7,
  rules `deny_audit perm=execute all : dir=/tmp/` then
  `allow perm=any all : all`, `trust = file`, `watch_fs` naming the guest's
  filesystems: `tests/bench/fapolicyd.py`);
* the agent is started twice (cold cache, then warm), each time stopped
  after its measurements with its programs still pinned; the bench then
  holds those programs by descriptor and `enforcer unload`s the pins, so
  each enforcer configuration can be attached and detached in a
  millisecond (`BPF_RAW_TRACEPOINT_OPEN` / close) with its maps exactly as
  the agent filled them. fapolicyd is started and stopped each round;
* rounds: every configuration in turn, the order rotated each round, every
  workload once per configuration per round; each configuration is
  checked before it is measured (exec of a copy of `true` in `/tmp` is
  denied exactly under enforcer and fapolicyd, one in the large policy's
  directories exactly under `enforcer_large`). Tables give the median over
  rounds and the range [min–max];
* per-program cost: one more pass per BPF configuration with
  `kernel.bpf_stats_enabled=1` (not during the rounds: statistics add about
  20 ns per program run), `run_time_ns / run_cnt` from the program's fdinfo;
* the agent's own cost: CPU (utime+stime from `/proc/PID/stat`) over a
  window and RSS (`VmRSS`; peak `VmHWM`, reset at the window's start with
  `clear_refs` 5), idle after start-up, and under a flood of opens of
  `/proc/sysrq-trigger` for writing (denied and reported; one process paced
  in 1 ms ticks); reload: SIGHUP to the agent's `reloaded` verdict on
  stdout, the policy alternating between the default and the default plus
  one exec rule; start-up: wall time from launch to `READY=1` on the notify
  socket.
"""


BEGIN, END = "<!-- generated by tests/bench: begin -->", "<!-- generated by tests/bench: end -->"


def merge_document(existing: Optional[str], generated: str) -> str:
    """Put the generated part between the markers of `existing`, keeping the
    hand-written text around it (the reading of the numbers); the whole
    document is the generated part when there are no markers."""
    block = f"{BEGIN}\n{generated.rstrip()}\n{END}"
    if existing and BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + block + tail
    return block + "\n"


def render_document(doc: Mapping[str, Any], errors: Sequence[str] = ()) -> str:
    run = doc.get("run", {})
    kind = ("a **quick** run" if run.get("quick") else "a full run")
    iters = ", ".join(f"{k} {v}" for k, v in run.get("iterations", {}).items())
    vs = verdicts(doc)
    parts = [
        "## Results (generated)",
        "",
        "Generated by `tests/bench` (issue 15) from `bench-results.json`; do not edit by hand, run the "
        "bench again (or `python -m tests.bench --render bench-raw.json`).",
        "",
        f"* kernel: `{doc['kernel']}`",
        f"* machine: {doc.get('machine', 'unknown')}",
        f"* date: {doc['date']}",
        f"* run: {kind}: {run.get('rounds', '?')} rounds; iterations per measurement: {iters}; "
        f"whole run {run.get('wall_s', 0) / 60:.1f} min",
        "",
    ]
    if errors:
        parts += ["**The run did not finish**; what it measured before the error is below, the rest is "
                  "\"not measured\". Error:", "", "```", errors[0].strip()[-2000:], "```", ""]
    parts += ["### Targets", "", verdict_table(vs), "",
              "### Cost per operation", "",
              "Median ns/op over the rounds, its ratio to `baseline`, and the rounds' [min–max].", "",
              ops_table(doc), ""]
    if doc.get("bpf_ns"):
        parts += ["### Cost per program run (kernel.bpf_stats_enabled)", "",
                  "Nanoseconds per invocation, `run_time_ns / run_cnt`, over one pass of every workload.", "",
                  bpf_table(doc), ""]
    parts += ["### The agent", "", agent_table(doc), ""]
    notes = doc.get("notes") or []
    if notes:
        parts += ["### Notes from the run", ""] + [f"* {n}" for n in notes] + [""]
    parts += [_METHOD]
    return "\n".join(parts)
