"""Packaging: the wheel carries resources/, the PyInstaller spec's inputs exist, the desktop
entry and icons are valid, and the Linux installer puts them where desktops look.

PyInstaller itself is not run here (ten minutes and gigabytes); packaging/build.py builds
the app and smoke-tests it.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
DESKTOP_FILE = PACKAGING / "linux" / "histoviewer.desktop"
INSTALL_SH = PACKAGING / "linux" / "install.sh"
HICOLOR_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"hv_packaging_{name}", PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cfg = _load("bundle_config")
smoke = _load("smoke_test")


# --- the wheel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source (so the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("histoviewer", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-c", f"import setuptools.build_meta as b; b.build_wheel({str(out)!r})"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = out.glob("histoviewer-*.whl")
    return path


def test_wheel_carries_resources_as_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    prefix = "histoviewer/resources/"
    resources = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
    assert "classes.json" in resources
    svgs = {f"icons/{p.name}" for p in (ROOT / "resources" / "icons").glob("*.svg")}
    assert svgs and svgs <= resources
    # An __init__.py there would shadow the histoviewer/resources.py module.
    assert "__init__.py" not in resources
    assert "histoviewer/resources.py" in names
    # The frozen app bundles the same resource files as the wheel.
    bundled = {
        str(Path(dest, Path(src).name).relative_to("resources")).replace(os.sep, "/")
        for src, dest in cfg.resource_datas()
    }
    assert bundled == resources


def test_wheel_holds_every_subpackage_and_the_commands(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [p.parent for p in (ROOT / "histoviewer").rglob("__init__.py")]
    assert len(packages) > 1
    for package in packages:
        init = package.relative_to(ROOT) / "__init__.py"
        assert init.as_posix() in names, f"{package} is not in [tool.setuptools] packages"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "histoviewer = histoviewer.cli:main" in text
    assert "histoviewer-gui = histoviewer.gui.app:main" in text


def test_installed_wheel_finds_resources_inside_the_package(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install --target does for a pure wheel
    env = {k: v for k, v in os.environ.items() if k != "HISTOVIEWER_RESOURCES"}
    env["PYTHONPATH"] = str(site)
    code = (
        "import histoviewer.resources as r, histoviewer.classes as c;"
        "print(r.resources_dir()); print(r.icon_path('histoviewer'));"
        "print(len(c.default_classes()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    folder, icon, count = done.stdout.split()
    assert Path(folder) == site / "histoviewer" / "resources"
    assert Path(icon).is_file() and Path(icon).is_relative_to(site)
    assert int(count) == 8


# --- the PyInstaller spec ------------------------------------------------------------------


def test_spec_parses_and_its_inputs_exist():
    spec = (PACKAGING / "histoviewer.spec").read_text(encoding="utf-8")
    tree = ast.parse(spec)
    calls = {
        node.func.id: node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {"Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"} <= set(calls)
    assert ast.unparse(calls["Analysis"].args[0]) == "[str(cfg.ENTRY_SCRIPT)]"
    assert cfg.ENTRY_SCRIPT.is_file()
    analysis = {k.arg: ast.unparse(k.value) for k in calls["Analysis"].keywords}
    assert "cfg.resource_datas()" in analysis["datas"]
    assert analysis["excludes"] == "cfg.EXCLUDED_MODULES"
    assert analysis["binaries"] == "cfg.extra_binaries()"
    assert "a.binaries = [entry for entry in a.binaries if not cfg.unwanted(entry[0])]" in spec


def test_bundle_data_entries_point_at_resource_files():
    datas = cfg.resource_datas()
    sources = {Path(src) for src, _ in datas}
    assert cfg.RESOURCES / "classes.json" in sources
    assert cfg.RESOURCES / "icons" / "histoviewer.svg" in sources
    for src, dest in datas:
        path = Path(src)
        assert path.is_file(), src
        assert Path(dest) == Path("resources") / path.parent.relative_to(cfg.RESOURCES)
        assert path.suffix in {".json", ".svg", ".qss", ".safetensors", ".md", ".txt", ".tif"}, src


def test_resource_datas_take_model_folders_and_leave_other_files(tmp_path):
    (tmp_path / "icons" / "app").mkdir(parents=True)
    (tmp_path / "models" / "kather-resnet50").mkdir(parents=True)
    for name in (
        "classes.json",
        "icons/open.svg",
        "icons/app/big.png",
        "notes.txt",
        "models/kather-resnet50/model.safetensors",
    ):
        (tmp_path / name).write_text("x")
    datas = cfg.resource_datas(tmp_path)
    got = {(Path(src).relative_to(tmp_path).as_posix(), dest) for src, dest in datas}
    assert got == {
        ("classes.json", "resources"),
        ("icons/open.svg", str(Path("resources/icons"))),
        ("models/kather-resnet50/model.safetensors", str(Path("resources/models/kather-resnet50"))),
    }


def test_extra_binaries_include_torchvisions_operators():
    entries = cfg.extra_binaries()
    (package,) = map(Path, importlib.util.find_spec("torchvision").submodule_search_locations)
    operators = [(Path(src), dest) for src, dest in entries if Path(src).parent == package]
    assert operators, "torchvision's _C library was not found: importing it frozen would fail"
    for src, dest in operators:
        assert src.name.startswith("_C") and src.is_file()
        assert dest == "torchvision"
    for src, dest in entries:
        assert Path(src).is_file() and not cfg.unwanted(str(Path(dest, Path(src).name)))


def test_excluded_modules_are_not_imported_by_histoviewer():
    imported = set()
    for path in (ROOT / "histoviewer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    for excluded in cfg.EXCLUDED_MODULES:
        users = sorted(m for m in imported if m == excluded or m.startswith(excluded + "."))
        assert not users, f"histoviewer imports {users}, which the frozen app leaves out"


@pytest.mark.parametrize(
    ("dest", "dropped"),
    [
        ("nvidia/cu13/lib/libcusolverMg.so.12", True),
        ("nvidia/cu13/lib/libnvperf_host.so", True),
        ("nvidia/nvshmem/lib/libnvshmem_device_sm_90.bc", True),
        ("sklearn/datasets/images/china.jpg", True),
        ("PySide6/Qt/translations/qtbase_de.qm", True),
        ("torch\\bin\\protoc.exe", True),
        ("libcuda.so.1", True),
        ("libnvidia-ml.so.1", True),
        ("nvidia/cu13/lib/libcudart.so.13", False),
        # Linked by libtorch_cuda / libtorch_cuda_linalg, or read by the app: kept.
        ("nvidia/cu13/lib/libcusolver.so.12", False),
        ("nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9", False),
        ("nvidia/nvshmem/lib/libnvshmem_host.so.3", False),
        ("torch/lib/libtorch_cuda.so", False),
        ("PySide6/Qt/plugins/iconengines/libqsvgicon.so", False),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", False),
        ("resources/classes.json", False),
        ("matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf", False),
    ],
)
def test_unwanted_files(dest, dropped):
    assert cfg.unwanted(dest) is dropped


def test_version_comes_from_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cfg.project_version() == declared["version"]
    assert cfg.version_tuple("0.1.0") == (0, 1, 0, 0)
    assert cfg.version_tuple("1.2rc1+local") == (1, 2, 0, 0)
    assert cfg.version_tuple("2.0.1.7.9") == (2, 0, 1, 7)
    with pytest.raises(ValueError, match="number"):
        cfg.version_tuple("dev")
    assert cfg.windows_version_strings("1.2.3")["ProductVersion"] == "1.2.3"
    assert cfg.macos_info_plist("1.2.3")["CFBundleShortVersionString"] == "1.2.3"


# --- icons and the desktop entry -------------------------------------------------------------


def test_platform_icons_exist_in_every_size():
    ico = cfg.platform_icon("win32")
    icns = cfg.platform_icon("darwin")
    assert cfg.platform_icon("linux") is None
    with Image.open(ico) as image:
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= image.info["sizes"]
    with Image.open(icns) as image:
        retina = {(16, 16, 2), (32, 32, 2), (128, 128, 2), (256, 256, 2), (512, 512, 2)}
        assert retina | {(128, 128, 1), (256, 256, 1), (512, 512, 1)} <= set(image.info["sizes"])
    for size in HICOLOR_SIZES:
        path = cfg.ICONS / "hicolor" / f"{size}x{size}" / "apps" / "histoviewer.png"
        with Image.open(path) as png:
            assert png.size == (size, size) and png.mode == "RGBA"
            assert png.getpixel((0, 0))[3] == 0, "the icon's corners should be transparent"


def _desktop_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    assert parser.sections() == ["Desktop Entry"]
    return dict(parser["Desktop Entry"])


def test_desktop_entry_is_valid():
    entry = _desktop_entry(DESKTOP_FILE)
    assert entry["Type"] == "Application"
    assert entry["Name"] == "HistoViewer"
    assert entry["Icon"] == "histoviewer"  # a theme name, installed by install.sh
    program, *codes = entry["Exec"].split()
    assert program == "histoviewer" and codes == ["%f"]
    assert entry["Categories"].endswith(";")
    categories = set(entry["Categories"].split(";")) - {""}
    # freedesktop menu spec: one main category (more list the app twice), and each
    # additional category with one it relates to.
    main = {"AudioVideo", "Development", "Education", "Game", "Graphics", "Network", "Office"}
    main |= {"Science", "Settings", "System", "Utility"}
    assert len(categories & main) == 1
    if "Viewer" in categories:
        assert categories & {"Graphics", "Office"}
    if "MedicalSoftware" in categories:
        assert "Science" in categories
    assert entry["MimeType"].endswith(";") and "image/tiff" in entry["MimeType"]
    assert entry["Terminal"] == "false"


@pytest.mark.skipif(sys.platform == "win32", reason="install.sh is for Linux desktops")
def test_install_script_installs_and_uninstalls(tmp_path):
    bundle = tmp_path / "My Apps" / "HistoViewer"
    (bundle / "_internal").mkdir(parents=True)
    program = bundle / "HistoViewer"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    prefix = tmp_path / "prefix"
    args = ["sh", str(INSTALL_SH), "--bundle", str(bundle), "--prefix", str(prefix)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    installed = prefix / "share" / "applications" / "histoviewer.desktop"
    entry = _desktop_entry(installed)
    assert entry["Exec"] == f'"{program}" %f'
    assert entry["TryExec"] == str(program)
    icons = prefix / "share" / "icons" / "hicolor"
    for size in HICOLOR_SIZES:
        assert (icons / f"{size}x{size}" / "apps" / "histoviewer.png").is_file()
    assert (icons / "scalable" / "apps" / "histoviewer.svg").is_file()

    done = subprocess.run([*args, "--uninstall"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not installed.exists()
    assert not list(icons.rglob("histoviewer.*"))


@pytest.mark.skipif(sys.platform == "win32", reason="install.sh is for Linux desktops")
def test_install_script_points_a_pip_install_at_its_command(tmp_path):
    scripts = tmp_path / "venv" / "bin"
    scripts.mkdir(parents=True)
    command = scripts / "histoviewer"
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    done = subprocess.run(
        ["sh", str(INSTALL_SH), "--prefix", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    entry = _desktop_entry(tmp_path / "p" / "share" / "applications" / "histoviewer.desktop")
    assert entry["Exec"] == f'"{command}" %f'


@pytest.mark.skipif(sys.platform == "win32", reason="install.sh is for Linux desktops")
def test_install_script_refuses_a_folder_that_is_not_the_bundle(tmp_path):
    done = subprocess.run(
        ["sh", str(INSTALL_SH), "--bundle", str(tmp_path), "--prefix", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "holds no HistoViewer program" in done.stderr
    assert not (tmp_path / "p" / "share" / "applications").exists()


# --- the smoke test's own helpers --------------------------------------------------------------


def test_smoke_test_runs_the_app_without_the_development_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("HISTOVIEWER_RESOURCES", "/elsewhere")
    env = smoke.frozen_env(tmp_path, autoquit_ms=1500)
    assert "PYTHONPATH" not in env and "HISTOVIEWER_RESOURCES" not in env
    assert env["HISTOVIEWER_AUTOQUIT_MS"] == "1500"
    assert env["QT_QPA_PLATFORM"] == "offscreen"
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "config")
    assert "HISTOVIEWER_AUTOQUIT_MS" not in smoke.frozen_env(tmp_path)


def test_smoke_test_autoquit_variable_is_the_apps():
    app = (ROOT / "histoviewer" / "gui" / "app.py").read_text(encoding="utf-8")
    assert f'AUTOQUIT_ENV = "{smoke.AUTOQUIT_ENV}"' in app


def test_smoke_test_reads_recent_files_from_qt_settings(tmp_path):
    slide = tmp_path / "slide.tif"
    conf = tmp_path / "config" / "HistoViewer" / "HistoViewer.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[files]\nrecent={tmp_path / 'other.tif'}\n")
    assert not smoke._recent_files_mention(tmp_path / "config", slide)
    conf.write_text(f"[files]\nrecent={slide.resolve()}, {tmp_path / 'other.tif'}\n")
    assert smoke._recent_files_mention(tmp_path / "config", slide)
    assert not smoke._recent_files_mention(tmp_path / "missing", slide)
    with pytest.raises(smoke.SmokeTestFailure, match="holds no HistoViewer program"):
        smoke.executable(tmp_path)
