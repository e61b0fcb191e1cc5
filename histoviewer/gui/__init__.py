"""The Qt user interface: main window, slide view, overlay, panels, dialogs, workers.

Importing this package is cheap (no Qt, no torch): import the modules you need,
e.g. ``from histoviewer.gui.slideview import SlideView``.
"""
