"""Build the one-folder HistoViewer app with PyInstaller, smoke-test it, report its size.

    python packaging/build.py [--out DIR] [--skip-build] [--no-smoke-test]

Needs the development environment with the ``packaging`` extra (PyInstaller) and the
project installed (``pip install -e .[packaging]``). Output goes to ``DIR/dist/HistoViewer``
(default: ``<temp>/hv-build``, outside the repository; PyInstaller's scratch files go to
``DIR/work``), with ``DIR/report.json`` holding the figures printed at the end. On Linux
the desktop entry, icons and install.sh are copied into ``HistoViewer/desktop/``.
The build takes 10 minutes or more and uses every core: run it under ``nice`` on a shared
machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
sys.path.insert(0, str(PACKAGING))

import bundle_config as cfg  # noqa: E402
import smoke_test  # noqa: E402

log = logging.getLogger("build")


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


def preflight() -> None:
    """Check what the build needs before spending ten minutes on it."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise BuildError("PyInstaller is missing: pip install -e .[packaging]") from None
    wanted = cfg.project_version()
    try:
        installed = version("histoviewer")
    except PackageNotFoundError:
        raise BuildError("histoviewer is not installed here: pip install -e .") from None
    if installed != wanted:
        # The bundle's --version comes from the installed metadata, not pyproject.toml.
        raise BuildError(
            f"the installed histoviewer metadata says {installed} but pyproject.toml says "
            f"{wanted}: run pip install -e . again"
        )
    icon = cfg.platform_icon()
    if icon is not None and not icon.is_file():
        import render_icons

        render_icons.render_all()


def run_pyinstaller(out: Path) -> float:
    """Build ``out/dist/HistoViewer``; returns the seconds it took."""
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(PACKAGING / "histoviewer.spec"),
        "--noconfirm",
        "--distpath",
        str(out / "dist"),
        "--workpath",
        str(out / "work"),
    ]
    log.info("running %s", " ".join(cmd))
    start = time.perf_counter()
    log_file = out / "pyinstaller.log"
    with open(log_file, "w", encoding="utf-8") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise BuildError(f"PyInstaller failed (full log: {log_file}):\n{tail}")
    return time.perf_counter() - start


def add_desktop_files(app_dir: Path) -> None:
    """Put what linux/install.sh needs beside the app, so the bundle installs by itself."""
    target = app_dir / "desktop"
    shutil.rmtree(target, ignore_errors=True)
    (target / "icons").mkdir(parents=True)
    for name in ("install.sh", "histoviewer.desktop"):
        shutil.copy2(PACKAGING / "linux" / name, target / name)
    shutil.copytree(cfg.ICONS / "hicolor", target / "icons" / "hicolor")
    shutil.copy2(cfg.RESOURCES / "icons" / "histoviewer.svg", target / "icons")


def folder_sizes(app_dir: Path, depth: int) -> dict[str, int]:
    """Bytes under each folder ``depth`` levels below ``app_dir`` (files higher up: their own)."""
    sizes: dict[str, int] = defaultdict(int)
    for path in app_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            parts = path.relative_to(app_dir).parts
            sizes["/".join(parts[: min(depth, len(parts))])] += path.stat().st_size
    return dict(sizes)


def size_report(app_dir: Path) -> dict:
    """Total size, the ten largest folders (two levels into _internal) and files."""
    files = [p for p in app_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    by_folder = folder_sizes(app_dir, depth=3)
    largest_files = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:10]
    return {
        "total_bytes": sum(p.stat().st_size for p in files),
        "file_count": len(files),
        "top_folders": sorted(by_folder.items(), key=lambda kv: kv[1], reverse=True)[:10],
        "top_files": [(str(p.relative_to(app_dir)), p.stat().st_size) for p in largest_files],
    }


def print_report(report: dict) -> None:
    sizes = report["size"]
    print(f"\nbundle: {report['app_dir']}")
    print(f"size:   {_mb(sizes['total_bytes'])} in {sizes['file_count']} files")
    print("largest folders:")
    for name, size in sizes["top_folders"]:
        print(f"  {_mb(size):>10}  {name}")
    print("largest files:")
    for name, size in sizes["top_files"]:
        print(f"  {_mb(size):>10}  {name}")
    if report.get("build_s"):
        print(f"build:  {report['build_s']:.0f} s")
    if smoke := report.get("smoke_test"):
        print(
            f"smoke test passed: {smoke['version']}; viewer start-up about "
            f"{', '.join(f'{s:.1f}' for s in smoke['startup_s'])} s; 'info' "
            f"{smoke['info_s']:.1f} s, 'map' {smoke['map_s']:.1f} s"
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(tempfile.gettempdir()) / "hv-build"
    parser.add_argument("--out", type=Path, default=default_out, help=f"default {default_out}")
    parser.add_argument("--skip-build", action="store_true", help="test an existing build")
    parser.add_argument("--no-smoke-test", action="store_true", help="build only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out = args.out.resolve()
    app_dir = out / "dist" / cfg.APP_NAME
    report: dict = {"app_dir": str(app_dir), "version": cfg.project_version()}
    try:
        if not args.skip_build:
            preflight()
            out.mkdir(parents=True, exist_ok=True)
            report["build_s"] = round(run_pyinstaller(out), 1)
            if sys.platform.startswith("linux"):
                add_desktop_files(app_dir)
        if not app_dir.is_dir():
            raise BuildError(f"{app_dir} does not exist: build it first (without --skip-build)")
        report["size"] = size_report(app_dir)
        if not args.no_smoke_test:
            report["smoke_test"] = smoke_test.asdict(smoke_test.smoke_test(app_dir))
    except (BuildError, smoke_test.SmokeTestFailure) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if out.is_dir():
            (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
