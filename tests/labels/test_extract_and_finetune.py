"""The loop without the app: labels -> extract-tiles -> train --init-from -> map."""

import csv
import json

import numpy as np
import pytest
from labels_support import SIDE, write_tiny_model, write_two_region_slide
from PIL import Image

from histoviewer import cli
from histoviewer.labels import LabelError, LabelSet, LabelStore
from histoviewer.labels.extract import cut_patch, extract_tiles
from histoviewer.model import load_model
from histoviewer.model.preprocessing import to_patch_scale
from histoviewer.slide import open_slide

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    return write_two_region_slide(root / "slide.tif"), write_tiny_model(root / "tiny.safetensors")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_patch_is_cut_at_the_models_scale_as_mapping_reads_it(files):
    slide_path, model_path = files
    info = load_model(model_path).info
    with open_slide(slide_path) as slide:
        x, y, size, pixels = cut_patch(slide, info, (10.0, 10.0))  # kept on the slide
        assert (x, y, size, pixels.shape) == (0, 0, SIDE, (20, 20, 3))
        region = slide.read_region(0, 0, 0, SIDE, SIDE)
    assert np.array_equal(pixels, to_patch_scale(region[None], 20)[0])
    # Area averaging, as in preprocess: each model pixel is the mean of 2 x 2 slide pixels.
    assert abs(float(pixels[0, 0, 0]) - region[:2, :2, 0].mean()) <= 0.5


def test_extract_writes_class_folders_and_a_manifest_and_guards_the_folder(files, tmp_path):
    slide_path, model_path = files
    info = load_model(model_path).info
    with open_slide(slide_path) as slide:
        labels = LabelSet(slide.identity())
        labels.set([(0, 0, SIDE), (40, 40, SIDE)], "Tumor")
        labels.set([(200, 120, SIDE)], "02_STROMA")
        result = extract_tiles([(slide, labels)], info, tmp_path / "data")
        assert result.per_class == {"tumor": 2, "stroma": 1}
        files_written = sorted(
            p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*.png")
        )
        assert files_written == [
            "01_TUMOR/slide__x0_y0.png",
            "01_TUMOR/slide__x40_y40.png",
            "02_STROMA/slide__x200_y120.png",
        ]
        rows = list(csv.DictReader((tmp_path / "data" / "labels.csv").open()))
        assert rows[2] == {
            "file": "02_STROMA/slide__x200_y120.png",
            "class": "stroma",
            "slide": str(slide_path),
            "x": "200",
            "y": "120",
            "size": "40",
        }
        with pytest.raises(LabelError, match="already holds an earlier extraction"):
            extract_tiles([(slide, labels)], info, tmp_path / "data")
        labels.set([(0, 0, SIDE)], None)
        extract_tiles([(slide, labels)], info, tmp_path / "data", overwrite=True)
        assert len(list((tmp_path / "data").rglob("*.png"))) == 2
        labels.set([(80, 0, SIDE)], "necrosis")
        with pytest.raises(LabelError, match="does not know: necrosis"):
            extract_tiles([(slide, labels)], info, tmp_path / "other")
    assert not (tmp_path / "other").exists()  # refused before anything was written


def test_label_fine_tune_and_remap_from_the_command_line(files, tmp_path, capsys):
    """Label 24 patches with classes the untrained model gets wrong, as QuPath polygons;
    fine-tune; re-map: at least 90 % of them now carry their label."""
    slide_path, model_path = files
    before = load_model(model_path)
    polygons = {
        "Tumor": [[0, 0], [120, 0], [120, 160], [0, 160], [0, 0]],
        "Stroma": [[120, 0], [240, 0], [240, 160], [120, 160], [120, 0]],
    }
    geojson = tmp_path / "labels.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": name, "color": [255, 0, 0]},
                        },
                    }
                    for name, ring in polygons.items()
                ],
            }
        )
    )
    code, out, err = run(
        capsys,
        "extract-tiles",
        slide_path,
        "--model",
        model_path,
        "--labels",
        geojson,
        "--out",
        tmp_path / "data",
    )
    assert code == 0, err
    assert "24 labelled patches from 1 slide(s) (12 tumor, 12 stroma)" in out
    code, out, err = run(
        capsys,
        "-q",
        "train",
        tmp_path / "data",
        "--init-from",
        model_path,
        "--out",
        tmp_path / "run",
        "--epochs",
        "6",
        "--lr",
        "2e-3",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["init_from"] == str(model_path)
    assert report["config"]["arch"] == "resnet18" and report["config"]["image_size"] == 32
    fine = report["fine_tune"]
    assert fine["start_model"]["fingerprint"] == before.fingerprint
    assert set(fine["untrained_classes"]) == {
        "complex",
        "lympho",
        "debris",
        "mucosa",
        "adipose",
        "empty",
    }
    assert report["data"]["split_method"] == "per-slide"
    labelled = fine["compared"]["labels"]
    assert labelled["n"] == report["split_counts"]["test"] == 2
    assert "held-out labelled patches (2): accuracy" in out
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "## Fine-tuning" in card and f"--init-from {model_path}" in card
    assert "| Held-out labelled patches | 2 |" in card
    tuned = load_model(tmp_path / "run" / "best.safetensors")
    assert tuned.info.class_names == before.info.class_names  # all 8 outputs kept
    assert tuned.info.patch_size == 20 and tuned.info.mpp == 1.0
    code, out, err = run(
        capsys,
        "-q",
        "map",
        slide_path,
        "--model",
        tmp_path / "run" / "best.safetensors",
        "--out",
        tmp_path / "maps",
        "--formats",
        "npz",
        "--device",
        "cpu",
        "--no-skip-background",
    )
    assert code == 0, err
    with np.load(tmp_path / "maps" / "slide.npz") as data:
        probs = data["probs"]
    predicted = probs.argmax(-1)
    truth = np.zeros(predicted.shape, dtype=int)
    truth[:, predicted.shape[1] // 2 :] = 1  # left tumour (0), right stroma (1)
    assert (predicted == truth).mean() >= 0.9
    # The untrained model did not: the fine-tuning made the difference.
    with open_slide(slide_path) as slide:
        from histoviewer.mapping.engine import map_slide

        old = map_slide(slide, before, skip_background=False).labels
    assert (old == truth).mean() < 0.9


def test_extract_tiles_uses_the_viewers_labels_and_refuses_bad_input(files, tmp_path, capsys):
    slide_path, model_path = files
    code, _, err = run(
        capsys, "extract-tiles", slide_path, "--model", model_path, "--out", tmp_path / "a"
    )
    assert code == 1 and "has no labelled patches in the viewer's labels" in err
    with open_slide(slide_path) as slide:
        labels = LabelSet(slide.identity())
        labels.set([(0, 0, SIDE), (0, 40, SIDE), (0, 80, SIDE)], "tumor")
        LabelStore().save(labels)
    code, out, err = run(
        capsys, "extract-tiles", slide_path, "--model", model_path, "--out", tmp_path / "a"
    )
    assert code == 0 and "3 labelled patches" in out
    code, _, err = run(
        capsys,
        "extract-tiles",
        slide_path,
        slide_path,
        "--model",
        model_path,
        "--labels",
        "x.geojson",
        "--out",
        tmp_path / "b",
    )
    assert code == 1 and "1 --labels file(s) for 2 slide(s)" in err
    assert Image.open(next((tmp_path / "a" / "01_TUMOR").glob("*.png"))).size == (20, 20)
