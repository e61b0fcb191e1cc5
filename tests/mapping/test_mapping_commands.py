"""The info, map and benchmark subcommands, through a small argparse harness."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest
import torch
from PIL import Image

from histoviewer.errors import HistoViewerError, ModelError, SlideError
from histoviewer.mapping import commands
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import build_network
from histoviewer.slide.synthetic import write_strip_tiff


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="histoviewer")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory):
    """A 5000 x 5000 uncompressed strip TIFF like the CRC-Prim-HE slides."""
    path = tmp_path_factory.mktemp("slides") / "CRC-Prim-HE-99_APPLICATION.tif"
    write_strip_tiff(path, width=5000, height=5000, seed=4)
    return path


@pytest.fixture(scope="module")
def recipe_checkpoint(tmp_path_factory):
    """What the tutorial saves: {'state_dict': ...} of a ResNet-50 in a .pth.tar."""
    path = tmp_path_factory.mktemp("models") / "best_model.pth.tar"
    torch.manual_seed(1)
    torch.save({"state_dict": build_network("resnet50", 8).state_dict()}, path)
    return path


def test_info_describes_the_slide(big_slide, capsys):
    args = parse(["info", str(big_slide)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "TIFF (strips)" in out
    assert "5000 x 5000 px" in out and "2.48 x 2.48 mm" in out
    assert "0.495 µm/px" in out
    assert "level 0: 5000 x 5000 px" in out
    assert "34 x 34 = 1156" in out  # edges included: the last row and column shifted


def test_info_on_a_missing_file_is_a_slide_error(tmp_path):
    args = parse(["info", str(tmp_path / "nope.svs")])
    with pytest.raises(SlideError):
        args.func(args)


def test_map_writes_every_export(big_slide, recipe_checkpoint, tmp_path, capsys):
    out = tmp_path / "maps"
    args = parse(
        [
            "map",
            str(big_slide),
            "--model",
            str(recipe_checkpoint),
            "--out",
            str(out),
            "--stride",
            "2400",
            "--device",
            "cpu",
            "--batch-size",
            "16",
        ]
    )
    assert args.func(args) == 0
    stem = big_slide.stem
    for suffix in (".geojson", ".csv", ".png", ".npz", ".summary.json"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    tmap = TissueMap.load(out / f"{stem}.npz")
    assert (tmap.rows, tmap.cols, tmap.stride, tmap.stride_model) == (3, 3, 2400, 2400)
    assert tmap.complete and tmap.classified_count > 0
    assert tmap.model["arch"] == "resnet50" and tmap.model["input_size"] == 224
    with open(out / f"{stem}.csv", newline="") as fh:
        lines = fh.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    rows = list(csv.reader(line for line in lines if not line.startswith("#")))
    assert len(rows) == 1 + 9 and rows[0][7:] == [*tmap.class_names, "uncertainty"]
    assert "# scale: 0.495 µm/px (NDPI/TIFF resolution)" in header
    features = json.loads((out / f"{stem}.geojson").read_text())["features"]
    assert len(features) == tmap.classified_count
    png = Image.open(out / f"{stem}.png")  # the map's 3 x 3 cells of 32 px, a legend beside
    assert png.size[0] > 3 * 32 and png.size[1] >= 3 * 32
    captured = capsys.readouterr()
    line = captured.out.strip().splitlines()[-1]
    assert line.startswith(f"{big_slide.name}: {tmap.classified_count} patches classified")
    assert "patches/s" in line and "%" in line
    assert f"{tmap.classified_count}/{tmap.classified_count} patches" in captured.err


def test_map_formats_and_no_skip(big_slide, tiny_model, tmp_path):
    out = tmp_path / "maps"
    args = parse(
        [
            "map",
            str(big_slide),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--stride",
            "2400",
            "--formats",
            "npz,png",
            "--no-skip-background",
            "--device",
            "cpu",
        ]
    )
    assert args.func(args) == 0
    stem = big_slide.stem
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}.{s}" for s in ("map.json", "npz", "png")
    ]
    tmap = TissueMap.load(out / f"{big_slide.stem}.npz")
    assert tmap.classified_count == tmap.rows * tmap.cols == 9


def test_map_skips_a_broken_slide_among_several(big_slide, tiny_model, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 20)
    out = tmp_path / "maps"
    args = parse(
        [
            "map",
            str(broken),
            str(big_slide),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--stride",
            "2400",
            "--formats",
            "csv",
            "--device",
            "cpu",
        ]
    )
    assert args.func(args) == 1
    assert (out / f"{big_slide.stem}.csv").is_file()
    assert not (out / "broken.csv").exists()
    assert "broken.tif" in capsys.readouterr().err


def test_map_with_a_bad_model_is_a_model_error(big_slide, tmp_path):
    bad = tmp_path / "model.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    args = parse(["map", str(big_slide), "--model", str(bad), "--out", str(tmp_path)])
    with pytest.raises(ModelError):
        args.func(args)


@pytest.fixture
def shipped_resources(tmp_path, monkeypatch):
    """An installation's resources folder, with no model under models/ yet."""
    from histoviewer.resources import resource_path, resources_dir

    folder = tmp_path / "resources"
    (folder / "models").mkdir(parents=True)
    shutil.copy(resource_path("classes.json"), folder / "classes.json")
    monkeypatch.setenv("HISTOVIEWER_RESOURCES", str(folder))
    resources_dir.cache_clear()  # found once per process
    yield folder
    monkeypatch.undo()
    resources_dir.cache_clear()


def test_map_without_a_model_uses_the_shipped_one(big_slide, tiny_model, shipped_resources):
    shipped = shipped_resources / "models" / "kather2016-tiny"
    shipped.mkdir()
    shutil.copy(tiny_model, shipped / "model.safetensors")
    out = shipped_resources.parent / "maps"
    argv = ["map", str(big_slide), "--out", str(out), "--stride", "2400"]
    args = parse([*argv, "--formats", "npz", "--no-skip-background", "--device", "cpu"])
    assert args.func(args) == 0
    tmap = TissueMap.load(out / f"{big_slide.stem}.npz")
    assert tmap.model["name"] == "tiny"


def test_map_without_a_model_and_none_shipped_says_to_pass_one(big_slide, shipped_resources):
    args = parse(["map", str(big_slide), "--out", str(shipped_resources.parent / "maps")])
    with pytest.raises(ModelError, match=r"none is shipped.*pass --model"):
        args.func(args)


def test_map_refuses_two_slides_with_one_name(tmp_path):
    a, b = tmp_path / "a" / "s.tif", tmp_path / "b" / "s.tif"
    args = parse(["map", str(a), str(b), "--model", "m", "--out", str(tmp_path)])
    with pytest.raises(HistoViewerError, match="separate --out"):
        args.func(args)


@pytest.mark.parametrize(
    "argv",
    [
        ["--stride", "0"],
        ["--batch-size", "-1"],
        ["--formats", "png,tiff"],
    ],
)
def test_map_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit):
        parse(["map", "s.tif", "--model", "m", "--out", "o", *argv])
    assert "error" in capsys.readouterr().err


def test_benchmark_command_reports_every_side(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOVIEWER_ONNX_CACHE_DIR", str(tmp_path / "onnx"))
    args = parse(
        [
            "benchmark",
            "--arch",
            "resnet18",
            "--input-size",
            "32",
            "--patches",
            "24",
            "--slide-size",
            "900",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ]
    )
    assert args.backend == "all"
    assert args.func(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "24 patches" in out
    sides = {line.split()[0]: line for line in out.splitlines() if "patches/s steady" in line}
    assert sorted(sides) == ["baseline", "onnxruntime", "torch"]
    for line in sides.values():
        assert float(line.split()[1]) > 0 and "float32" in line
        assert "model load" in line and "first batch" in line
    for name in ("torch", "onnxruntime"):
        # Same weights and patches, float32 on every side: the same classes and nearly
        # the same probabilities (PIL and torch resize differ slightly).
        (versus,) = [x for x in out.splitlines() if x.startswith(f"{name}: ") and "baseline" in x]
        assert float(versus.split()[1].rstrip("x")) > 0
        assert float(versus.split("agreement ")[1].split(" %")[0]) >= 90.0
        assert float(versus.split("largest probability difference ")[1].split()[0]) < 0.05
        alone = out.split(f"{name}: network alone ")[1]
        assert float(alone.split()[0]) > 0
        assert float(alone.split("end to end ")[1].split(" %")[0]) > 0
    # The two backends compute the same float32 function.
    both = out.split("onnxruntime / torch: ")[1]
    assert float(both.split("agreement ")[1].split(" %")[0]) == 100.0
    assert float(both.split("largest probability difference ")[1].split()[0]) <= 1e-3
    assert "running the engine with the onnxruntime backend" in captured.err
    assert (tmp_path / "onnx").is_dir()


def test_benchmark_backend_chooses_the_engine_sides(capsys):
    argv = ["benchmark", "--arch", "resnet18", "--input-size", "32", "--patches", "8"]
    argv += ["--slide-size", "600", "--batch-size", "8", "--device", "cpu"]
    args = parse([*argv, "--precision", "fp32", "--backend", "torch"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "torch: network alone" in out and "onnxruntime" not in out
    args = parse([*argv, "--precision", "bf16", "--backend", "onnxruntime"])
    with pytest.raises(HistoViewerError, match="computes in float32"):
        args.func(args)


# --- scale and stain: --mpp, --strict, warnings ----------------------------------------


@pytest.fixture(scope="module")
def unscaled_slide(tmp_path_factory):
    """H&E-like tissue in a TIFF with no usable resolution (tifffile writes 1 dpi)."""
    import tifffile

    from histoviewer.slide.synthetic_he import synthetic_he

    path = tmp_path_factory.mktemp("slides") / "unscaled.tif"
    tifffile.imwrite(path, synthetic_he(640, 480, seed=6), photometric="rgb")
    return path


def test_info_says_why_a_scale_is_assumed_and_takes_mpp(unscaled_slide, capsys):
    args = parse(["info", str(unscaled_slide)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "0.495 µm/px (assumed: its file's 25400 µm/px (NDPI/TIFF resolution)" in out
    assert "warning:    Its scale is assumed" in out
    args = parse(["info", str(unscaled_slide), "--mpp", "0.25"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "resolution: 0.25 µm/px (given with --mpp)" in out
    assert "1280 x 960 px" not in out and "0.16 x 0.12 mm" in out  # 640 px * 0.25 um
    assert "warning" not in out and "looks like brightfield H&E" in out


def test_map_records_the_scale_and_warns_once_per_slide(unscaled_slide, tiny_model, tmp_path):
    from histoviewer.cli import main

    out = tmp_path / "maps"
    argv = ["map", str(unscaled_slide), "--model", str(tiny_model), "--out", str(out)]
    with _stderr_lines() as err:
        assert main([*argv, "--device", "cpu"]) == 0
    warnings = [line for line in err if line.startswith("histoviewer: warning:")]
    assert len(warnings) == 1 and "unscaled.tif: Its scale is assumed" in warnings[0]
    summary = json.loads((out / "unscaled.summary.json").read_text())
    assert summary["scale"] == {"mpp": 0.495, "source": "assumed", "assumed": True}
    assert [w["kind"] for w in summary["warnings"]] == ["scale-assumed"]
    geojson = json.loads((out / "unscaled.geojson").read_text())
    assert geojson["histoviewer"]["scale"]["assumed"] is True
    header = [x for x in (out / "unscaled.csv").read_text().splitlines() if x.startswith("#")]
    assert any(x.startswith("# scale: 0.495 µm/px (assumed) - ASSUMED") for x in header)
    assert any(x.startswith("# warning: Its scale is assumed") for x in header)

    # Given the true scale, the patches cover the same microns: twice the pixels.
    with _stderr_lines() as err:
        assert main([*argv, "--device", "cpu", "--mpp", "0.2475"]) == 0
    assert not [line for line in err if "warning" in line]
    tmap = TissueMap.load(out / "unscaled.npz")
    assert (tmap.mpp, tmap.patch_size) == (0.2475, 300)
    assert tmap.slide["mpp_source"] == "given with --mpp"
    assert json.loads((out / "unscaled.summary.json").read_text())["scale"]["assumed"] is False


def test_strict_refuses_a_slide_that_does_not_suit_the_model(
    unscaled_slide, big_slide, tiny_model, tmp_path
):
    from histoviewer.cli import main

    out = tmp_path / "maps"
    with _stderr_lines() as err:
        code = main(["map", str(unscaled_slide), *_options(tiny_model, out), "--strict"])
    assert code == 1 and not out.joinpath("unscaled.npz").exists()
    assert err[-1].startswith("histoviewer: error: unscaled.tif refused (--strict): Its scale")
    # In a batch the refused slide fails and the others are mapped.
    with _stderr_lines():
        slides = [str(unscaled_slide), str(big_slide)]
        code = main(["map", *slides, *_options(tiny_model, out), "--strict", "--stride", "2400"])
    assert code == 1
    assert (out / f"{big_slide.stem}.npz").is_file() and not (out / "unscaled.npz").exists()
    sidecar = json.loads((out / "unscaled.map.json").read_text())
    assert sidecar["status"] == "failed" and "--strict" in sidecar["outcome"]["error"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "400", "nan"])
def test_map_and_info_refuse_an_implausible_mpp(value, capsys):
    with pytest.raises(SystemExit):
        parse(["info", "x.svs", "--mpp", value])
    assert "--mpp" in capsys.readouterr().err


def _options(model, out) -> list[str]:
    return ["--model", str(model), "--out", str(out), "--device", "cpu"]


class _stderr_lines:
    """Collect what the CLI prints on stderr, as lines (its logging handler included)."""

    def __enter__(self) -> list[str]:
        import contextlib
        import io

        self.buffer = io.StringIO()
        self.redirect = contextlib.redirect_stderr(self.buffer)
        self.redirect.__enter__()
        self.lines: list[str] = []
        return self.lines

    def __exit__(self, *exc) -> None:
        self.redirect.__exit__(*exc)
        self.lines.extend(self.buffer.getvalue().splitlines())


def _map_argv(slide, model, out, formats="geojson,csv,png,npz,summary"):
    return [
        "map",
        str(slide),
        "--model",
        str(model),
        "--out",
        str(out),
        "--stride",
        "2400",
        "--formats",
        formats,
        "--device",
        "cpu",
    ]


def _record(out, slide):
    return json.loads((out / f"{slide.stem}.map.json").read_text())


def test_a_map_killed_between_its_exports_is_visibly_incomplete_and_a_rerun_replaces_the_set(
    big_slide, tiny_model, tmp_path, monkeypatch
):
    out = tmp_path / "maps"
    stem = big_slide.stem
    args = parse(_map_argv(big_slide, tiny_model, out))
    assert args.func(args) == 0
    record = _record(out, big_slide)
    assert record["status"] == "mapped"
    every = sorted(f"{stem}{s}" for s in (".geojson", ".csv", ".png", ".npz", ".summary.json"))
    assert sorted(record["files"]) == every

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill between the CSV and the PNG leaves

    monkeypatch.setattr("histoviewer.mapping.export.export_png", killed)
    with pytest.raises(KeyboardInterrupt):
        args.func(args)
    monkeypatch.undo()
    assert _record(out, big_slide)["status"] == "writing"  # not "mapped": a mixed set

    # A rerun with fewer formats leaves one consistent set, not the old run's PNG and NPZ.
    args = parse(_map_argv(big_slide, tiny_model, out, formats="geojson,summary"))
    assert args.func(args) == 0
    record = _record(out, big_slide)
    assert record["status"] == "mapped"
    assert sorted(record["files"]) == [f"{stem}.geojson", f"{stem}.summary.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*record["files"], f"{stem}.map.json"])


def test_map_checks_free_space_before_any_patch_is_classified(
    big_slide, tiny_model, tmp_path, monkeypatch
):
    from histoviewer import fileio
    from histoviewer.errors import StorageError

    class Usage:
        total, used, free = 10**9, 10**9 - 4096, 4096

    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: Usage)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the slide was classified although its exports cannot be written")

    monkeypatch.setattr("histoviewer.mapping.batch.map_slide", must_not_run)
    args = parse(_map_argv(big_slide, tiny_model, tmp_path / "maps"))
    with pytest.raises(StorageError, match=r"not enough free space .* for the exports of CRC"):
        args.func(args)
