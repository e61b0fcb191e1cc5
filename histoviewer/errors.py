"""Errors whose message is written for the user.

Code in the core raises these with a complete, specific sentence; the command
line prints ``str(error)`` as one line and the GUI shows it in a dialog. Any
other exception is a bug.
"""


class HistoViewerError(Exception):
    """An error caused by the user's input or environment, not by a bug."""


class SlideError(HistoViewerError):
    """A slide file cannot be opened or read."""


class ModelError(HistoViewerError):
    """A model or checkpoint file cannot be used."""


class DatasetError(HistoViewerError):
    """A training dataset is missing, empty or laid out wrongly."""


class DeviceError(HistoViewerError):
    """The requested compute device is not available."""


class StorageError(HistoViewerError):
    """Results could not be written (disk full, no permission, ...)."""


class UnsafeFileError(ModelError):
    """A checkpoint that holds code (pickled Python objects): refused, never loaded."""


class PeerError(DeviceError):
    """Another process of a torchrun job failed or stopped, so this one stops too."""
