"""Allowlist entries that are valid but exempt far more than their author likely meant.

An allowlist entry exempts a process from a rule. Some entries exempt nearly
everything an attacker would run: root (uid 0), a shell or interpreter (which
runs any script: `python3 -c ...`), a whole system directory (which holds the
shells and interpreters), a directory anyone can write to (anyone can put a
program there), a whole systemd slice. They stay valid, because an operator
may mean them, but `enforcer check` warns, `check --strict` refuses them, and
the agent logs them at every start and reload. The lists are documented in
docs/policy.md ("Checks and warnings").

Each function returns the warning's text (why it is risky, what to write
instead) or None.
"""

from __future__ import annotations

import posixpath
import re
from typing import Optional

from enforcer.matching import is_below

__all__ = ["uid_risk", "exe_risk", "exe_dir_risk", "cgroup_risk",
           "SYSTEM_DIRS", "USER_WRITABLE_DIRS", "WIDE_CGROUPS"]

#: Directories that hold shells, interpreters, the dynamic loader or every
#: installed program: an `exe_dirs` entry equal to one of them (or above one)
#: exempts nearly every program on the host.
SYSTEM_DIRS = (
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/usr", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32", "/usr/libexec",
    "/usr/local", "/usr/local/bin", "/usr/local/sbin", "/usr/local/lib", "/usr/local/libexec",
    "/usr/share", "/usr/games", "/opt", "/snap", "/snap/bin", "/nix", "/nix/store",
)
#: Multiarch library directories (/usr/lib/x86_64-linux-gnu) hold the dynamic loader.
_MULTIARCH_LIB = re.compile(r"/(usr/)?lib(32|64|x32)?/[a-z0-9_]+-linux-gnu[a-z0-9_]*\Z")

#: Directories users other than root may create files in (mode 1777 on stock
#: hosts, or users' own homes): whatever is allowed there, anyone can put there.
USER_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock", "/var/lock", "/run/user",
                      "/home")

#: cgroups that hold every service, every user session or every VM/container.
WIDE_CGROUPS = ("/system.slice", "/user.slice", "/machine.slice", "/init.scope", "/kubepods",
                "/kubepods.slice", "/docker")

_SHELLS = re.compile(r"(ba|da|a|z|k|mk|pdk|c|tc|rba|ya|po)?sh|ksh93|fish|nu|xonsh|elvish")
_MULTI_CALL = re.compile(r"busybox|toybox")
_INTERPRETERS = re.compile(
    r"(python|pypy|perl|ruby|php|php-cgi|php-fpm|lua|tclsh|wish|guile)[0-9.]*"
    r"|luajit|node|nodejs|deno|bun|java|jshell|jrunscript|pwsh|Rscript|expect|(g|m|n)?awk|qemu-[a-z0-9_]+(-static)?"
)
_LOADERS = re.compile(r"ld-linux[a-z0-9_.-]*\.so(\.[0-9]+)*|ld(64)?\.so(\.[0-9]+)*|ld-musl-[a-z0-9_]+\.so(\.[0-9]+)*")
#: Programs that run the program named in their arguments, in their own process
#: (env, nice) or after a fork: allowing one allows `env /tmp/x`.
_LAUNCHERS = re.compile(
    r"env|xargs|nice|nohup|timeout|setsid|stdbuf|chroot|sudo|su|doas|runuser|pkexec|unshare|nsenter"
    r"|strace|ltrace|gdb|taskset|ionice|chrt|flock|systemd-run|watch|script"
)

_INSTEAD_EXE = ("allow the service's own cgroup instead (cgroup = [\"/system.slice/NAME.service\"]), "
                "or the specific program it runs")


def uid_risk(uid: int) -> Optional[str]:
    if uid != 0:
        return None
    return ("uid 0 exempts every process running as root: the protected actions need root, so an attacker "
            "who has it is exempt too; allow the specific program (exe) or the service's cgroup instead")


def exe_risk(path: str) -> Optional[str]:
    name = posixpath.basename(path)
    shown = f'"{path}"'
    if _SHELLS.fullmatch(name):
        return f"{shown} is a shell: allowing it allows every command and script it runs; {_INSTEAD_EXE}"
    if _MULTI_CALL.fullmatch(name):
        return (f"{shown} is a multi-call program that is also a shell and hundreds of tools: allowing it "
                f"allows all of them; {_INSTEAD_EXE}")
    if _INTERPRETERS.fullmatch(name):
        return (f"{shown} is an interpreter: allowing it allows every script it runs ({name} FILE, or code "
                f"given on its command line); {_INSTEAD_EXE}")
    if _LOADERS.fullmatch(name):
        return (f"{shown} is the dynamic loader: `{name} FILE` runs any program, which is then seen as the loader; "
                "allow the specific program instead")
    if _LAUNCHERS.fullmatch(name):
        return (f"{shown} runs the program named in its arguments: allowing it allows `{name} ANY-PROGRAM`; "
                "allow the specific program instead")
    return _writable_risk(path, f"a program at {path}")


def exe_dir_risk(path: str) -> Optional[str]:
    if path in SYSTEM_DIRS or _MULTIARCH_LIB.match(path):
        return (f'"{path}" is a whole system directory: it holds many programs (shells, interpreters, the dynamic '
                "loader or whole application bundles), so allowing it allows nearly any program; list the specific "
                'programs (exe), or a directory that holds only the one application (e.g. "/opt/vendor-agent")')
    writable = _writable_risk(path, f"a program under {path}")
    if writable is not None:
        return writable
    inside = next((d for d in SYSTEM_DIRS + USER_WRITABLE_DIRS if d != path and is_below(d, path)), None)
    if inside is not None:
        return (f'"{path}" contains {inside}: allowing it allows nearly every program, or any program a user '
                "puts there; list the specific programs (exe), or a directory that holds only the one "
                "application")
    return None


def _writable_risk(path: str, what: str) -> Optional[str]:
    place = next((d for d in USER_WRITABLE_DIRS if is_below(path, d)), None)
    if place is None:
        return None
    return (f"users other than root can create files in {place}: anyone can put {what} and be "
            "exempt; install it in a directory only root can write to and allow that")


def cgroup_risk(path: str) -> Optional[str]:
    if path not in WIDE_CGROUPS:
        return None
    what = "a whole slice" if path.endswith(".slice") else "a whole hierarchy"
    return (f'"{path}" is {what} (every service, user session or container in it): allow the one service\'s '
            'cgroup instead (e.g. "/system.slice/NAME.service")')
