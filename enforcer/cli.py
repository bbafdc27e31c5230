"""The `enforcer` command line.

`check` is complete here and needs neither bcc nor root. The other commands
import their modules only when invoked, so importing this module never
imports bcc.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional, Sequence

from enforcer import __version__
from enforcer.exitcodes import ExitCode

DEFAULT_POLICY = "/etc/enforcer/policy.toml"
MODES = ("enforce", "audit")
#: `check --mode`: also "policy" (the policy's own modes, as `run --mode policy`)
#: and "service" (what the packaged service's ENFORCER_MODE says)
CHECK_MODES = MODES + ("policy", "service")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _plural(count: int, word: str, plural: Optional[str] = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _print_problems(problems, strict: bool) -> None:
    """Every problem to stderr; under --strict a warning is printed (and counts) as an error."""
    for problem in problems:
        print(problem.as_error("refused by --strict") if strict and not problem.is_error else problem,
              file=sys.stderr)


def _check_policy(path: str, args: argparse.Namespace) -> int:
    """One policy with its allow.d: errors, or warnings and the summary (and --explain)."""
    from enforcer.compile import compile_policy
    from enforcer.explain import count_allow_entries, explain_policy
    from enforcer.fileperms import load_trusted_policy
    from enforcer.parse import PolicyError, ignored_allow_d_files
    from enforcer.policyfile.problems import Level, PolicyProblem

    override = args.mode_override
    try:
        policy = load_trusted_policy(path)
    except PolicyError as exc:
        _print_problems(exc.problems, args.strict)
        return ExitCode.INVALID_POLICY
    warnings = [PolicyProblem(ignored, "not read (allow.d reads only *.toml files)", level=Level.WARNING)
                for ignored in ignored_allow_d_files(path)] + list(policy.warnings)
    _print_problems(warnings, args.strict)
    if args.strict and warnings:
        return ExitCode.INVALID_POLICY
    plan = compile_policy(policy, override)
    noted = f", {_plural(len(warnings), 'warning')}" if warnings else ""
    as_run = f"; as the service runs it: {args.mode_source}" if args.mode == "service" else ""
    print(
        f"{path}: ok: {plan.mode_summary()}, "
        f"{_plural(count_allow_entries(policy), 'allowlist entry', 'allowlist entries')}, "
        f"{_plural(len(policy.allow_sources), 'allow.d file')}{noted}{as_run}"
    )
    if args.explain:
        print()
        print(explain_policy(policy, override, args.mode_source))
    return ExitCode.OK


def _check_drop_in(path: str, args: argparse.Namespace) -> int:
    """One allow.d file alone, its rule ids against --policy or the policy.toml beside its allow.d."""
    from enforcer.explain import allow_size, explain_drop_in
    from enforcer.fileperms import load_trusted_drop_in
    from enforcer.parse import PolicyError, is_drop_in_path, policy_of_drop_in

    policy_path = args.policy or policy_of_drop_in(path)
    try:
        drop_in = load_trusted_drop_in(path, policy_path)
    except PolicyError as exc:
        _print_problems(exc.problems, args.strict)
        return ExitCode.INVALID_POLICY
    _print_problems(drop_in.warnings, args.strict)
    if args.strict and drop_in.warnings:
        return ExitCode.INVALID_POLICY
    entries = allow_size(drop_in.allow) + sum(allow_size(allow) for _, allow in drop_in.rule_allow)
    unknown = "no policy.toml beside its allow.d" if is_drop_in_path(path) else "policy not known"
    against = (f"rule ids checked against {policy_path}" if policy_path else
               f"rule ids not checked ({unknown}; name the policy with --policy)")
    noted = f", {_plural(len(drop_in.warnings), 'warning')}" if drop_in.warnings else ""
    print(f"{path}: ok: drop-in, "
          f"{_plural(entries, 'allowlist entry', 'allowlist entries')}{noted}; {against}")
    if args.explain:
        print()
        print(explain_drop_in(drop_in))
    return ExitCode.OK


def _resolve_mode(args: argparse.Namespace) -> Optional[str]:
    """args.mode_override and args.mode_source from --mode; an error message if the service's cannot be read."""
    from enforcer.policy import Mode
    from enforcer.servicemode import SERVICE_DEFAULTS, ServiceModeError, read_service_mode

    args.mode_override, args.mode_source = None, ""
    if args.service_config and args.mode != "service":
        return "enforcer check: --service-config is read only with --mode service"
    if args.mode in MODES:
        args.mode_override = Mode(args.mode)
    elif args.mode == "policy":
        args.mode_source = "--mode policy"
    elif args.mode == "service":
        try:
            service = read_service_mode((args.service_config,) if args.service_config else SERVICE_DEFAULTS)
        except ServiceModeError as error:
            return str(error)
        args.mode_override, args.mode_source = service.override, service.source
        args.service_mode = service
    return None


def _running_agent_note(args: argparse.Namespace) -> None:
    """Under --mode service: say when the running agent was started in another mode
    (ENFORCER_MODE changed without a restart; a reload does not change the mode)."""
    from enforcer.instancelock import running_agent
    from enforcer.state import default_state_dir, read_state

    state_dir = default_state_dir()
    pid = running_agent(state_dir)
    state = read_state(state_dir) if pid else None
    if state is None or state.pid != pid:
        return
    running = state.mode_override or "policy"
    if running != args.service_mode.value:
        print(f"note: the running agent (pid {pid}) was started with --mode {running}; "
              f"{args.mode_source} takes effect when it restarts (systemctl restart enforcer)")


def check_command(args: argparse.Namespace) -> int:
    """Validate (and compile) every policy or drop-in given; print a summary or every error."""
    from enforcer.parse import is_drop_in_path

    problem = _resolve_mode(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return ExitCode.INVALID_POLICY
    if args.mode == "service":
        _running_agent_note(args)
    status = ExitCode.OK
    for path in args.policies:
        as_drop_in = args.drop_in or args.policy is not None or is_drop_in_path(path)
        result = _check_drop_in(path, args) if as_drop_in else _check_policy(path, args)
        if result != ExitCode.OK:
            status = result
    return status


def _delegate(module: str, function: str):
    """A handler that imports `module` only when the subcommand runs."""

    def handler(args: argparse.Namespace) -> int:
        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            print(f"enforcer {args.command}: not available in this installation ({module} is missing)",
                  file=sys.stderr)
            return ExitCode.UNAVAILABLE
        return int(getattr(target, function)(args))

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enforcer",
        description="Deny container-escape and defence-evasion techniques in the kernel (BPF-LSM).",
    )
    parser.add_argument("--version", action="version", version=f"enforcer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    check = sub.add_parser(
        "check",
        help="validate policy files (no root, no bcc)",
        description="Validate policy files and their allow.d directories, or allow.d files alone. "
        "Errors and warnings are printed as FILE:LINE: ...; exit 0 when all are valid, 2 when any is "
        "not (every error is printed). A file in a directory named allow.d is checked as a drop-in.",
    )
    check.add_argument("--explain", action="store_true",
                       help="say in plain words what each policy (or drop-in) does, and list its risky entries")
    check.add_argument("--mode", choices=CHECK_MODES,
                       help="explain as if run with this --mode: enforce, audit, policy (the policy's own modes), "
                       "or service: the mode the packaged service runs (ENFORCER_MODE in /etc/default/enforcer or "
                       "/etc/sysconfig/enforcer; audit when unset, as in the unit)")
    check.add_argument("--service-config", metavar="FILE",
                       help="with --mode service: the service's settings file to read instead")
    check.add_argument("--strict", action="store_true",
                       help="warnings (risky allowlist entries, allow.d files that are not read) are errors")
    check.add_argument("--drop-in", action="store_true",
                       help="check every file as an allow.d drop-in, wherever it is (e.g. before installing it)")
    check.add_argument("--policy", metavar="FILE",
                       help="the policy the drop-ins belong to, for their rule ids (implies --drop-in; default: "
                       "policy.toml beside the allow.d directory)")
    check.add_argument("policies", nargs="+", metavar="POLICY", help="policy or drop-in file(s)")
    check.set_defaults(handler=check_command)

    run = sub.add_parser("run", help="load the BPF programs and enforce a policy (root)")
    run.add_argument("--policy", default=DEFAULT_POLICY, metavar="FILE",
                     help=f"policy file (default {DEFAULT_POLICY})")
    run.add_argument(
        "--mode",
        choices=MODES + ("policy",),
        help="audit: every rule only reports (dry run); enforce: enforce every rule except those the "
        "policy itself marks mode = \"audit\"; policy (the default): the policy's own modes",
    )
    run.add_argument(
        "--events",
        default="stdout",
        metavar="SINKS",
        help="where events go, comma-separated: stdout (JSON lines), journal (the systemd journal, "
        "native fields), file:PATH (JSON lines appended; SIGUSR1 reopens it). Default stdout",
    )
    run.add_argument("--metrics-textfile", metavar="FILE",
                     help="write Prometheus metrics to FILE every 10 s (node_exporter's textfile collector)")
    run.add_argument("--metrics-address", metavar="IP:PORT",
                     help="serve Prometheus metrics over HTTP on IP:PORT (e.g. 127.0.0.1:9713)")
    run.add_argument("--watch-policy", choices=("auto", "on", "off"), default="auto",
                     help="reload when the policy or allow.d files are replaced on disk, through the same "
                     "transaction as SIGHUP (a bad policy is rejected, the previous one stays). auto (the "
                     "default): only when the policy's directory is a Kubernetes ConfigMap volume (it holds "
                     "a ..data symlink)")
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default info")
    run.set_defaults(handler=_delegate("enforcer.daemon", "run_command"))

    probe = sub.add_parser("probe", help="check whether this kernel can run enforcer")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.set_defaults(handler=_delegate("enforcer.kernel.probe", "probe_command"))

    status = sub.add_parser("status", help="show what is loaded and enforced")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_delegate("enforcer.status", "status_command"))

    events = sub.add_parser(
        "events",
        help="show, follow and filter the agent's events (journal or event file)",
        description="Read the records the agent wrote: from the systemd journal (the packaged "
        "service's default) or from a JSON-lines event file (--events file:PATH). Shows events only "
        "unless --type says otherwise.",
    )
    events.add_argument("--from", dest="source", default="journal", metavar="journal|FILE",
                        help="where to read: the journal (default) or an event file")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    events.add_argument("--rule", action="append", metavar="ID", help="only this rule (repeatable)")
    events.add_argument("--action", action="append", choices=("blocked", "audited"), help="only this action")
    events.add_argument("--container", metavar="ID|RUNTIME|host",
                        help="only this container (id or id prefix), runtime (docker, podman, ...), or host")
    events.add_argument("--since", metavar="TIME", help="only records at or after TIME (RFC 3339, UTC)")
    events.add_argument("--type", action="append", choices=("event", "suppressed", "lost", "agent"),
                        help="record types to show (default: event)")
    events.add_argument("--json", action="store_true", help="print the records as JSON lines, untouched")
    events.set_defaults(handler=_delegate("enforcer.eventlog", "events_command"))

    unload = sub.add_parser("unload", help="detach and remove enforcer's BPF programs")
    unload.set_defaults(handler=_delegate("enforcer.status", "unload_command"))

    _add_reload(sub)
    _add_suggest(sub)
    _add_allow(sub)
    return parser


def _timeout(parser: argparse.ArgumentParser) -> None:
    from enforcer.control import DEFAULT_TIMEOUT_S

    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"how long to wait for the agent's verdict (default {DEFAULT_TIMEOUT_S:g})")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: give 0 < SECONDS <= 3600")
    return value


def _uid(text: str) -> int:
    if not text.isdigit() or int(text) > 4294967294:
        raise argparse.ArgumentTypeError(f"not a uid: {text!r} (0..4294967294)")
    return int(text)


def _add_reload(sub) -> None:
    reload = sub.add_parser(
        "reload", help="make the running agent re-read its policy, and print its verdict",
        description="Send SIGHUP to the running agent (found through its lock in the state directory) and wait "
        "for its verdict on a reload that read the policy files as they are now: \"reloaded: generation N, ...\" "
        "(exit 0) or \"reload rejected: REASON\" (exit 2 for an invalid policy, 1 when the kernel refused it). "
        "Exit 5 when no agent runs, 1 when it does not answer in time.")
    _timeout(reload)
    reload.set_defaults(handler=_delegate("enforcer.control", "reload_command"))


def _add_suggest(sub) -> None:
    suggest = sub.add_parser(
        "suggest", help="propose allow.d entries from audited (and blocked) events, for review",
        description="Read event records (the journal, an event file, or standard input: the agent's JSON lines "
        "or `journalctl -o json` output) and propose an allow.d drop-in: per rule, each subject's executable, "
        "or the cgroup of its system service when the executable is a shell, an interpreter or another way to "
        "run anything; never a uid or a directory such as /usr. Grouped and counted, with examples as comments. "
        "Printed, or written with --write after the checks of `enforcer check --policy POLICY FILE`.")
    suggest.add_argument("--from", dest="source", default="journal", metavar="journal|FILE|-",
                         help="where the events are: the journal (default), an event file, or - (standard input)")
    suggest.add_argument("--policy", default=DEFAULT_POLICY, metavar="FILE",
                         help=f"the policy the entries are for: its rule ids and current exceptions "
                         f"(default {DEFAULT_POLICY})")
    suggest.add_argument("--rule", action="append", metavar="ID", help="only events of this rule (repeatable)")
    suggest.add_argument("--since", metavar="TIME", help="only events at or after TIME (RFC 3339, UTC)")
    suggest.add_argument("--write", metavar="FILE",
                         help="write the drop-in to FILE (atomically, root's, 0644) after checking it")
    suggest.add_argument("--force", action="store_true", help="with --write: replace FILE if it exists")
    suggest.set_defaults(handler=_delegate("enforcer.suggest", "suggest_command"))


def _entry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rule", metavar="RULE-ID", help="the rule the entry exempts from")
    entry = parser.add_mutually_exclusive_group(required=True)
    entry.add_argument("--exe", metavar="PATH", help="an executable, by its exact path")
    entry.add_argument("--exe-dir", metavar="DIR", help="every executable below a directory")
    entry.add_argument("--cgroup", metavar="CGROUP", help="every process in a cgroup v2 path and below it")
    entry.add_argument("--uid", type=_uid, metavar="N", help="every process of a user id")
    parser.add_argument("--policy", default=DEFAULT_POLICY, metavar="FILE",
                        help=f"the policy whose allow.d is edited (default {DEFAULT_POLICY})")
    parser.add_argument("--no-reload", action="store_true", help="do not reload the running agent")
    _timeout(parser)


def _add_allow(sub) -> None:
    allow = sub.add_parser(
        "allow", help="add, remove or list allowlist entries (allow.d), validated, and apply them",
        description="Edit the policy's allow.d/ atomically: the whole policy is validated with the change before "
        "anything is written (nothing invalid is ever written), then the running agent is reloaded and its "
        "verdict printed.")
    actions = allow.add_subparsers(dest="allow_action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="add an entry to a rule's allowlist, in allow.d/50-local.toml (or --file)")
    _entry_options(add)
    add.add_argument("--file", metavar="NAME",
                     help="the drop-in in allow.d to edit (created if missing; default 50-local.toml)")
    add.add_argument("--force", action="store_true",
                     help="add an entry even if it is risky (uid 0, a shell, /usr/bin, a slice); still warned about")
    add.set_defaults(handler=_delegate("enforcer.allowedit", "allow_add_command"))
    remove = actions.add_parser("remove", help="remove an entry from allow.d (every file holding it, or --file)")
    _entry_options(remove)
    remove.add_argument("--file", metavar="NAME", help="only from this drop-in in allow.d")
    remove.set_defaults(handler=_delegate("enforcer.allowedit", "allow_remove_command"))
    listing = actions.add_parser("list", help="every allowlist entry with its FILE:LINE and the rule it exempts from")
    listing.add_argument("--policy", default=DEFAULT_POLICY, metavar="FILE",
                         help=f"the policy (default {DEFAULT_POLICY})")
    listing.add_argument("--rule", action="append", metavar="ID",
                         help="only entries that exempt from this rule (its own and global ones; repeatable)")
    listing.add_argument("--json", action="store_true", help="one JSON object per entry")
    listing.set_defaults(handler=_delegate("enforcer.allowedit", "allow_list_command"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # e.g. `enforcer check --explain ... | head`: no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.UNAVAILABLE


__all__: List[str] = ["main", "build_parser", "check_command"]
