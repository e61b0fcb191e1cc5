"""Screenshots of the slide checks in the viewer (run under Xvfb), for the README.

Opens SLIDE with MODEL in a window of the given size, optionally overrides nothing,
then saves: the window with its status bar (scale badge) and, after Map Tissue, the
whole screen while the pre-mapping question is up (when the slide raises one).

    xvfb-run -s "-screen 0 1600x1000x24" python tools/screenshot_checks.py SLIDE MODEL OUT.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from shots import open_window

from histoviewer.gui.app import create_application


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide")
    parser.add_argument("model")
    parser.add_argument("out", type=Path, help="window picture; -question is added beside it")
    parser.add_argument("--window-size", default="1500x950")
    args = parser.parse_args()
    app = create_application()
    window, _size, _folder = open_window(args.window_size, "histoviewer-shots-")
    window.open_slide(args.slide)
    window.load_model(args.model)

    def question_up() -> None:
        QApplication.primaryScreen().grabWindow(0).save(
            str(args.out.with_name(f"{args.out.stem}-question{args.out.suffix}"))
        )
        dialog = QApplication.activeModalWidget()
        if dialog is not None:
            dialog.reject()
        QTimer.singleShot(300, window.close)

    def loaded(_clf) -> None:
        QTimer.singleShot(1500, shoot)

    def shoot() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(args.out))
        QTimer.singleShot(1000, question_up)
        started = window.map_tissue()
        if started is not None:  # no question: nothing more to show
            window.cancel_mapping()

    window.model_changed.connect(loaded)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
