"""Only root may be able to change what enforcer enforces (like sshd's StrictModes).

A policy file, its allow.d directory and drop-ins, and every directory above
them must be owned by root and not writable by group or others: whoever can
write any of them can switch a protection off at the next reload. A directory
writable by all but sticky and root-owned (/tmp) is accepted: there only an
entry's owner may rename or remove it.

So is a Kubernetes ConfigMap or Secret volume's directory (it holds the
`..data` symlink): the kubelet makes it mode 0777, but the container sees it
on a read-only mount, and on the node it lies below the kubelet's own
root-only directory: only the kubelet (root) writes it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, List, Optional

from enforcer.parse import DropIn, Staged, load_drop_in, load_policy
from enforcer.policy import Policy
from enforcer.policyfile.problems import PolicyError, PolicyProblem


def _read_only_kubernetes_volume(path: Path) -> bool:
    """A ConfigMap/Secret volume as a container sees it: `..data` inside, mounted read-only."""
    return os.path.islink(path / "..data") and bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _why_unsafe(path: Path) -> Optional[str]:
    st = os.stat(path)
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if not sticky_dir and not (stat.S_ISDIR(st.st_mode) and _read_only_kubernetes_volume(path)):
            who = "group and others" if st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IWOTH else (
                "its group" if st.st_mode & stat.S_IWGRP else "others")
            return f"writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def why_untrusted(path: "str | os.PathLike[str]") -> Optional[str]:
    """Why someone but root could change `path` (the first reason found, the
    file itself first, then each directory above it); None if only root can."""
    resolved = Path(path).resolve()
    for candidate in (resolved, *resolved.parents):
        why = _why_unsafe(candidate)
        if why is not None:
            what = "directory" if candidate.is_dir() else "file"
            return f"{what} {candidate} is {why}"
    return None


def trust_problems(files: Iterable[str]) -> List[PolicyProblem]:
    """One problem per file (or directory above it) that someone but root could change."""
    problems: List[PolicyProblem] = []
    seen = set()
    for name in files:
        resolved = Path(name).resolve()
        for path in (resolved, *resolved.parents):
            if path in seen:
                continue
            seen.add(path)
            why = _why_unsafe(path)
            if why is not None:
                fix = f"chown root:root {path} && chmod go-w {path}"
                what = "directory" if path.is_dir() else "file"
                problems.append(PolicyProblem(
                    name, f"{what} {path} is {why}: enforcer refuses a policy that anyone but root "
                              f"could change (fix: {fix})"))
    return problems


def load_trusted_policy(path: "str | os.PathLike[str]", staged: Staged = {}) -> Policy:  # noqa: B006
    """load_policy, then refuse it if anyone but root could change it or its allow.d.

    Staged allow.d files (enforcer.parse.load_policy) do not exist yet: their
    directory is checked; the writer makes them root's (enforcer.atomicfile).
    """
    policy = load_policy(path, staged)
    pending = {os.path.abspath(p) for p in staged}
    files = [os.fspath(path), *(p for p in policy.allow_sources if os.path.abspath(p) not in pending)]
    allow_d = Path(os.fspath(path)).resolve().parent / "allow.d"
    if allow_d.is_dir():
        files.append(str(allow_d))
    problems = trust_problems(files)
    if problems:
        raise PolicyError(problems)
    return policy


def load_trusted_drop_in(path: "str | os.PathLike[str]", policy_path: Optional[str],
                         content: Optional[bytes] = None) -> DropIn:
    """load_drop_in, then refuse it if anyone but root could change it (the agent would).

    With `content` (a file about to be written, by enforcer.atomicfile as
    root's) the directory it goes into is checked instead.
    """
    drop_in = load_drop_in(path, policy_path, content)
    target = os.fspath(path)
    problems = trust_problems([target if content is None else os.path.dirname(os.path.abspath(target))])
    if problems:
        raise PolicyError(problems)
    return drop_in
