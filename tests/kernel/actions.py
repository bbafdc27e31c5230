"""One action per process, for the kernel battery: `python actions.py ACTION ARGS...`.

Exit status: 0 the action succeeded, 77 the kernel refused it (EPERM or
EACCES), 3 anything else (message on stderr). Running each action in its own
process lets a test check the event's pid and comm against the process it
started. Only the standard library, and no file is ever written to a SysRq
control: opening for write is the protected action; nothing is pressed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import sys
import time

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


def _open_loop(path: str, how: str, stop_file: str, result_file: str, pause_s: str = "0") -> None:
    """Open `path` over and over until `stop_file` exists; count what the kernel let through.

    The one long-running action: a reload storm or a flood runs beside it. The
    counts go to `result_file` as JSON (attempts, successes, denied, other).
    """
    counts = {"attempts": 0, "successes": 0, "denied": 0, "other": 0}
    pause = float(pause_s)
    while not os.path.exists(stop_file):
        counts["attempts"] += 1
        try:
            fd = os.open(path, OPEN_FLAGS[how])
        except OSError as error:
            counts["denied" if error.errno in (errno.EPERM, errno.EACCES) else "other"] += 1
        else:
            os.close(fd)
            counts["successes"] += 1
        if pause:
            time.sleep(pause)
    with open(result_file, "w") as handle:
        json.dump(counts, handle)


def _as_uid_exec(uid: str, path: str) -> None:
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
    _exec(path)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
MS_REMOUNT = 32
SYS_FSOPEN, SYS_FSCONFIG = 430, 431  # the same number on every architecture
FSOPEN_CLOEXEC, FSCONFIG_SET_STRING = 1, 1


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _mount_cgroup(target: str, options: str, how: str = "") -> None:
    """mount(2) of cgroup v1 at `target` with the option string `options`.

    how: "remount" (MS_REMOUNT), or "and-umount" (unmount again at once, so
    the action can be repeated by a later test module).
    """
    flags = MS_REMOUNT if how == "remount" else 0
    _check(_libc.mount(b"cgroup", target.encode(), b"cgroup", flags, options.encode()))
    if how == "and-umount":
        _check(_libc.umount2(target.encode(), 0))


def _fsconfig_cgroup(key: str, value: str) -> None:
    """The new mount API: fsopen("cgroup") and fsconfig(FSCONFIG_SET_STRING key=value); no mount is made."""
    fd = _check(_libc.syscall(ctypes.c_long(SYS_FSOPEN), ctypes.c_char_p(b"cgroup"), ctypes.c_uint(FSOPEN_CLOEXEC)))
    try:
        _check(_libc.syscall(ctypes.c_long(SYS_FSCONFIG), ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_SET_STRING),
                             ctypes.c_char_p(key.encode()), ctypes.c_char_p(value.encode()), ctypes.c_int(0)))
    finally:
        os.close(fd)


SYS_EXECVEAT = {"x86_64": 322, "aarch64": 281}
AT_EMPTY_PATH, AT_EXECVE_CHECK = 0x1000, 0x10000  # AT_EXECVE_CHECK: Linux 6.14+


def _execve_check(path: str) -> None:
    """What an interpreter that opts in asks before running a script:
    execveat(fd, "", ..., AT_EMPTY_PATH | AT_EXECVE_CHECK). Nothing is executed;
    0 means "would be allowed". Kernels before 6.14 answer EINVAL (unknown flag)."""
    number = SYS_EXECVEAT[os.uname().machine]
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        argv = (ctypes.c_char_p * 2)(path.encode(), None)
        envp = (ctypes.c_char_p * 1)(None)
        _check(_libc.syscall(ctypes.c_long(number), ctypes.c_int(fd), ctypes.c_char_p(b""), argv, envp,
                             ctypes.c_int(AT_EMPTY_PATH | AT_EXECVE_CHECK)))
    finally:
        os.close(fd)


SYS_OPEN_TREE = 428  # the same number on every architecture
OPEN_TREE_CLONE = 1


def _open_tree_exec(directory: str, name: str) -> None:
    """Clone the mount of `directory` as a detached mount (open_tree with
    OPEN_TREE_CLONE: attached to no mount point) and execute `name` from it
    by file descriptor: the file's path is then relative to that clone."""
    tree = _check(_libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(-100), ctypes.c_char_p(directory.encode()),
                                ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC)))
    argv = (ctypes.c_char_p * 2)(name.encode(), None)
    envp = (ctypes.c_char_p * 1)(None)
    _check(_libc.syscall(ctypes.c_long(SYS_EXECVEAT[os.uname().machine]), ctypes.c_int(tree),
                         ctypes.c_char_p(name.encode()), argv, envp, ctypes.c_int(0)))


SYS_MOVE_MOUNT = 429  # the same number on every architecture
MOVE_MOUNT_F_EMPTY_PATH = 4
MS_RDONLY, MS_BIND, MS_SHARED, MNT_DETACH = 1, 4096, 1 << 20, 2
_MOUNT_FLAGS = {"ro": MS_RDONLY, "remount": MS_REMOUNT, "bind": MS_BIND, "shared": MS_SHARED}


def _umount(target: str, how: str = "") -> None:
    """umount2(2); how: "detach" for MNT_DETACH (umount -l)."""
    _check(_libc.umount2(target.encode(), MNT_DETACH if how == "detach" else 0))


def _mount(source: str, target: str, fstype: str, flags: str = "") -> None:
    """mount(2); flags: a comma-separated list of ro, remount, bind, shared."""
    value = 0
    for name in filter(None, flags.split(",")):
        value |= _MOUNT_FLAGS[name]
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() or None, ctypes.c_ulong(value), None))


def _move_mount(directory: str, target: str) -> None:
    """The new mount API: a clone of `directory`'s mount (open_tree) put on `target` with move_mount(2)."""
    tree = _check(_libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(-100), ctypes.c_char_p(directory.encode()),
                                ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC)))
    try:
        _check(_libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree), ctypes.c_char_p(b""),
                             ctypes.c_int(-100), ctypes.c_char_p(target.encode()),
                             ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)))
    finally:
        os.close(tree)


def _move_attached(mount_point: str, target: str) -> None:
    """move_mount(2) of the mount at `mount_point` itself (no clone): it leaves where it was."""
    _check(_libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(-100), ctypes.c_char_p(mount_point.encode()),
                         ctypes.c_int(-100), ctypes.c_char_p(target.encode()), ctypes.c_uint(0)))


SYS_FSPICK = 433  # the same number on every architecture
FSPICK_CLOEXEC, FSCONFIG_SET_FLAG, FSCONFIG_CMD_RECONFIGURE = 1, 0, 7


def _reconfigure(mount_point: str, flag: str) -> None:
    """The new mount API's remount: fspick(2) of the superblock mounted at
    `mount_point`, fsconfig(FSCONFIG_SET_FLAG, flag) ("ro"), then
    FSCONFIG_CMD_RECONFIGURE."""
    fd = _check(_libc.syscall(ctypes.c_long(SYS_FSPICK), ctypes.c_int(-100), ctypes.c_char_p(mount_point.encode()),
                              ctypes.c_uint(FSPICK_CLOEXEC)))
    try:
        _check(_libc.syscall(ctypes.c_long(SYS_FSCONFIG), ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_SET_FLAG),
                             ctypes.c_char_p(flag.encode()), ctypes.c_void_p(None), ctypes.c_int(0)))
        _check(_libc.syscall(ctypes.c_long(SYS_FSCONFIG), ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_CMD_RECONFIGURE),
                             ctypes.c_void_p(None), ctypes.c_void_p(None), ctypes.c_int(0)))
    finally:
        os.close(fd)


SYS_NAME_TO_HANDLE_AT = {"x86_64": 303, "aarch64": 264}
SYS_OPEN_BY_HANDLE_AT = {"x86_64": 304, "aarch64": 265}
MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


def _by_handle(path: str, how: str, link: str = "") -> None:
    """A file opened by handle after its name left the dentry cache:
    name_to_handle_at(path), `echo 2 > /proc/sys/vm/drop_caches`, then
    open_by_handle_at(2) through its directory's mount. The kernel then hands
    out a disconnected dentry (its own parent), whose directory it cannot
    name. how: "append" (open for writing and add a line), "chmod" (open
    read-only, then chmod 0666 through /proc/self/fd, as an O_PATH holder
    would), "read" (open read-only and read), "link" (open O_PATH, then
    linkat(AT_EMPTY_PATH) gives it the new name `link`, where it could be
    written)."""
    machine = os.uname().machine
    handle = _FileHandle(handle_bytes=MAX_HANDLE_SZ)
    mount_id = ctypes.c_int(0)
    _check(_libc.syscall(ctypes.c_long(SYS_NAME_TO_HANDLE_AT[machine]), ctypes.c_int(-100),
                         ctypes.c_char_p(path.encode()), ctypes.byref(handle), ctypes.byref(mount_id), ctypes.c_int(0)))
    mount_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as drop:
            drop.write("2\n")
        flags = {"append": os.O_WRONLY | os.O_APPEND, "link": os.O_PATH}.get(how, os.O_RDONLY)
        fd = _check(_libc.syscall(ctypes.c_long(SYS_OPEN_BY_HANDLE_AT[machine]), ctypes.c_int(mount_fd),
                                  ctypes.byref(handle), ctypes.c_int(flags | os.O_CLOEXEC)))
    finally:
        os.close(mount_fd)
    try:
        if how == "append":
            os.write(fd, b"# by handle\n")
        elif how == "chmod":
            os.chmod(f"/proc/self/fd/{fd}", 0o666)
        elif how == "link":
            _check(_libc.linkat(ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(-100),
                                ctypes.c_char_p(link.encode()), ctypes.c_int(AT_EMPTY_PATH)))
        else:
            os.read(fd, 1)
    finally:
        os.close(fd)


F_SETSIG = 10


def _sigio(pid: str, signal_name: str) -> None:
    """Name process `pid` the owner of a pipe (fcntl F_SETOWN), choose the
    signal its I/O sends (F_SETSIG), switch O_ASYNC on and write to it: the
    kernel signals the owner itself (file_send_sigiotask; kill(2) and
    task_kill are not involved). The writer is never told whether it was sent."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETOWN, int(pid))
    fcntl.fcntl(read_end, F_SETSIG, int(getattr(signal, f"SIG{signal_name}")))
    fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_ASYNC)
    os.write(write_end, b"x")


def _dlopen(path: str) -> None:
    """dlopen(3) of a shared object, as a program loading a plugin does."""
    try:
        ctypes.CDLL(path)
    except OSError as error:
        # ctypes gives dlerror()'s text, not an errno; glibc says this when
        # mmap of a segment fails (the test checks the kernel's event too)
        if "failed to map segment from shared object" in str(error):
            raise PermissionError(errno.EPERM, str(error)) from None
        raise


def _preload(library: str) -> None:
    """Re-execute this process with LD_PRELOAD=library (the same pid), then
    say whether the dynamic loader managed to map it."""
    env = dict(os.environ, LD_PRELOAD=library)
    os.execve(sys.executable, [sys.executable, __file__, "mapped", library], env)


def _mapped(library: str) -> None:
    """Exit 0 when `library`'s code is mapped in this process, EPERM when it
    is not (ld.so prints why on stderr and runs the program without it)."""
    with open("/proc/self/maps") as maps:
        # an executable mapping of it: ld.so maps the whole file readable
        # first, then each segment; the refused one is the code
        executable = [line for line in maps if line.rstrip().endswith(library) and "x" in line.split()[1]]
    if not executable:
        raise PermissionError(errno.EPERM, f"{library} has no executable mapping: LD_PRELOAD was refused")


def _ffi_callback() -> None:
    """A C library calling back into Python (qsort with a ctypes comparison):
    libffi builds a closure, which must not need an executable file mapping."""
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    values = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    _libc.qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare(lambda a, b: a[0] - b[0]))
    if list(values) != [1, 2, 3, 4, 5]:
        raise OSError(errno.EINVAL, f"qsort with a Python callback gave {list(values)}")


ACTIONS = {
    "open": _open,
    "exec": _exec,
    "memfd-exec": _memfd_exec,
    "rename": os.rename,
    "truncate": lambda path: os.truncate(path, 0),
    "cgroup-exec": _in_cgroup_exec,
    "uid-exec": _as_uid_exec,
    "mount-cgroup": _mount_cgroup,
    "fsconfig-cgroup": _fsconfig_cgroup,
    "open-loop": _open_loop,
    "execve-check": _execve_check,
    "open-tree-exec": _open_tree_exec,
    "dlopen": _dlopen,
    "preload": _preload,
    "mapped": _mapped,
    "ffi-callback": _ffi_callback,
    "umount": _umount,
    "mount": _mount,
    "move-mount": _move_mount,
    "move-attached": _move_attached,
    "reconfigure": _reconfigure,
    "by-handle": _by_handle,
    "sigio": _sigio,
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
