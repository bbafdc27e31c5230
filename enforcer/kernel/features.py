"""-D flags for kernel differences the BPF C has to know about, read from BTF.

Why: struct members get renamed between kernels; asking the kernel's own BTF
is exact, where a version number would be a guess (and wrong on backports).
"""

from __future__ import annotations

from enforcer import registry
from enforcer.kernel.btf import BtfError, BtfInfo, BtfSource, LsmHookNotFoundError, load_btf

#: Linux 6.14 added execveat(..., AT_EXECVE_CHECK): an interpreter asks whether
#: the kernel would execute a script, and the LSMs answer in
#: bprm_creds_for_exec, where linux_binprm.is_check is set (bprm_check_security
#: is not called for such a check).
EXECVE_CHECK_STRUCT = "linux_binprm"
EXECVE_CHECK_MEMBER = "is_check"


def feature_cflags(btf: BtfSource) -> tuple[str, ...]:
    """-D flags for kernel differences the C has to know about."""
    info = load_btf(btf)
    flags = []
    # kernfs_node.parent was renamed __parent (RCU-annotated) in 6.15.
    if info.struct_has_member("kernfs_node", "__parent"):
        flags.append("-DENFORCER_KERNFS_PARENT=__parent")
    else:
        flags.append("-DENFORCER_KERNFS_PARENT=parent")
    flags.extend(_execve_check_cflags(info))
    flags.extend(_process_identity_cflags(info))
    flags.extend(_hook_tail_cflags(info))
    return tuple(flags)


def _hook_tail_cflags(info: BtfInfo) -> list[str]:
    """ENFORCER_HOOK_WITH_TAIL_<HOOK> (or _HEAD_) for each hook to which this
    kernel passes the arguments newer kernels add (registry.HookSpec's
    optional_tail and optional_head): an LSM program reads its arguments by
    position, `ret` comes after all."""
    flags = []
    for spec in registry.HOOKS:
        if not spec.optional_count:
            continue
        try:
            passed = len(info.lsm_hook_params(spec.name))
        except LsmHookNotFoundError:
            continue  # the loader's check_hook_signatures refuses such a kernel, naming the hook
        if passed == len(spec.params) + spec.optional_count:
            where = "HEAD" if spec.optional_head else "TAIL"
            flags.append(f"-DENFORCER_HOOK_WITH_{where}_{spec.name.upper()}=1")
    return flags


def _process_identity_cflags(info: BtfInfo) -> list[str]:
    """What the event's "who did it" part can read on this kernel.

    start_boottime (Linux 5.5+) is the clock /proc/PID/stat's starttime
    counts, so the agent can match a pid it reads later to the process the
    kernel saw. loginuid and sessionid exist only with CONFIG_AUDIT; without
    a member the C reads nothing and the event says "unknown", never 0."""
    flags = []
    if info.struct_has_member("task_struct", "start_boottime"):
        flags.append("-DENFORCER_TASK_START=start_boottime")
    if info.struct_has_member("task_struct", "loginuid") and info.struct_has_member("task_struct", "sessionid"):
        flags.append("-DENFORCER_HAS_LOGINUID=1")
    return flags


def execve_check_supported(btf: BtfSource) -> bool:
    """Whether this kernel offers AT_EXECVE_CHECK (and enforcer answers it)."""
    return load_btf(btf).struct_has_member(EXECVE_CHECK_STRUCT, EXECVE_CHECK_MEMBER)


def _execve_check_cflags(info: BtfInfo) -> list[str]:
    """Where the C reads linux_binprm.is_check: a byte offset and a bit mask,
    since a bitfield has no address for bpf_probe_read_kernel. None on a
    kernel without AT_EXECVE_CHECK: the program then has nothing to answer."""
    if not info.struct_has_member(EXECVE_CHECK_STRUCT, EXECVE_CHECK_MEMBER):
        return []
    where = info.member_location(EXECVE_CHECK_STRUCT, EXECVE_CHECK_MEMBER)
    if where.bitfield_bits == 0:
        # a whole member (bool or int): any non-zero low byte means "check"
        return [f"-DENFORCER_BPRM_IS_CHECK_BYTE={where.bit_offset // 8}",
                "-DENFORCER_BPRM_IS_CHECK_MASK=0xff"]
    if where.bitfield_bits != 1:
        # Never guess: refusing to compile beats answering the wrong bit.
        raise BtfError(
            f"{info.origin}: {EXECVE_CHECK_STRUCT}.{EXECVE_CHECK_MEMBER} is a "
            f"{where.bitfield_bits}-bit field; enforcer knows a flag of 1 bit")
    return [f"-DENFORCER_BPRM_IS_CHECK_BYTE={where.bit_offset // 8}",
            f"-DENFORCER_BPRM_IS_CHECK_MASK={1 << (where.bit_offset % 8):#x}"]
