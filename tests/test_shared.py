"""Shared pieces: atomic writes, classes, resources, device choice, cancel token."""

import errno
import os

import pytest
import torch

from histoviewer import classes, fileio
from histoviewer.device import autocast_dtype, resolve_device
from histoviewer.errors import DeviceError, StorageError
from histoviewer.resources import icon_path, resource_path, resources_dir
from histoviewer.tasks import Cancelled, CancelToken, format_duration


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "result.txt"
    fileio.atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), fileio.atomic_write(target, "w") as fh:
        fh.write("half written")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["result.txt"]  # no temp file left behind


def test_atomic_write_gives_files_the_usual_permissions(tmp_path):
    target = tmp_path / "export.csv"
    fileio.atomic_write_text(target, "row")
    plain = tmp_path / "plain.csv"
    plain.write_text("row")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_atomic_write_disk_full_is_a_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "map.npz"
    fileio.atomic_write_bytes(target, b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StorageError, match="disk is full"):
        fileio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["map.npz"]


def test_atomic_write_into_a_file_path_fails_clearly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        fileio.atomic_write_text(blocker / "sub" / "out.txt", "y")


def test_ensure_writable_dir_creates_the_folder_or_says_why_not(tmp_path):
    made = fileio.ensure_writable_dir(tmp_path / "runs" / "a")
    assert made.is_dir() and os.listdir(made) == []  # the probe file is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        fileio.ensure_writable_dir(blocker)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(StorageError, match="permission denied"):
            fileio.ensure_writable_dir(locked)


def test_classes_follow_kather_folder_order():
    names = classes.class_names()
    assert names == ["tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty"]
    folders = [c.folder for c in classes.default_classes()]
    assert folders == sorted(folders)
    colors = classes.class_colors()
    assert len(set(colors)) == 8 and all(len(c) == 3 for c in colors)


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("01_TUMOR", "tumor"),
        ("08_empty", "empty"),
        ("Stroma", "stroma"),
        ("12_Necrosis", "necrosis"),
    ],
)
def test_name_from_folder(folder, name):
    assert classes.name_from_folder(folder) == name


def test_unknown_class_gets_a_distinct_colour():
    assert classes.color_for("tumor", 5) == classes.default_classes()[0].color
    assert classes.color_for("necrosis", 0) != classes.color_for("necrosis", 1)


def test_resources_are_found_and_missing_ones_fail_loudly():
    assert (resources_dir() / "classes.json").is_file()
    assert resource_path("classes.json").name == "classes.json"
    with pytest.raises(FileNotFoundError, match="no-such-icon"):
        icon_path("no-such-icon")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type in {"cpu", "cuda", "mps"}
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert autocast_dtype(torch.device("cpu")) in (None, torch.bfloat16)


def test_cancel_token():
    token = CancelToken()
    token.raise_if_cancelled()
    token.cancel()
    assert token.cancelled
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (-3.0, "0:00"), (19.4, "0:19"), (62, "1:02"), (3723, "1:02:03")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
