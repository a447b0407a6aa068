"""circus/cgroup.py: where the cgroup v2 hierarchy is, and names of watchers' cgroups."""

from __future__ import annotations

from pathlib import Path

from circus import cgroup


def test_the_cgroup2_mount_is_found_among_v1_mounts(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup.mount_point(str(info)) == "/sys/fs/cgroup/unified"
    info.write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert cgroup.mount_point(str(info)) is None
    assert cgroup.mount_point(str(tmp_path / "missing")) is None


def test_own_cgroup_is_the_v2_line(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n0::/system.slice/circus.service\n")
    assert cgroup.own_cgroup(str(proc)) == "/system.slice/circus.service"
    proc.write_text("0::/\n")
    assert cgroup.own_cgroup(str(proc)) == "/"
    proc.write_text("4:memory:/x\n")
    assert cgroup.own_cgroup(str(proc)) is None


def test_a_watcher_name_cannot_escape_or_collide_with_interface_files() -> None:
    assert cgroup._dirname("web-1_a") == "web-1_a"
    assert cgroup._dirname("..") == "%2E%2E"
    assert cgroup._dirname("cgroup.procs") == "cgroup%2Eprocs"
    assert cgroup._dirname("a/b c") == "a%2Fb%20c"
