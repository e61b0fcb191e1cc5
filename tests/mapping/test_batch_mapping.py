"""Batch mapping: slide lists, sidecars, skipping and summary.csv, with two real gloo
processes launched by torchrun (torch.distributed, no mocks); names that are not UTF-8
and broken symbolic links. Processes that fail, die or meet a slow slide:
test_batch_faults.py."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mapping_support import batch_map_args, glass, he_texture
from PIL import Image

from histoviewer import cli
from histoviewer.errors import HistoViewerError
from histoviewer.mapping import batch
from histoviewer.mapping import export as export_module
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import ModelInfo, build_network, save_model
from histoviewer.slide.synthetic import write_strip_tiff

REPO = Path(__file__).resolve().parents[2]
TORCHRUN_TIMEOUT_S = 150  # a hung collective fails the test instead of blocking CI
GOOD = ["a.png", "b.tif", "c.png"]
ALL = ["a.png", "b.tif", "broken.tif", "c.png"]  # sorted


def _model(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    info = ModelInfo.recipe("resnet18", input_size=32, name=f"tiny {seed}")
    save_model(path, build_network("resnet18", 8), info)
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    Image.fromarray(he_texture(300, 450, seed=1)).save(folder / "a.png")
    write_strip_tiff(folder / "b.tif", width=450, height=300, seed=2)
    # One column of tissue, two of glass: 2 patches classified, 4 background.
    c = np.concatenate([he_texture(300, 150, seed=3), glass(300, 300)], axis=1)
    Image.fromarray(c).save(folder / "c.png")
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not a slide")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=3)


@pytest.fixture(scope="module")
def first_run(slides, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("maps")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "histoviewer",
        *batch_map_args(slides, model, out),
    ]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S
    )
    return out, done


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / batch.SUMMARY_FILE, newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_processes_map_every_good_slide_once(first_run, slides):
    out, done = first_run
    assert done.returncode == 1, done.stderr[-3000:]  # one slide failed
    # Each good slide is reported by exactly one process, the broken one by rank 0 once.
    for name in GOOD:
        assert done.stdout.count(f"{name}: ") == 1, done.stdout
    errors = [line for line in done.stderr.splitlines() if "histoviewer: error:" in line]
    assert len(errors) == 1 and "broken.tif failed:" in errors[0]
    assert "4 slide(s): 3 mapped, 0 skipped, 1 failed" in done.stdout

    # Each slide went to whichever process was free (test_batch_faults.py shows the order).
    for name in ALL:
        record = json.loads((out / f"{Path(name).stem}.map.json").read_text())
        assert record["outcome"]["rank"] in (0, 1), name
        assert record["status"] == ("failed" if name == "broken.tif" else "mapped")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / "broken.npz").exists() and not (out / "notes.npz").exists()

    rows = _summary(out)
    assert [Path(r["slide"]).name for r in rows] == ALL
    names = TissueMap.load(out / "a.npz").class_names
    for row in rows:
        stem = Path(row["slide"]).stem
        if stem == "broken":
            assert row["status"] == "failed" and "broken.tif" in row["error"]
            assert row["patches"] == "" and row["tumor_fraction"] == ""
            continue
        tmap = TissueMap.load(out / f"{stem}.npz")
        assert tmap.complete and row["status"] == "mapped" and row["error"] == ""
        assert int(row["patches"]) == tmap.classified_count
        assert float(row["seconds"]) > 0 and float(row["patches_per_s"]) > 0
        fractions = tmap.fractions()
        for name in names:
            assert float(row[f"{name}_fraction"]) == pytest.approx(fractions[name], abs=1e-6)
        assert sum(float(row[f"{n}_fraction"]) for n in names) == pytest.approx(1, abs=1e-5)
    assert [int(r["patches"]) for r in rows if r["status"] == "mapped"] == [6, 6, 2]


def test_a_second_run_maps_nothing_new_and_another_model_remaps(
    first_run, slides, model, tmp_path, capsys
):
    out, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    summary_before = {r["slide"]: r for r in _summary(out)}
    # Now in one process: the records do not depend on who mapped a slide.
    assert cli.main(batch_map_args(slides, model, out)) == 1
    captured = capsys.readouterr()
    assert "4 slide(s): 0 mapped, 3 skipped, 1 failed" in captured.out
    assert "patches classified" not in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")} == before
    for row in _summary(out):
        old = summary_before[row["slide"]]
        if row["status"] == "failed":
            assert Path(row["slide"]).name == "broken.tif"  # tried again, failed again
            continue
        assert row["status"] == "skipped"
        assert (row["patches"], row["tumor_fraction"]) == (old["patches"], old["tumor_fraction"])

    other = _model(tmp_path / "other.safetensors", seed=11)
    assert cli.main(batch_map_args(slides, other, out)) == 1
    assert "4 slide(s): 3 mapped, 0 skipped, 1 failed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != before[p.name] for p in out.glob("*.npz"))


def test_expand_slides_from_folders_and_lists(slides, tmp_path):
    assert [p.name for p in batch.expand_slides([slides])] == ALL  # notes.txt left out
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# slides to map\n\n{slides / 'c.png'}\n../{tmp_path.name}/x.svs\n{slides / 'a.png'}\n"
    )
    got = batch.expand_slides([slides / "a.png"], slides_from=listing)
    assert got == sorted([slides / "a.png", slides / "c.png", tmp_path / "x.svs"], key=str)
    with pytest.raises(HistoViewerError, match=r"slide list .*missing\.txt does not exist"):
        batch.expand_slides([], slides_from=tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HistoViewerError, match="holds no slides"):
        batch.expand_slides([tmp_path / "empty"])


def test_a_name_that_is_not_utf8_maps_and_is_skipped_on_a_rerun(tmp_path, model, capsys):
    """On Linux a file name is bytes; b"slide-\\xff.png" is no UTF-8 text. The slide maps,
    its exports and sidecar keep the exact name, and the summary, the CSV export and the
    printed lines show the byte escaped (backslash-escaped: "slide-\\xff.png")."""
    folder = tmp_path / "slides"
    folder.mkdir()
    image = io.BytesIO()
    Image.fromarray(he_texture(150, 300, seed=4)).save(image, format="PNG")
    with open(os.path.join(os.fsencode(folder), b"slide-\xff.png"), "wb") as fh:
        fh.write(image.getvalue())
    Image.fromarray(he_texture(150, 150, seed=5)).save(folder / "plain.png")
    out = tmp_path / "out"
    args = batch_map_args(folder, model, out)
    args[args.index("npz,csv")] = "npz,csv,geojson"
    # A real process: its stdout is a pipe, which takes no undecodable name.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "histoviewer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=TORCHRUN_TIMEOUT_S,
    )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr[-3000:]
    assert "slide-\\xff.png: 2 patches classified" in stdout
    assert "2 slide(s): 2 mapped, 0 skipped, 0 failed" in stdout

    names = set(os.listdir(os.fsencode(out)))
    for suffix in (b".npz", b".csv", b".geojson", b".map.json"):
        assert b"slide-\xff" + suffix in names
    odd = Path(os.fsdecode(os.path.join(os.fsencode(out), b"slide-\xff.npz")))
    assert TissueMap.load(odd).classified_count == 2
    assert "slide-\\xff.png" in odd.with_suffix(".csv").read_text(encoding="utf-8")
    rows = _summary(out)
    assert [Path(r["slide"]).name for r in rows] == ["plain.png", "slide-\\xff.png"]
    assert [r["status"] for r in rows] == ["mapped", "mapped"]

    assert cli.main(args) == 0
    assert "2 slide(s): 0 mapped, 2 skipped, 0 failed" in capsys.readouterr().out
    assert [r["status"] for r in _summary(out)] == ["skipped", "skipped"]


def test_broken_and_looping_links_in_a_folder_fail_as_slides(tmp_path, model, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    Image.fromarray(he_texture(150, 150, seed=6)).save(folder / "good.png")
    (folder / "gone.tif").symlink_to(tmp_path / "moved" / "gone.tif")
    (folder / "loop.svs").symlink_to(folder / "loop2.svs")
    (folder / "loop2.svs").symlink_to(folder / "loop.svs")
    (folder / "gone.txt").symlink_to(tmp_path / "nothing.txt")  # not a slide's extension
    out = tmp_path / "out"
    assert [p.name for p in batch.expand_slides([folder])] == [
        "gone.tif",
        "good.png",
        "loop.svs",
        "loop2.svs",
    ]

    assert cli.main(batch_map_args(folder, model, out)) == 1
    captured = capsys.readouterr()
    assert "4 slide(s): 1 mapped, 0 skipped, 3 failed" in captured.out
    gone = f"cannot open {folder / 'gone.tif'}: it is a broken symbolic link (to "
    gone += f"{os.readlink(folder / 'gone.tif')}, which does not exist)"
    assert f"histoviewer: error: gone.tif failed: {gone}" in captured.err
    assert f"loop.svs failed: cannot open {folder / 'loop.svs'}: it is a symbolic link loop" in (
        captured.err
    )

    rows = {Path(r["slide"]).name: r for r in _summary(out)}
    assert rows["good.png"]["status"] == "mapped"
    assert (rows["gone.tif"]["status"], rows["gone.tif"]["error"]) == ("failed", gone)
    loop2 = f"cannot open {folder / 'loop2.svs'}: it is a symbolic link loop"
    assert rows["loop2.svs"]["error"] == loop2
    record = json.loads((out / "gone.map.json").read_text())
    assert (record["status"], record["outcome"]["error"]) == ("failed", gone)
    assert TissueMap.load(out / "good.npz").complete


def test_a_slide_named_summary_is_refused(tmp_path, model, capsys):
    for name in ("summary.png", "other.png"):
        Image.fromarray(he_texture(150, 150)).save(tmp_path / name)
    assert cli.main(batch_map_args(tmp_path, model, tmp_path / "out")) == 1
    assert "would overwrite the batch's summary.csv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_slide_killed_among_its_exports_is_mapped_again_not_skipped(
    tmp_path, model, monkeypatch, capsys
):
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(2):
        write_strip_tiff(folder / f"s{i}.tif", width=600, height=450, seed=i)
    out = tmp_path / "out"
    assert cli.main(batch_map_args(folder, model, out)) == 0  # writes NPZ, then CSV
    real_csv = export_module.export_csv

    def killed_on_s1(tmap, path):
        if Path(path).name == "s1.csv":
            raise KeyboardInterrupt
        real_csv(tmap, path)

    # Another model's run is killed among s1's exports: its NPZ is new, the CSV still
    # the first model's.
    other = _model(tmp_path / "other.safetensors", seed=7)
    monkeypatch.setattr(export_module, "export_csv", killed_on_s1)
    assert cli.main(batch_map_args(folder, other, out)) == 130  # interrupted
    monkeypatch.undo()
    assert json.loads((out / "s1.map.json").read_text())["status"] == "writing"

    # Back with the first model, s1's record must not pass for a finished set of it.
    capsys.readouterr()
    assert cli.main(batch_map_args(folder, model, out)) == 0
    printed = capsys.readouterr().out
    assert "s1.tif: skipped" not in printed and "s1.tif: " in printed
    assert json.loads((out / "s1.map.json").read_text())["status"] == "mapped"
    fingerprint = TissueMap.load(out / "s1.npz").model["fingerprint"]
    assert f"(fingerprint {fingerprint[:12]})" in (out / "s1.csv").read_text()


def test_an_export_that_would_overwrite_its_own_slide_is_refused(tmp_path, model, capsys):
    slide = tmp_path / "a.png"
    Image.fromarray(he_texture(150, 150)).save(slide)
    before = slide.read_bytes()
    args = batch_map_args(slide, model, tmp_path)
    args[args.index("--formats") + 1] = "png"
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "the png export of a.png would overwrite the slide" in err
    assert len(err.strip().splitlines()) == 1
    assert slide.read_bytes() == before
