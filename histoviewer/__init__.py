"""HistoViewer: map tissue types across whole histology slides.

The package is split into a headless core (``slide``, ``model``, ``mapping``,
``training``) that never imports Qt, and a thin Qt layer (``gui``) on top.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("histoviewer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
