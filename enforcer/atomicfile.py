"""Replace or create a file so that readers see the old content or the new, never a part.

Used for policy drop-ins (`enforcer allow`, `enforcer suggest --write`): the
agent may reload at any moment, and a torn allow.d file would be refused
(or, worse, half an allowlist accepted). The new content goes to a temporary
file in the same directory, is flushed to disk (fsync) with its final mode
and owner, and then takes the name in one rename(2); the directory is
flushed too, so that after a crash the file is either the old or the new.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["FileExists", "write_atomic"]


class FileExists(Exception):
    """The target exists and the caller asked not to replace it."""


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Union[str, "os.PathLike[str]"], data: bytes, mode: int = 0o644,
                 owner: Optional[int] = 0, replace: bool = True) -> None:
    """Write `data` to `path` atomically with `mode`, owned by uid/gid `owner`
    (root by default: enforcer refuses policy files anyone else owns; None
    keeps the writer's). With replace=False an existing file is never touched
    (FileExists), also when one appears while writing: the name is taken with
    link(2), which fails if it exists, rather than rename(2), which replaces.

    Raises OSError (e.g. PermissionError) when the directory cannot be written.
    """
    target = Path(os.fspath(path))
    # a dot name: allow.d ignores it if the writer dies before the rename
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != (owner, owner):
                os.fchown(fd, owner, owner)
            os.fchmod(fd, mode)  # after fchown, which may clear mode bits
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExists(f"{target} exists") from None
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
