"""Does bpf/enforcer.bpf.c declare exactly the maps and hooks in enforcer.registry?

`read_declarations` reads every bcc map macro (BPF_ARRAY, BPF_HASH, ...,
BPF_TABLE("kind", ...), BPF_RINGBUF_OUTPUT) and every LSM_PROBE from the
source. It is strict on purpose: a BPF_* or *_PROBE macro it does not know, a
known one with other arguments than ours, a declaration not on its own
top-level line, or a program defined without LSM_PROBE raises
DeclarationError instead of being skipped, so nothing the kernel would get can
hide from the comparison. `mismatches` compares the result with the registry.

Pure Python: the unit tests run it on doctored copies of the source, the
compile tier on the real one (and against what bcc builds from it).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from enforcer import abi, registry
from enforcer.registry import HookSpec, MapKind, MapSpec

# Comments, and for searching also strings and character literals, are
# blanked to spaces of the same length, so positions and lines stay put.
_LEXEME = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.S)
_MACRO = re.compile(r"\b(BPF_[A-Z0-9_]*|[A-Z0-9_]*_PROBE)\s*\(")
# Functions bcc loads by name prefix (bcc's BPF._trace_autoload).
_AUTOLOADED = re.compile(r"\b(?:kprobe|kretprobe|tracepoint|raw_tracepoint|kfunc|kretfunc|lsm)__\w+")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")

# bcc macro -> (kind, argument count, index of name, of key, of value, of size);
# key index None: bcc's implicit 32-bit array index.
_MAP_FORMS: Dict[str, Tuple[Optional[MapKind], int, int, Optional[int], Optional[int], int]] = {
    "BPF_ARRAY": (MapKind.ARRAY, 3, 0, None, 1, 2),
    "BPF_PERCPU_ARRAY": (MapKind.PERCPU_ARRAY, 3, 0, None, 1, 2),
    "BPF_HASH": (MapKind.HASH, 4, 0, 1, 2, 3),
    "BPF_LPM_TRIE": (MapKind.LPM_TRIE, 4, 0, 1, 2, 3),
    "BPF_TABLE": (None, 5, 3, 1, 2, 4),  # kind from the first argument, a string
    "BPF_RINGBUF_OUTPUT": (MapKind.RINGBUF, 2, 0, None, None, 1),
}
_ARRAY_INDEX = "__u32"

_C_SCALARS = {ctypes.c_uint8: "__u8", ctypes.c_uint16: "__u16", ctypes.c_uint32: "__u32", ctypes.c_uint64: "__u64"}


class DeclarationError(ValueError):
    """The source holds a declaration this checker cannot read."""


@dataclass(frozen=True)
class MapDecl:
    name: str
    kind: MapKind
    key: Optional[str]  # C type; None for the ring buffer
    value: Optional[str]  # C type; None for the ring buffer
    size: str  # the size argument as written
    line: int


@dataclass(frozen=True)
class ProgramDecl:
    name: str  # the hook's
    params: Tuple[str, ...]  # names of the hook's arguments, without the trailing `int ret`
    line: int
    #: the last parameter is followed by ENFORCER_HOOK_TAIL_<HOOK>: the
    #: arguments some kernels add (HookSpec.optional_tail), or nothing
    has_tail: bool = False
    #: the first parameter is preceded by ENFORCER_HOOK_HEAD_<HOOK> (HookSpec.optional_head)
    has_head: bool = False


@dataclass(frozen=True)
class Declarations:
    maps: Tuple[MapDecl, ...]
    programs: Tuple[ProgramDecl, ...]


def c_type_name(ctype: type) -> str:
    """How bpf/enforcer.h spells a ctypes type of enforcer.abi."""
    if ctype in _C_SCALARS:
        return _C_SCALARS[ctype]
    for name, struct in abi.SHARED_STRUCTS.items():
        if struct is ctype:
            return f"struct enforcer_{name}"
    raise TypeError(f"{ctype!r} has no C spelling in bpf/enforcer.h")


def _blank(source: str, keep_strings: bool) -> str:
    def blank(match: "re.Match[str]") -> str:
        text = match.group(0)
        return text if keep_strings and not text.startswith("/") else re.sub(r"[^\n]", " ", text)

    return _LEXEME.sub(blank, source)


def _arguments(text: str, open_paren: int, line: int) -> Tuple[List[str], int]:
    """Top-level arguments of the call whose "(" is at `open_paren`, and the index after ")"."""
    args, depth, start, index = [], 0, open_paren + 1, open_paren
    while index < len(text):
        char = text[index]
        if char in "\"'":
            literal = _LEXEME.match(text, index)
            if literal is None:
                raise DeclarationError(f"line {line}: unterminated literal")
            index = literal.end()
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:index])
                return [" ".join(arg.split()) for arg in args], index + 1
        elif char == "," and depth == 1:
            args.append(text[start:index])
            start = index + 1
        index += 1
    raise DeclarationError(f"line {line}: unbalanced parentheses")


def _brace_depth(code: str, end: int) -> int:
    return code.count("{", 0, end) - code.count("}", 0, end)


def _map_decl(macro: str, args: List[str], line: int) -> MapDecl:
    kind, count, name_at, key_at, value_at, size_at = _MAP_FORMS[macro]
    if len(args) != count:
        raise DeclarationError(f"line {line}: {macro} with {len(args)} arguments; the checker reads {count}")
    if kind is None:
        kind_name = args[0].strip('"')
        if args[0] != f'"{kind_name}"' or kind_name.upper() not in MapKind.__members__:
            raise DeclarationError(f"line {line}: BPF_TABLE of kind {args[0]}, which the registry has no kind for")
        kind = MapKind[kind_name.upper()]
    return MapDecl(
        name=args[name_at],
        kind=kind,
        key=args[key_at] if key_at is not None else (None if kind is MapKind.RINGBUF else _ARRAY_INDEX),
        value=args[value_at] if value_at is not None else None,
        size=args[size_at],
        line=line,
    )


def _program_decl(args: List[str], line: int) -> ProgramDecl:
    if len(args) < 2 or args[-1] != "int ret":
        raise DeclarationError(f"line {line}: LSM_PROBE must name the hook and end with `int ret`")
    params = []
    tail_macro = f"ENFORCER_HOOK_TAIL_{args[0].upper()}"
    head_macro = f"ENFORCER_HOOK_HEAD_{args[0].upper()}"
    has_tail = has_head = False
    for arg in args[1:-1]:
        names = _IDENTIFIER.findall(arg)
        if names and names[-1] == tail_macro and arg is args[-2]:
            names, has_tail = names[:-1], True
        if names and names[0] == head_macro and arg is args[1]:
            names, has_head = names[1:], True
        if not names:
            raise DeclarationError(f"line {line}: LSM_PROBE parameter {arg!r} has no name")
        params.append(names[-1])
    return ProgramDecl(name=args[0], params=tuple(params), line=line, has_tail=has_tail, has_head=has_head)


def read_declarations(source: str) -> Declarations:
    text = _blank(source, keep_strings=True)  # for arguments: BPF_TABLE's kind is a string
    code = _blank(source, keep_strings=False)  # for finding macros and braces
    maps: List[MapDecl] = []
    programs: List[ProgramDecl] = []
    for match in _MACRO.finditer(code):
        macro = match.group(1)
        line = code.count("\n", 0, match.start()) + 1
        line_start = code.rfind("\n", 0, match.start()) + 1
        if code[line_start : match.start()].strip() or _brace_depth(code, match.start()) != 0:
            raise DeclarationError(f"line {line}: {macro} is not a declaration on its own top-level line")
        args, after = _arguments(text, match.end() - 1, line)
        follower = text[after:].lstrip()[:1]
        if macro in _MAP_FORMS and follower == ";":
            maps.append(_map_decl(macro, args, line))
        elif macro == "LSM_PROBE" and follower == "{":
            programs.append(_program_decl(args, line))
        else:
            raise DeclarationError(f"line {line}: {macro}(...) is a declaration form the checker does not know")
    hidden = _AUTOLOADED.search(code)
    if hidden:
        line = code.count("\n", 0, hidden.start()) + 1
        raise DeclarationError(f"line {line}: program {hidden.group(0)} is not declared with LSM_PROBE")
    return Declarations(tuple(maps), tuple(programs))


def _duplicates(names: Sequence[str], what: str) -> List[str]:
    repeated = sorted(name for name in set(names) if names.count(name) > 1)
    return [f"{what} {name}: declared {names.count(name)} times" for name in repeated]


def _map_problems(spec: MapSpec, decl: MapDecl) -> List[str]:
    problems = []
    if decl.kind is not spec.kind:
        problems.append(f"C declares {decl.kind.name.lower()}, registry says {spec.kind.name.lower()}")
    if decl.size != spec.size_macro:
        problems.append(f"C sizes it {decl.size}, registry expects {spec.size_macro}")
    if spec.kind is not MapKind.RINGBUF:
        if spec.key is None or decl.key != c_type_name(spec.key):
            problems.append(f"C key type {decl.key}, registry says {spec.key and c_type_name(spec.key)}")
        if spec.value is not None and decl.value != c_type_name(spec.value):
            problems.append(f"C value type {decl.value}, registry says {c_type_name(spec.value)}")
    return [f"map {spec.name} (line {decl.line}): {problem}" for problem in problems]


def _hook_problems(spec: HookSpec, decl: ProgramDecl) -> List[str]:
    problems = []
    if decl.params != spec.params:
        problems.append(f"LSM_PROBE takes ({', '.join(decl.params)}), registry says ({', '.join(spec.params)})")
    if decl.has_tail != bool(spec.optional_tail):
        problems.append(
            f"the registry says newer kernels add ({', '.join(spec.optional_tail)}): the last parameter must be "
            f"followed by ENFORCER_HOOK_TAIL_{spec.name.upper()}" if spec.optional_tail else
            f"ENFORCER_HOOK_TAIL_{spec.name.upper()} follows the last parameter, the registry has no optional_tail")
    if decl.has_head != bool(spec.optional_head):
        problems.append(
            f"the registry says newer kernels add ({', '.join(spec.optional_head)}) in front: the first parameter "
            f"must be preceded by ENFORCER_HOOK_HEAD_{spec.name.upper()}" if spec.optional_head else
            f"ENFORCER_HOOK_HEAD_{spec.name.upper()} precedes the first parameter, the registry has no optional_head")
    return [f"hook {spec.name} (line {decl.line}): {problem}" for problem in problems]


def _compare(what: str, specs: Sequence, decls: Sequence, problems_of: Callable, missing: str, extra: str) -> List[str]:
    problems = _duplicates([decl.name for decl in decls], what)
    declared = {decl.name: decl for decl in decls}
    registered = {spec.name for spec in specs}
    for spec in specs:
        if spec.name in declared:
            problems += problems_of(spec, declared[spec.name])
        else:
            problems.append(f"{what} {spec.name}: registered but {missing}")
    problems += [
        f"{what} {decl.name} (line {decl.line}): {extra} but not registered"
        for decl in decls
        if decl.name not in registered
    ]
    return problems


def mismatches(
    found: Declarations,
    maps: Sequence[MapSpec] = registry.MAPS,
    hooks: Sequence[HookSpec] = registry.HOOKS,
) -> List[str]:
    """Every way the declarations and the registry differ; empty when they agree."""
    return _compare(
        "map", maps, found.maps, _map_problems, "not declared in the C", "declared in the C"
    ) + _compare(
        "hook", hooks, found.programs, _hook_problems, "the C has no LSM_PROBE for it", "LSM_PROBE in the C"
    )
