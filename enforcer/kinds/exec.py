"""kind = "exec": executing a file from an unusual place.

A rule names places (directories, recursive or not), filesystem types wherever
mounted, and "memfd" (anonymous files executed by fd), minus excluded places.
How places of several rules combine into the exec_places map, and which rule
the kernel applies to a file too deep to place, is in `exec_places`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from enforcer import abi
from enforcer.kinds import exec_places
from enforcer.kinds.base import KindDefaults, KindSpec, Parsed, RuleDraft, RulePlan, enum_set
from enforcer.matching import dir_node, is_below
from enforcer.policy import MEMFD, ExecAccess, ExecDir, ExecRule, Rule, RuleKind, RuleMeta, Severity
from enforcer.policyfile.schema import Checker, KeyPath, quoted, type_name

__all__ = ["SPEC", "DEFAULTS", "KNOWN_FILESYSTEMS"]

#: Defaults justified in docs/policy.md.
DEFAULTS = KindDefaults(
    description="Execution of a file from an unusual place "
    "(temporary, shared-memory or pseudo filesystem, or an anonymous memory file)",
    severity=Severity.HIGH,
    mitre="T1059",
)

#: Filesystem type names an exec rule may name (as in /proc/filesystems), plus "memfd".
KNOWN_FILESYSTEMS = (
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "proc",
    "sysfs",
    "mqueue",
    "hugetlbfs",
    "devpts",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "cgroup",
    "cgroup2",
    "pstore",
    "efivarfs",
    "fuse",
    "fuseblk",
    "overlay",
    MEMFD,
)

_DIR_TABLE_KEYS = ("path", "recursive")


@dataclass(frozen=True)
class _Origin:
    """Valid entries with their indices in the rule's arrays, for overlap messages."""

    dirs: Tuple[Tuple[int, str], ...]  # paths
    filesystems: Tuple[Tuple[int, str], ...]  # includes memfd


def _dir(c: Checker, item: Any, where: KeyPath) -> Optional[ExecDir]:
    """One entry of `dirs`: "/dir" or {path = "/dir", recursive = false}."""
    if isinstance(item, str):
        path = c.path(item, where, "dir")
        return ExecDir(path=path) if path is not None else None
    if not isinstance(item, dict):
        c.err(where, f'expected a string or a table {{path = "/dir", recursive = false}}, got {type_name(item)}')
        return None
    c.keys(item, where, _DIR_TABLE_KEYS)
    if "path" not in item:
        c.err(where + ("path",), "missing (write {path = \"/dir\", recursive = false})")
        return None
    recursive = item.get("recursive", True)
    if not isinstance(recursive, bool):
        c.err(where + ("recursive",), f"expected a boolean, got {type_name(recursive)}")
        return None
    path = c.path(item["path"], where + ("path",), "dir")
    return ExecDir(path=path, recursive=recursive) if path is not None else None


def _filesystem(c: Checker, item: Any, where: KeyPath) -> Optional[str]:
    """One entry of `filesystems`: a known name."""
    name = c.string(item, where)
    if name is None:
        return None
    if name not in KNOWN_FILESYSTEMS:
        c.err(where, f"unknown filesystem {quoted(name)} (known: {', '.join(KNOWN_FILESYSTEMS)})")
        return None
    if len(name.encode()) > abi.FSTYPE_NAME_LEN - 1:  # pragma: no cover - known names fit
        c.err(where, f"filesystem name {quoted(name)} is longer than {abi.FSTYPE_NAME_LEN - 1} bytes")
        return None
    return name


def _path_of(d: ExecDir) -> str:
    return d.path


def _check_excludes(
    c: Checker,
    loc: KeyPath,
    dirs: List[Tuple[int, ExecDir]],
    fs: List[Tuple[int, str]],
    exclude: List[Tuple[int, str]],
) -> None:
    """Dirs inside the rule's own excludes, and excludes that cannot matter."""
    for i, d in dirs:
        for j, e in exclude:
            if is_below(d.path, e):
                c.err(
                    loc + ("dirs", i),
                    f"{quoted(d.path)} is inside exclude[{j}] {quoted(e)} of the same rule, so it would never apply",
                )
                break
    has_fs = any(n != MEMFD for _, n in fs)
    if not has_fs:
        for j, e in exclude:
            inside = any(
                d.recursive and e != d.path and is_below(e, d.path) for _, d in dirs
            )
            if not inside and not any(is_below(d.path, e) for _, d in dirs):
                c.err(
                    loc + ("exclude", j),
                    f"{quoted(e)} is not below any of the rule's recursive dirs and the rule has "
                    "no filesystems, so it would never matter",
                )


def _parse(c: Checker, table: Mapping[str, Any], loc: KeyPath, meta: RuleMeta) -> Parsed:
    dirs: List[Tuple[int, ExecDir]] = []
    if "dirs" in table:
        items = c.array(table["dirs"], loc + ("dirs",)) or []
        dirs = c.distinct(items, loc + ("dirs",), _dir, key=_path_of)
    fs: List[Tuple[int, str]] = []
    if "filesystems" in table:
        items = c.array(table["filesystems"], loc + ("filesystems",)) or []
        fs = c.distinct(items, loc + ("filesystems",), _filesystem)
    exclude: List[Tuple[int, str]] = []
    if "exclude" in table:
        exclude = c.path_list(table["exclude"], loc + ("exclude",), "dir", refuse_root="exclude every place")
    if not dirs and not fs and not c.has_problem_under(loc + ("dirs",), loc + ("filesystems",)):
        c.err(loc, "no dirs and no filesystems: the rule could never match")
    _check_excludes(c, loc, dirs, fs, exclude)
    access = enum_set(c, table, loc, "access", ExecAccess, list(ExecAccess))
    rule = ExecRule(
        meta=meta,
        dirs=tuple(d for _, d in dirs),
        filesystems=frozenset(n for _, n in fs if n != MEMFD),
        memfd=any(n == MEMFD for _, n in fs),
        exclude=tuple(e for _, e in exclude),
        access=access,
    )
    return Parsed(rule, _Origin(dirs=tuple((i, d.path) for i, d in dirs), filesystems=tuple(fs)))


def _overlap(c: Checker, earlier: RuleDraft, later: RuleDraft) -> None:
    """A place or filesystem decides for one rule only (per kernel scope)."""
    assert earlier.parsed is not None and later.parsed is not None
    mine, theirs = later.parsed.origin, earlier.parsed.origin
    _claimed_twice(c, "dirs", mine.dirs, theirs.dirs, earlier, later, "a place")
    _claimed_twice(c, "filesystems", mine.filesystems, theirs.filesystems, earlier, later, "a filesystem")


def _claimed_twice(
    c: Checker,
    key: str,
    mine: Tuple[Tuple[int, str], ...],
    theirs: Tuple[Tuple[int, str], ...],
    earlier: RuleDraft,
    later: RuleDraft,
    what: str,
) -> None:
    taken = {entry: i for i, entry in theirs}
    for i, entry in mine:
        if entry in taken:
            c.err(
                later.loc + (key, i),
                f"{quoted(entry)} is also in {c.ref(earlier.loc + (key, taken[entry]))} and their scopes "
                f"overlap; {what} can belong to only one rule",
            )


def _plan(rule: Rule) -> RulePlan:
    assert isinstance(rule, ExecRule)
    return RulePlan(
        targets=(abi.Target.EXEC_MEMFD,) if rule.memfd else (),
        filesystems=tuple(sorted(rule.filesystems)),
        watch=abi.Watch.EXEC,
        flags=_access_flags(rule.access),
    )


def _access_flags(access) -> abi.RuleFlag:
    flags = abi.RuleFlag(0)
    if ExecAccess.EXEC in access:
        flags |= abi.RuleFlag.EXEC
    if ExecAccess.MAP in access:
        flags |= abi.RuleFlag.MAP
    return flags


def _covers(access) -> str:
    if access == frozenset(ExecAccess):
        return ("applies to executing a file and to mapping it as executable code "
                "(mmap/mprotect with PROT_EXEC: ld.so FILE, LD_PRELOAD, dlopen)")
    if ExecAccess.MAP in access:
        return "applies only to mapping a file as executable code (mmap/mprotect with PROT_EXEC), not to executing it"
    return "applies only to executing a file, not to mapping it as executable code"


def _describe(rule: Rule) -> List[str]:
    assert isinstance(rule, ExecRule)
    lines = [_covers(rule.access)]
    for d in rule.dirs:
        if d.recursive:
            lines.append(f"executing a file anywhere under {dir_node(d.path)}")
        else:
            lines.append(f"executing a file directly in {d.path}/ (not in its subdirectories)")
    if rule.filesystems:
        lines.append(f"executing a file from a filesystem of type {', '.join(sorted(rule.filesystems))}, "
                     "wherever it is mounted")
    if rule.memfd:
        lines.append("executing an anonymous in-memory file (memfd_create, or an unlinked shared-memory file)")
    for e in rule.exclude:
        lines.append(f"but never for files under {e}/ (excluded)")
    return lines


SPEC = KindSpec(
    kind=RuleKind.EXEC,
    keys=("dirs", "filesystems", "exclude", "access"),
    defaults=DEFAULTS,
    parse=_parse,
    overlap=_overlap,
    plan=_plan,
    describe=_describe,
    policy_plan=exec_places.policy_plan,
    policy_notes=exec_places.policy_notes,
)
