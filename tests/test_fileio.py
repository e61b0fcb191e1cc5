"""Writes that lose nothing: names at the file system's limit, read-only and linked
targets, kept permissions, leftovers of killed runs, full disks, clear reasons."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from histoviewer import fileio
from histoviewer.errors import StorageError


def _name_max(folder) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def test_a_name_at_the_file_systems_limit_can_be_written(tmp_path):
    longest = "s" * (_name_max(tmp_path) - len(".geojson")) + ".geojson"
    fileio.atomic_write_text(tmp_path / longest, "{}")
    assert (tmp_path / longest).read_text() == "{}"
    assert os.listdir(tmp_path) == [longest]


def test_temporary_names_have_one_short_length():
    names = {fileio.temp_name() for _ in range(20)}
    assert len(names) == 20
    assert {len(n) for n in names} == {len(next(iter(names)))}
    assert all(fileio.is_temp_name(n) and len(n) < 40 for n in names)


def test_a_read_only_target_is_refused_and_kept(tmp_path):
    target = tmp_path / "slide.csv"
    target.write_text("finished work")
    target.chmod(0o444)
    with pytest.raises(StorageError, match=r"slide\.csv: the file is read-only"):
        fileio.atomic_write_text(target, "new")
    assert target.read_text() == "finished work"
    assert target.stat().st_mode & 0o777 == 0o444
    assert os.listdir(tmp_path) == ["slide.csv"]


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "slide.geojson"
    target.write_text("old")
    target.chmod(0o640)
    fileio.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_symbolic_link_is_written_through(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    real = store / "map.png"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = tmp_path / "map.png"
    link.symlink_to(real)
    fileio.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and link.resolve() == real
    assert real.read_bytes() == b"new"
    assert real.stat().st_mode & 0o777 == 0o600
    assert os.listdir(store) == ["map.png"]


def test_a_symbolic_link_loop_is_named(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(StorageError, match=r"a\.csv: it is a symbolic link loop"):
        fileio.atomic_write_text(a, "x")


def test_missing_reasons(tmp_path):
    assert fileio.missing_reason(tmp_path / "nothing") == "it does not exist"
    dangling = tmp_path / "dangling.svs"
    dangling.symlink_to(tmp_path / "moved.svs")
    reason = fileio.missing_reason(dangling)
    assert reason.startswith("it is a broken symbolic link") and "moved.svs" in reason
    loop = tmp_path / "loop.svs"
    loop.symlink_to(loop)
    assert fileio.missing_reason(loop) == "it is a symbolic link loop"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "the disk is full"),
        (errno.ENAMETOOLONG, "the name is too long"),
        (errno.ELOOP, "symbolic link loop"),
    ],
)
def test_os_errors_are_told_apart(code, words):
    assert words in fileio.describe_os_error(OSError(code, os.strerror(code)))


_KILLED_WRITER = """
import os, sys, time
from histoviewer import fileio
with fileio.atomic_write(sys.argv[1], "wb") as fh:
    fh.write(b"x" * 100_000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_the_next_run_removes_what_a_killed_write_left(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"epoch 3")
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    left = [n for n in os.listdir(tmp_path) if n != "last.pt"]
    assert len(left) == 1 and fileio.is_temp_name(left[0])
    # Another program's file that merely looks temporary is not ours to delete.
    (tmp_path / ".notes.tmp").write_text("mine")
    fileio.ensure_writable_dir(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".notes.tmp", "last.pt"]
    assert target.read_bytes() == b"epoch 3"


def test_temporary_files_of_live_writers_are_kept(tmp_path):
    mine = tmp_path / fileio.temp_name()  # this process: alive
    mine.write_bytes(b"in progress")
    other_host = tmp_path / ".hv-zzzzzz-1-0123abcd.tmp"  # not a valid host tag: not ours
    other_host.write_bytes(b"?")
    remote = tmp_path / ".hv-000000-1-0123abcd.tmp"  # another machine, young
    remote.write_bytes(b"in progress elsewhere")
    old_remote = tmp_path / ".hv-000001-1-0123abcd.tmp"  # another machine, two days old
    old_remote.write_bytes(b"left two days ago")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old_remote, (two_days_ago, two_days_ago))
    if fileio._HOST in ("000000", "000001"):  # pragma: no cover - a one in 8 million host
        pytest.skip("this machine's host tag collides with the test's")
    removed = fileio.remove_stale_temps(tmp_path)
    assert removed == [old_remote]
    assert mine.exists() and other_host.exists() and remote.exists()


def test_a_full_disk_fails_the_up_front_check(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="the disk is full"):
        fileio.ensure_writable_dir(tmp_path / "out")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "out") == []


def test_free_space_is_checked_against_what_will_be_written(tmp_path, monkeypatch):
    class Usage:
        total, used, free = 10**12, 10**12 - 50 * 2**20, 50 * 2**20

    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: Usage)
    fileio.ensure_free_space(tmp_path, 10 * 2**20, "the maps")
    with pytest.raises(
        StorageError,
        match=r"not enough free space .* for the maps: about 200\.0 MB needed, "
        r"50\.0 MB free",
    ):
        fileio.ensure_free_space(tmp_path, 200 * 2**20, "the maps")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_an_administrator_replacing_a_users_file_keeps_its_owner(tmp_path):
    target = tmp_path / "slide.summary.json"
    target.write_text("{}")
    os.chown(target, 1234, 5678)
    fileio.atomic_write_text(target, '{"new": true}')
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
