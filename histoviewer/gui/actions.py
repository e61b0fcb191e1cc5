"""The main window's actions, menus, toolbar and shortcuts.

:func:`build_actions` creates every ``QAction`` as an attribute of the window
(``window.open_action``, ``window.map_action``, ...), :func:`build_menus` and
:func:`build_toolbar` place them, and :func:`update_actions` enables each one for
the viewer's state. The slots are the window's public commands
(:class:`ViewerCommands`), so the actions only wire, they never decide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QToolButton

from histoviewer.classes import class_label, default_classes
from histoviewer.gui.exporting import (
    DATA_EXPORTS,
    EXPORTING,
    PICTURE_EXPORTS,
    SINGLE_EXPORTS,
    all_formats_tip,
    export_tip,
)
from histoviewer.gui.icons import icon
from histoviewer.gui.probabilities import color_icon
from histoviewer.slide.demo_slide import DEMO_MISSING, demo_slide_path
from histoviewer.slide.magnification import PRESETS, format_magnification
from histoviewer.viewer_state import LOADING_MODEL, MAPPING


class ViewerCommands(Protocol):
    """What the actions need of the window: its view, state and public commands.

    The actions are stored on it as attributes (``open_action``, ...).
    """

    view: Any  # the SlideView: zoom actions call it
    labelling: Any  # the LabelController: label actions call it
    state: Any  # the ViewerState: update_actions reads it

    def choose_slide(self) -> None: ...
    def open_demo_slide(self) -> bool: ...
    def close_slide(self) -> None: ...
    def close(self) -> bool: ...
    def set_overlay_visible(self, visible: bool) -> None: ...
    def set_confidence_shading(self, on: bool) -> None: ...
    def set_uncertain_only(self, on: bool) -> None: ...
    def show_only_class(self, name: str | None) -> None: ...
    def show_heatmap(self, name: str | None) -> None: ...
    def show_all_classes(self) -> None: ...
    def map_tissue(self) -> int | None: ...
    def map_region(self) -> bool: ...
    def map_current_view(self) -> int | None: ...
    def remap_tissue(self) -> int | None: ...
    def cancel_mapping(self) -> None: ...
    def edit_mapping_settings(self) -> None: ...
    def choose_slide_scale(self) -> None: ...
    def choose_model(self) -> None: ...
    def choose_model_folder(self) -> None: ...
    def choose_view_export(self) -> None: ...
    def choose_export_folder(self) -> None: ...
    def choose_export(self, fmt: str) -> None: ...
    def fill_recent_menu(self) -> None: ...
    def zoom_to_magnification(self, magnification: float) -> None: ...
    def show_model_info(self) -> object: ...
    def open_training_dialog(self) -> object: ...
    def show_shortcuts(self) -> None: ...
    def show_about(self) -> None: ...
    def __setattr__(self, name: str, value: Any) -> None: ...
    def __getattr__(self, name: str) -> Any: ...


def make_action(
    parent: QObject,
    text: str,
    slot: object,
    *,
    shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
    icon_name: str | None = None,
    tip: str | None = None,
    checkable: bool = False,
) -> QAction:
    """A QAction connected to ``slot`` (``toggled`` when checkable, else ``triggered``)."""
    action = QAction(text, parent)
    if icon_name:
        action.setIcon(icon(icon_name))
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    if tip:
        action.setStatusTip(tip)
        action.setToolTip(tip)
    action.setCheckable(checkable)
    (action.toggled if checkable else action.triggered).connect(slot)
    return action


def build_actions(w: ViewerCommands) -> None:
    """Create the window's actions (the view must exist: zoom actions call it)."""
    std = QKeySequence.StandardKey

    def a(*args, **kwargs) -> QAction:
        return make_action(w, *args, **kwargs)

    w.open_action = a(
        "&Open Slide...",
        w.choose_slide,
        shortcut=std.Open,
        icon_name="open",
        tip="Open a whole-slide image",
    )
    w.open_demo_action = a(
        "Open &Demo Slide",
        w.open_demo_slide,
        icon_name="histoviewer",
        tip="Open a small slide made of Kather 2016 test tiles, whose true classes are known: "
        "once mapped, the Map panel gives the map's agreement with them",
    )
    if demo_slide_path() is None:
        w.open_demo_action.setEnabled(False)
        w.open_demo_action.setToolTip(DEMO_MISSING)
        w.open_demo_action.setStatusTip(DEMO_MISSING)
    w.close_action = a(
        "&Close Slide", w.close_slide, shortcut=std.Close, icon_name="close", tip="Close the slide"
    )
    w.quit_action = a("&Quit", w.close, shortcut=std.Quit)
    w.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
    w.zoom_in_action = a(
        "Zoom &In", w.view.zoom_in, shortcut=std.ZoomIn, icon_name="zoom-in", tip="Zoom in"
    )
    w.zoom_out_action = a(
        "Zoom &Out", w.view.zoom_out, shortcut=std.ZoomOut, icon_name="zoom-out", tip="Zoom out"
    )
    w.fit_action = a(
        "&Fit to Window", w.view.fit, shortcut="Ctrl+0", icon_name="fit", tip="Show the whole slide"
    )
    w.actual_size_action = a(
        "&Actual Size",
        w.view.actual_size,
        shortcut="Ctrl+1",
        icon_name="actual-size",
        tip="One slide pixel per screen pixel",
    )
    w.overlay_action = a(
        "Show &Overlay",
        w.set_overlay_visible,
        shortcut="O",
        icon_name="overlay",
        tip="Show or hide the tissue map (O)",
        checkable=True,
    )
    w.overlay_action.setChecked(w.state.view_settings.overlay_visible)
    w.shading_action = a(
        "&Confidence Shading",
        w.set_confidence_shading,
        tip="Draw patches fainter where the model is unsure",
        checkable=True,
    )
    w.uncertain_action = a(
        "&Uncertain Only",
        w.set_uncertain_only,
        tip="Draw only the patches the model is unsure of (threshold: Review panel)",
        checkable=True,
    )
    # Esc leaves solo or the heatmap; enabled only then, so that otherwise Esc stays the
    # view's (cancel Map Region) and the labels' (select no patch, which takes it first).
    w.show_all_classes_action = a(
        "Show All Classes",
        w.show_all_classes,
        shortcut="Esc",
        tip="Leave Show Only Class or the probability heatmap: draw every class (Esc)",
    )
    w.show_all_classes_action.setEnabled(False)
    w.map_action = a(
        "&Map Tissue",
        w.map_tissue,
        shortcut="Ctrl+M",
        icon_name="map",
        tip="Classify every patch of the slide, those in view first",
    )
    w.map_region_action = a(
        "Map &Region",
        w.map_region,
        shortcut="Ctrl+R",
        icon_name="map-region",
        tip="Drag a rectangle on the slide and map only that region (Esc cancels)",
    )
    w.map_view_action = a(
        "Map Current &View",
        w.map_current_view,
        tip="Map only the part of the slide the view shows",
    )
    w.remap_action = a(
        "&Re-map Tissue",
        w.remap_tissue,
        shortcut="Ctrl+Shift+M",
        tip="Map the whole slide afresh and replace the saved map",
    )
    w.cancel_action = a(
        "&Cancel Mapping",
        w.cancel_mapping,
        icon_name="cancel",
        tip="Stop mapping and keep the patches done so far",
    )
    w.settings_action = a(
        "Mapping &Settings...",
        w.edit_mapping_settings,
        icon_name="settings",
        tip="Stride, device, batch size, background skipping",
    )
    w.scale_action = a(
        "Set Slide S&cale...",
        w.choose_slide_scale,
        tip="Set the slide's microns per pixel (when its file records none or a wrong one)",
    )
    w.load_model_action = a(
        "&Load Model...",
        w.choose_model,
        shortcut="Ctrl+L",
        icon_name="model",
        tip="Load a tissue classifier",
    )
    w.load_model_folder_action = a(
        "Load Model &Folder...",
        w.choose_model_folder,
        tip="Load a model folder holding model.safetensors",
    )
    w.model_info_action = a(
        "Model &Info...",
        w.show_model_info,
        shortcut="Ctrl+I",
        tip="Name, test accuracy, classes, scale and training of the model in use",
    )
    w.train_action = a(
        "&Train New Model...",
        w.open_training_dialog,
        tip="Train a tissue classifier on your own labelled tiles",
    )
    w.export_view_action = a(
        "&View Image with Overlay...",
        w.choose_view_export,
        tip="Save what the view shows, with the legend",
    )
    w.export_all_action = a(
        "&All Formats to Folder...", w.choose_export_folder, tip=all_formats_tip()
    )
    w.export_actions = {
        fmt: a(f"{label}...", lambda _=False, f=fmt: w.choose_export(f), tip=export_tip(fmt))
        for fmt, (label, _) in SINGLE_EXPORTS.items()
    }
    w.export_report_action = w.export_actions["report"]
    # The report is what a pathologist keeps: also straight under File.
    w.file_report_action = a(
        "Export &Report (PDF)...",
        lambda _=False: w.choose_export("report"),
        tip=export_tip("report"),
    )
    # The objective magnifications pathologists think in (40x: about 0.25 µm/px).
    w.magnification_actions = [
        a(
            f"{format_magnification(mag)} (like a {format_magnification(mag)} objective)",
            lambda _=False, m=mag: w.zoom_to_magnification(m),
            shortcut=str(i + 1),
            tip=f"Show the slide as a {format_magnification(mag)} objective would",
        )
        for i, mag in enumerate(PRESETS)
    ]
    w.import_labels_action = a(
        "&Import Labels (GeoJSON)...",
        w.labelling.choose_import,
        tip="Add patch labels from QuPath GeoJSON annotations (classes named as the model's)",
    )
    w.export_labels_action = a(
        "E&xport Labels (GeoJSON)...",
        w.labelling.choose_export,
        tip="Save this slide's patch labels as QuPath GeoJSON annotations",
    )
    w.undo_labels_action = a(
        "&Undo Label Change", w.labelling.undo, shortcut=std.Undo, tip="Undo the last label change"
    )
    w.redo_labels_action = a(
        "&Redo Label Change", w.labelling.redo, tip="Redo the label change undone last"
    )
    # Ctrl+Shift+Z everywhere, and the platform's own Redo keys (Ctrl+Y on Windows).
    redo_keys = dict.fromkeys(["Ctrl+Shift+Z", QKeySequence(std.Redo).toString()])
    w.redo_labels_action.setShortcuts([QKeySequence(k) for k in redo_keys if k])
    w.shortcuts_action = a("&Keyboard Shortcuts", w.show_shortcuts, shortcut=std.HelpContents)
    w.about_action = a("&About HistoViewer", w.show_about)


def build_menus(w: ViewerCommands) -> None:
    bar = w.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addAction(w.open_action)
    w.recent_menu = file_menu.addMenu("Open &Recent")
    w.recent_menu.aboutToShow.connect(w.fill_recent_menu)
    file_menu.addAction(w.close_action)
    file_menu.addSeparator()
    # The map's data, its pictures and report, all of them at once, then the view.
    w.export_menu = file_menu.addMenu(icon("export"), "&Export")
    w.export_menu.setToolTipsVisible(True)
    for group in (DATA_EXPORTS, PICTURE_EXPORTS):
        for fmt in group:
            w.export_menu.addAction(w.export_actions[fmt])
        w.export_menu.addSeparator()
    w.export_menu.addAction(w.export_all_action)
    w.export_menu.addSeparator()
    w.export_menu.addAction(w.export_view_action)
    file_menu.addAction(w.file_report_action)
    file_menu.addSeparator()
    file_menu.addAction(w.import_labels_action)
    file_menu.addAction(w.export_labels_action)
    file_menu.addSeparator()
    file_menu.addAction(w.quit_action)

    edit_menu = bar.addMenu("&Edit")
    edit_menu.addAction(w.undo_labels_action)
    edit_menu.addAction(w.redo_labels_action)

    view_menu = bar.addMenu("&View")
    for action in (w.zoom_in_action, w.zoom_out_action, w.fit_action, w.actual_size_action):
        view_menu.addAction(action)
    w.magnification_menu = view_menu.addMenu("&Magnification")
    for action in w.magnification_actions:
        w.magnification_menu.addAction(action)
    view_menu.addSeparator()
    view_menu.addAction(w.overlay_action)
    view_menu.addAction(w.shading_action)
    view_menu.addAction(w.uncertain_action)
    # Filled when shown: the classes of the map shown.
    w.solo_menu = view_menu.addMenu("Show &Only Class")
    w.solo_menu.aboutToShow.connect(lambda: fill_solo_menu(w))
    w.heatmap_menu = view_menu.addMenu("Probability &Heatmap")
    w.heatmap_menu.aboutToShow.connect(lambda: fill_heatmap_menu(w))
    w.addAction(w.show_all_classes_action)  # its shortcut works with no menu open
    view_menu.addSeparator()
    for dock in (w.overview_dock, w.map_dock, w.patch_dock, w.review_dock):
        view_menu.addAction(dock.toggleViewAction())

    analysis = bar.addMenu("&Analysis")
    for action in (w.map_action, w.map_region_action, w.map_view_action):
        analysis.addAction(action)
    analysis.addAction(w.remap_action)
    analysis.addAction(w.cancel_action)
    analysis.addSeparator()
    analysis.addAction(w.scale_action)
    analysis.addAction(w.settings_action)

    w.model_menu = bar.addMenu("&Model")
    w.model_menu.addAction(w.load_model_action)
    w.model_menu.addAction(w.load_model_folder_action)
    w.model_menu.addSeparator()
    w.model_menu.addAction(w.model_info_action)
    w.model_menu.addSeparator()
    w.model_menu.addAction(w.train_action)

    help_menu = bar.addMenu("&Help")
    help_menu.addAction(w.shortcuts_action)
    help_menu.addAction(w.open_demo_action)
    help_menu.addSeparator()
    help_menu.addAction(w.about_action)

    # Right-click on the slide: the mapping actions where the user looks.
    view = w.view
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
    for action in (w.map_action, w.map_region_action, w.map_view_action, w.cancel_action):
        view.addAction(action)


def shown_classes(w: ViewerCommands) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of the classes the view can show: the map's, else the model's,
    else the eight default ones."""
    tmap, clf = w.state.tissue_map, w.state.classifier
    if tmap is not None:
        return list(zip(tmap.class_names, tmap.class_colors, strict=True))
    if clf is not None:
        return list(zip(clf.info.class_names, clf.info.class_colors, strict=True))
    return [(c.name, c.color) for c in default_classes()]


def _fill_class_menu(
    menu: QMenu,
    first: str,
    chosen: str | None,
    choose: Callable[[str | None], None],
    w: ViewerCommands,
) -> None:
    menu.clear()
    group = QActionGroup(menu)
    action = menu.addAction(first)
    action.setCheckable(True)
    action.setChecked(chosen is None)
    action.triggered.connect(lambda: choose(None))
    group.addAction(action)
    menu.addSeparator()
    for name, color in shown_classes(w):
        action = menu.addAction(color_icon(color), class_label(name))
        action.setCheckable(True)
        action.setChecked(chosen == name)
        action.triggered.connect(lambda _=False, n=name: choose(n))
        group.addAction(action)


def fill_solo_menu(w: ViewerCommands) -> None:
    """View > Show Only Class: All Classes, then one entry per class (exclusive)."""
    solo = w.state.view_settings.solo_class
    _fill_class_menu(w.solo_menu, "&All Classes\tEsc", solo, w.show_only_class, w)


def fill_heatmap_menu(w: ViewerCommands) -> None:
    """View > Probability Heatmap: Off (the class colours), then one entry per class."""
    heat = w.state.view_settings.heatmap_class
    _fill_class_menu(w.heatmap_menu, "&Off: Class Colours", heat, w.show_heatmap, w)


def build_toolbar(w: ViewerCommands) -> None:
    tools = w.addToolBar("Main")
    tools.setObjectName("main_toolbar")
    tools.setMovable(False)
    tools.addAction(w.open_action)
    tools.addSeparator()
    for action in (w.zoom_in_action, w.zoom_out_action, w.fit_action, w.actual_size_action):
        tools.addAction(action)
    tools.addSeparator()
    tools.addAction(w.map_action)
    tools.addAction(w.map_region_action)
    tools.addAction(w.cancel_action)
    tools.addAction(w.overlay_action)
    export_button = QToolButton()
    export_button.setIcon(icon("export"))
    export_button.setToolTip("Export the map or the view")
    export_button.setMenu(w.export_menu)
    export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    w.export_button = export_button
    tools.addWidget(export_button)
    tools.addSeparator()
    tools.addAction(w.load_model_action)
    tools.addAction(w.settings_action)


def update_actions(w: ViewerCommands) -> None:
    """Enable each action for the viewer's state (slide, model, map, running jobs)."""
    st = w.state
    has_slide = st.slide is not None
    has_map = st.tissue_map is not None
    mapping = st.is_running(MAPPING)
    loading = st.is_running(LOADING_MODEL)
    w.close_action.setEnabled(has_slide)
    for action in (
        w.zoom_in_action,
        w.zoom_out_action,
        w.fit_action,
        w.actual_size_action,
        w.export_view_action,
        *w.magnification_actions,
    ):
        action.setEnabled(has_slide)
    # Map Tissue stays enabled without a model: it then says how to get one.
    w.map_action.setEnabled(not mapping)
    w.map_region_action.setEnabled(has_slide and not mapping)
    w.map_view_action.setEnabled(has_slide and not mapping)
    # Not mapping: the map shown is the last result.
    w.remap_action.setEnabled(not mapping and has_map)
    w.cancel_action.setEnabled(mapping)
    w.scale_action.setEnabled(has_slide and not mapping)
    w.import_labels_action.setEnabled(has_slide and st.classifier is not None)
    w.export_labels_action.setEnabled(has_slide and bool(st.labels))
    w.undo_labels_action.setEnabled(st.can_undo_labels)
    w.redo_labels_action.setEnabled(st.can_redo_labels)
    w.solo_menu.setEnabled(has_map)
    w.heatmap_menu.setEnabled(has_map)
    # One export at a time; the report and All refuse a map being made, saying why.
    exporting = st.is_running(EXPORTING)
    for action in [*w.export_actions.values(), w.export_all_action, w.file_report_action]:
        action.setEnabled(has_map and not exporting)
    w.load_model_action.setEnabled(not loading)
    w.load_model_folder_action.setEnabled(not loading)
    shown = st.tissue_map if not mapping else None
    w.model_info_action.setEnabled(st.classifier is not None)
    if st.classifier is None:
        w.map_action.setStatusTip("Load a model first (Model > Load Model...)")
    elif shown is not None and not shown.complete:
        w.map_action.setStatusTip("Continue the partial map: classify the patches not done yet")
    else:
        w.map_action.setStatusTip("Classify every patch of the slide, those in view first")
