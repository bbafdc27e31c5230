"""enforcer.mountinfo: a listed directory as (filesystem, path inside it)."""

from __future__ import annotations

import os

import pytest

from enforcer.mountinfo import (
    HOST_MOUNTINFO_PATH, Location, MountInfoError, host_mountinfo_path, kernel_dev, parse_mountinfo, read_mount_table,
)

# Shapes of real lines: the root filesystem, /tmp and /dev/shm as tmpfs, a
# bind mount of a directory of /tmp elsewhere (root field != "/"), a mount
# point with a space (escaped \040), and a tmpfs later mounted over /var/tmp
# twice (the second, listed last, is on top).
MOUNTINFO = "\n".join([
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
    "23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=4096k",
    "24 23 0:24 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw",
    "25 22 0:25 / /tmp rw,nosuid,nodev shared:4 - tmpfs tmpfs rw",
    "30 22 0:25 /build /srv/build rw,relatime shared:4 - tmpfs tmpfs rw",
    "31 22 254:1 /var/lib/my\\040dir /mnt/with\\040space rw shared:1 - ext4 /dev/vda1 rw",
    "40 22 0:40 / /var/tmp rw shared:9 - tmpfs tmpfs rw",
    "41 22 0:41 / /var/tmp rw shared:10 - tmpfs tmpfs rw",
    "",
])


def test_kernel_dev_is_mkdev():
    assert kernel_dev(254, 1) == (254 << 20) | 1
    assert kernel_dev(0, 25) == 25


@pytest.mark.parametrize("directory,expected", [
    ("/tmp", Location(kernel_dev(0, 25), "/", "tmpfs")),
    ("/tmp/a/b", Location(kernel_dev(0, 25), "/a/b", "tmpfs")),
    ("/tmpfoo", Location(kernel_dev(254, 1), "/tmpfoo", "ext4")),  # not below /tmp
    ("/dev", Location(kernel_dev(0, 5), "/", "devtmpfs")),
    ("/dev/shm", Location(kernel_dev(0, 24), "/", "tmpfs")),
    ("/dev/mqueue", Location(kernel_dev(0, 5), "/mqueue", "devtmpfs")),  # absent: where it would be
    ("/srv/build/out", Location(kernel_dev(0, 25), "/build/out", "tmpfs")),  # through the bind mount
    ("/mnt/with space/x", Location(kernel_dev(254, 1), "/var/lib/my dir/x", "ext4")),
    ("/var/tmp", Location(kernel_dev(0, 41), "/", "tmpfs")),  # the mount on top
    ("/", Location(kernel_dev(254, 1), "/", "ext4")),
])
def test_locate(directory, expected):
    assert parse_mountinfo(MOUNTINFO).locate(directory) == expected


def test_an_empty_table_places_nothing():
    assert parse_mountinfo("").locate("/tmp") is None


def test_a_malformed_line_is_named():
    with pytest.raises(MountInfoError, match=r"^mi:2: not a mountinfo line"):
        parse_mountinfo("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n22 1 nodev / /x rw - tmpfs t rw\n", "mi")


def test_the_host_table_is_pid_1s_when_readable(tmp_path):
    host = tmp_path / "host-mountinfo"
    host.write_text("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n")
    assert host_mountinfo_path(str(host), "/proc/self/mountinfo") == str(host)


def test_an_unreadable_host_table_falls_back_to_the_own_one_loudly(tmp_path, caplog):
    missing = tmp_path / "no-such-mountinfo"
    own = tmp_path / "own"
    own.write_text("")
    assert host_mountinfo_path(str(missing), str(own)) == str(own)
    assert "cannot read the host's mount table" in caplog.text and str(missing) in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="reading PID 1's mountinfo takes root (CAP_SYS_PTRACE)")
def test_the_default_table_is_pid_1s():
    """The agent under systemd's PrivateTmp= sees a private directory on /tmp;
    the places must be located where the host has them."""
    assert HOST_MOUNTINFO_PATH == "/proc/1/mountinfo"
    assert host_mountinfo_path() == HOST_MOUNTINFO_PATH  # root here: readable
    assert read_mount_table().entries == read_mount_table(HOST_MOUNTINFO_PATH).entries


def test_a_mount_point_with_a_form_feed_or_a_line_separator_keeps_the_table_readable() -> None:
    """The kernel escapes only space, tab, newline and backslash in a path:
    str.splitlines() would have cut such a line in two."""
    table = parse_mountinfo("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n"
                            "23 22 0:50 / /mnt/a\x0cb\u2028c rw - tmpfs t rw\n")
    assert [entry.mount_point for entry in table.entries] == ["/", "/mnt/a\x0cb\u2028c"]
