"""The mapping job's lifecycle: start, paint batch by batch, cancel, finish, cache.

:class:`MappingController` owns the window's mapping :class:`JobRunner`, the map
a running job fills in (``live``) and the finished one shown (``result``). A job
made for a slide or model that has since been replaced is superseded by
:meth:`MappingController.reset` and its results are dropped; a slide reader still
being read by such a job is closed only when the job's thread has ended
(:meth:`MappingController.retire`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from histoviewer.errors import HistoViewerError
from histoviewer.gui.workers import JobFailure, JobRunner
from histoviewer.mapping.cache import MapKey, map_key
from histoviewer.mapping.checks import SCALE_ASSUMED, SlideWarning, check_slide
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap
from histoviewer.slide import SlideReader
from histoviewer.tasks import format_duration

if TYPE_CHECKING:
    from histoviewer.mapping.engine import BatchResult, MapProgress

if TYPE_CHECKING:
    from histoviewer.gui.mainwindow import MainWindow

log = logging.getLogger(__name__)

NO_MODEL_TEXT = (
    "Mapping needs a tissue classifier, and none is loaded. Load one with Model > Load "
    "Model... (a .safetensors file, a model folder, or a .pth.tar / .pt checkpoint), or "
    "train one on the Kather 2016 tiles with Model > Train New Model... (or 'histoviewer "
    "train') and use the result."
)


def progress_text(p: MapProgress) -> str:
    """'412 / 1,089 patches · 35.2 patches/s · 0:19 left'."""
    return (
        f"{p.done:,} / {p.total:,} patches · {p.rate:.1f} patches/s · {format_duration(p.eta)} left"
    )


class MappingController(QObject):
    """Runs Analysis > Map Tissue for ``window`` and keeps the maps it produced."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.partial.connect(self._on_batch)
        self.runner.succeeded.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.finished.connect(self._on_thread_finished)
        self.result: TissueMap | None = None  # the finished (or cancelled) map shown
        self.live: TissueMap | None = None  # the map a running job fills in
        self._job_key: MapKey | None = None
        self._job_slides: dict[int, SlideReader] = {}
        self._retired: dict[int, SlideReader] = {}  # readers to close when their job ends
        # The last slide checked: (reader, model fingerprint, scale) -> its warnings and
        # whether the user chose to map it anyway.
        self._checked: tuple[tuple, list[SlideWarning], bool] | None = None

    @property
    def shown(self) -> TissueMap | None:
        """The map being filled in while mapping, else the last result."""
        return self.live if self.live is not None else self.result

    def is_busy(self) -> bool:
        return self.runner.is_busy()

    def reset(self) -> None:
        """Drop the running job's results and both maps (new slide or model)."""
        self.runner.cancel()
        self.live = None
        self.result = None

    def retire(self, reader: SlideReader) -> None:
        """Close ``reader`` now, or when the jobs still reading it have ended."""
        busy = [j for j, r in self._job_slides.items() if r is reader]
        if busy:
            self._retired[busy[-1]] = reader
        else:
            reader.close()

    def key(self) -> MapKey | None:
        w = self.window
        if w.slide is None or w.classifier is None:
            return None
        s = w.mapping_settings
        return map_key(w.slide, w.classifier, s.stride, s.skip_background)

    def restore_cached(self) -> bool:
        """Show the saved map for the current slide, model and settings, if there is one."""
        w = self.window
        key = self.key()
        tmap = w.cache.load(key) if key is not None else None
        if tmap is None:
            return False
        self.result = tmap
        w._show_map(tmap)
        w.statusBar().showMessage(
            f"Showing the saved map from {w.classifier.info.name or 'this model'} "
            f"({tmap.classified_count:,} patches). Analysis > Re-map Tissue maps again.",
            8000,
        )
        w.map_changed.emit(tmap)
        return True

    def start(self, *, use_cache: bool) -> int | None:
        w = self.window
        if w.slide is None:
            w.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return None
        if w.classifier is None:
            w.show_info("No model loaded", NO_MODEL_TEXT)
            return None
        if self.is_busy():
            return self.runner.current_job
        if use_cache and self.restore_cached():
            return None
        slide, clf, s = w.slide, w.classifier, w.mapping_settings
        try:
            grid = make_grid(slide, clf.info, s.stride or None)
            warnings = self.confirm_fit(slide, clf)
        except HistoViewerError as exc:
            w.show_error("Cannot map the slide", str(exc))
            return None
        if warnings is None:
            return None
        self.live = TissueMap.empty(
            grid, clf.info.class_names, clf.info.class_colors, mpp=slide.mpp
        )
        self._job_key = self.key()
        w._select(None)
        w._show_map(self.live)

        def job(ctx) -> TissueMap:
            from histoviewer.mapping.engine import map_slide  # torch: on the worker thread

            tmap = map_slide(
                slide,
                clf,
                stride=s.stride or None,
                batch_size=s.batch_size,
                skip_background=s.skip_background,
                device=s.device,
                progress=ctx.progress,
                cancel=ctx.cancel,
                on_batch=ctx.partial,
            )
            tmap.warnings = [{"kind": x.kind, "message": x.message} for x in warnings]
            return tmap

        job_id = self.runner.start(job, f"map {slide.path.name if slide.path else 'the slide'}")
        self._job_slides[job_id] = slide
        w.progress.setRange(0, 0)  # busy until the first progress report
        w.progress_label.setText("Finding tissue...")
        for widget in (w.progress_label, w.progress, w.cancel_button):
            widget.setVisible(True)
        w._update_actions()
        return job_id

    def confirm_fit(self, slide: SlideReader, clf) -> list[SlideWarning] | None:
        """The slide's warnings for this model, once the user agreed to map anyway.

        A slide that does not look like brightfield H&E, or is much coarser than the
        model's tiles, gets a dialog with Map Anyway / Cancel (None: cancelled); an
        assumed scale alone does not, the status bar's scale badge shows it. The
        answer holds for this slide, model and scale until one of them changes.
        """
        key = (slide, clf.fingerprint, slide.mpp)
        if self._checked is not None and self._checked[0] == key:
            warnings, agreed = self._checked[1], self._checked[2]
        else:
            warnings, agreed = check_slide(slide, clf.info), False
        serious = [x for x in warnings if x.kind != SCALE_ASSUMED]
        if serious and not agreed:
            name = slide.path.name if slide.path else "This slide"
            text = "\n\n".join(
                [f"{name} may not suit the model {clf.info.name!r}."]
                + [x.message for x in warnings]
            )
            agreed = self.window.ask_proceed("Check the slide", text, "Map Anyway")
            if not agreed:
                self._checked = (key, warnings, False)
                return None
        self._checked = (key, warnings, True)
        return warnings

    def cancel(self) -> None:
        """Stop at the next batch; the patches done so far stay on screen."""
        if self.is_busy():
            self.window.progress_label.setText("Cancelling...")
            self.runner.request_stop()

    def shutdown(self) -> None:
        """Stop and wait for every job, then close the readers they were still using."""
        self.runner.shutdown()
        for reader in self._retired.values():
            reader.close()
        self._retired.clear()

    def _on_progress(self, job_id: int, p: MapProgress) -> None:
        w = self.window
        w.progress.setRange(0, max(1, p.total))
        w.progress.setValue(p.done)
        w.progress_label.setText(progress_text(p))

    def _on_batch(self, job_id: int, batch: BatchResult) -> None:
        live = self.live
        if live is None:
            return
        live.probs[batch.rows, batch.cols] = batch.probs
        live.state[batch.rows, batch.cols] = CLASSIFIED
        w = self.window
        w.overlay.refresh()
        w.legend.set_map(live)
        w._refresh_selection()

    def _on_done(self, job_id: int, tmap: TissueMap) -> None:
        w = self.window
        self._end_job_ui()
        self.live = None
        self.result = tmap
        w._show_map(tmap)
        if tmap.complete and self._job_key is not None:
            try:
                w.cache.save(self._job_key, tmap)
            except (HistoViewerError, ValueError) as exc:
                log.warning("map not cached: %s", exc)
                w.statusBar().showMessage(f"The map could not be saved for next time: {exc}")
            else:
                w.statusBar().showMessage(
                    f"Mapped {tmap.classified_count:,} patches in {format_duration(tmap.elapsed)}.",
                    10000,
                )
        elif not tmap.complete:
            w.statusBar().showMessage(
                f"Mapping cancelled: {tmap.classified_count:,} patches classified, "
                f"{tmap.pending_count:,} not. This partial map is not saved.",
                10000,
            )
        w.map_changed.emit(tmap)
        w.mapping_finished.emit(tmap)

    def _on_failed(self, job_id: int, failure: JobFailure) -> None:
        self._end_job_ui()
        self.live = None
        self.window._show_map(self.result)
        self.window.show_error(failure.title, failure.message)

    def _on_thread_finished(self, job_id: int) -> None:
        self._job_slides.pop(job_id, None)
        if (reader := self._retired.pop(job_id, None)) is not None:
            reader.close()

    def _end_job_ui(self) -> None:
        w = self.window
        for widget in (w.progress_label, w.progress, w.cancel_button):
            widget.setVisible(False)
        w._update_actions()
