"""The slide's scale in the viewer (badge, Set Slide Scale, remembered per file) and the
question asked before mapping a slide that does not suit the model."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from viewer_support import run_mapping, tiny_classifier, write_strip_tiff

from histoviewer.gui import settings as config
from histoviewer.mapping.checks import SCALE_ASSUMED, SCALE_COARSE, STAIN
from histoviewer.slide import synthetic
from histoviewer.slide.mpp import GIVEN_VIEWER
from histoviewer.slide.synthetic_he import synthetic_he


@pytest.fixture
def unscaled_path(tmp_path):
    """H&E-like tissue in a TIFF that records no resolution at all."""
    path = tmp_path / "unscaled.tif"
    tifffile.imwrite(path, synthetic_he(600, 450, seed=4), photometric="rgb")
    return path


def test_an_assumed_scale_is_shown_until_the_user_sets_it(make_window, unscaled_path, settings):
    window = make_window()
    assert window.open_slide(unscaled_path)
    assert window.slide.mpp_source == "assumed"
    assert window.scale.is_warning()
    assert window.scale_button.text() == "⚠ Scale assumed: 0.495 µm/px"
    assert "Click to set" in window.scale_button.toolTip()

    asked = []

    def answer(current, text):
        asked.append((current, text))
        return 0.25

    window.ask_slide_scale = answer
    window.scale_action.trigger()
    assert asked and asked[0][0] == 0.495 and "records no usable scale" in asked[0][1]
    assert (window.slide.mpp, window.slide.mpp_source) == (0.25, GIVEN_VIEWER)
    assert not window.scale.is_warning() and window.scale_button.text() == "0.25 µm/px"
    window.view.cursorMoved.emit(100.0, 0.0)
    assert "(25.0, 0.0 µm)" in window.cursor_label.text()

    # Remembered for the file: reopening applies it.
    window.close_slide()
    assert not window.scale_button.isVisible()
    assert window.open_slide(unscaled_path)
    assert (window.slide.mpp, window.slide.mpp_source) == (0.25, GIVEN_VIEWER)
    assert config.slide_scale(settings, str(unscaled_path)) == 0.25


def test_a_new_scale_drops_the_map_cut_at_the_old_one(qtbot, make_window, tmp_path):
    window = make_window()
    window.open_slide(write_strip_tiff(tmp_path / "s.tif", 600, 450))
    window.set_classifier(tiny_classifier())
    before = run_mapping(qtbot, window)
    assert (before.rows, before.cols) == (3, 4)
    assert window.set_slide_scale(0.99)  # twice as coarse: a patch is half the pixels
    assert window.tissue_map is None
    # Coarser than the model by 2x: the badge warns, and mapping asks first.
    assert window.scale.is_warning() and "coarse" in window.scale_button.text()
    questions = []
    window.ask_proceed = lambda title, text, proceed: questions.append(text) or True
    after = run_mapping(qtbot, window)
    assert (after.patch_size, after.rows, after.cols) == (75, 6, 8)
    assert len(questions) == 1 and "2.0 times coarser" in questions[0]
    assert [w["kind"] for w in after.warnings] == [SCALE_COARSE]
    # The file's own value brings the file's scale back and forgets the override.
    assert window.set_slide_scale(0.495)
    assert window.slide.mpp_source != GIVEN_VIEWER
    assert config.slide_scale(window.settings, str(window.slide.path)) is None


def test_implausible_scales_and_scales_while_mapping_are_refused(make_window, tmp_path):
    window = make_window()
    window.open_slide(write_strip_tiff(tmp_path / "s.tif", 600, 450))
    errors = []
    window.show_error = lambda title, text: errors.append(text)
    assert not window.set_slide_scale(500.0)
    assert "not a plausible slide scale" in errors[0]
    assert window.slide.mpp == 0.495


@pytest.mark.parametrize(("answer", "started"), [(False, False), (True, True)])
def test_a_slide_that_is_not_he_asks_before_mapping(qtbot, make_window, tmp_path, answer, started):
    grey = synthetic_he(600, 450, seed=5).mean(axis=2).astype(np.uint8)
    path = synthetic.write_strip_tiff(tmp_path / "grey.tif", np.repeat(grey[..., None], 3, axis=2))
    window = make_window()
    window.open_slide(path)
    window.set_classifier(tiny_classifier())
    questions = []

    def ask(title, text, proceed):
        questions.append((title, text, proceed))
        return answer

    window.ask_proceed = ask
    if started:
        tmap = run_mapping(qtbot, window)
        assert [w["kind"] for w in tmap.warnings] == [STAIN]
    else:
        assert window.map_tissue() is None and not window.is_mapping()
    assert questions[0][0] == "Check the slide" and questions[0][2] == "Map Anyway"
    assert "grey" in questions[0][1].lower()
    if started:
        # Agreed once: holds for this slide and model, no second question.
        window.ask_proceed = lambda *a: pytest.fail("asked twice")
        with qtbot.waitSignal(window.mapping_finished, timeout=20_000):
            assert window.remap_tissue() is not None
    else:
        # Cancelled: Map Tissue asks again rather than silently doing nothing.
        assert window.map_tissue() is None and len(questions) == 2


def test_a_he_slide_of_known_scale_maps_without_a_question(qtbot, make_window, tmp_path):
    window = make_window()
    window.open_slide(write_strip_tiff(tmp_path / "s.tif", 600, 450))
    window.set_classifier(tiny_classifier())
    assert not window.scale.is_warning() and window.scale_button.text() == "0.495 µm/px"
    tmap = run_mapping(qtbot, window)  # the autouse guard fails on any question
    assert tmap.warnings == []


def test_an_assumed_scale_alone_maps_without_a_question(qtbot, make_window, unscaled_path):
    window = make_window()
    window.open_slide(unscaled_path)
    window.set_classifier(tiny_classifier())
    tmap = run_mapping(qtbot, window)  # the badge says it; no dialog
    assert [w["kind"] for w in tmap.warnings] == [SCALE_ASSUMED]
