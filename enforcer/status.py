"""`enforcer status` and `enforcer unload`: read or remove pinned enforcement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from enforcer import abi, registry
from enforcer.exitcodes import ExitCode
from enforcer.state import read_state


def collect(pin_root: Optional[Path] = None, state_dir: Optional[Path] = None) -> Dict[str, object]:
    from enforcer.kernel import loader  # noqa: PLC0415

    pin_root = pin_root or loader.PIN_ROOT
    instances: List[Dict[str, object]] = []
    for directory in loader.instance_dirs(pin_root):
        entry: Dict[str, object] = {
            "instance": directory.name,
            "links": sorted(p.name[len("link_") :] for p in directory.glob("link_*")),
        }
        try:
            settings = loader.read_pinned_settings(directory)
            slot = settings.active & 1
            entry["policy_slot"] = slot
            entry["generation"] = settings.generation[slot]
            entry["watch"] = [w.name.lower() for w in abi.Watch if settings.watch[slot] & w]
            entry["stats"] = loader.read_pinned_stats(directory)
        except OSError as error:
            entry["error"] = str(error)
        instances.append(entry)
    agent = read_state(state_dir)
    return {
        "enforcing": any(len(i["links"]) == len(registry.HOOKS) for i in instances),  # type: ignore[arg-type]
        "instances": instances,
        "agent": agent.to_json() if agent else None,
    }


def status_command(args) -> int:
    status = collect()
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
    else:
        print("enforcing: " + ("yes" if status["enforcing"] else "no"))
        for instance in status["instances"]:  # type: ignore[union-attr]
            print(f"instance {instance['instance']}: hooks {', '.join(instance['links'])}")
            if "stats" in instance:
                stats = instance["stats"]
                print("  " + ", ".join(f"{k}={v}" for k, v in stats.items()))
            if "error" in instance:
                print(f"  cannot read maps: {instance['error']}")
        agent = status["agent"]
        if agent:
            print(f"agent pid {agent.get('pid')} policy {agent.get('policy')} (updated {agent.get('updated')})")
            for rule in agent.get("rules", []):
                print(f"  rule {rule['id']}: {rule['mode']} ({rule['kind']})")
        else:
            print("agent: no status file (agent not running, or never started)")
    return ExitCode.OK if status["enforcing"] else ExitCode.NOT_ENFORCING


def unload_command(args) -> int:
    from enforcer.kernel import loader  # noqa: PLC0415

    removed = loader.unload()
    if removed:
        print("removed pinned instances: " + ", ".join(removed))
        print("enforcement stops once no running agent holds the programs")
    else:
        print("nothing pinned")
    return ExitCode.OK
