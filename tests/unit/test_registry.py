"""enforcer.registry and its checker: the registry keeps the facts the modules
used to spell themselves, and the checker reports any map or hook present on
one side only (run on doctored copies of bpf/enforcer.bpf.c; no bcc)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from enforcer import abi, registry
from enforcer.plan import POLICY_MAPS
from enforcer.registry import HookSpec, MapKind, MapSpec
from enforcer.registry_check import DeclarationError, mismatches, read_declarations

SOURCE = (Path(__file__).resolve().parents[2] / "bpf" / "enforcer.bpf.c").read_text()


def _doctored(old: str, new: str) -> str:
    assert SOURCE.count(old) == 1, old
    return SOURCE.replace(old, new)


def _problems(source: str, **registry_override) -> list:
    return mismatches(read_declarations(source), **registry_override)


# --- the registry holds what plan, maps and loader used to spell ------------------


def test_policy_maps_keep_their_order() -> None:
    assert POLICY_MAPS == ("rules", "targets", "exec_places", "exec_fstypes", "allow_exe", "allow_uid", "allow_cgroup", "place_devs")


def test_policy_map_capacities() -> None:
    capacity = {name: registry.MAPS_BY_NAME[name].capacity for name in POLICY_MAPS}
    assert capacity == {
        "rules": abi.MAX_RULES + 1,
        "targets": abi.TARGET_COUNT * len(abi.KernelScope),
        "exec_places": abi.MAX_PLACES,
        "exec_fstypes": abi.MAX_FSTYPES,
        "allow_exe": abi.MAX_ALLOW,
        "allow_uid": abi.MAX_ALLOW,
        "allow_cgroup": abi.MAX_ALLOW,
        "place_devs": abi.MAX_PLACE_DEVS + abi.MAX_SYSTEM_OVERLAYS,
    }


def test_arrays_remove_by_writing_zero() -> None:
    arrays = {name for name in POLICY_MAPS if registry.MAPS_BY_NAME[name].is_array}
    assert arrays == {"rules", "targets"}
    for name in arrays:
        zero = registry.MAPS_BY_NAME[name].removed_value()
        assert bytes(zero) == bytes(ctypes.sizeof(zero))
    assert isinstance(registry.MAPS_BY_NAME["rules"].removed_value(), abi.RuleConfig)
    with pytest.raises(TypeError):
        registry.MAPS_BY_NAME["allow_uid"].removed_value()


def test_hooks_and_program_names() -> None:
    assert {spec.name: spec.params for spec in registry.HOOKS} == {
        "file_open": ("file",),
        "path_truncate": ("path",),
        "inode_rename": ("old_dir", "old_dentry", "new_dir", "new_dentry"),
        "bprm_check_security": ("bprm",),
        "fs_context_parse_param": ("fc", "param"),
        "bprm_creds_for_exec": ("bprm",),
        "mmap_file": ("file", "reqprot", "prot", "flags"),
        "file_mprotect": ("vma", "reqprot", "prot"),
        "bpf": ("cmd", "attr", "size"),
        "bpf_map": ("map", "fmode"),
        "bpf_prog": ("prog",),
        "inode_unlink": ("dir", "dentry"),
        "inode_rmdir": ("dir", "dentry"),
        "inode_create": ("dir", "dentry", "mode"),
        "inode_mkdir": ("dir", "dentry", "mode"),
        "inode_symlink": ("dir", "dentry", "old_name"),
        "inode_link": ("old_dentry", "dir", "new_dentry"),
        "task_kill": ("p", "info", "sig", "cred"),
        "ptrace_access_check": ("child", "mode"),
        "task_setrlimit": ("p", "resource", "new_rlim"),
        "task_setscheduler": ("p",),
        "task_setnice": ("p", "nice"),
        "inode_setattr": ("dentry", "attr"),
        "sb_umount": ("mnt", "flags"),
        "sb_mount": ("dev_name", "path", "type", "flags", "data"),
        "move_mount": ("from_path", "to_path"),
        "inode_mknod": ("dir", "dentry", "mode", "dev"),
        "sb_remount": ("sb", "mnt_opts"),
        "file_send_sigiotask": ("tsk", "fown", "sig"),
    }
    assert {spec.hook for spec in registry.HOOKS} == set(abi.Hook)
    assert all(spec.program == f"lsm__{spec.name}" for spec in registry.HOOKS)


def test_protected_objects_holds_every_object_of_an_instance_and_the_barrier() -> None:
    """Every map, every program, one link per program, the agent's two barrier
    maps: a full table would fail the agent's start (E2BIG)."""
    needed = len(registry.MAPS) + 2 * len(registry.HOOKS) + 2
    assert needed <= abi.MAX_PROTECTED_OBJECTS, f"{needed} objects to protect"


def test_cflags_give_every_map_size_once() -> None:
    flags = registry.cflags()
    names = [flag.split("=")[0] for flag in flags]
    assert len(names) == len(set(names))
    for spec in registry.MAPS:
        assert f"-D{spec.size_macro}={spec.size_value}" in flags
    assert "-DENFORCER_TARGETS_ENTRIES=84" in flags  # 21 targets x 2 scopes x 2 policy slots
    assert "-DENFORCER_RULES_ENTRIES=128" in flags
    assert f"-DENFORCER_EVENTS_PAGES={abi.RINGBUF_BYTES // 4096}" in flags


# --- the checker -------------------------------------------------------------------


def test_the_real_source_matches_the_registry() -> None:
    found = read_declarations(SOURCE)
    assert len(found.maps) == len(registry.MAPS) and len(found.programs) == len(registry.HOOKS)
    assert _problems(SOURCE) == []


def test_a_map_only_in_the_c_is_reported() -> None:
    extra = "BPF_HASH(allow_gid, __u32, __u64, ENFORCER_ALLOW_UID_ENTRIES);\n"
    source = _doctored("BPF_HASH(allow_uid,", extra + "BPF_HASH(allow_uid,")
    problems = _problems(source)
    assert len(problems) == 1 and problems[0].startswith("map allow_gid")
    assert "declared in the C but not registered" in problems[0]


def test_a_map_only_in_the_registry_is_reported() -> None:
    extra = MapSpec("allow_gid", MapKind.HASH, ctypes.c_uint32, ctypes.c_uint64, abi.MAX_ALLOW, policy=True)
    assert _problems(SOURCE, maps=registry.MAPS + (extra,)) == ["map allow_gid: registered but not declared in the C"]


def test_a_map_removed_from_the_c_is_reported() -> None:
    source = _doctored("BPF_HASH(allow_uid, struct enforcer_uid_key, __u64, ENFORCER_ALLOW_UID_ENTRIES);\n", "")
    assert _problems(source) == ["map allow_uid: registered but not declared in the C"]


def test_a_map_declared_twice_is_reported() -> None:
    line = "BPF_HASH(allow_uid, struct enforcer_uid_key, __u64, ENFORCER_ALLOW_UID_ENTRIES);\n"
    assert "map allow_uid: declared 2 times" in _problems(_doctored(line, line + line))


def test_kind_size_key_and_value_differences_are_reported() -> None:
    source = _doctored(
        "BPF_HASH(allow_uid, struct enforcer_uid_key, __u64, ENFORCER_ALLOW_UID_ENTRIES);",
        "BPF_LPM_TRIE(allow_uid, __u64, __u32, ENFORCER_MAX_ALLOW);",
    )
    problems = "\n".join(_problems(source))
    assert "map allow_uid" in problems
    assert "C declares lpm_trie, registry says hash" in problems
    assert "C sizes it ENFORCER_MAX_ALLOW, registry expects ENFORCER_ALLOW_UID_ENTRIES" in problems
    assert "C key type __u64, registry says struct enforcer_uid_key" in problems
    assert "C value type __u32, registry says __u64" in problems


def test_bpf_table_kind_is_read() -> None:
    source = _doctored('BPF_TABLE("lru_hash", __u64,', 'BPF_TABLE("hash", __u64,')
    (problem,) = _problems(source)
    assert problem.startswith("map truncating_opens") and problem.endswith("C declares hash, registry says lru_hash")


def test_a_hook_only_in_the_c_is_reported() -> None:
    source = SOURCE + "\nLSM_PROBE(task_free, struct task_struct *task,\n"
    source += "\t  int ret)\n{\n\treturn ret;\n}\n"
    problems = _problems(source)
    assert len(problems) == 1 and problems[0].startswith("hook task_free")
    assert "LSM_PROBE in the C but not registered" in problems[0]


def test_a_hook_only_in_the_registry_is_reported() -> None:
    extra = HookSpec(abi.Hook.FILE_OPEN, ("file",))
    renamed = _doctored("LSM_PROBE(file_open,", "LSM_PROBE(file_permission,")
    problems = _problems(renamed, hooks=(extra,))
    assert "hook file_open: registered but the C has no LSM_PROBE for it" in problems
    assert any(p.startswith("hook file_permission") and "not registered" in p for p in problems)


def test_hook_parameters_are_compared() -> None:
    source = _doctored("LSM_PROBE(path_truncate, const struct path *path, int ret)",
                       "LSM_PROBE(path_truncate, const struct path *p, int ret)")
    (problem,) = _problems(source)
    assert problem.startswith("hook path_truncate") and "takes (p), registry says (path)" in problem


@pytest.mark.parametrize(
    ("declaration", "reason"),
    [
        ("BPF_PERF_OUTPUT(perf_events);", "BPF_PERF_OUTPUT(...) is a declaration form the checker does not know"),
        ("BPF_HASH(allow_gid);", "BPF_HASH with 1 arguments; the checker reads 4"),  # bcc's defaults
        ('BPF_TABLE("prog", int, int, tail_calls, 4);', 'BPF_TABLE of kind "prog", which the registry has no kind'),
        ("#define DECLARE_MAP(n) BPF_ARRAY(n, __u32, 1)", "BPF_ARRAY is not a declaration on its own top-level line"),
        ("KFUNC_PROBE(do_unlinkat, int dfd)\n{\n\treturn 0;\n}", "KFUNC_PROBE(...) is a declaration form"),
        ("int lsm__file_permission(void *ctx)\n{\n\treturn 0;\n}", "is not declared with LSM_PROBE"),
        ("LSM_PROBE(file_permission, struct file *file, int mask)\n{\n\treturn 0;\n}", "end with `int ret`"),
    ],
)
def test_unknown_declaration_forms_fail_loudly(declaration: str, reason: str) -> None:
    with pytest.raises(DeclarationError) as raised:
        read_declarations(SOURCE + "\n" + declaration + "\n")
    assert reason in str(raised.value)


def test_declarations_in_comments_are_ignored() -> None:
    source = SOURCE + "\n/* BPF_PERF_OUTPUT(old_events); */\n// BPF_ARRAY(old, __u32, 1);\n"
    assert _problems(source) == []


def test_a_map_declared_inside_a_function_fails_loudly() -> None:
    source = _doctored("static __always_inline void count(__u32 stat)\n{\n",
                       "static __always_inline void count(__u32 stat)\n{\n\tBPF_ARRAY(inner, __u32, 1);\n")
    with pytest.raises(DeclarationError, match="not a declaration on its own top-level line"):
        read_declarations(source)


# --- arguments newer kernels add (HookSpec.optional_tail) ---------------------------


def test_a_hook_whose_tail_macro_is_missing_is_reported() -> None:
    source = _doctored("unsigned int size ENFORCER_HOOK_TAIL_BPF, int ret)", "unsigned int size, int ret)")
    (problem,) = _problems(source)
    assert problem.startswith("hook bpf") and "followed by ENFORCER_HOOK_TAIL_BPF" in problem, problem


def test_a_tail_macro_the_registry_does_not_know_is_reported() -> None:
    hooks = tuple(HookSpec(spec.hook, spec.params) if spec.optional_tail else spec for spec in registry.HOOKS)
    (problem,) = _problems(SOURCE, hooks=hooks)
    assert problem.startswith("hook bpf") and "the registry has no optional_tail" in problem, problem


def test_the_tail_macro_is_not_taken_for_a_parameter() -> None:
    (bpf,) = [decl for decl in read_declarations(SOURCE).programs if decl.name == "bpf"]
    assert bpf.params == ("cmd", "attr", "size") and bpf.has_tail


# --- arguments newer kernels add in front (HookSpec.optional_head) -------------------


def test_a_hook_whose_head_macro_is_missing_is_reported() -> None:
    source = _doctored("ENFORCER_HOOK_HEAD_INODE_SETATTR struct dentry *dentry", "struct dentry *dentry")
    (problem,) = _problems(source)
    assert problem.startswith("hook inode_setattr") and "preceded by ENFORCER_HOOK_HEAD_INODE_SETATTR" in problem


def test_a_head_macro_the_registry_does_not_know_is_reported() -> None:
    hooks = tuple(HookSpec(spec.hook, spec.params) if spec.optional_head else spec for spec in registry.HOOKS)
    (problem,) = _problems(SOURCE, hooks=hooks)
    assert problem.startswith("hook inode_setattr") and "the registry has no optional_head" in problem, problem


def test_the_head_macro_is_not_taken_for_a_parameter() -> None:
    (setattr_,) = [decl for decl in read_declarations(SOURCE).programs if decl.name == "inode_setattr"]
    assert setattr_.params == ("dentry", "attr") and setattr_.has_head and not setattr_.has_tail


def test_a_hook_cannot_grow_at_both_ends() -> None:
    with pytest.raises(ValueError, match="both ends"):
        HookSpec(abi.Hook.INODE_SETATTR, ("dentry", "attr"), optional_tail=("x",), optional_head=("idmap",))


class _Hooks:
    """A BTF stand-in: every hook passes what the registry expects, bpf
    `bpf_params` and inode_setattr `setattr_params`."""

    def __init__(self, bpf_params: tuple, setattr_params: tuple = ("dentry", "attr")) -> None:
        self.bpf_params = bpf_params
        self.setattr_params = setattr_params

    def lsm_hook_params(self, name: str) -> tuple:
        if name == "bpf":
            return self.bpf_params
        if name == "inode_setattr":
            return self.setattr_params
        return next(spec.params for spec in registry.HOOKS if spec.name == name)


@pytest.mark.parametrize("params", [("dentry", "attr"), ("idmap", "dentry", "attr")])
def test_the_loader_accepts_a_hook_with_or_without_its_optional_head(params: tuple) -> None:
    from enforcer.kernel.loader import check_hook_signatures

    check_hook_signatures(_Hooks(("cmd", "attr", "size"), params))


def test_the_loader_names_a_head_it_would_accept() -> None:
    from enforcer.kernel.loader import LoadError, check_hook_signatures

    with pytest.raises(LoadError, match=r"LSM hook inode_setattr: this kernel passes \(dentry\), "
                                        r"enforcer's program expects \(\[idmap, \]dentry, attr\)"):
        check_hook_signatures(_Hooks(("cmd", "attr", "size"), ("dentry",)))


@pytest.mark.parametrize("params", [("cmd", "attr", "size"), ("cmd", "attr", "size", "kernel")])
def test_the_loader_accepts_a_hook_with_or_without_its_optional_tail(params: tuple) -> None:
    from enforcer.kernel.loader import check_hook_signatures

    check_hook_signatures(_Hooks(params))


def test_the_loader_refuses_any_other_argument_count() -> None:
    from enforcer.kernel.loader import LoadError, check_hook_signatures

    with pytest.raises(LoadError, match=r"LSM hook bpf: this kernel passes \(cmd, attr, size, kernel, token\), "
                                        r"enforcer's program expects \(cmd, attr, size\[, kernel\]\)"):
        check_hook_signatures(_Hooks(("cmd", "attr", "size", "kernel", "token")))
