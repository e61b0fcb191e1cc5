"""The top-level command: dispatch, one-line errors, exit codes."""

import io
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from histoviewer import cli
from histoviewer.slide.synthetic import write_strip_tiff


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("histoviewer ")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in cli.SUBCOMMANDS:
        assert command in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["gui"]),
        (["slide.svs"], ["gui", "slide.svs"]),
        (["-v", "slide.svs"], ["-v", "gui", "slide.svs"]),
        (["gui", "slide.svs"], ["gui", "slide.svs"]),
        (["map", "a.tif", "--out", "o"], ["map", "a.tif", "--out", "o"]),
        (["--help"], ["--help"]),
        # The viewer's own options go to it, not to the top-level parser.
        (["slide.svs", "--model", "m.pt"], ["gui", "slide.svs", "--model", "m.pt"]),
        (["--model", "m.pt", "slide.svs"], ["gui", "--model", "m.pt", "slide.svs"]),
        (["--model=m.pt"], ["gui", "--model=m.pt"]),
        (["slide.svs", "-v"], ["-v", "gui", "slide.svs"]),
        (["-vq", "--model", "m.pt"], ["-vq", "gui", "--model", "m.pt"]),
        (["gui", "slide.svs", "--model", "m.pt"], ["gui", "slide.svs", "--model", "m.pt"]),
        (["-v", "map", "a.tif"], ["-v", "map", "a.tif"]),
        (["--", "-odd.svs"], ["gui", "--", "-odd.svs"]),
    ],
)
def test_a_bare_slide_opens_the_viewer(argv, expected):
    assert cli._normalise_argv(argv) == expected


def test_the_top_level_options_are_the_parsers():
    options = {o for a in cli.build_parser()._actions for o in a.option_strings}
    assert options == set(cli._TOP_LEVEL_OPTIONS)


@pytest.mark.parametrize(
    "argv",
    [
        ["s.tif", "--model", "m.pt"],
        ["gui", "s.tif", "--model", "m.pt"],
        ["--model", "m.pt", "s.tif"],
        ["-v", "gui", "--model=m.pt", "s.tif"],
    ],
)
def test_both_forms_take_a_model_for_the_viewer(argv):
    args = cli.build_parser().parse_args(cli._normalise_argv(argv))
    assert (args.command, args.slide, args.model) == ("gui", "s.tif", "m.pt")
    # What gui/app.py's main is given (its parser uses the same add_gui_arguments).
    assert cli.gui_argv(args) == ["--model=m.pt", "--", "s.tif"]


def test_the_viewers_arguments_survive_odd_names():
    args = cli.build_parser().parse_args(["gui", "--model=-m.pt", "--", "-s.tif"])
    assert (args.slide, args.model) == ("-s.tif", "-m.pt")
    assert cli.gui_argv(args) == ["--model=-m.pt", "--", "-s.tif"]
    none = cli.build_parser().parse_args(["gui"])
    assert cli.gui_argv(none) == []


def test_help_names_the_model_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "[SLIDE] [--model MODEL]" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["gui", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model MODEL" in out and "slide" in out


def test_info_prints_the_slide_geometry(capsys, tmp_path):
    path = write_strip_tiff(tmp_path / "s.tif", width=400, height=300)
    code, out, err = run(capsys, "info", str(path))
    assert code == 0, err
    assert "400 x 300" in out and "0.495" in out


def test_bad_input_is_one_line_and_exit_1(capsys, tmp_path):
    missing = tmp_path / "nope.svs"
    code, out, err = run(capsys, "info", str(missing))
    assert out == ""
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("histoviewer: error:")
    assert "nope.svs" in lines[0] and "Traceback" not in err

    not_a_slide = tmp_path / "notes.tif"
    not_a_slide.write_text("this is not an image")
    code, _, err = run(capsys, "info", str(not_a_slide))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "notes.tif" in err


def test_bad_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["map", "--stride"])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_unless_debugging(capsys, monkeypatch, tmp_path):
    path = write_strip_tiff(tmp_path / "s.tif", width=400, height=300)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("histoviewer.mapping.commands.open_slide", broken, raising=False)
    monkeypatch.setattr("histoviewer.slide.open_slide", broken)
    code, _, err = run(capsys, "info", str(path))
    assert code == 1 and "unexpected error: ZeroDivisionError: bug" in err
    assert "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "info", str(path)])


def test_map_refuses_an_unwritable_out_folder_before_mapping(capsys, tmp_path, monkeypatch):
    path = write_strip_tiff(tmp_path / "s.tif", width=400, height=300)
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was loaded although the output cannot be written")

    monkeypatch.setattr("histoviewer.model.load_model", must_not_run)
    code, _, err = run(capsys, "map", str(path), "--model", "m.safetensors", "--out", str(blocker))
    assert code == 1 and "is a file, not a folder" in err


def _name_max(folder) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


@pytest.mark.parametrize("where", ["slide", "out", "train-data", "model"])
def test_names_over_the_systems_limit_are_one_clear_line(capsys, tmp_path, where):
    too_long = "n" * (_name_max(tmp_path) + 10)
    slide = write_strip_tiff(tmp_path / "s.tif", width=400, height=300)
    argv = {
        "slide": ["map", str(tmp_path / f"{too_long}.tif"), "--model", "m.pt", "--out", "o"],
        "out": ["map", str(slide), "--model", "m.pt", "--out", str(tmp_path / too_long)],
        "train-data": ["train", str(tmp_path / too_long), "--out", str(tmp_path / "run")],
        "model": ["map", str(slide), "--model", str(tmp_path / f"{too_long}.pt"), "--out", "o"],
    }[where]
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("histoviewer: error:") and "unexpected" not in err
    assert "the name is too long for the file system" in lines[0]


def _histoviewer(*argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "histoviewer", *argv],
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_a_closed_pipe_stops_the_output_quietly(tmp_path):
    slide = write_strip_tiff(tmp_path / "s.tif", width=400, height=300)
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -0`: the reader is gone before anything is written
    proc = _histoviewer("info", str(slide), stdout=write_end)
    os.close(write_end)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert err == ""


def test_tifffiles_own_warnings_do_not_reach_the_terminal(tmp_path):
    path = tmp_path / "odd.tif"
    image = np.zeros((256, 256, 3), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, photometric="rgb", tile=(128, 128))
        tif.write(image[::2, ::2], photometric="rgb", tile=(128, 128))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        first = tif.pages[0].offset
    (entries,) = struct.unpack("<H", data[first : first + 2])
    next_ifd = first + 2 + 12 * entries
    data[next_ifd : next_ifd + 4] = struct.pack("<I", len(data) + 1000)  # past the end
    path.write_bytes(bytes(data))
    proc = _histoviewer("info", str(path), stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "256 x 256" in out
    assert "invalid page offset" not in err and "tifffile" not in err.lower()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_map_bar_counts_whole_patches_with_the_engines_rate(monkeypatch):
    from histoviewer.mapping.commands import _ProgressReporter
    from histoviewer.mapping.engine import MapProgress

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # A partial map being continued: 400 of 1000 patches were done before this run.
    with _ProgressReporter("s.tif") as reporter:
        for done in (400, 600, 900):
            reporter(MapProgress(done, 1000, 50, 123.456, 2.0, 3.0))
        shown = str(reporter.bar)  # the bar as tqdm draws it (it redraws at most every 0.1 s)
    assert terminal.getvalue().startswith("\rs.tif:  40%|")
    assert re.fullmatch(
        r"s\.tif:  90%\|.*\| 900/1000 patches \[00:0\d, 123\.5 patches/s, 2 s left\]", shown
    )
    # tqdm's own rate, which counted the 400 earlier patches as done in no time, is gone.
    assert "patch/s" not in terminal.getvalue() and "it/s" not in terminal.getvalue()
