"""What goes into the frozen HistoViewer app, shared by histoviewer.spec, build.py and the tests.

Plain Python with no PyInstaller import, so the test suite can check it without building.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 has none: project_version reads the line itself
    tomllib = None

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
RESOURCES = ROOT / "resources"
ICONS = PACKAGING / "icons"
ENTRY_SCRIPT = PACKAGING / "launch.py"

APP_NAME = "HistoViewer"
DESCRIPTION = "Tissue-type maps of whole H&E histology slides"
COMPANY = "HistoViewer developers"
BUNDLE_ID = "org.histoviewer.HistoViewer"

#: Files under resources/ that the app reads: class colours, SVG icons, style sheets, the
#: shipped model folders and the demo slide with its true classes (and its README, which
#: carries the data's CC BY credit). The rendered PNG/ICO/ICNS icons are for installers.
RESOURCE_PATTERNS = ("*.json", "*.qss", "icons/*.svg", "models/*/*", "demo/*")

#: Modules the app never imports. triton (about 1 GB) is only for torch.compile on a GPU;
#: torch finds it missing and carries on, as it does on Windows and macOS.
EXCLUDED_MODULES = [
    "triton",
    "tkinter",
    "_tkinter",
    "idlelib",
    "turtle",
    "IPython",
    "ipykernel",
    "jedi",
    "notebook",
    "pytest",
    "_pytest",
    "pytestqt",
    "ruff",
    "pip",
    "PyInstaller",
    "build",
    "pyproject_hooks",
    "torch.utils.tensorboard",
    "tensorboard",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6.QtNetwork",
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.Qt3DCore",
    "PySide6.QtMultimedia",
    "PySide6.QtPdf",
    "PySide6.QtSql",
    "PySide6.QtTest",
    "PySide6.QtDesigner",
]

#: Libraries loaded by path or dlopen(), which PyInstaller's dependency analysis cannot see,
#: by package: torchvision's C++ operators (importing torchvision registers them, and fails
#: without them; the contrib hook still looks for the old name ``_C``), and NVRTC's built-ins,
#: which NVRTC loads when cuDNN or torch compile a kernel at run time.
EXTRA_BINARIES = {
    "torchvision": ("_C*.so", "_C*.pyd", "_C*.dylib"),
    "nvidia.cu13": ("lib/libnvrtc-builtins.so*",),
}

#: Collected files (bundle-relative destination paths, fnmatch patterns; ``*`` crosses
#: folders) that the app does not need: profiler, multi-GPU and static CUDA pieces, torch's
#: protobuf compiler, scikit-learn's toy data sets, matplotlib's sample data and Qt's
#: translations (the app installs no translator).
UNWANTED_FILES = [
    # The NVIDIA driver belongs to the user's system; a bundled copy would not match it.
    "libcuda.so*",
    "libnvidia-*",
    "nvidia/cu13/lib/libcusolverMg.so*",
    "nvidia/cu13/lib/libnvperf_*",
    "nvidia/cu13/lib/libcheckpoint.so*",
    "nvidia/*.a",
    "nvidia/nvshmem/lib/*.bc",
    "nvidia/nvshmem/lib/nvshmem_transport_*",
    "torch/bin/protoc*",
    "torch/include/*",
    "torch/share/*",
    "sklearn/datasets/data/*",
    "sklearn/datasets/descr/*",
    "sklearn/datasets/images/*",
    "matplotlib/mpl-data/sample_data/*",
    "PySide6/Qt/translations/*",
    "*/__pycache__/*",
]


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The ``[project] version`` of pyproject.toml (the one source of the version)."""
    text = pyproject.read_text(encoding="utf-8")
    if tomllib is not None:
        return str(tomllib.loads(text)["project"]["version"])
    section = text.split("[project]", 1)[1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.MULTILINE)
    if match is None:
        raise ValueError(f"{pyproject} has no [project] version")
    return match.group(1)


def version_tuple(version: str) -> tuple[int, int, int, int]:
    """Four numbers for a Windows version resource: "1.2.3rc1" -> (1, 2, 3, 0)."""
    release = re.match(r"\d+(?:\.\d+)*", version)
    if release is None:
        raise ValueError(f"version {version!r} does not start with a number")
    numbers = [int(n) for n in release.group().split(".")[:4]]
    return (*numbers, *[0] * (4 - len(numbers)))


def resource_datas(resources: Path = RESOURCES) -> list[tuple[str, str]]:
    """PyInstaller ``datas`` entries (source file, destination folder) for resources/.

    Destinations mirror the source tree under ``resources/`` in the bundle, where
    ``histoviewer.resources`` looks (``sys._MEIPASS/resources``).
    """
    found = {path for pattern in RESOURCE_PATTERNS for path in resources.glob(pattern)}
    files = sorted(path for path in found if path.is_file())
    return [
        (str(path), str(Path("resources") / path.parent.relative_to(resources))) for path in files
    ]


def extra_binaries() -> list[tuple[str, str]]:
    """PyInstaller ``binaries`` entries for :data:`EXTRA_BINARIES` found in this environment."""
    entries = []
    for package, patterns in EXTRA_BINARIES.items():
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:  # the parent package is not installed
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        dest = Path(*package.split("."))
        for location in spec.submodule_search_locations:
            for pattern in patterns:
                for path in sorted(Path(location).glob(pattern)):
                    folder = path.parent.relative_to(location)
                    entries.append((str(path), str(dest / folder)))
    return entries


def unwanted(dest: str) -> bool:
    """Whether a collected file (its bundle-relative destination) is left out of the app."""
    dest = dest.replace("\\", "/")
    return any(fnmatch.fnmatch(dest, pattern) for pattern in UNWANTED_FILES)


def platform_icon(platform: str = sys.platform) -> Path | None:
    """The executable's icon for ``platform``: .ico on Windows, .icns on macOS, none on Linux.

    Linux executables carry no icon; the desktop entry names one from the icon theme.
    """
    if platform.startswith("win"):
        return ICONS / "histoviewer.ico"
    if platform == "darwin":
        return ICONS / "histoviewer.icns"
    return None


def windows_version_strings(version: str) -> dict[str, str]:
    """The StringFileInfo entries of the Windows version resource."""
    return {
        "CompanyName": COMPANY,
        "FileDescription": f"{APP_NAME} - {DESCRIPTION}",
        "FileVersion": version,
        "InternalName": APP_NAME,
        "OriginalFilename": f"{APP_NAME}.exe",
        "ProductName": APP_NAME,
        "ProductVersion": version,
    }


def macos_info_plist(version: str) -> dict:
    """Info.plist entries for the macOS .app beyond those PyInstaller writes."""
    return {
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "CFBundleGetInfoString": DESCRIPTION,
        "NSHighResolutionCapable": True,
        "NSRequiresAquaSystemAppearance": False,
        "LSApplicationCategoryType": "public.app-category.medical",
        "CFBundleDocumentTypes": [
            {
                "CFBundleTypeName": "Whole-slide image",
                "CFBundleTypeRole": "Viewer",
                "LSHandlerRank": "Alternate",
                "CFBundleTypeExtensions": ["svs", "ndpi", "tif", "tiff", "png", "jpg", "jpeg"],
            }
        ],
    }
