"""Entry point of the frozen app: the same ``histoviewer`` command as a pip install.

With no arguments (a double click, the desktop entry) it opens the viewer;
``HistoViewer SLIDE`` opens a slide; ``HistoViewer info SLIDE`` and the other
subcommands work from a terminal.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    # Data-loader worker processes of a frozen app re-run this executable; this hands
    # them to multiprocessing instead of starting a second viewer.
    multiprocessing.freeze_support()
    from histoviewer.cli import main

    sys.exit(main())
