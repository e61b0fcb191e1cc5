"""Screenshots of Model > Train New Model in its fine-tuning mode (run under Xvfb).

Makes, in a new temporary folder, a small synthetic slide (0.5 µm/px, three regions
of tumour-, stroma- and fat-like colour), a small random ResNet-18 (32 px input, 20 px
patches at 1 µm/px) and labels on every patch of the slide (its own labels folder:
the user's labels are never touched). The viewer loads the model and the slide; the
dialog fine-tunes the model with the labels, mixing in ``--per-class`` tiles of each
class of TILES (default: the Kather 2016 tiles beside the checkout, when there), and
saves into OUT_DIR:

- ``finetune_form.png``: the form (labelled slides, tiles to mix in, estimate);
- ``finetune_results.png``: the finished run's before / after table and its tables.

With ``--model MODEL --slide SLIDE --labels LABELS.geojson`` it uses those instead (a
trained model, a real slide and QuPath labels of it, e.g. what
``tools/measure_finetune.py`` makes): the README's screenshots.

    xvfb-run -a -s "-screen 0 1366x768x24" python tools/screenshot_finetune.py /tmp/shots
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QApplication, QScrollArea
from shots import open_window, wait, wait_until

KATHER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kather2016" / "tiles"
SIDE = 40  # a model patch in slide pixels


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """The slide and the model; labels every patch of the slide (left to right:
    tumour, stroma, adipose)."""
    import tifffile
    import torch

    from histoviewer.labels import LabelSet, LabelStore
    from histoviewer.model import ModelInfo, build_network, save_model
    from histoviewer.slide import open_slide

    rows, cols = 8, 12
    regions = (("tumor", (150, 40, 110)), ("stroma", (235, 150, 190)), ("adipose", (245, 240, 245)))
    rng = np.random.default_rng(0)
    img = np.empty((rows * SIDE, cols * SIDE, 3), np.uint8)
    width = cols // len(regions) * SIDE
    for i, (_, colour) in enumerate(regions):
        noise = rng.normal(0, 14, (rows * SIDE, width, 3))
        img[:, i * width : (i + 1) * width] = np.clip(np.array(colour) + noise, 0, 255)
    slide = folder / "demo-slide.tif"
    tifffile.imwrite(slide, img, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")

    torch.manual_seed(0)
    info = ModelInfo.recipe("resnet18", input_size=32, patch_size=20, mpp=1.0, name="run18-demo")
    model = folder / "run18-demo.safetensors"
    save_model(model, build_network("resnet18", info.num_classes), info)

    reader = open_slide(slide)
    labels = LabelSet(reader.identity())
    reader.close()
    for r in range(rows):
        for c in range(cols):
            labels.set([(c * SIDE, r * SIDE, SIDE)], regions[c * SIDE // width][0])
    LabelStore().save(labels)
    return slide, model


def import_labels(slide: Path, model: Path, geojson: Path) -> None:
    """Store the QuPath labels of ``slide`` as the viewer would after File > Import."""
    from histoviewer.labels import LabelSet, LabelStore
    from histoviewer.labels.geojson import labels_on_slide, read_geojson
    from histoviewer.model import load_model
    from histoviewer.slide import open_slide

    info = load_model(model).info
    with open_slide(slide) as reader:
        imported = labels_on_slide(read_geojson(geojson), reader, info)
        LabelStore().save(LabelSet(reader.identity(), imported.labels))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--window-size", default="1366x768")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tiles", default=str(KATHER) if KATHER.is_dir() else "")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", help="a trained model (default: a random tiny one)")
    parser.add_argument("--slide", help="with --model: the slide to fine-tune on")
    parser.add_argument("--labels", help="with --model: QuPath GeoJSON labels of the slide")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="histoviewer-finetune-"))
    os.environ["HISTOVIEWER_LABELS_DIR"] = str(folder / "labels")  # never the user's

    from histoviewer.gui.app import create_application
    from histoviewer.model import load_model

    _app = create_application()
    if args.model:
        slide, model = Path(args.slide), Path(args.model)
        import_labels(slide, model, Path(args.labels))
    else:
        slide, model = make_inputs(folder)
    window, _, _ = open_window(args.window_size, "histoviewer-finetune-")
    window.set_classifier(load_model(model), str(model))
    window.open_slide(slide)
    args.out.mkdir(parents=True, exist_ok=True)

    dialog = window.open_training_dialog()
    dialog.move(0, 0)
    dialog.ask_start = lambda text: True  # the question has a screenshot of its own
    form = dialog.form
    form.set_finetuning(True)
    form.out_edit.setText(str(folder / "run"))
    panel = form.finetune
    panel.epochs_spin.setValue(args.epochs)
    panel.batch_spin.setValue(args.batch_size)
    if args.tiles:
        panel.mix_check.setChecked(True)
        panel.tiles_edit.setText(args.tiles)
        panel.per_class_spin.setValue(args.per_class)
    wait_until(lambda: dialog.start_button.isEnabled(), 120)
    wait(1200)  # the speed is measured once the settings have settled
    wait_until(lambda: not form.measuring(), 60)
    wait(300)
    dialog.grab().save(str(args.out / "finetune_form.png"))
    scroll = next(w for w in dialog.findChildren(QScrollArea) if w.widget() is form)
    scroll.ensureWidgetVisible(panel.estimate_label)
    wait(300)
    dialog.grab().save(str(args.out / "finetune_form_estimate.png"))

    dialog.start()
    wait_until(lambda: not dialog.is_running(), 900)
    dialog.tabs.setCurrentWidget(dialog.results)
    wait(500)
    dialog.grab().save(str(args.out / "finetune_results.png"))
    print(dialog.status_label.text())
    dialog.use_button.click()
    wait_until(lambda: not window.is_mapping(), 300)
    dialog.hide()
    wait(500)
    QApplication.processEvents()
    window.grab().save(str(args.out / "finetune_remapped.png"))
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
