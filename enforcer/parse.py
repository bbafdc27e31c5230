"""TOML policy files -> `enforcer.policy.Policy`, strictly.

Every problem is collected and reported at once as a `PolicyError` whose
`.errors` are `PolicyProblem`s:

* syntax problems:   ``FILE:LINE:COL: message``
* meaning problems:  ``FILE: KEYPATH: message`` (KEYPATH like ``rule[2].allow.exe[0]``)
* file problems:     ``FILE: message``

Nothing here raises anything but `PolicyError` for a bad file: no traceback
for empty, huge, binary or deeply nested input. See docs/policy.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import posixpath
import re
import stat
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.9/3.10
    import tomli as _toml  # type: ignore[no-redef]

from enforcer import abi
from enforcer.policy import (
    MEMFD,
    Allowlist,
    ExecDir,
    ExecRule,
    Mode,
    Policy,
    ReleaseAgentAccess,
    ReleaseAgentRule,
    Rule,
    RuleKind,
    RuleMeta,
    Scope,
    Severity,
    SysrqAccess,
    SysrqFile,
    SysrqRule,
)

__all__ = [
    "PolicyProblem",
    "PolicyError",
    "load_policy",
    "loads_policy",
    "MAX_POLICY_BYTES",
    "MAX_NESTING",
    "KNOWN_FILESYSTEMS",
    "KIND_DEFAULTS",
]

#: Policy and allow.d files larger than this are refused before parsing.
MAX_POLICY_BYTES = 1 << 20

#: Arrays, inline tables, tables and dotted keys nested deeper than this are refused.
MAX_NESTING = 8

SUPPORTED_VERSION = 1

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


@dataclasses.dataclass(frozen=True)
class KindDefaults:
    description: str
    severity: Severity
    mitre: str


#: What a rule gets when it does not say; justified in docs/policy.md.
KIND_DEFAULTS: Dict[RuleKind, KindDefaults] = {
    RuleKind.SYSRQ: KindDefaults(
        description="Access to the magic SysRq controls (/proc/sysrq-trigger, /proc/sys/kernel/sysrq), "
        "which can crash, reboot or dump the host kernel",
        severity=Severity.CRITICAL,
        mitre="T1611",
    ),
    RuleKind.RELEASE_AGENT: KindDefaults(
        description="Write to or rename of a cgroup v1 release_agent file, "
        "a known way to run a program on the host from a container",
        severity=Severity.CRITICAL,
        mitre="T1611",
    ),
    RuleKind.EXEC: KindDefaults(
        description="Execution of a file from an unusual place "
        "(temporary, shared-memory or pseudo filesystem, or an anonymous memory file)",
        severity=Severity.HIGH,
        mitre="T1059",
    ),
}

_TOP_KEYS = ("version", "mode", "allow", "rule")
_ALLOW_D_KEYS = ("allow", "rule_allow")
_ALLOW_KEYS = ("exe", "exe_dirs", "uid", "cgroup")
_COMMON_RULE_KEYS = ("id", "kind", "description", "severity", "mitre", "mode", "scope", "allow")
_KIND_KEYS: Dict[RuleKind, Tuple[str, ...]] = {
    RuleKind.SYSRQ: ("access", "files"),
    RuleKind.RELEASE_AGENT: ("access",),
    RuleKind.EXEC: ("dirs", "filesystems", "exclude"),
}
_DIR_TABLE_KEYS = ("path", "recursive")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")
_MITRE_RE = re.compile(r"T\d{4}(\.\d{3})?\Z")
_UID_MAX = 4294967294


# --- problems -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyProblem:
    """One problem: `location` is "LINE:COL" (syntax), a key path, or "" (whole file)."""

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        if not self.location:
            return f"{self.file}: {self.message}"
        if re.fullmatch(r"\d+:\d+", self.location):
            return f"{self.file}:{self.location}: {self.message}"
        return f"{self.file}: {self.location}: {self.message}"


class PolicyError(Exception):
    """A policy (or one of its allow.d files) is invalid; `.errors` says every way it is."""

    def __init__(self, errors: Sequence[PolicyProblem]):
        self.errors: List[PolicyProblem] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# --- small helpers ------------------------------------------------------------------


def _q(value: Any, limit: int = 80) -> str:
    """A value quoted for a message, control characters escaped, long strings cut."""
    if isinstance(value, str):
        if len(value) > limit:
            value = value[:limit] + "..."
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _allowed(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def dir_prefix(path: str) -> str:
    """A directory as matched in the kernel: with a trailing "/" ("/" stays "/")."""
    return path if path == "/" else path + "/"


def is_below(path: str, directory: str) -> bool:
    """`path` is `directory` itself or anywhere below it."""
    return path == directory or path.startswith(dir_prefix(directory))


def scopes_overlap(a: Scope, b: Scope) -> bool:
    return a == b or Scope.ALL in (a, b)


# --- reading and syntax -------------------------------------------------------------

_SCAN_RE = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""'  # multi-line basic string
    r"|'''.*?'''"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}.=,\n]",
    re.S,
)


def _position(text: str, offset: int) -> Tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _scan_nesting(text: str) -> Optional[Tuple[int, int]]:
    """Offset-derived (line, col) of the first place nested deeper than MAX_NESTING, if any.

    Runs before the TOML decoder, which recurses on nested arrays and builds
    dotted keys expensively. Strings and comments are skipped; brackets and
    braces count one level each, and so does each dot in a key or header.
    """
    depth = 0
    dots = 0
    for match in _SCAN_RE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            dots = 0
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
            dots = 0
        elif token == ".":
            dots += 1
        elif token in ("=", ",", "\n"):
            dots = 0
            continue
        else:
            continue
        if depth + dots > MAX_NESTING:
            return _position(text, match.start())
    return None


def _data_depth(data: Any) -> Tuple[int, str]:
    """Deepest nesting of lists/dicts in decoded TOML, and where (iterative)."""
    deepest, where = 0, ""
    stack: List[Tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > deepest:
            deepest, where = depth, path
        if depth > MAX_NESTING:
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, f"{path}[{i}]"))
    return deepest, where


_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END_RE = re.compile(r"\s*\(at end of document\)\s*$")


def _read_toml(path: str, problems: List[PolicyProblem], allow_empty: bool) -> Optional[Dict[str, Any]]:
    """Read, size-check, decode and parse one file; None (with problems added) when it cannot."""

    def fail(message: str, location: str = "") -> None:
        problems.append(PolicyProblem(path, location, message))

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        fail("is a directory, not a policy file")
        return None
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
        return None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            fail("is a directory, not a policy file")
            return None
        if not stat.S_ISREG(info.st_mode):
            fail("is not a regular file")
            return None
        if info.st_size > MAX_POLICY_BYTES:
            fail(f"file is {info.st_size} bytes; policy files are limited to 1 MiB")
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_POLICY_BYTES:
        fail(f"file is more than {MAX_POLICY_BYTES} bytes; policy files are limited to 1 MiB")
        return None
    return _parse_bytes(raw, path, problems, allow_empty)


def _parse_bytes(
    raw: bytes, path: str, problems: List[PolicyProblem], allow_empty: bool
) -> Optional[Dict[str, Any]]:
    def fail(message: str, location: str = "") -> None:
        problems.append(PolicyProblem(path, location, message))

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        fail(f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line})")
        return None
    if text.startswith("\ufeff"):
        fail("starts with a byte order mark; save the file as UTF-8 without BOM", "1:1")
        return None
    if not text.strip():
        if allow_empty:
            return {}
        fail('file is empty; a policy needs at least "version = 1" and one [[rule]]')
        return None
    deep = _scan_nesting(text)
    if deep is not None:
        fail(f"nested deeper than {MAX_NESTING} levels", f"{deep[0]}:{deep[1]}")
        return None
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        if getattr(exc, "msg", None):
            message = exc.msg  # type: ignore[attr-defined]
        found = _TOML_POS_RE.search(message)
        if found:
            line, col = int(found.group(1)), int(found.group(2))
            message = message[: found.start()]
        elif _TOML_END_RE.search(message):
            message = _TOML_END_RE.sub("", message)
            if line is None:
                line, col = _position(text, len(text))
        if line is None or col is None:
            line, col = _position(text, len(text))
        fail(message, f"{line}:{col}")
        return None
    except RecursionError:  # pragma: no cover - the scan above should prevent it
        fail(f"nested deeper than {MAX_NESTING} levels")
        return None
    depth, where = _data_depth(data)
    if depth > MAX_NESTING:
        fail(f"nested deeper than {MAX_NESTING} levels", where)
        return None
    return data


# --- validation ---------------------------------------------------------------------


class _Checker:
    """Collects problems for one file."""

    def __init__(self, path: str, problems: List[PolicyProblem]):
        self.file = path
        self.problems = problems

    def err(self, location: str, message: str) -> None:
        self.problems.append(PolicyProblem(self.file, location, message))

    # generic shapes

    def keys(self, table: Dict[str, Any], prefix: str, allowed: Sequence[str], where: str = "") -> None:
        for key in table:
            if key not in allowed:
                loc = f"{prefix}.{key}" if prefix else key
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                self.err(loc, f'unknown key "{key}"{where}{hint} (allowed: {", ".join(allowed)})')

    def table(self, value: Any, loc: str) -> Optional[Dict[str, Any]]:
        if isinstance(value, dict):
            return value
        self.err(loc, f"expected a table, got {_type_name(value)}")
        return None

    def string(self, value: Any, loc: str) -> Optional[str]:
        if isinstance(value, str):
            return value
        self.err(loc, f"expected a string, got {_type_name(value)}")
        return None

    def array(self, value: Any, loc: str) -> Optional[List[Any]]:
        if isinstance(value, list):
            return value
        self.err(loc, f"expected an array, got {_type_name(value)}")
        return None

    def enum(self, value: Any, loc: str, enum_type: Any) -> Any:
        text = self.string(value, loc)
        if text is None:
            return None
        try:
            return enum_type(text)
        except ValueError:
            self.err(loc, f"unknown value {_q(text)} (allowed: {_allowed(m.value for m in enum_type)})")
            return None

    def enum_list(self, value: Any, loc: str, enum_type: Any, what: str) -> Optional[List[Any]]:
        """An array of enum values; None when absent from the result because of errors."""
        items = self.array(value, loc)
        if items is None:
            return None
        out: List[Any] = []
        seen: Dict[Any, int] = {}
        ok = True
        for i, item in enumerate(items):
            member = self.enum(item, f"{loc}[{i}]", enum_type)
            if member is None:
                ok = False
                continue
            if member in seen:
                self.err(f"{loc}[{i}]", f"{_q(member.value)} is listed twice (also {loc}[{seen[member]}])")
                ok = False
                continue
            seen[member] = i
            out.append(member)
        if not items:
            self.err(
                loc,
                f"empty: the rule could never match (allowed {what}: {_allowed(m.value for m in enum_type)})",
            )
            return None
        return out if ok else None

    def path(self, value: Any, loc: str, kind: str) -> Optional[str]:
        """kind: "dir" (matched as a prefix with "/"), "exe" (exact), "cgroup" (prefix)."""
        text = self.string(value, loc)
        if text is None:
            return None
        if "\0" in text:
            self.err(loc, f"path {_q(text)} contains a NUL character")
            return None
        if not text.startswith("/"):
            self.err(loc, f"path {_q(text)} is not absolute")
            return None
        normal = "/" + posixpath.normpath(text).lstrip("/")
        if normal != text:
            self.err(loc, f"path {_q(text)} is not normalised (write {_q(normal)})")
            return None
        if kind == "exe":
            size = len(text.encode())
            if size > abi.EXACT_PATH_MATCH_MAX:
                self.err(
                    loc,
                    f"path {_q(text)} is too long: {size} bytes, "
                    f"the kernel can match at most {abi.EXACT_PATH_MATCH_MAX}",
                )
                return None
        else:
            size = len(dir_prefix(text).encode())
            if size > abi.PATH_MATCH_MAX:
                self.err(
                    loc,
                    f'path {_q(text)} is too long: {size} bytes with the trailing "/", '
                    f"the kernel can match at most {abi.PATH_MATCH_MAX}",
                )
                return None
        return text

    def path_list(self, value: Any, loc: str, kind: str) -> List[Tuple[int, str]]:
        """Valid, distinct paths of an array, with their indices."""
        items = self.array(value, loc)
        out: List[Tuple[int, str]] = []
        if items is None:
            return out
        seen: Dict[str, int] = {}
        for i, item in enumerate(items):
            text = self.path(item, f"{loc}[{i}]", kind)
            if text is None:
                continue
            if text in seen:
                self.err(f"{loc}[{i}]", f"{_q(text)} is listed twice (also {loc}[{seen[text]}])")
                continue
            seen[text] = i
            out.append((i, text))
        return out

    # allowlists

    def allowlist(self, value: Any, loc: str) -> Allowlist:
        table = self.table(value, loc)
        if table is None:
            return Allowlist()
        self.keys(table, loc, _ALLOW_KEYS)
        exe: List[str] = []
        exe_dirs: List[str] = []
        cgroups: List[str] = []
        uids: List[int] = []
        if "exe" in table:
            exe = [p for _, p in self.path_list(table["exe"], f"{loc}.exe", "exe")]
        if "exe_dirs" in table:
            for i, p in self.path_list(table["exe_dirs"], f"{loc}.exe_dirs", "dir"):
                if p == "/":
                    self.err(f"{loc}.exe_dirs[{i}]", '"/" would allow every executable')
                    continue
                exe_dirs.append(p)
        if "cgroup" in table:
            for i, p in self.path_list(table["cgroup"], f"{loc}.cgroup", "cgroup"):
                if p == "/":
                    self.err(f"{loc}.cgroup[{i}]", '"/" would allow every process')
                    continue
                cgroups.append(p)
        if "uid" in table:
            items = self.array(table["uid"], f"{loc}.uid")
            seen: Dict[int, int] = {}
            for i, item in enumerate(items or []):
                where = f"{loc}.uid[{i}]"
                if isinstance(item, bool) or not isinstance(item, int):
                    self.err(where, f"expected an integer, got {_type_name(item)}")
                elif not 0 <= item <= _UID_MAX:
                    self.err(where, f"uid {item} is out of range (0..{_UID_MAX})")
                elif item in seen:
                    self.err(where, f"{item} is listed twice (also {loc}.uid[{seen[item]}])")
                else:
                    seen[item] = i
                    uids.append(item)
        return Allowlist(exe=tuple(exe), exe_dirs=tuple(exe_dirs), uid=tuple(uids), cgroup=tuple(cgroups))


@dataclasses.dataclass
class _RuleDraft:
    """A rule as far as it could be validated, with where its parts came from."""

    index: int
    loc: str
    id: Optional[str]
    kind: Optional[RuleKind]
    scope: Scope
    complete: bool
    rule: Optional[Rule] = None
    dirs: List[Tuple[int, ExecDir]] = dataclasses.field(default_factory=list)
    fs: List[Tuple[int, str]] = dataclasses.field(default_factory=list)  # includes memfd
    exclude: List[Tuple[int, str]] = dataclasses.field(default_factory=list)


def _check_rule(c: _Checker, value: Any, index: int) -> Optional[_RuleDraft]:
    loc = f"rule[{index}]"
    table = c.table(value, loc)
    if table is None:
        return None
    complete = True

    kind: Optional[RuleKind] = None
    if "kind" not in table:
        c.err(f"{loc}.kind", f"missing (allowed: {_allowed(k.value for k in RuleKind)})")
        complete = False
    else:
        kind = c.enum(table["kind"], f"{loc}.kind", RuleKind)
        complete = complete and kind is not None

    all_keys = list(_COMMON_RULE_KEYS)
    for keys in _KIND_KEYS.values():
        all_keys += [k for k in keys if k not in all_keys]
    if kind is None:
        c.keys(table, loc, all_keys)
    else:
        allowed = _COMMON_RULE_KEYS + _KIND_KEYS[kind]
        for key in table:
            if key in allowed:
                continue
            if key in all_keys:
                owners = [k.value for k, keys in _KIND_KEYS.items() if key in keys]
                c.err(f"{loc}.{key}", f'"{key}" is not valid for kind "{kind.value}" (only for {_allowed(owners)})')
            else:
                c.keys({key: None}, loc, allowed, where=f' for kind "{kind.value}"')

    rule_id: Optional[str] = None
    if "id" not in table:
        c.err(f"{loc}.id", "missing (every rule needs an id)")
        complete = False
    else:
        rule_id = c.string(table["id"], f"{loc}.id")
        if rule_id is not None and not _ID_RE.match(rule_id):
            c.err(
                f"{loc}.id",
                f"invalid id {_q(rule_id)} (1-63 characters: lowercase letters, digits, "
                '"_", "." and "-", starting with a letter or digit)',
            )
            rule_id = None
        complete = complete and rule_id is not None

    defaults = KIND_DEFAULTS[kind] if kind is not None else None
    description = defaults.description if defaults else ""
    if "description" in table:
        text = c.string(table["description"], f"{loc}.description")
        if text is not None and not text.strip():
            c.err(f"{loc}.description", "empty (leave the key out for the default description)")
            text = None
        if text is None:
            complete = False
        else:
            description = text.strip()

    severity = defaults.severity if defaults else Severity.HIGH
    if "severity" in table:
        got = c.enum(table["severity"], f"{loc}.severity", Severity)
        complete = complete and got is not None
        severity = got or severity

    mitre = defaults.mitre if defaults else ""
    if "mitre" in table:
        text = c.string(table["mitre"], f"{loc}.mitre")
        if text is not None and not _MITRE_RE.match(text):
            c.err(f"{loc}.mitre", f'invalid ATT&CK technique {_q(text)} (expected like "T1611" or "T1562.001")')
            text = None
        complete = complete and text is not None
        mitre = text or mitre

    mode: Optional[Mode] = None
    if "mode" in table:
        mode = c.enum(table["mode"], f"{loc}.mode", Mode)
        complete = complete and mode is not None

    scope = Scope.ALL
    if "scope" in table:
        got = c.enum(table["scope"], f"{loc}.scope", Scope)
        complete = complete and got is not None
        scope = got or scope

    allow = Allowlist()
    if "allow" in table:
        before = len(c.problems)
        allow = c.allowlist(table["allow"], f"{loc}.allow")
        complete = complete and len(c.problems) == before

    draft = _RuleDraft(index=index, loc=loc, id=rule_id, kind=kind, scope=scope, complete=complete)
    if kind is None:
        return draft
    meta = RuleMeta(
        id=rule_id or "",
        description=description,
        severity=severity,
        mitre=mitre,
        mode=mode,
        scope=scope,
        allow=allow,
    )
    before = len(c.problems)
    if kind is RuleKind.SYSRQ:
        access = [SysrqAccess.WRITE]
        files = [SysrqFile.TRIGGER, SysrqFile.SYSCTL]
        if "access" in table:
            got = c.enum_list(table["access"], f"{loc}.access", SysrqAccess, "access")
            access = got if got is not None else []
        if "files" in table:
            got = c.enum_list(table["files"], f"{loc}.files", SysrqFile, "files")
            files = got if got is not None else []
        rule: Rule = SysrqRule(meta=meta, access=frozenset(access), files=frozenset(files))
    elif kind is RuleKind.RELEASE_AGENT:
        ra_access = [ReleaseAgentAccess.WRITE, ReleaseAgentAccess.RENAME]
        if "access" in table:
            got = c.enum_list(table["access"], f"{loc}.access", ReleaseAgentAccess, "access")
            ra_access = got if got is not None else []
        rule = ReleaseAgentRule(meta=meta, access=frozenset(ra_access))
    else:
        _check_exec(c, table, draft)
        rule = ExecRule(
            meta=meta,
            dirs=tuple(d for _, d in draft.dirs),
            filesystems=frozenset(n for _, n in draft.fs if n != MEMFD),
            memfd=any(n == MEMFD for _, n in draft.fs),
            exclude=tuple(e for _, e in draft.exclude),
        )
    draft.complete = draft.complete and len(c.problems) == before
    draft.rule = rule
    return draft


def _check_exec(c: _Checker, table: Dict[str, Any], draft: _RuleDraft) -> None:
    loc = draft.loc
    if "dirs" in table:
        items = c.array(table["dirs"], f"{loc}.dirs") or []
        seen: Dict[str, int] = {}
        for i, item in enumerate(items):
            where = f"{loc}.dirs[{i}]"
            recursive = True
            if isinstance(item, dict):
                c.keys(item, where, _DIR_TABLE_KEYS)
                if "path" not in item:
                    c.err(f"{where}.path", "missing (write {path = \"/dir\", recursive = false})")
                    continue
                if "recursive" in item:
                    if not isinstance(item["recursive"], bool):
                        c.err(f"{where}.recursive", f"expected a boolean, got {_type_name(item['recursive'])}")
                        continue
                    recursive = item["recursive"]
                path = c.path(item["path"], f"{where}.path", "dir")
            elif isinstance(item, str):
                path = c.path(item, where, "dir")
            else:
                c.err(
                    where,
                    'expected a string or a table {path = "/dir", recursive = false}, '
                    f"got {_type_name(item)}",
                )
                continue
            if path is None:
                continue
            if path in seen:
                c.err(where, f"{_q(path)} is listed twice (also {loc}.dirs[{seen[path]}])")
                continue
            seen[path] = i
            draft.dirs.append((i, ExecDir(path=path, recursive=recursive)))
    if "filesystems" in table:
        items = c.array(table["filesystems"], f"{loc}.filesystems") or []
        seen_fs: Dict[str, int] = {}
        for i, item in enumerate(items):
            where = f"{loc}.filesystems[{i}]"
            name = c.string(item, where)
            if name is None:
                continue
            if name not in KNOWN_FILESYSTEMS:
                c.err(where, f"unknown filesystem {_q(name)} (known: {', '.join(KNOWN_FILESYSTEMS)})")
                continue
            if len(name.encode()) > abi.FSTYPE_NAME_LEN - 1:  # pragma: no cover - known names fit
                c.err(where, f"filesystem name {_q(name)} is longer than {abi.FSTYPE_NAME_LEN - 1} bytes")
                continue
            if name in seen_fs:
                c.err(where, f"{_q(name)} is listed twice (also {loc}.filesystems[{seen_fs[name]}])")
                continue
            seen_fs[name] = i
            draft.fs.append((i, name))
    if "exclude" in table:
        for i, path in c.path_list(table["exclude"], f"{loc}.exclude", "dir"):
            if path == "/":
                c.err(f"{loc}.exclude[{i}]", '"/" would exclude every place')
                continue
            draft.exclude.append((i, path))
    if not draft.dirs and not draft.fs and not _has_problem_under(c, f"{loc}.dirs", f"{loc}.filesystems"):
        c.err(loc, "no dirs and no filesystems: the rule could never match")
    # dirs inside the rule's own excludes, excludes that cannot matter
    for i, d in draft.dirs:
        for j, e in draft.exclude:
            if is_below(d.path, e):
                c.err(
                    f"{loc}.dirs[{i}]",
                    f"{_q(d.path)} is inside exclude[{j}] {_q(e)} of the same rule, so it would never apply",
                )
                break
    has_fs = any(n != MEMFD for _, n in draft.fs)
    if not has_fs:
        for j, e in draft.exclude:
            inside = any(
                d.recursive and e != d.path and is_below(e, d.path) for _, d in draft.dirs
            )
            if not inside and not any(is_below(d.path, e) for _, d in draft.dirs):
                c.err(
                    f"{loc}.exclude[{j}]",
                    f"{_q(e)} is not below any of the rule's recursive dirs and the rule has "
                    "no filesystems, so it would never matter",
                )


def _has_problem_under(c: _Checker, *prefixes: str) -> bool:
    for problem in c.problems:
        if problem.file == c.file and any(
            problem.location == p or problem.location.startswith(p + "[") or problem.location.startswith(p + ".")
            for p in prefixes
        ):
            return True
    return False


def _check_overlaps(c: _Checker, drafts: List[_RuleDraft]) -> None:
    """Contradictions between rules whose scopes overlap."""
    for n, later in enumerate(drafts):
        if later.rule is None:
            continue
        for earlier in drafts[:n]:
            if earlier.rule is None or earlier.kind is not later.kind:
                continue
            if not scopes_overlap(earlier.scope, later.scope):
                continue
            named = f' (rule "{earlier.id}")' if earlier.id else ""
            other = f"{earlier.loc}{named}"
            if isinstance(later.rule, SysrqRule) and isinstance(earlier.rule, SysrqRule):
                for f in SysrqFile:
                    for a in SysrqAccess:
                        if (
                            f in later.rule.files
                            and a in later.rule.access
                            and f in earlier.rule.files
                            and a in earlier.rule.access
                        ):
                            c.err(
                                later.loc,
                                f'{a.value} of sysrq file "{f.value}" is also covered by {other} '
                                "and their scopes overlap",
                            )
            elif isinstance(later.rule, ReleaseAgentRule) and isinstance(earlier.rule, ReleaseAgentRule):
                for a in ReleaseAgentAccess:
                    if a in later.rule.access and a in earlier.rule.access:
                        c.err(
                            later.loc,
                            f"release_agent {a.value} is also covered by {other} and their scopes overlap",
                        )
            elif later.kind is RuleKind.EXEC:
                earlier_dirs = {d.path: i for i, d in earlier.dirs}
                for i, d in later.dirs:
                    if d.path in earlier_dirs:
                        c.err(
                            f"{later.loc}.dirs[{i}]",
                            f"{_q(d.path)} is also in {earlier.loc}.dirs[{earlier_dirs[d.path]}]{named} and their scopes "
                            "overlap; a place can belong to only one rule",
                        )
                earlier_fs = {name: i for i, name in earlier.fs}
                for i, name in later.fs:
                    if name in earlier_fs:
                        c.err(
                            f"{later.loc}.filesystems[{i}]",
                            f"{_q(name)} is also in {earlier.loc}.filesystems[{earlier_fs[name]}]{named} and their scopes "
                            "overlap; a filesystem can belong to only one rule",
                        )


def _check_policy(c: _Checker, data: Dict[str, Any]) -> Tuple[Optional[Policy], List[_RuleDraft]]:
    c.keys(data, "", _TOP_KEYS)
    ok = True
    version = 0
    if "version" not in data:
        c.err("version", f"missing (write version = {SUPPORTED_VERSION} at the top)")
        ok = False
    else:
        value = data["version"]
        if isinstance(value, bool) or not isinstance(value, int):
            c.err("version", f"expected an integer, got {_type_name(value)}")
            ok = False
        elif value != SUPPORTED_VERSION:
            c.err("version", f"unsupported version {value} (this enforcer reads version {SUPPORTED_VERSION})")
            ok = False
        else:
            version = value
    mode = Mode.ENFORCE
    if "mode" in data:
        got = c.enum(data["mode"], "mode", Mode)
        ok = ok and got is not None
        mode = got or mode
    allow = Allowlist()
    if "allow" in data:
        allow = c.allowlist(data["allow"], "allow")

    drafts: List[_RuleDraft] = []
    raw_rules = data.get("rule")
    if raw_rules is None:
        c.err("rule", "no rules: a policy needs at least one [[rule]]")
    elif not isinstance(raw_rules, list):
        hint = "; write [[rule]], not [rule]" if isinstance(raw_rules, dict) else ""
        c.err("rule", f"expected an array of tables ([[rule]]), got {_type_name(raw_rules)}{hint}")
    else:
        if not raw_rules:
            c.err("rule", "no rules: a policy needs at least one [[rule]]")
        if len(raw_rules) > abi.MAX_RULES:
            c.err("rule", f"{len(raw_rules)} rules; at most {abi.MAX_RULES} are supported")
        ids: Dict[str, int] = {}
        for index, value in enumerate(raw_rules):
            draft = _check_rule(c, value, index)
            if draft is None:
                continue
            drafts.append(draft)
            if draft.id is not None:
                if draft.id in ids:
                    c.err(f"{draft.loc}.id", f"duplicate id {_q(draft.id)} (also rule[{ids[draft.id]}])")
                else:
                    ids[draft.id] = index
        _check_overlaps(c, drafts)
    if any(p.file == c.file for p in c.problems) or not ok:
        return None, drafts
    rules = tuple(d.rule for d in drafts if d.rule is not None)
    return Policy(source=c.file, version=version, mode=mode, allow=allow, rules=rules), drafts


def _check_allow_d(
    c: _Checker, data: Dict[str, Any], rule_ids: Sequence[str], policy_path: str
) -> Tuple[Allowlist, Dict[str, Allowlist]]:
    c.keys(data, "", _ALLOW_D_KEYS, where=" in an allow.d file")
    allow = Allowlist()
    per_rule: Dict[str, Allowlist] = {}
    if "allow" in data:
        allow = c.allowlist(data["allow"], "allow")
    if "rule_allow" in data:
        table = c.table(data["rule_allow"], "rule_allow")
        for rule_id, value in (table or {}).items():
            loc = f"rule_allow.{rule_id}"
            entries = c.allowlist(value, loc)
            if rule_id not in rule_ids:
                known = ", ".join(f'"{r}"' for r in rule_ids) or "none"
                c.err(loc, f"no rule with id {_q(rule_id)} in {policy_path} (rules: {known})")
                continue
            per_rule[rule_id] = entries
    return allow, per_rule


# --- public -------------------------------------------------------------------------


def loads_policy(text: "str | bytes", source: str = "<policy>") -> Policy:
    """Parse and validate policy text (no allow.d). Raises PolicyError."""
    problems: List[PolicyProblem] = []
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError([PolicyProblem(source, "", f"file is {len(raw)} bytes; policy files are limited to 1 MiB")])
    data = _parse_bytes(raw, source, problems, allow_empty=False)
    if data is None:
        raise PolicyError(problems)
    policy, _ = _check_policy(_Checker(source, problems), data)
    if problems or policy is None:
        raise PolicyError(problems)
    return policy


def allow_d_files(path: str) -> List[str]:
    """The allow.d/*.toml files that belong to the policy at `path`, in merge order."""
    directory = os.path.join(os.path.dirname(path) or ".", "allow.d")
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(directory, n) for n in sorted(names) if n.endswith(".toml") and not n.startswith(".")]


def load_policy(path: "str | os.PathLike[str]") -> Policy:
    """Read, validate and return the policy at `path` with its allow.d files merged in.

    Raises PolicyError listing every problem in the policy and its allow.d files.
    """
    path = os.fspath(path)
    problems: List[PolicyProblem] = []
    data = _read_toml(path, problems, allow_empty=False)
    policy: Optional[Policy] = None
    drafts: List[_RuleDraft] = []
    if data is not None:
        policy, drafts = _check_policy(_Checker(path, problems), data)
    rule_ids = [d.id for d in drafts if d.id is not None]
    directory = os.path.join(os.path.dirname(path) or ".", "allow.d")
    try:
        extra_files = allow_d_files(path) if os.path.isdir(directory) else []
    except OSError as exc:  # pragma: no cover - e.g. unreadable directory
        problems.append(PolicyProblem(directory, "", f"cannot read: {exc.strerror or exc}"))
        extra_files = []
    global_allow = Allowlist()
    per_rule: Dict[str, Allowlist] = {}
    for extra in extra_files:
        extra_data = _read_toml(extra, problems, allow_empty=True)
        if extra_data is None:
            continue
        more, more_rules = _check_allow_d(_Checker(extra, problems), extra_data, rule_ids, path)
        global_allow = global_allow.merged(more)
        for rule_id, entries in more_rules.items():
            per_rule[rule_id] = per_rule.get(rule_id, Allowlist()).merged(entries)
    if problems or policy is None:
        raise PolicyError(problems)
    rules = []
    for rule in policy.rules:
        extra_allow = per_rule.get(rule.meta.id)
        if extra_allow is not None:
            meta = dataclasses.replace(rule.meta, allow=rule.meta.allow.merged(extra_allow))
            rule = dataclasses.replace(rule, meta=meta)
        rules.append(rule)
    return dataclasses.replace(
        policy,
        allow=policy.allow.merged(global_allow),
        rules=tuple(rules),
        allow_sources=tuple(extra_files),
    )
