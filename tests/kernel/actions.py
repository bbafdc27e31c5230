"""One action per process, for the kernel battery: `python actions.py ACTION ARGS...`.

Exit status: 0 the action succeeded, 77 the kernel refused it (EPERM or
EACCES), 3 anything else (message on stderr). Running each action in its own
process lets a test check the event's pid and comm against the process it
started. Only the standard library, and no file is ever written to a SysRq
control: opening for write is the protected action; nothing is pressed.
"""

from __future__ import annotations

import errno
import os
import sys

DENIED = 77
OTHER = 3

OPEN_FLAGS = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY,
    "rw": os.O_RDWR,
    "append": os.O_WRONLY | os.O_APPEND,
    "trunc_ro": os.O_RDONLY | os.O_TRUNC,
}


def _open(path: str, how: str, dirfd_path: str = "") -> None:
    dir_fd = os.open(dirfd_path, os.O_RDONLY | os.O_DIRECTORY) if dirfd_path else None
    try:
        fd = os.open(path, OPEN_FLAGS[how], dir_fd=dir_fd)
        os.close(fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _exec(path: str, *args: str) -> None:
    os.execv(path, [path, *args])


def _memfd_exec(source: str) -> None:
    fd = os.memfd_create("enftest", 0)
    with open(source, "rb") as handle:
        os.write(fd, handle.read())
    os.execve(fd, ["enftest"], {})  # fexecve: execveat(fd, "", AT_EMPTY_PATH)


def _in_cgroup_exec(cgroup_dir: str, path: str) -> None:
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as handle:
        handle.write(str(os.getpid()))
    _exec(path)


def _as_uid_exec(uid: str, path: str) -> None:
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
    _exec(path)


ACTIONS = {
    "open": _open,
    "exec": _exec,
    "memfd-exec": _memfd_exec,
    "rename": os.rename,
    "truncate": lambda path: os.truncate(path, 0),
    "cgroup-exec": _in_cgroup_exec,
    "uid-exec": _as_uid_exec,
}


def main(argv: list) -> int:
    if not argv or argv[0] not in ACTIONS:
        print(f"usage: actions.py {{{','.join(ACTIONS)}}} ARGS...", file=sys.stderr)
        return OTHER
    try:
        ACTIONS[argv[0]](*argv[1:])
    except OSError as error:
        if error.errno in (errno.EPERM, errno.EACCES):
            print(f"denied: {error}", file=sys.stderr)
            return DENIED
        print(f"error: {error}", file=sys.stderr)
        return OTHER
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
