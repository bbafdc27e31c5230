"""`enforcer status` and `enforcer unload`: read or remove pinned enforcement.

The truth comes from the kernel: the pinned maps say, for the policy slot in
force, how many rules there are and which of them enforce; the agent's lock
(enforcer.instancelock) says whether an agent is alive. status.json only adds
what the agent published (its policy file, rule ids) while it runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from enforcer import abi, registry
from enforcer.exitcodes import ExitCode
from enforcer.instancelock import running_agent
from enforcer.state import default_state_dir, read_state


@dataclass(frozen=True)
class RuleCounts:
    """Rules of the policy in force in one pinned instance."""

    total: int
    enforcing: int

    @classmethod
    def of(cls, configs: Sequence[abi.RuleConfig]) -> "RuleCounts":
        present = [c for c in configs if c.flags & abi.RuleFlag.PRESENT]
        return cls(len(present), sum(1 for c in present if c.flags & abi.RuleFlag.ENFORCE))


def verdict(attached: bool, counts: Optional[RuleCounts]) -> str:
    """One of: enforcing, partially enforcing (N of M rules), audit only, not loaded."""
    if not attached or counts is None or counts.total == 0:
        return "not loaded"
    if counts.enforcing == counts.total:
        return "enforcing"
    if counts.enforcing == 0:
        return "audit only"
    return f"partially enforcing ({counts.enforcing} of {counts.total} rules)"


def _instance(directory: Path) -> Dict[str, object]:
    from enforcer.kernel import loader  # noqa: PLC0415

    entry: Dict[str, object] = {
        "instance": directory.name,
        "links": sorted(p.name[len("link_") :] for p in directory.glob("link_*")),
    }
    attached = len(entry["links"]) == len(registry.HOOKS)  # type: ignore[arg-type]
    counts = None
    try:
        settings = loader.read_pinned_settings(directory)
        slot = settings.active & 1
        counts = RuleCounts.of(loader.read_pinned_rules(directory, slot))
        entry.update(
            policy_slot=slot,
            generation=settings.generation[slot],
            watch=[w.name.lower() for w in abi.Watch if settings.watch[slot] & w],
            rules=counts.total,
            enforcing_rules=counts.enforcing,
            stats=loader.read_pinned_stats(directory),
        )
    except PermissionError:
        raise
    except OSError as error:
        entry["error"] = str(error)
    entry["verdict"] = verdict(attached, counts)
    return entry


def collect(pin_root: Optional[Path] = None, state_dir: Optional[Path] = None) -> Dict[str, object]:
    from enforcer.kernel import loader  # noqa: PLC0415

    pin_root = pin_root or loader.PIN_ROOT
    state_dir = state_dir or default_state_dir()
    instances: List[Dict[str, object]] = [_instance(d) for d in loader.instance_dirs(pin_root)]
    # The newest attached instance is the one in force (an adopting agent retires the older one).
    live = [i for i in instances if i["verdict"] != "not loaded"]
    overall = str(live[-1]["verdict"]) if live else "not loaded"
    pid = running_agent(state_dir)
    published = read_state(state_dir) if pid is not None else None
    return {
        "verdict": overall,
        "enforcing": overall == "enforcing" or overall.startswith("partially"),
        "instances": instances,
        "agent_running": pid is not None,
        "agent_pid": pid or None,
        "agent": published.to_json() if published else None,
    }


def status_command(args) -> int:
    try:
        status = collect()
    except PermissionError as error:
        print(f"enforcer status: must be root: the pinned programs and maps are root's ({error.filename or error})",
              file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
    else:
        _print_text(status)
    return ExitCode.OK if status["enforcing"] else ExitCode.NOT_ENFORCING


def _print_text(status: Dict[str, object]) -> None:
    print(f"status: {status['verdict']}")
    for instance in status["instances"]:  # type: ignore[union-attr]
        print(f"instance {instance['instance']}: {instance['verdict']}; hooks {', '.join(instance['links'])}")
        if "stats" in instance:
            print("  " + ", ".join(f"{k}={v}" for k, v in instance["stats"].items()))
        if "error" in instance:
            print(f"  cannot read maps: {instance['error']}")
    if not status["agent_running"]:
        print("agent: not running (pinned programs keep deciding without it; events are not reported)")
        return
    print(f"agent: running, pid {status['agent_pid'] or 'unknown'}")
    agent = status["agent"]
    if agent:
        print(f"  policy {agent.get('policy')} (published {agent.get('updated')})")  # type: ignore[union-attr]
        reload = agent.get("reload")  # type: ignore[union-attr]
        if reload and reload.get("finished"):
            print(f"  last reload ({reload['finished']} since start, {reload['time']}): {reload['message']}")
        for rule in agent.get("rules", []):  # type: ignore[union-attr]
            print(f"  rule {rule['id']}: {rule['mode']} ({rule['kind']})")


def unload_command(args) -> int:
    from enforcer.kernel import loader  # noqa: PLC0415

    removed = loader.unload()
    if removed:
        print("removed pinned instances: " + ", ".join(removed))
        print("enforcement stops once no running agent holds the programs")
    else:
        print("nothing pinned")
    return ExitCode.OK
