"""What the engine classifies first and in what batches; regions; continuing partial maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mapping_support import RecordingSlide, glass, he_texture, tiny_classifier

from histoviewer.mapping.engine import BatchResult, MapProgress, map_slide
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.schedule import BatchSizer, PatchQueue, region_mask
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, PENDING
from histoviewer.slide import ArraySlide
from histoviewer.tasks import CancelToken


@pytest.fixture
def wide_slide() -> RecordingSlide:
    """1500 x 900 px of tissue: a 6 x 10 grid of 150 px patches."""
    return RecordingSlide(he_texture(900, 1500, seed=11))


def grid_of(slide, classifier, stride=None):
    return make_grid(slide, classifier.info, stride)


def cells(batches: list[BatchResult]) -> list[tuple[int, int]]:
    return [(int(r), int(c)) for b in batches for r, c in zip(b.rows, b.cols, strict=True)]


# --- the queue ------------------------------------------------------------------------


def test_queue_without_focus_goes_row_by_row(wide_slide, classifier):
    grid = grid_of(wide_slide, classifier)
    todo = np.ones((grid.rows, grid.cols), bool)
    todo[2, 3] = False
    queue = PatchQueue(grid, todo)
    taken = queue.take(7) + queue.take(100)
    expected = [(r, c) for r in range(grid.rows) for c in range(grid.cols) if (r, c) != (2, 3)]
    assert taken == expected and len(queue) == 0 and queue.take(5) == []


def test_queue_hands_out_the_focus_first_then_ring_by_ring(wide_slide, classifier):
    grid = grid_of(wide_slide, classifier)
    queue = PatchQueue(grid, np.ones((6, 10), bool), focus=lambda: (900, 300, 300, 300))
    first = queue.take(4)
    # The 2 x 2 patches under the view (rows 2-3, columns 6-7), row by row.
    assert first == [(2, 6), (2, 7), (3, 6), (3, 7)]
    ring = queue.take(12)
    assert sorted(ring) == sorted(
        (r, c) for r in range(1, 5) for c in range(5, 9) if not (2 <= r <= 3 and 6 <= c <= 7)
    )
    rest = queue.take(1000)
    distances = [max(max(0, 2 - r, r - 3), max(0, 6 - c, c - 7)) for r, c in rest]
    assert distances == sorted(distances) and len(set(first + ring + rest)) == 60


def test_queue_follows_a_moved_focus_and_never_repeats(wide_slide, classifier):
    grid = grid_of(wide_slide, classifier)
    view = [(0, 0, 150, 150)]
    queue = PatchQueue(grid, np.ones((6, 10), bool), focus=lambda: view[0])
    assert queue.take(1) == [(0, 0)]
    view[0] = (1350, 750, 150, 150)  # the bottom-right corner
    assert queue.take(1) == [(5, 9)]
    view[0] = (0, 0, 300, 150)  # back: (0, 0) is taken, its neighbour is not
    assert queue.take(1) == [(0, 1)]
    seen = [(0, 0), (5, 9), (0, 1), *queue.take(1000)]
    assert len(seen) == len(set(seen)) == 60


def test_a_failing_focus_falls_back_to_row_order(wide_slide, classifier):
    grid = grid_of(wide_slide, classifier)

    def broken():
        raise RuntimeError("the view is gone")

    queue = PatchQueue(grid, np.ones((6, 10), bool), focus=broken)
    assert queue.take(3) == [(0, 0), (0, 1), (0, 2)]


def test_region_mask_takes_every_patch_the_region_touches(wide_slide, classifier):
    grid = grid_of(wide_slide, classifier)
    mask = region_mask(grid, (160, 10, 200, 150))  # x 160-360, y 10-160
    assert np.argwhere(mask).tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    with pytest.raises(ValueError, match="outside the slide"):
        region_mask(grid, (5000, 0, 100, 100))
    with pytest.raises(ValueError, match="width and a height"):
        region_mask(grid, (0, 0, 0, 100))


def test_batch_sizes_start_small_on_a_slow_device_and_grow_to_about_a_second():
    sizer = BatchSizer(64, adaptive=True)
    assert sizer.next() == 4
    sizer.record(4, 0.4)  # 10 patches/s: about a second is 10 patches
    assert sizer.next() == 8  # grows at most twofold, rounded down to 8
    sizer.record(8, 0.8)
    assert sizer.next() == 8
    sizer.record(8, 0.05)  # fast now: doubles up to the limit
    assert sizer.next() == 16
    for _ in range(3):
        sizer.record(sizer.next(), 0.01)
    assert sizer.next() == 64
    sizer.record(64, 5.0)  # slowed down: back to one second's worth (12.8 -> 12)
    assert sizer.next() == 12
    sizer.record(12, 0.97)
    assert sizer.next() == 12
    sizer.record(12, 0.6)  # 20 fit: 16, not a new odd size
    assert sizer.next() == 16
    fast = BatchSizer(64, adaptive=False)
    fast.record(64, 100.0)
    assert fast.next() == 64


# --- the engine -----------------------------------------------------------------------


def test_the_patches_in_view_are_classified_first(wide_slide, classifier):
    seen: list[BatchResult] = []
    view = (1050, 450, 450, 450)  # the bottom-right 3 x 3 patches
    tmap = map_slide(
        wide_slide,
        classifier,
        batch_size=9,
        skip_background=False,
        focus=lambda: view,
        on_batch=seen.append,
    )
    assert tmap.complete
    order = cells(seen)
    assert sorted(order[:9]) == [(r, c) for r in range(3, 6) for c in range(7, 10)]
    reference = map_slide(wide_slide, classifier, skip_background=False)
    np.testing.assert_allclose(tmap.probs, reference.probs, atol=1e-6)


def test_a_region_maps_only_its_patches(wide_slide, classifier):
    tmap = map_slide(wide_slide, classifier, skip_background=False, region=(300, 150, 300, 300))
    done = np.argwhere(tmap.state == CLASSIFIED).tolist()
    assert done == [[1, 2], [1, 3], [2, 2], [2, 3]]
    assert not tmap.complete and tmap.pending_count == 56


def cancel_after(n_batches: int):
    token = CancelToken()
    seen = []

    def on_batch(batch: BatchResult) -> None:
        seen.append(batch)
        if len(seen) == n_batches:
            token.cancel()

    return token, on_batch


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_cancelled_map_continued_equals_an_uninterrupted_one(wide_slide, backend):
    clf = tiny_classifier(seed=3)
    # Glass on the left: the continued map must keep the background it found.
    image = he_texture(900, 1500, seed=11)
    image[:, :300] = glass(900, 300)
    slide = ArraySlide(image)
    whole = map_slide(slide, clf, precision="fp32", backend=backend, batch_size=6)
    token, on_batch = cancel_after(2)
    partial = map_slide(
        slide,
        clf,
        precision="fp32",
        backend=backend,
        batch_size=6,
        cancel=token,
        on_batch=on_batch,
    )
    # Three batches of 4 are read ahead before the first result is in.
    assert not partial.complete and partial.classified_count == 4 + 4
    state_before = partial.state.copy()
    progress: list[MapProgress] = []
    seen: list[BatchResult] = []
    rest = map_slide(
        slide,
        clf,
        precision="fp32",
        backend=backend,
        batch_size=6,
        resume=partial,
        progress=progress.append,
        on_batch=seen.append,
    )
    assert rest.complete and rest is not partial
    np.testing.assert_array_equal(partial.state, state_before)  # left as it was
    np.testing.assert_array_equal(rest.state, whole.state)
    assert (rest.state == BACKGROUND).sum() == 12
    np.testing.assert_array_equal(rest.probs, whole.probs)  # bit for bit
    # Only the missing patches were classified, and progress counts the earlier ones.
    assert len(cells(seen)) == whole.classified_count - 8
    assert not set(cells(seen)) & {tuple(x) for x in np.argwhere(state_before == CLASSIFIED)}
    assert progress[0].done == 8 and progress[-1].done == progress[-1].total == 48
    assert rest.elapsed > partial.elapsed


def test_a_region_then_the_rest_classifies_each_patch_once(wide_slide, classifier):
    first = map_slide(wide_slide, classifier, skip_background=False, region=(0, 0, 300, 300))
    seen: list[BatchResult] = []
    rest = map_slide(
        wide_slide, classifier, skip_background=False, resume=first, on_batch=seen.append
    )
    assert rest.complete and len(cells(seen)) == 60 - 4
    whole = map_slide(wide_slide, classifier, skip_background=False)
    np.testing.assert_array_equal(rest.probs, whole.probs)


def test_a_partial_map_of_something_else_is_refused(wide_slide, classifier):
    token = CancelToken()
    token.cancel()
    partial = map_slide(wide_slide, classifier, skip_background=False, cancel=token)
    with pytest.raises(ValueError, match="another patch grid"):
        map_slide(wide_slide, classifier, stride=75, resume=partial)
    other = tiny_classifier(seed=9)
    with pytest.raises(ValueError, match="another model"):
        map_slide(wide_slide, other, resume=partial)
    renamed = dataclasses.replace(partial, slide={**partial.slide, "dimensions": [1, 1]})
    with pytest.raises(ValueError, match="another slide"):
        map_slide(wide_slide, classifier, resume=renamed)
    assert (partial.state == PENDING).all()


def test_the_first_batches_on_a_cpu_are_small(wide_slide, classifier):
    seen: list[BatchResult] = []
    map_slide(wide_slide, classifier, skip_background=False, batch_size=64, on_batch=seen.append)
    sizes = [len(b.rows) for b in seen]
    assert sizes[:3] == [4, 4, 4] and sum(sizes) == 60 and max(sizes) <= 64
