"""The viewer's Qt-free state: its rules and the signals every change emits."""

from __future__ import annotations

import numpy as np
import pytest

from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import ModelInfo
from histoviewer.slide import ArraySlide
from histoviewer.viewer_state import (
    LOADING_MODEL,
    MAPPING,
    MappingSettings,
    ViewerState,
    ViewSettings,
)


class Recorder:
    """Every signal of a state, in order, as (name, args)."""

    NAMES = (
        "slide_changed",
        "slide_scale_changed",
        "model_changed",
        "map_changed",
        "map_updated",
        "selection_changed",
        "mapping_settings_changed",
        "view_settings_changed",
        "jobs_changed",
        "message",
    )

    def __init__(self, state: ViewerState) -> None:
        self.events: list[tuple[str, tuple]] = []
        for name in self.NAMES:
            getattr(state, name).connect(lambda *args, n=name: self.events.append((n, args)))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def clear(self) -> None:
        self.events.clear()


def a_slide(size: int = 300) -> ArraySlide:
    return ArraySlide(np.full((size, size, 3), 200, np.uint8), mpp=0.495)


def a_map(slide: ArraySlide) -> TissueMap:
    info = ModelInfo.recipe(arch="resnet18", input_size=32)
    grid = make_grid(slide, info)
    return TissueMap.empty(grid, info.class_names, info.class_colors, mpp=slide.mpp)


@pytest.fixture
def state() -> ViewerState:
    return ViewerState()


def test_a_new_slide_drops_the_map_and_selection_first(state):
    first, second = a_slide(), a_slide()
    state.set_slide(first)
    tmap = a_map(first)
    state.set_map(tmap)
    state.set_selection((1, 1))
    seen = Recorder(state)

    state.set_slide(second)

    assert state.slide is second and state.tissue_map is None and state.selection is None
    # Listeners of the slide see a state without the old map.
    assert seen.names() == ["selection_changed", "map_changed", "slide_changed"]
    assert seen.events[-1][1] == (second, first)
    seen.clear()
    state.set_slide(second)  # the same slide again: nothing happens
    assert seen.events == []


def test_a_new_model_drops_the_map_and_remembers_its_file(state):
    state.set_slide(a_slide())
    state.set_map(a_map(state.slide))
    seen = Recorder(state)
    model = object()
    state.set_model(model, "/models/run/best.safetensors")
    assert state.classifier is model and state.model_path == "/models/run/best.safetensors"
    assert state.tissue_map is None
    assert seen.names() == ["map_changed", "model_changed"]
    state.set_model(None, "/ignored")
    assert state.model_path is None  # no model, no file


def test_a_scale_change_drops_the_map(state):
    seen = Recorder(state)
    state.scale_changed()  # no slide: nothing to say
    assert seen.events == []
    slide = a_slide()
    state.set_slide(slide)
    state.set_map(a_map(slide))
    seen.clear()
    state.scale_changed()
    assert state.tissue_map is None
    assert seen.names() == ["map_changed", "slide_scale_changed"]


def test_the_selection_stays_inside_the_map_shown(state):
    slide = a_slide()
    state.set_slide(slide)
    assert state.selection is None
    state.set_selection((0, 0))  # no map: nothing to select
    assert state.selection is None

    tmap = a_map(slide)
    state.set_map(tmap)
    state.set_selection((tmap.rows - 1, tmap.cols - 1))
    assert state.selection == (tmap.rows - 1, tmap.cols - 1)
    state.set_selection((tmap.rows, 0))  # outside: nothing selected
    assert state.selection is None

    state.set_selection((1, 1))
    smaller = TissueMap(
        probs=tmap.probs[:1, :1].copy(),
        state=tmap.state[:1, :1].copy(),
        class_names=tmap.class_names,
        class_colors=tmap.class_colors,
        patch_size=tmap.patch_size,
        stride=tmap.stride,
        mpp=tmap.mpp,
    )
    seen = Recorder(state)
    state.set_map(smaller)  # (1, 1) is not in it
    assert state.selection is None
    assert seen.names() == ["selection_changed", "map_changed"]


def test_a_live_map_ends_as_a_result_and_grows_meanwhile(state):
    slide = a_slide()
    state.set_slide(slide)
    tmap = a_map(slide)
    seen = Recorder(state)
    state.set_map(tmap, live=True)
    assert state.map_is_live
    state.map_grew()
    state.set_map(tmap)  # the same map, finished
    assert not state.map_is_live
    assert seen.names() == ["map_changed", "map_updated", "map_changed"]
    seen.clear()
    state.set_map(tmap)
    assert seen.events == []


def test_settings_and_jobs_emit_only_real_changes(state):
    seen = Recorder(state)
    state.set_mapping_settings(MappingSettings())  # the defaults again
    state.update_view_settings(opacity=ViewSettings().opacity)
    state.set_running(MAPPING, False)
    assert seen.events == []

    state.set_mapping_settings(MappingSettings(stride=100))
    state.update_view_settings(opacity=0.8, confidence_shading=True)
    state.set_running(MAPPING, True)
    state.set_running(MAPPING, True)
    assert state.mapping_settings.stride == 100
    assert state.view_settings == ViewSettings(opacity=0.8, confidence_shading=True)
    assert state.is_running(MAPPING) and not state.is_running(LOADING_MODEL)
    assert seen.names() == ["mapping_settings_changed", "view_settings_changed", "jobs_changed"]
    with pytest.raises(TypeError):
        state.update_view_settings(colour="red")


def test_messages_reach_listeners(state):
    seen = Recorder(state)
    state.notify("Mapped 12 patches.", 5000)
    state.notify("Saved.")
    assert seen.events == [("message", ("Mapped 12 patches.", 5000)), ("message", ("Saved.", 8000))]
