"""-D flags for kernel differences the BPF C has to know about, read from BTF.

Why: struct members get renamed between kernels; asking the kernel's own BTF
is exact, where a version number would be a guess (and wrong on backports).
"""

from __future__ import annotations

from enforcer.kernel.btf import BtfSource, load_btf


def feature_cflags(btf: BtfSource) -> tuple[str, ...]:
    """-D flags for kernel differences the C has to know about."""
    info = load_btf(btf)
    flags = []
    # kernfs_node.parent was renamed __parent (RCU-annotated) in 6.15.
    if info.struct_has_member("kernfs_node", "__parent"):
        flags.append("-DENFORCER_KERNFS_PARENT=__parent")
    else:
        flags.append("-DENFORCER_KERNFS_PARENT=parent")
    return tuple(flags)
