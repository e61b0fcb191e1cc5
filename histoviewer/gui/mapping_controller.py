"""The mapping job's lifecycle: start, paint batch by batch, cancel, finish, cache.

:class:`MappingController` owns the viewer's mapping :class:`JobRunner`, the map
a running job fills in (``live``) and the map shown after it (``result``). It reads
the slide, model and settings from the :class:`~histoviewer.viewer_state.ViewerState`
and puts the maps it makes there; it follows the state too: a new slide, model or
slide scale stops the job and shows the saved map for the new pair, if any. The
window shows its progress (:attr:`MappingController.progress_changed`).

- View first: the job is given the visible slide rectangle (:class:`ViewFocus`, kept
  current as the user pans and zooms), so the patches in view are classified first.
- Nothing is thrown away: every job saves what it classified to the map cache when it
  ends, finished or not (cancelled, its slide closed or replaced, its model changed,
  the viewer quitting). Map Tissue on a slide with a partial map continues it, and Map
  Region classifies one region into the same map; Re-map Tissue starts afresh.
- A job made for a slide or model that has since been replaced is superseded by
  :meth:`MappingController.reset`: nothing of it reaches the window, but it still
  saves its partial map; a slide reader still being read by such a job is closed
  only when the job's thread has ended (:meth:`MappingController.retire`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QRectF, QTimer, Signal

from histoviewer.errors import HistoViewerError
from histoviewer.gui.dialogs import UserDialogs
from histoviewer.gui.model_controller import model_name
from histoviewer.gui.slideview import SlideView
from histoviewer.gui.workers import JobFailure, JobRunner
from histoviewer.mapping.cache import MapCache, MapKey, map_key
from histoviewer.mapping.checks import SCALE_ASSUMED, SlideWarning, check_slide
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.summary_text import partial_map_text, progress_count_text, totals_parts
from histoviewer.mapping.tissue_map import (
    BACKGROUND,
    CLASSIFIED,
    PENDING,
    TissueMap,
    slide_identity,
)
from histoviewer.slide import SlideReader
from histoviewer.tasks import format_duration
from histoviewer.viewer_state import MAPPING, ViewerState

if TYPE_CHECKING:
    from histoviewer.mapping.engine import BackgroundFound, BatchResult, MapProgress
    from histoviewer.model import Classifier

log = logging.getLogger(__name__)

#: How often the progress text is refreshed while no batch lands (ms).
TICK_MS = 1000

NO_MODEL_TEXT = (
    "Mapping needs a tissue classifier, and none is loaded. Load one with Model > Load "
    "Model... (a .safetensors file, a model folder, or a .pth.tar / .pt checkpoint), or "
    "train one on the Kather 2016 tiles with Model > Train New Model... (or 'histoviewer "
    "train') and use the result."
)

Region = tuple[int, int, int, int]


def progress_text(p: MapProgress, since: float = 0.0, *, region: bool = False) -> str:
    """'412 / 981 tissue patches · 35.2 patches/s · 0:19 left' (the legend's words).

    ``since`` is the seconds since ``p`` was reported: the time left counts down
    (and, before the first batch, the time spent counts up) between reports.
    ``region``: the job maps a region, and ``p`` counts its patches only.
    """
    head = progress_count_text(p.done, p.total) + (" in the region" if region else "")
    if p.eta is None:
        return f"{head} · first patches... {format_duration(p.elapsed + since)}"
    left = p.eta - since
    left_text = f"{format_duration(left)} left" if left >= 0.5 else "almost done"
    return f"{head} · {p.rate:.1f} patches/s · {left_text}"


class ViewFocus:
    """The visible slide rectangle (level-0 px), for the mapping worker to classify first.

    Set on the GUI thread when the view moves, read on the worker thread before each
    batch: a plain tuple under a lock, never a Qt object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rect: tuple[float, float, float, float] | None = None

    def set(self, rect: tuple[float, float, float, float] | None) -> None:
        with self._lock:
            self._rect = rect

    def get(self) -> tuple[float, float, float, float] | None:
        with self._lock:
            return self._rect


@dataclass
class MapJobResult:
    """What a mapping job hands back: the map and what became of it in the cache.

    ``saved`` is the cache file written (None: not written); ``kept_complete`` says a
    partial map was not written because a complete one is stored; ``save_error`` is
    the reason writing failed; ``stopped`` that the job was cancelled.
    """

    tmap: TissueMap
    region: Region | None = None
    saved: Path | None = None
    kept_complete: bool = False
    save_error: str | None = None
    stopped: bool = False


def save_map(cache: MapCache, key: MapKey, tmap: TissueMap, before: int) -> MapJobResult:
    """Cache ``tmap`` when it is complete or classifies more than the ``before`` patches
    its job started from (runs on the worker thread; never raises for the disk)."""
    result = MapJobResult(tmap)
    if not tmap.complete and tmap.classified_count <= before:
        return result  # nothing new: keep what is stored
    try:
        result.saved = cache.save(key, tmap)
    except (HistoViewerError, ValueError, OSError) as exc:
        log.warning("map not cached: %s", exc)
        result.save_error = str(exc)
    else:
        result.kept_complete = result.saved is None
    return result


class MappingController(QObject):
    """Runs Analysis > Map Tissue / Map Region on the state's slide and model, and
    keeps the maps made.

    ``view`` is the slide view: the job classifies what it shows first. Signals:
    ``progress_changed(text, done, total)`` while a job runs (total 0 until the
    first report: busy), ``progress_reported(MapProgress)`` with each report of
    the job, ``finished(TissueMap)`` when a job ended on its own or was
    cancelled (the map complete or partial).
    """

    progress_changed = Signal(str, int, int)
    progress_reported = Signal(object)
    finished = Signal(object)

    def __init__(
        self,
        state: ViewerState,
        dialogs: UserDialogs,
        cache: MapCache,
        view: SlideView,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.dialogs = dialogs
        self.cache = cache
        self.view = view
        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.partial.connect(self._on_batch)
        self.runner.succeeded.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.finished.connect(self._on_thread_finished)
        self.result: TissueMap | None = None  # the finished (or partial) map shown
        self.live: TissueMap | None = None  # the map a running job fills in
        self.focus = ViewFocus()
        view.viewChanged.connect(self._on_view_changed)
        self.tick = QTimer(self)  # keeps the progress text moving between reports
        self.tick.setInterval(TICK_MS)
        self.tick.timeout.connect(self._show_progress)
        self._job_key: MapKey | None = None
        self._job_before = 0  # patches the running job's map had classified when it began
        self._job_region: Region | None = None
        self._result_key: MapKey | None = None
        self._job_started = 0.0
        self._last_progress: tuple[MapProgress, float] | None = None
        self._stopping = False
        self._job_slides: dict[int, SlideReader] = {}
        self._retired: dict[int, SlideReader] = {}  # readers to close when their job ends
        # The last slide checked: (reader, model fingerprint, scale) -> its warnings and
        # whether the user chose to map it anyway.
        self._checked: tuple[tuple, list[SlideWarning], bool] | None = None
        state.slide_changed.connect(self._on_slide_changed)
        state.model_changed.connect(self._on_model_changed)
        state.slide_scale_changed.connect(self._on_scale_changed)
        state.mapping_settings_changed.connect(self._on_settings_changed)

    def is_busy(self) -> bool:
        return self.runner.is_busy()

    def reset(self) -> bool:
        """Stop the running job and drop both maps (new slide or model).

        The job still saves its partial map to the cache as it ends; nothing of it
        reaches the viewer. True when a job was stopped.
        """
        stopped = self.is_busy()
        self.runner.cancel()
        self.live = None
        self.result = None
        self._result_key = None
        self.state.set_map(None)
        self._end_job()
        if stopped:
            self.state.notify(
                "Mapping stopped: the patches classified so far are saved, and Map Tissue "
                "continues from them.",
                10000,
            )
        return stopped

    def retire(self, reader: SlideReader) -> None:
        """Close ``reader`` now, or when the jobs still reading it have ended."""
        busy = [j for j, r in self._job_slides.items() if r is reader]
        if busy:
            self._retired[busy[-1]] = reader
        else:
            reader.close()

    def key(self) -> MapKey | None:
        st = self.state
        if st.slide is None or st.classifier is None:
            return None
        s = st.mapping_settings
        return map_key(st.slide, st.classifier, s.stride, s.skip_background, s.tta)

    def stored_map(self, key: MapKey | None) -> TissueMap | None:
        """The best map there is for ``key``: the cached one, or the partial one shown
        when it holds more (it could not be saved)."""
        if key is None:
            return None
        cached = self.cache.load(key)
        if cached is not None and cached.complete:
            return cached
        mine = self.result if self._result_key == key else None
        if mine is not None and (cached is None or mine.classified_count > cached.classified_count):
            return mine
        return cached

    def restore_cached(self) -> bool:
        """Show the saved map (complete or partial) for the current slide, model and
        settings, if there is one."""
        key = self.key()
        tmap = self.cache.load(key) if key is not None else None
        if tmap is None:
            return False
        self._show_result(tmap, key)
        name = model_name(self.state.classifier, self.state.model_path)
        if tmap.complete:
            text = (
                f"Showing the saved map from {name} ({tmap.classified_count:,} patches). "
                "Analysis > Re-map Tissue maps again."
            )
        else:
            text = f"Showing the map saved from {name}. {partial_map_text(tmap)}"
        self.state.notify(text, 10000)
        return True

    def start(self, *, use_cache: bool, region: Region | None = None) -> int | None:
        """Map the slide (or only ``region``, level-0 x, y, w, h): continue its partial
        map when ``use_cache``, else start afresh. Returns the job id, or None when
        nothing was started."""
        st, ask = self.state, self.dialogs
        if st.slide is None:
            ask.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return None
        if st.classifier is None:
            ask.show_info("No model loaded", NO_MODEL_TEXT)
            return None
        if self.is_busy():
            return self.runner.current_job
        key = self.key()
        resume = self.stored_map(key) if use_cache else None
        if resume is not None and resume.complete:
            self._show_result(resume, key)
            st.notify(
                "This slide is mapped already"
                + (" (the region too). " if region is not None else ". ")
                + "Analysis > Re-map Tissue maps it again.",
                10000,
            )
            return None
        slide, clf, s = st.slide, st.classifier, st.mapping_settings
        try:
            grid = make_grid(slide, clf.info, s.stride or None)
            warnings = self.confirm_fit(slide, clf)
        except HistoViewerError as exc:
            ask.show_error("Cannot map the slide", str(exc))
            return None
        if warnings is None:
            return None
        if resume is not None and resume.state.shape != (grid.rows, grid.cols):
            resume = None  # not this grid after all: start afresh
        if resume is not None:
            self.live = dataclasses.replace(
                resume, probs=resume.probs.copy(), state=resume.state.copy()
            )
        else:
            # With the slide's and model's identities, so that it can be cached as it
            # stands should the job fail.
            self.live = TissueMap.empty(
                grid,
                clf.info.class_names,
                clf.info.class_colors,
                mpp=slide.mpp,
                slide=slide_identity(slide),
                model=clf.identity(),
            )
        self._job_key = key
        self._job_region = region
        self.view.cancel_region_selection()  # Map Tissue while a region was being chosen
        st.set_selection(None)
        st.set_map(self.live, live=True)
        self._on_view_changed(self.view.visible_rect())
        focus, cache = self.focus.get, self.cache
        before = resume.classified_count if resume is not None else 0
        self._job_before = before

        def job(ctx) -> MapJobResult:
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
                on_background=ctx.partial,
                resume=resume,
                region=region,
                focus=focus,
                tta=s.tta,
            )
            tmap.warnings = [{"kind": x.kind, "message": x.message} for x in warnings]
            # Saved here, not on the GUI thread: a job stopped because its slide was
            # closed or replaced, or the viewer quit, keeps its work too.
            result = save_map(cache, key, tmap, before)
            result.region = region
            result.stopped = ctx.cancel.cancelled
            return result

        name = slide.path.name if slide.path else "the slide"
        job_id = self.runner.start(job, f"map {name}")
        self._job_slides[job_id] = slide
        self._begin_job()
        return job_id

    def confirm_fit(self, slide: SlideReader, clf: Classifier) -> list[SlideWarning] | None:
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
                [f"{name} may not suit the model {model_name(clf, self.state.model_path)!r}."]
                + [x.message for x in warnings]
            )
            agreed = self.dialogs.ask_proceed("Check the slide", text, "Map Anyway")
            if not agreed:
                self._checked = (key, warnings, False)
                return None
        self._checked = (key, warnings, True)
        return warnings

    def cancel(self) -> None:
        """Stop at the next batch; the patches done so far stay on screen and are saved."""
        if self.is_busy():
            self._stopping = True
            self._show_progress()
            self.runner.request_stop()

    def shutdown(self) -> None:
        """Stop and wait for every job (each saves its partial map), then close the
        readers they were still using."""
        self.tick.stop()
        self.runner.shutdown()
        for reader in self._retired.values():
            reader.close()
        self._retired.clear()

    # --- the state's signals ------------------------------------------------------------

    def _on_slide_changed(self, new: SlideReader | None, old: SlideReader | None) -> None:
        # A running job maps the old slide: it stops (and saves its work).
        self.reset()
        if old is not None:
            self.retire(old)
        self.restore_cached()

    def _on_model_changed(self, classifier: Classifier | None, path: str | None) -> None:
        self.reset()
        self.restore_cached()

    def _on_scale_changed(self, slide: SlideReader) -> None:
        self.reset()
        self.restore_cached()

    def _on_settings_changed(self, settings: object) -> None:
        if not self.is_busy() and self.result is None:
            self.restore_cached()

    # --- job signals --------------------------------------------------------------------

    def _on_view_changed(self, rect: QRectF) -> None:
        area = QRectF(rect).intersected(self.view.slide_rect())
        if area.isEmpty():
            self.focus.set(None)
        else:
            self.focus.set((area.x(), area.y(), area.width(), area.height()))

    def _on_progress(self, job_id: int, p: MapProgress) -> None:
        self._last_progress = (p, time.monotonic())
        self._show_progress()
        self.progress_reported.emit(p)

    def _show_progress(self) -> None:
        """The progress text now: what was last reported, moved on by the time since."""
        if self._last_progress is None:
            done = total = 0
        else:
            done, total = self._last_progress[0].done, max(1, self._last_progress[0].total)
        if self._stopping:
            text = "Cancelling..."
        elif self._last_progress is None:
            spent = time.monotonic() - self._job_started
            text = f"Finding tissue... {format_duration(spent)}"
        else:
            p, at = self._last_progress
            text = progress_text(p, time.monotonic() - at, region=self._job_region is not None)
        self.progress_changed.emit(text, done, total)

    def _on_batch(self, job_id: int, batch: BatchResult | BackgroundFound) -> None:
        live = self.live
        if live is None:
            return
        if hasattr(batch, "probs"):
            live.probs[batch.rows, batch.cols] = batch.probs
            live.state[batch.rows, batch.cols] = CLASSIFIED
        else:  # the glass, found before the first batch
            pending = live.state[batch.rows, batch.cols] == PENDING
            live.state[batch.rows[pending], batch.cols[pending]] = BACKGROUND
        if self.state.tissue_map is live:
            self.state.map_grew()

    def _on_done(self, job_id: int, result: MapJobResult) -> None:
        tmap = result.tmap
        self.live = None
        self._show_result(tmap, self._job_key)
        self._end_job()
        self.state.notify(self._done_text(result), 15000)
        self.finished.emit(tmap)

    def _done_text(self, result: MapJobResult) -> str:
        tmap = result.tmap
        if result.save_error is not None:
            return f"The map could not be saved for next time: {result.save_error}"
        if tmap.complete:
            return (
                f"Mapped {tmap.classified_count:,} tissue patches in "
                f"{format_duration(tmap.elapsed)}."
            )
        done = totals_parts(tmap, area=False)[0]
        if result.stopped:
            head = f"Mapping cancelled: {done}."
        elif result.region is not None:
            head = f"Region mapped: {done}."
        else:
            head = f"Mapping ended: {done}."
        if result.kept_complete:
            return f"{head} The complete map saved earlier is kept: Map Tissue shows it."
        return f"{head} The partial map is saved; Map Tissue continues it."

    def _on_failed(self, job_id: int, failure: JobFailure) -> None:
        """Show the error; the patches classified before it are saved and kept on screen
        (the background not yet known), so Map Tissue continues from them."""
        live, key, message = self.live, self._job_key, failure.message
        self.live = None
        saved = None
        if live is not None and key is not None:
            saved = save_map(self.cache, key, live, self._job_before)
        if saved is not None and saved.saved is not None:
            self._show_result(live, key)
            message += (
                f"\n\nThe {live.classified_count:,} patches classified before the error are "
                "saved: Map Tissue continues from them."
            )
        else:
            self.state.set_map(self.result)
        self._end_job()
        self.dialogs.show_error(failure.title, message)

    def _on_thread_finished(self, job_id: int) -> None:
        self._job_slides.pop(job_id, None)
        if (reader := self._retired.pop(job_id, None)) is not None:
            reader.close()

    # --- helpers ------------------------------------------------------------------------

    def _show_result(self, tmap: TissueMap, key: MapKey | None) -> None:
        self.result = tmap
        self._result_key = key
        self.state.set_map(tmap)

    def _begin_job(self) -> None:
        self._job_started = time.monotonic()
        self._last_progress = None
        self._stopping = False
        self.state.set_running(MAPPING, True)
        self._show_progress()
        self.tick.start()

    def _end_job(self) -> None:
        self.tick.stop()
        self._last_progress = None
        self._stopping = False
        self.state.set_running(MAPPING, False)
