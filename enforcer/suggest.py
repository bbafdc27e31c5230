"""`enforcer suggest`: from audited (and blocked) events to reviewed allow.d entries.

The road from audit to enforce: run the policy in audit mode, collect what it
would have denied, and exempt what is legitimate. This module proposes the
exemptions, for a person to review; it never applies them.

Each event's subject gets the narrowest entry that is still safe:

1. its executable (`exe`), unless the executable is itself a way to run
   anything (a shell, an interpreter, the loader, a launcher: the risk lists
   of enforcer.policyfile.risks), lives where users can write, is a path in a
   container's own image (whoever controls the container chooses what is
   there), or was cut short by the kernel;
2. else the cgroup of the system service it ran in (`/system.slice/NAME.service`):
   that is how default.toml allows apport, a Python script;
3. else nothing, with the reason: never a uid (uid 0 would exempt every root
   process, the attacker's too), never a directory such as /usr, never a
   user's own units or a container's scope (their owners control them).

A directory is offered only in a comment, as an alternative when several
programs of one rule share a directory that is not risky.

Events are grouped by rule and proposed entry, counted (repeats the agent
suppressed included), and shown with examples of what they touched. Entries
the policy already has (the events predate them) and rules it no longer has
are left out, with a comment saying so. The output is an allow.d drop-in;
`--write FILE` checks it exactly as `enforcer check --policy POLICY FILE`
would, then writes it atomically, root's, mode 0644.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from enforcer.eventlog import EventSourceError, Record, any_records, normalize_since, read_journal
from enforcer.exitcodes import ExitCode
from enforcer.matching import is_below
from enforcer.policy import Allowlist, Policy
from enforcer.policyfile.edit import toml_key, toml_value
from enforcer.policyfile.problems import PolicyError, PolicyProblem
from enforcer.policyfile.risks import cgroup_risk, exe_dir_risk, exe_risk
from enforcer.policyfile.schema import Checker

__all__ = ["Proposal", "Group", "Suggestion", "propose", "service_cgroup", "suggest", "render", "suggest_command"]

#: Examples of touched paths shown per entry.
EXAMPLES = 3
#: What a printed (not written) proposal is called in messages about it.
PRINTED = "<suggestion>"


@dataclass(frozen=True)
class Proposal:
    """One allow.d entry: `[rule_allow.RULE] KEY = [VALUE]`."""

    rule: str
    key: str  # "exe" or "cgroup"
    value: str


@dataclass(frozen=True)
class Decision:
    """What one event's subject gets: a proposal, or why none is safe."""

    proposal: Optional[Proposal]
    #: for a proposal: why not the executable (empty when it is the executable);
    #: without one: why nothing is safe
    why: str


def _path_problem(value: str, kind: str) -> Optional[str]:
    """What `enforcer check` would say against `value` as a path of that kind, if anything."""
    problems: List[PolicyProblem] = []
    Checker("<suggest>", problems).path(value, ("value",), kind)
    return problems[0].message if problems else None


def service_cgroup(cgroup: str) -> Optional[str]:
    """The system service a cgroup v2 path belongs to: `/system.slice[/X.slice...]/NAME.service`.

    Only services of the system manager: a user's own units (under
    /user.slice) and scopes (sessions, containers, `systemd-run --scope`) are
    made by their users, who could name one anything.
    """
    parts = [p for p in cgroup.split("/") if p]
    if not parts or parts[0] != "system.slice":
        return None
    for index, part in enumerate(parts[1:], start=1):
        if part.endswith(".service") and len(part) > len(".service"):
            return "/" + "/".join(parts[:index + 1])
        if not part.endswith(".slice"):
            return None
    return None


def propose(event: Record) -> Decision:
    """The entry for the subject of one event record (see the module's docstring for the order)."""
    rule = str(event.get("rule"))
    exe = str(event.get("exe") or "")
    container = event.get("container") if isinstance(event.get("container"), Mapping) else {}
    runtime = container.get("runtime") if container else None  # type: ignore[union-attr]
    if not exe:
        why_not_exe = "the event names no executable"
    elif event.get("exe_truncated"):
        why_not_exe = f'the executable\'s path "{exe}" was cut short by the kernel'
    elif runtime:
        why_not_exe = (f'"{exe}" is a path in a {runtime} container\'s own filesystem, which whoever controls '
                       "the container can fill with any program")
    else:
        why_not_exe = exe_risk(exe) or _path_problem(exe, "exe") or ""
    if not why_not_exe:
        return Decision(Proposal(rule, "exe", exe), "")
    cgroup = str(event.get("cgroup") or "")
    service = service_cgroup(cgroup) if cgroup and not event.get("cgroup_truncated") else None
    if service is not None and not cgroup_risk(service) and not _path_problem(service, "cgroup"):
        return Decision(Proposal(rule, "cgroup", service), why_not_exe)
    if event.get("cgroup_truncated"):
        where = "its cgroup path was cut short by the kernel"
    elif cgroup:
        where = f"its cgroup {cgroup} is not a system service's"
    else:
        where = "the event names no cgroup"
    return Decision(None, f"{why_not_exe}; and {where}")


# --- grouping -------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """The events of one rule that got the same proposal, or no proposal for the same reason."""

    rule: str
    proposal: Optional[Proposal]
    #: without a proposal: why none is safe; with one that is not the
    #: executable: why not the executable(s) (several programs may share a service)
    whys: Tuple[str, ...]
    count: int  # events, suppressed repeats included
    actions: Tuple[Tuple[str, int], ...]
    paths: Tuple[Tuple[str, int], ...]  # most frequent first
    subjects: Tuple[str, ...]  # "comm (exe)" as seen, most frequent first
    uids: Tuple[int, ...]
    first: str
    last: str


@dataclass(frozen=True)
class Suggestion:
    """Everything `suggest` found, ready to render."""

    proposed: Tuple[Group, ...]  # in the policy's rule order, exe before cgroup, most events first
    refused: Tuple[Group, ...]  # no safe entry
    already: Tuple[Group, ...]  # proposals the policy has now
    unknown_rules: Tuple[Tuple[str, int], ...]  # rule ids the policy does not have, with event counts
    unattributed: int  # events whose rule the agent could not name (rule#N)
    coarse: int  # suppressed repeats counted per rule only (no subject)
    events: int
    first: str
    last: str


def _most(counter: Counter) -> Tuple[Tuple, ...]:
    return tuple(sorted(counter.items(), key=lambda item: (-item[1], str(item[0]))))


class _Tally:
    """Accumulates one group while the records stream by."""

    def __init__(self) -> None:
        self.count = 0
        self.actions: Counter = Counter()
        self.paths: Counter = Counter()
        self.subjects: Counter = Counter()
        self.uids: set = set()
        self.times: List[str] = []
        self.whys: Dict[str, None] = {}  # first seen first

    def add(self, record: Record, count: int, why: str) -> None:
        if why:
            self.whys.setdefault(why)
        self.count += count
        self.actions[str(record.get("action"))] += count
        path = record.get("path")
        if path not in (None, ""):
            self.paths[str(path)] += count
        if record.get("type") == "event":  # a suppressed summary names no comm, uid or cgroup
            self.subjects[f"{record.get('comm')} ({record.get('exe') or 'no executable'})"] += count
            if isinstance(record.get("uid"), int):
                self.uids.add(record["uid"])
        if record.get("time"):
            self.times.append(str(record["time"]))

    def group(self, rule: str, proposal: Optional[Proposal]) -> Group:
        return Group(rule, proposal, tuple(self.whys), self.count, _most(self.actions), _most(self.paths),
                     tuple(s for s, _ in _most(self.subjects)), tuple(sorted(self.uids)),
                     min(self.times, default=""), max(self.times, default=""))


def _allowlist_of(policy: Policy, rule_id: str) -> Allowlist:
    return policy.allow.merged(policy.rule(rule_id).meta.allow)


def _already_allowed(proposal: Proposal, allow: Allowlist) -> bool:
    if proposal.key == "exe":
        return proposal.value in allow.exe or any(is_below(proposal.value, d) for d in allow.exe_dirs)
    return any(is_below(proposal.value, c) for c in allow.cgroup)


def _tally(tallies: Dict[Tuple[str, Optional[Proposal], str], _Tally], rule: str, decision: Decision) -> _Tally:
    key = (rule, decision.proposal, "" if decision.proposal else decision.why)
    return tallies.setdefault(key, _Tally())


def suggest(records: Iterable[Record], policy: Policy) -> Suggestion:
    """Group and judge the event and suppressed records of `records` against `policy`."""
    rule_order = {rule.meta.id: number for number, rule in enumerate(policy.rules)}
    #: (rule, proposal, reason when no proposal) -> its events
    tallies: Dict[Tuple[str, Optional[Proposal], str], _Tally] = {}
    #: (rule, exe, path) -> the decision its events got, for the suppressed repeats of that offender
    offenders: Dict[Tuple[str, object, object], Decision] = {}
    unknown: Counter = Counter()
    unattributed = coarse = events = 0
    times: List[str] = []
    suppressed: List[Record] = []
    for record in records:
        kind = record.get("type")
        if kind == "suppressed":
            suppressed.append(record)  # counted once the events they repeat are known
            continue
        if kind != "event" or record.get("action") not in ("audited", "blocked"):
            continue
        events += 1
        if record.get("time"):
            times.append(str(record["time"]))
        if record.get("attributed") is False:
            unattributed += 1
            continue
        rule = str(record.get("rule"))
        if rule not in rule_order:
            unknown[rule] += 1
            continue
        decision = propose(record)
        offenders.setdefault((rule, record.get("exe"), record.get("path")), decision)
        _tally(tallies, rule, decision).add(record, 1, decision.why)
    for record in suppressed:
        count = int(record.get("count") or 0)
        rule = str(record.get("rule"))
        if record.get("time"):
            times.append(str(record["time"]))
        if record.get("coarse") or count <= 0:
            coarse += max(count, 0)
            continue
        if rule not in rule_order:
            unknown[rule] += count
            continue
        # repeats of an offender whose written events fell outside the input: judged on what the summary has
        decision = offenders.get((rule, record.get("exe"), record.get("path"))) or propose(record)
        _tally(tallies, rule, decision).add(record, count, decision.why)
        events += count

    proposed: List[Group] = []
    refused: List[Group] = []
    already: List[Group] = []
    for (rule, proposal, _), tally in tallies.items():
        group = tally.group(rule, proposal)
        if proposal is None:
            refused.append(group)
        elif _already_allowed(proposal, _allowlist_of(policy, rule)):
            already.append(group)
        else:
            proposed.append(group)

    def order(group: Group) -> Tuple:
        key, value = (group.proposal.key, group.proposal.value) if group.proposal else ("", "")
        return rule_order[group.rule], key != "exe", -group.count, value, group.whys

    return Suggestion(
        proposed=tuple(sorted(proposed, key=order)),
        refused=tuple(sorted(refused, key=order)),
        already=tuple(sorted(already, key=order)),
        unknown_rules=tuple(sorted(unknown.items())),
        unattributed=unattributed,
        coarse=coarse,
        events=events,
        first=min(times, default=""),
        last=max(times, default=""),
    )


# --- rendering --------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _comment(text: str) -> str:
    """Text safe inside a TOML comment: no line breaks or other control characters."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _counted(pairs: Sequence[Tuple[object, int]], limit: int = EXAMPLES) -> str:
    shown = ", ".join(f"{value} ({count})" for value, count in pairs[:limit])
    more = len(pairs) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _evidence(group: Group) -> str:
    actions = ", ".join(f"{count} {action}" for action, count in group.actions)
    noun = "event" if group.count == 1 else "events"
    span = f" {group.first} .. {group.last}" if group.first and group.first != group.last else (
        f" {group.first}" if group.first else "")
    uids = f" uid {', '.join(str(u) for u in group.uids)};" if group.uids else ""
    who = f" by {', '.join(group.subjects[:EXAMPLES])};" if group.subjects else ""
    paths = f" e.g. {_counted(group.paths)}" if group.paths else ""
    return _comment(f"{group.count} {noun} ({actions}){span};{who}{uids}{paths}")


def _directory_alternatives(groups: Sequence[Group]) -> List[str]:
    """A shared directory of several proposed programs, when it is not risky."""
    by_dir: Dict[str, List[str]] = {}
    for group in groups:
        proposal = group.proposal
        if proposal is not None and proposal.key == "exe":
            by_dir.setdefault(os.path.dirname(proposal.value), []).append(proposal.value)
    lines = []
    for directory, programs in sorted(by_dir.items()):
        if len(programs) > 1 and not exe_dir_risk(directory) and not _path_problem(directory, "dir"):
            lines.append(_comment(f"# alternative to the {len(programs)} programs above: exe_dirs = "
                                  f"[{toml_value(directory)}] (every program there, now and later)"))
    return lines


def render(suggestion: Suggestion, source: str, policy_path: str) -> str:
    """The drop-in: entries with their evidence as comments, then what was left out and why."""
    out: List[str] = []
    span = ""
    if suggestion.first:
        span = (f" at {suggestion.first}" if suggestion.first == suggestion.last else
                f" between {suggestion.first} and {suggestion.last}")
    noun = "event" if suggestion.events == 1 else "events"
    out.append(_comment(f"# Proposed by `enforcer suggest` from {suggestion.events} {noun}{span},"))
    out.append(_comment(f"# read from {source}; rule ids and existing exceptions from {policy_path}."))
    out.append("# Review every entry: it exempts its subject from that rule, whatever the subject does.")
    out.append("# Then: enforcer check --policy POLICY THIS-FILE; install it in allow.d/; enforcer reload.")
    rules: Dict[str, List[Group]] = {}
    for group in suggestion.proposed:
        rules.setdefault(group.rule, []).append(group)
    for rule, groups in rules.items():
        out += ["", f"[rule_allow.{toml_key(rule)}]"]
        keys: Dict[str, List[Group]] = {}
        for group in groups:
            keys.setdefault(group.proposal.key, []).append(group)  # type: ignore[union-attr]
        for key, members in keys.items():
            out.append(f"{key} = [")
            for group in members:
                out.append(f"    # {_evidence(group)}")
                for why in group.whys:
                    out.append(f"    # not the executable: {_comment(why)}")
                out.append(f"    {toml_value(group.proposal.value)},")  # type: ignore[union-attr]
            out.append("]")
        out += _directory_alternatives(groups)
    if not suggestion.proposed:
        out += ["", "# Nothing to propose."]
    notes: List[str] = []
    for group in suggestion.refused:
        notes.append(f"# - rule {group.rule}: no safe entry: {_comment('; '.join(group.whys))}. {_evidence(group)}")
    for group in suggestion.already:
        proposal = group.proposal
        notes.append(_comment(f"# - rule {group.rule}: {proposal.key} {toml_value(proposal.value)} is already "  # type: ignore[union-attr]
                              "allowed by the policy (these events predate it). ") + _evidence(group))
    for rule, count in suggestion.unknown_rules:
        notes.append(_comment(f"# - rule {rule}: {count} event{'s' if count != 1 else ''}, but {policy_path} has no such rule "
                              "(renamed or removed since)"))
    if suggestion.unattributed:
        notes.append(f"# - {suggestion.unattributed} event{'s' if suggestion.unattributed != 1 else ''} the agent could "
                     "not attribute to a rule id")
    if suggestion.coarse:
        notes.append(f"# - {suggestion.coarse} repeats the agent counted per rule only, without their subject")
    if notes:
        out += ["", "# Not proposed:"] + notes
    return "\n".join(out) + "\n"


# --- the command -------------------------------------------------------------------------


def _records(source: str, since: str) -> Iterable[Record]:
    if source == "journal":
        return read_journal(False, since)
    if source == "-":
        return any_records(sys.stdin)
    try:
        handle = open(source, encoding="utf-8", errors="backslashreplace")
    except OSError as error:
        raise EventSourceError(f"{source}: {error.strerror}") from None

    def lines() -> Iterable[Record]:
        with handle:
            yield from any_records(handle)

    return lines()


def _wanted(records: Iterable[Record], rules: Sequence[str], since: str) -> Iterable[Record]:
    for record in records:
        if rules and record.get("rule") not in rules:
            continue
        if since and str(record.get("time", "")) < since:
            continue
        yield record


def _print_problems(problems: Sequence[PolicyProblem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _validate(text: str, target: Optional[str], policy_path: str) -> Optional[int]:
    """Checked as `enforcer check --policy POLICY TARGET` would (owner and mode
    of where it goes included), and, for a file going into the policy's own
    allow.d, the whole policy with it; None when fine. Without a target (printed
    only) the drop-in alone."""
    from enforcer.fileperms import load_trusted_drop_in, load_trusted_policy  # noqa: PLC0415
    from enforcer.parse import load_drop_in  # noqa: PLC0415

    content = text.encode()
    try:
        if target is None:
            warnings = load_drop_in(PRINTED, policy_path, content).warnings
        else:
            warnings = load_trusted_drop_in(target, policy_path, content).warnings
            merged = Path(target).resolve().parent == Path(policy_path).resolve().parent / "allow.d"
            if merged and target.endswith(".toml") and not os.path.basename(target).startswith("."):
                warnings = load_trusted_policy(policy_path, {target: content}).warnings
    except PolicyError as error:
        _print_problems(error.problems)
        return ExitCode.INVALID_POLICY
    ours = [w for w in warnings if w.file == (target or PRINTED)]
    if ours:  # proposals are chosen to have none; a warning here is a bug to see, not to install
        _print_problems(ours)
        return ExitCode.INVALID_POLICY
    return None


def suggest_command(args) -> int:  # argparse.Namespace
    from enforcer.fileperms import load_trusted_policy  # noqa: PLC0415
    from enforcer.atomicfile import FileExists, write_atomic  # noqa: PLC0415

    try:
        policy = load_trusted_policy(args.policy)
    except PolicyError as error:
        _print_problems(error.problems)
        print(f"enforcer suggest: {args.policy} must be valid: its rule ids and exceptions decide what to propose",
              file=sys.stderr)
        return ExitCode.INVALID_POLICY
    try:
        since = normalize_since(args.since) if args.since else ""
        found = suggest(_wanted(_records(args.source, since), tuple(args.rule or ()), since), policy)
    except EventSourceError as error:
        print(f"enforcer suggest: {error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    source = "standard input" if args.source == "-" else args.source
    text = render(found, source, args.policy)
    if args.write and not os.path.isdir(os.path.dirname(os.path.abspath(args.write))):
        print(f"enforcer suggest: cannot write {args.write}: its directory does not exist", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if found.proposed:
        failed = _validate(text, args.write, args.policy)
        if failed is not None:
            print("enforcer suggest: the proposal does not pass `enforcer check`; nothing written", file=sys.stderr)
            return failed
    if not args.write:
        sys.stdout.write(text)
        return ExitCode.OK
    if not found.proposed:
        sys.stdout.write(text)
        print(f"enforcer suggest: nothing to propose: {args.write} not written", file=sys.stderr)
        return ExitCode.OK
    try:
        write_atomic(args.write, text.encode(), mode=0o644, owner=0, replace=args.force)
    except FileExists:
        print(f"enforcer suggest: {args.write} exists: not replaced (--force replaces it)", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except OSError as error:
        print(f"enforcer suggest: cannot write {args.write}: {error.strerror or error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    entries, rules = len(found.proposed), len({g.rule for g in found.proposed})
    print(f"written: {args.write} ({entries} {'entry' if entries == 1 else 'entries'} for {rules} "
          f"{'rule' if rules == 1 else 'rules'}, from {found.events} {'event' if found.events == 1 else 'events'})")
    if not args.write.endswith(".toml"):
        print("note: allow.d reads only *.toml files: install it under a name ending in .toml", file=sys.stderr)
    print("next: review it; enforcer check --explain --mode service POLICY; enforcer reload")
    return ExitCode.OK
