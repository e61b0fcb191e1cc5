"""Smoke-test a built HistoViewer app folder: it starts, opens a slide, maps it and quits.

    python packaging/smoke_test.py /tmp/hv-build/dist/HistoViewer [--json report.json]

Runs in the development environment (it writes the test slide and a tiny model with
histoviewer itself), then starts the frozen program with no Python environment around it:

1. ``HistoViewer --version`` prints the package version (the metadata was bundled);
2. ``HistoViewer info SLIDE`` reads a generated strip TIFF;
3. ``HistoViewer map SLIDE --model tiny.safetensors`` classifies it on the CPU (torch,
   torchvision and the exports work frozen), then again with ``--backend onnxruntime``
   (the ONNX export and ONNX Runtime work frozen, and the exported model is kept);
4. ``HistoViewer SLIDE`` opens the viewer offscreen with HISTOVIEWER_AUTOQUIT_MS set, twice:
   it must exit 0, log no error, and have put the slide in its recent-files list, which
   happens only after the slide opened in the window.

Start-up time is the viewer's wall-clock time minus the auto-quit delay: the delay starts
once the window is shown, so the rest is start-up plus shutting down (an upper bound).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("smoke_test")

AUTOQUIT_ENV = "HISTOVIEWER_AUTOQUIT_MS"  # histoviewer.gui.app.AUTOQUIT_ENV
SLIDE_SIZE = (1200, 900)
ERROR_MARKERS = ("Traceback", "unexpected error", "Cannot open slide", "error:")


class SmokeTestFailure(Exception):
    """The frozen app did not do what a check expected; the message says which and why."""


@dataclass
class SmokeResult:
    """What the checks measured (seconds)."""

    version: str = ""
    version_s: float = 0.0
    info_s: float = 0.0
    map_s: float = 0.0
    gui_runs_s: list[float] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    autoquit_ms: int = 0


def executable(app_dir: Path) -> Path:
    """The program inside a one-folder build (``HistoViewer`` or ``HistoViewer.exe``)."""
    for name in ("HistoViewer.exe", "HistoViewer"):
        if (app_dir / name).is_file():
            return app_dir / name
    raise SmokeTestFailure(f"{app_dir} holds no HistoViewer program: was the build completed?")


#: Variables of the development environment that a user's session does not have.
_NOT_THE_USERS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "HISTOVIEWER_RESOURCES",
    "HISTOVIEWER_ONNX_CACHE_DIR",
)


def frozen_env(work: Path, autoquit_ms: int | None = None) -> dict[str, str]:
    """The environment of a user's session: no Python paths, settings in a scratch folder."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_THE_USERS}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        XDG_CONFIG_HOME=str(work / "config"),
        XDG_CACHE_HOME=str(work / "cache"),
        XDG_DATA_HOME=str(work / "data"),
        MPLCONFIGDIR=str(work / "mpl"),
    )
    env.pop(AUTOQUIT_ENV, None)
    if autoquit_ms is not None:
        env[AUTOQUIT_ENV] = str(autoquit_ms)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[str, float]:
    """Run the frozen program; its combined output and wall time, or SmokeTestFailure."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SmokeTestFailure(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from None
    elapsed = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SmokeTestFailure(f"{' '.join(cmd)} exited with {done.returncode}:\n{output[-4000:]}")
    log.info("%s: %.1f s", " ".join(Path(c).name for c in cmd), elapsed)
    return output, elapsed


def make_inputs(work: Path) -> tuple[Path, Path]:
    """A small synthetic slide and a tiny random ResNet-18 checkpoint, made with histoviewer."""
    from histoviewer.model import ModelInfo, build_network
    from histoviewer.model.checkpoint import save_model
    from histoviewer.slide.synthetic import write_strip_tiff

    width, height = SLIDE_SIZE
    slide = write_strip_tiff(work / "smoke-slide.tif", width=width, height=height, seed=3)
    info = ModelInfo.recipe(arch="resnet18", input_size=32, name="smoke-test model")
    model = save_model(work / "tiny.safetensors", build_network("resnet18", info.num_classes), info)
    return slide, model


def smoke_test(app_dir: Path, *, autoquit_ms: int = 3000, gui_runs: int = 2) -> SmokeResult:
    """Run every check against the app in ``app_dir``; raises SmokeTestFailure on the first miss."""
    program = str(executable(app_dir))
    result = SmokeResult(autoquit_ms=autoquit_ms)
    with tempfile.TemporaryDirectory(prefix="hv-smoke-") as tmp:
        work = Path(tmp)
        slide, model = make_inputs(work)
        env = frozen_env(work)

        output, result.version_s = run([program, "--version"], env, work, timeout=300)
        result.version = output.strip()
        expected = _expected_version()
        if expected and expected not in output:
            raise SmokeTestFailure(f"--version printed {output.strip()!r}, not version {expected}")

        output, result.info_s = run([program, "info", str(slide)], env, work, timeout=300)
        if slide.name not in output or "{} x {} px".format(*SLIDE_SIZE) not in output:
            raise SmokeTestFailure(f"'info' did not describe {slide.name}:\n{output}")

        maps = work / "maps"
        cmd = [program, "map", str(slide), "--model", str(model), "--out", str(maps)]
        output, result.map_s = run([*cmd, "--device", "cpu"], env, work, timeout=300)
        exports = sorted(p.name for p in maps.glob(f"{slide.stem}*")) if maps.is_dir() else []
        if not exports:
            raise SmokeTestFailure(f"'map' wrote nothing to {maps}:\n{output}")
        log.info("map exports: %s", ", ".join(exports))

        ort_maps = work / "maps-onnxruntime"
        cmd = [program, "map", str(slide), "--model", str(model), "--out", str(ort_maps)]
        cmd += ["--device", "cpu", "--backend", "onnxruntime", "--precision", "fp32"]
        output, _ = run(cmd, {**env, "HISTOVIEWER_ONNX_CACHE_DIR": str(work / "onnx")}, work, 300)
        kept = sorted((work / "onnx").glob("*.onnx"))
        if not list(ort_maps.glob(f"{slide.stem}*")) or not kept:
            raise SmokeTestFailure(f"'map --backend onnxruntime' did not work frozen:\n{output}")
        log.info("onnxruntime backend: %s", kept[0].name)

        for attempt in range(gui_runs):
            env = frozen_env(work, autoquit_ms)
            output, elapsed = run([program, str(slide)], env, work, timeout=300)
            if problems := [m for m in ERROR_MARKERS if m in output]:
                raise SmokeTestFailure(f"the viewer reported {problems}:\n{output[-4000:]}")
            if not _recent_files_mention(work / "config", slide):
                raise SmokeTestFailure(
                    f"the viewer exited 0 but never opened {slide.name} (not in recent files):"
                    f"\n{output[-4000:]}"
                )
            result.gui_runs_s.append(round(elapsed, 2))
            result.startup_s.append(round(elapsed - autoquit_ms / 1000, 2))
            log.info("viewer run %d: start-up about %.1f s", attempt + 1, result.startup_s[-1])
    return result


def _recent_files_mention(config_home: Path, slide: Path) -> bool:
    """Whether the viewer's settings (QSettings, under XDG_CONFIG_HOME) list ``slide``."""
    files = list(config_home.rglob("*.conf")) if config_home.is_dir() else []
    return any(str(slide.resolve()) in f.read_text(errors="replace") for f in files)


def _expected_version() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import bundle_config
    finally:
        sys.path.pop(0)
    return bundle_config.project_version()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app_dir", type=Path, help="the built app folder (dist/HistoViewer)")
    parser.add_argument("--autoquit-ms", type=int, default=3000, help="viewer auto-quit delay")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = smoke_test(args.app_dir, autoquit_ms=args.autoquit_ms)
    except SmokeTestFailure as exc:
        print(f"smoke test FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    print(f"smoke test passed: {json.dumps(asdict(result))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
