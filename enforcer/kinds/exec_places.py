"""The exec rules of a policy together: the exec_places map and the deep-path fail-safe.

A place (directory node) belongs to the rule with the deepest listed directory
covering it; an executed file the kernel cannot place (deeper than
abi.PATH_WALK_STEPS) gets the fail-safe rule of `unresolved_rule`. Semantics in
docs/policy.md ("exec: places, longest place wins", "Deep paths: fail-safe").

Every place is given to the kernel twice: by name (the path the executing task
uses) and, when the host's mount table is known, by location (its filesystem
and its path inside it, `located_places`), so that a file in /tmp reached
through a bind mount, a chroot or a detached mount clone is still in /tmp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from enforcer import abi
from enforcer.matching import dir_node, kernel_scopes
from enforcer.mountinfo import MountEntry, MountTable
from enforcer.plan import ExecPlaceValue, FsIndex, PlaceDev, Prefix, RuleNumber, TargetSlot
from enforcer.policy import ExecRule, Mode, Policy, Rule

__all__ = ["exec_places", "located_places", "indexed_filesystems", "is_system_overlay", "unresolved_rule", "policy_plan", "policy_notes"]


def _exec_rules_in(rules: Sequence[Rule], scope: abi.KernelScope) -> List[Tuple[int, ExecRule]]:
    return [
        (number, rule)
        for number, rule in enumerate(rules, start=1)
        if isinstance(rule, ExecRule) and scope in kernel_scopes(rule.meta.scope)
    ]


def unresolved_rule(policy: Policy, scope: abi.KernelScope, mode_override: Optional[Mode] = None) -> int:
    """The rule the kernel applies to an exec whose path it cannot resolve, in `scope` (0: none).

    Among exec rules with dirs covering the scope: the first in file order that
    enforces, else the first.
    """
    candidates = [(n, r) for n, r in _exec_rules_in(policy.rules, scope) if r.dirs]
    for number, rule in candidates:
        if policy.effective_mode(rule, mode_override) is Mode.ENFORCE:
            return number
    return candidates[0][0] if candidates else 0


def _ancestors(node: str) -> List[str]:
    """A directory node and every node above it, deepest first: "/a/b/", "/a/", "/"."""
    out = [node]
    end = len(node) - 1
    while end > 0:
        end = node.rfind("/", 0, end)
        out.append(node[:end + 1])
    return out


class _PlaceIndex:
    """The covering rules' directories by node, so that placing a node looks
    at its ancestors only (a path has few), never at every listed directory:
    a policy with a thousand places recompiles on every reload and mount
    change, and that must not be quadratic."""

    def __init__(self, covering: List[Tuple[int, ExecRule]]) -> None:
        self.excludes: Dict[str, int] = {}  # node -> mask of rules excluding it
        self.recursive: Dict[str, int] = {}  # node -> first rule listing it recursively
        self.exact: Dict[str, int] = {}  # node -> first rule listing it (recursive or not)
        for number, rule in covering:
            for e in rule.exclude:
                node = dir_node(e)
                self.excludes[node] = self.excludes.get(node, 0) | (1 << number)
            for d in rule.dirs:
                node = dir_node(d.path)
                self.exact.setdefault(node, number)
                if d.recursive:
                    self.recursive.setdefault(node, number)
        self.covering = covering

    def _first(self, table: Dict[str, int], at: str, excluded: int, recursive_only: bool) -> int:
        """The first rule (in file order) listing `at` in `table` that the node's
        exclusions leave in force: an excluding rule's directories do not count."""
        number = table.get(at, 0)
        if not number or not excluded & (1 << number):
            return number
        for number, rule in self.covering:
            if not excluded & (1 << number) and any(
                    dir_node(d.path) == at and (d.recursive or not recursive_only) for d in rule.dirs):
                return number
        return 0

    def place(self, node: str) -> ExecPlaceValue:
        ancestors = _ancestors(node)
        excluded = 0
        for above in ancestors:
            excluded |= self.excludes.get(above, 0)
        below = next((r for r in (self._first(self.recursive, a, excluded, True) for a in ancestors) if r), 0)
        direct = self._first(self.exact, node, excluded, False) or below
        return ExecPlaceValue(
            node_len=len(node.encode()),
            rule_direct=direct,
            rule_below=below,
            excluded=excluded,
        )


def exec_places(rules: Sequence[Rule]) -> Dict[Prefix, ExecPlaceValue]:
    """The exec_places map: every listed or excluded directory node, per kernel scope."""
    places: Dict[Prefix, ExecPlaceValue] = {}
    for scope in abi.KernelScope:
        covering = _exec_rules_in(rules, scope)
        index = _PlaceIndex(covering)
        nodes: Set[str] = set()
        for _, rule in covering:
            nodes.update(dir_node(d.path) for d in rule.dirs)
            nodes.update(dir_node(e) for e in rule.exclude)
        for node in sorted(nodes):
            value = index.place(node)
            if value.rule_direct or value.rule_below or value.excluded:
                places[Prefix(namespace=int(scope), text=node)] = value
    return places


#: Filesystems no file can be executed from (no regular files an attacker
#: can write, or no exec at all): mounts of these below a listed place are
#: not tracked by location, which keeps filesystem indexes for the rest.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "bpf", "securityfs", "debugfs", "tracefs", "pstore",
    "configfs", "fusectl", "mqueue", "devpts", "binfmt_misc", "nsfs", "efivarfs", "autofs",
    "rpc_pipefs", "selinuxfs", "smackfs",
})
#: Filesystems whose files live on other filesystems (an overlay's layers):
#: one mounted below a listed place gets no location of its own (a Kubernetes
#: node mounts every container's root under /run/containerd); the kernel
#: judges its files where their layers put them (judge_exec_file, 2c).
LAYERED_FILESYSTEMS = frozenset({"overlay"})


def is_system_overlay(mount: MountEntry) -> bool:
    """An overlay that is part of the host's own tree: mounted at / or at a
    top-level directory (/usr, /var, /opt) of the agent's mount namespace.
    Live systems, systemd-sysext and image-based hosts (and this project's
    test VM) build their system from overlays whose writable layer lies in
    /run: judged by their layers, every program of such a host would be an
    exec from /run. Their files are judged by name. Making one needs mount
    rights in the host's namespace, which can as well mount a fresh
    filesystem anywhere outside the places."""
    return mount.fstype in LAYERED_FILESYSTEMS and (
        mount.mount_point == "/" or mount.mount_point.count("/") == 1)


@dataclass(frozen=True)
class LocatedPlaces:
    entries: Dict[Prefix, ExecPlaceValue]  # exec_places keys by location
    devs: Dict[PlaceDev, FsIndex]  # place_devs


def _location_nodes(covering: List[Tuple[int, ExecRule]], mounts: MountTable) -> List[str]:
    """Listed and excluded directories of the `covering` rules, then the
    mount points of real filesystems below a listed directory (a tmpfs on
    /run/user/1000 is in /run), shallow first: the order in which they get a
    location."""
    listed = sorted({dir_node(d.path) for _, r in covering for d in r.dirs}
                    | {dir_node(e) for _, r in covering for e in r.exclude})
    below = sorted(
        {dir_node(m.mount_point) for m in mounts.entries
         if m.fstype not in PSEUDO_FILESYSTEMS and m.fstype not in LAYERED_FILESYSTEMS
         and any(dir_node(m.mount_point).startswith(node) for node in listed)} - set(listed),
        key=lambda node: (node.count("/"), node))
    return listed + below


def located_places(rules: Sequence[Rule], mounts: MountTable) -> LocatedPlaces:
    """The places again, keyed by where they live.

    A place's key becomes its path inside its filesystem, under a namespace
    byte that also carries the filesystem's index (abi.location_namespace);
    its value is the place's, with node_len measured on that path. Where two
    names lead to one location (a bind mount of one listed directory onto
    another), the first in `_location_nodes` order keeps it. Past
    abi.MAX_PLACE_DEVS filesystems, the remaining directories are only
    matched by name (the agent warns when place_devs is full). The host's
    system overlays (is_system_overlay) are flagged in place_devs as well.
    """
    entries: Dict[Prefix, ExecPlaceValue] = {}
    index: Dict[int, FsIndex] = {}
    for scope in abi.KernelScope:
        covering = _exec_rules_in(rules, scope)
        places = _PlaceIndex(covering)
        for node in _location_nodes(covering, mounts):
            value = places.place(node)
            if not (value.rule_direct or value.rule_below or value.excluded):
                continue  # no rule here: no filesystem index spent on it
            where = mounts.locate(node.rstrip("/") or "/")
            if where is None:
                continue
            if where.dev not in index:
                if len(index) == abi.MAX_PLACE_DEVS:
                    continue
                index[where.dev] = FsIndex(len(index) + 1)
            fs_node = dir_node(where.path)
            key = Prefix(namespace=abi.location_namespace(int(scope), index[where.dev].index), text=fs_node)
            entries.setdefault(key, ExecPlaceValue(
                node_len=len(fs_node.encode()),
                rule_direct=value.rule_direct,
                rule_below=value.rule_below,
                excluded=value.excluded,
            ))
    devs = {PlaceDev(dev): fs for dev, fs in index.items()}
    system = sorted({m.dev for m in mounts.entries if is_system_overlay(m)})
    for dev in system[:abi.MAX_SYSTEM_OVERLAYS]:
        devs[PlaceDev(dev)] = FsIndex(index[dev].index if dev in index else 0, system_overlay=True)
    return LocatedPlaces(entries, devs)


def indexed_filesystems(devs: Mapping[PlaceDev, FsIndex]) -> int:
    """How many filesystem indexes of abi.MAX_PLACE_DEVS a place_devs plan uses."""
    return sum(1 for value in devs.values() if value.index)


def policy_plan(policy: Policy, mode_override: Optional[Mode], mounts: Optional[MountTable]) -> Mapping[str, Mapping]:
    """Map entries of all exec rules together: the places (by name, and by
    location when the mount table is known) and the fail-safe target slots."""
    fallbacks: Dict[TargetSlot, RuleNumber] = {}
    for scope in abi.KernelScope:
        fallback = unresolved_rule(policy, scope, mode_override)
        if fallback:
            fallbacks[TargetSlot(abi.Target.EXEC_UNRESOLVED, scope)] = RuleNumber(fallback)
    plan: Dict[str, Mapping] = {"targets": fallbacks, "exec_places": exec_places(policy.rules)}
    if mounts is not None:
        located = located_places(policy.rules, mounts)
        plan["exec_places"].update(located.entries)
        plan["place_devs"] = located.devs
    return plan


def policy_notes(policy: Policy, mode_override: Optional[Mode]) -> List[str]:
    """--explain: how places of several rules combine, and what the fail-safe applies."""
    out = [
        "",
        "Where exec places of several rules nest, the deepest listed directory decides.",
        f"Deep paths: the kernel walks at most {abi.PATH_WALK_STEPS} path components and mount points. An executed file "
        "deeper than that cannot be placed; instead of allowing it, the kernel applies:",
    ]
    for scope, words in ((abi.KernelScope.HOST, "host"), (abi.KernelScope.CONTAINER, "containers")):
        number = unresolved_rule(policy, scope, mode_override)
        if number:
            rule = policy.rules[number - 1]
            mode = policy.effective_mode(rule, mode_override).value
            out.append(f"  - {words}: rule {number} \"{rule.meta.id}\" ({mode})")
        else:
            out.append(f"  - {words}: nothing (no exec rule with dirs covers {words}); such files run")
    return out
