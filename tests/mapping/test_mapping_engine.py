"""The inference engine: results equal per-patch classification, callbacks, cancel, errors."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from mapping_support import PyramidSlide, RecordingSlide, glass, he_texture, tiny_classifier
from torch import nn

from histoviewer.errors import DeviceError, SlideError
from histoviewer.mapping.engine import (
    BackgroundFound,
    BatchResult,
    MapProgress,
    map_slide,
    slide_identity,
)
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, PENDING
from histoviewer.model import Classifier
from histoviewer.slide import ArraySlide
from histoviewer.tasks import CancelToken


def by_hand(slide, classifier, grid_boxes, level=0, downsample=1.0, read_size=150):
    """Each patch read on its own and classified with Classifier.predict_proba."""
    patches = []
    for x, y, _, _ in grid_boxes:
        lx, ly = round(x / downsample), round(y / downsample)
        patches.append(slide.read_region(level, lx, ly, read_size, read_size))
    return classifier.predict_proba(np.stack(patches))


@pytest.mark.parametrize("stride", [150, 75])
def test_map_equals_classifying_each_patch_by_hand(tissue_slide, classifier, stride):
    tmap = map_slide(
        tissue_slide,
        classifier,
        stride=stride,
        batch_size=5,
        skip_background=False,
        precision="fp32",
    )
    rows, cols = (3, 4) if stride == 150 else (5, 7)
    assert (tmap.rows, tmap.cols) == (rows, cols)
    assert tmap.complete and (tmap.state == CLASSIFIED).all()
    boxes = [tmap.patch_box(r, c) for r in range(rows) for c in range(cols)]
    expected = by_hand(tissue_slide, classifier, boxes).reshape(rows, cols, -1)
    np.testing.assert_allclose(tmap.probs, expected, atol=2e-4)
    assert (tmap.labels == expected.argmax(-1)).all()
    np.testing.assert_allclose(tmap.probs.sum(-1), 1.0, atol=1e-5)
    # The random network does tell these patches apart (the comparison means something).
    assert np.ptp(tmap.probs, axis=(0, 1)).max() > 1e-3
    assert tmap.model["fingerprint"] == classifier.fingerprint
    assert tmap.slide == slide_identity(tissue_slide)
    assert tmap.stride_model == stride and tmap.stride == stride and tmap.elapsed > 0


def test_the_default_stride_is_the_models_own_patch_size(tissue_slide):
    # A model trained on 64 px tiles maps without gaps unless asked otherwise.
    clf = tiny_classifier()
    clf.info = dataclasses.replace(clf.info, patch_size=64)
    tmap = map_slide(tissue_slide, clf, skip_background=False, precision="fp32")
    assert (tmap.patch_size, tmap.stride, tmap.stride_model) == (64, 64, 64)
    assert (tmap.rows, tmap.cols) == (-(-(450 - 64) // 64) + 1, -(-(600 - 64) // 64) + 1)
    assert tmap.cell_areas().sum() == 450 * 600


def test_finer_slide_is_read_from_the_matching_level():
    # 0.2475 um/px: a patch is 300 level-0 px, read as 150 px from level 1.
    slide = PyramidSlide(he_texture(900, 1200, seed=3), mpp=0.2475, levels=3)
    clf = tiny_classifier()
    tmap = map_slide(slide, clf, skip_background=False, precision="fp32", batch_size=4)
    assert (tmap.rows, tmap.cols, tmap.patch_size) == (3, 4, 300)
    patch_reads = [r for r in slide.reads if r[4] == 150]
    assert patch_reads and all(level == 1 for level, *_ in patch_reads)
    boxes = [tmap.patch_box(r, c) for r in range(3) for c in range(4)]
    expected = by_hand(slide, clf, boxes, level=1, downsample=2.0).reshape(3, 4, -1)
    np.testing.assert_allclose(tmap.probs, expected, atol=2e-4)


def test_row_bands_and_single_reads_give_the_same_map(classifier):
    image = he_texture(450, 600, seed=5)
    banded = RecordingSlide(image)
    tmap = map_slide(banded, classifier, batch_size=8, skip_background=False, precision="fp32")
    # Whole rows were read as bands: fewer reads than patches.
    patch_reads = [r for r in banded.reads if r[4] == 150]
    assert len(patch_reads) < tmap.rows * tmap.cols
    assert any(w > 150 for _, _, _, w, _ in patch_reads)
    boxes = [tmap.patch_box(r, c) for r in range(tmap.rows) for c in range(tmap.cols)]
    expected = by_hand(ArraySlide(image), classifier, boxes).reshape(tmap.probs.shape)
    np.testing.assert_allclose(tmap.probs, expected, atol=2e-4)


def slide_with_glass() -> RecordingSlide:
    """750 x 600: tissue on the left 300 px, glass elsewhere, one tissue island at the right."""
    image = glass(600, 750)
    image[:, :300] = he_texture(600, 300, seed=7)
    image[150:300, 600:750] = he_texture(150, 150, seed=8)
    return RecordingSlide(image)


def test_background_is_skipped_marked_and_never_read(classifier):
    slide = slide_with_glass()
    progress: list[MapProgress] = []
    batches: list[BatchResult] = []
    found: list[BackgroundFound] = []
    tmap = map_slide(
        slide,
        classifier,
        batch_size=3,
        precision="fp32",
        progress=progress.append,
        on_batch=batches.append,
        on_background=found.append,
    )
    assert (tmap.rows, tmap.cols) == (4, 5)
    tissue = np.zeros((4, 5), bool)
    tissue[:, :2] = True
    tissue[1, 4] = True
    assert (tmap.state == np.where(tissue, CLASSIFIED, BACKGROUND)).all()
    # The glass is told once, so that a live map shows it while the tissue is classified.
    (glass_found,) = found
    told = np.zeros_like(tissue)
    told[glass_found.rows, glass_found.cols] = True
    np.testing.assert_array_equal(told, ~tissue)
    assert np.isnan(tmap.probs[~tissue]).all() and not np.isnan(tmap.probs[tissue]).any()
    assert tmap.complete and tmap.background_count == 11
    # Patch reads (150 px high) never touch a background patch.
    for _, x, y, w, _ in (r for r in slide.reads if r[4] == 150):
        for c in range(x // 150, (x + w) // 150):
            assert tissue[y // 150, c]
    # Callbacks: every tissue patch exactly once, in order, progress counting up.
    cells = [(int(r), int(c)) for b in batches for r, c in zip(b.rows, b.cols, strict=True)]
    assert sorted(cells) == sorted(zip(*np.nonzero(tissue), strict=True))
    assert len(cells) == len(set(cells)) == 9
    for b in batches:
        np.testing.assert_array_equal(b.probs, tmap.probs[b.rows, b.cols])
    assert [p.done for p in progress] == [0, 3, 6, 9]
    assert all(p.total == 9 and p.skipped == 11 for p in progress)
    assert progress[-1].eta == 0 and progress[0].eta is None
    assert all(p.rate > 0 for p in progress[1:])
    assert [p.elapsed for p in progress] == sorted(p.elapsed for p in progress)


def test_without_skipping_background_glass_is_classified(classifier):
    tmap = map_slide(slide_with_glass(), classifier, skip_background=False, precision="fp32")
    assert (tmap.state == CLASSIFIED).all()


def test_cancel_returns_the_partial_map(tissue_slide, classifier):
    token = CancelToken()
    seen = []

    def on_batch(batch: BatchResult) -> None:
        seen.append(len(batch.rows))
        token.cancel()

    tmap = map_slide(
        tissue_slide,
        classifier,
        batch_size=4,
        skip_background=False,
        cancel=token,
        on_batch=on_batch,
    )
    assert seen == [4]
    assert tmap.complete is False
    assert tmap.classified_count == 4 and tmap.pending_count == 8
    assert (tmap.state[0] == CLASSIFIED).all() and (tmap.state[1:] == PENDING).all()
    assert np.isnan(tmap.probs[1:]).all()


def test_cancel_before_start_classifies_nothing(tissue_slide, classifier):
    token = CancelToken()
    token.cancel()
    tmap = map_slide(tissue_slide, classifier, cancel=token)
    assert tmap.complete is False and tmap.classified_count == 0


def test_runs_in_a_worker_thread(tissue_slide, classifier):
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(m=map_slide(tissue_slide, classifier, precision="fp32"))
    )
    worker.start()
    worker.join(60)
    assert result["m"].complete and result["m"].classified_count == 12


def test_auto_precision_stays_close_to_float32(tissue_slide, classifier):
    fp32 = map_slide(tissue_slide, classifier, skip_background=False, precision="fp32")
    auto = map_slide(tissue_slide, classifier, skip_background=False, precision="auto")
    np.testing.assert_allclose(auto.probs, fp32.probs, atol=0.05)


def test_max_patches_classifies_the_first_patches_only(tissue_slide, classifier):
    tmap = map_slide(tissue_slide, classifier, max_patches=5, skip_background=False)
    assert tmap.state.ravel().tolist() == [1] * 5 + [0] * 7
    assert not tmap.complete


# Batch sizes FlakyMemory saw (module level: the engine runs a copy of the network).
CALLS: list[int] = []


class FlakyMemory(nn.Module):
    """A network that runs out of (pretend) GPU memory above ``limit`` patches a call."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_finishes(tissue_slide, classifier):
    CALLS.clear()
    flaky = FlakyMemory(classifier.network, limit=3)
    clf = Classifier(flaky, classifier.info, classifier.device, "flaky-1")
    tmap = map_slide(
        tissue_slide, clf, batch_size=12, skip_background=False, precision="fp32", backend="torch"
    )
    assert tmap.complete
    reference = map_slide(
        tissue_slide, classifier, skip_background=False, precision="fp32", backend="torch"
    )
    np.testing.assert_allclose(tmap.probs, reference.probs, atol=1e-5)
    # The CPU's first batch (4) fails, then chunks of 2 for the rest of the map.
    assert CALLS[:2] == [4, 2] and max(CALLS[1:]) == 2 and sum(CALLS[1:]) == 12


def test_out_of_memory_for_one_patch_is_a_device_error(tissue_slide, classifier):
    clf = Classifier(
        FlakyMemory(classifier.network, limit=0), classifier.info, classifier.device, "flaky-0"
    )
    with pytest.raises(DeviceError, match="out of memory"):
        map_slide(tissue_slide, clf, batch_size=4, skip_background=False, backend="torch")


class BrokenSlide(ArraySlide):
    """Fails like a damaged file once reading goes past the first rows."""

    def __init__(self, array, error: Exception) -> None:
        super().__init__(array)
        self.error = error

    def _read(self, level, x0, y0, x1, y1):
        if y1 > 200:
            raise self.error
        return super()._read(level, x0, y0, x1, y1)


@pytest.mark.parametrize(
    "error", [SlideError("slide.tif is damaged: strip 7 is truncated"), OSError("I/O error")]
)
def test_reader_errors_become_slide_errors(classifier, error):
    slide = BrokenSlide(he_texture(450, 600), error)
    with pytest.raises(SlideError) as info:
        map_slide(slide, classifier, skip_background=False, batch_size=4)
    assert str(error) in str(info.value)


def test_slide_smaller_than_a_patch(classifier):
    with pytest.raises(SlideError, match="too small"):
        map_slide(ArraySlide(he_texture(100, 400)), classifier)


def test_bad_arguments(tissue_slide, classifier):
    with pytest.raises(ValueError, match="batch_size"):
        map_slide(tissue_slide, classifier, batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        map_slide(tissue_slide, classifier, precision="int4")
    with pytest.raises(DeviceError):
        map_slide(tissue_slide, classifier, device="tpu")
