"""The `histoviewer` command: the GUI by default, and headless subcommands.

    histoviewer [SLIDE] [--model M]      open the viewer (optionally on a slide, a model)
    histoviewer gui [SLIDE] [--model M]  the same
    histoviewer info SLIDE               format, levels, sizes, µm/px
    histoviewer map SLIDE... --out DIR   tissue maps and exports
    histoviewer train DATA --out DIR     fit a model on labelled tiles
    histoviewer evaluate DATA [--model M] test metrics of a model (default: the shipped one)
    histoviewer extract-tiles SLIDE... --model M --out DIR
                                         labelled patches -> a dataset to fine-tune on
    histoviewer benchmark                engine vs recipe-style baseline

Exit status: 0 on success; 1 for an error caused by the input (HistoViewerError), by
the system (OSError) or by a bug, each printed as one line on stderr (``--debug``
shows the traceback of the latter two), and for a viewer that cannot start (no
display, Qt's X11 libraries missing); 2 for a usage error found by argparse (an
unknown option, a missing or malformed argument), printed with the usage; 130 after
Ctrl-C; 141 when the reader of the output went away (a closed pipe).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from histoviewer import __version__
from histoviewer.errors import HistoViewerError

log = logging.getLogger("histoviewer")

SUBCOMMANDS = ("gui", "info", "map", "benchmark", "train", "evaluate", "extract-tiles")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="histoviewer",
        description="Map tissue types across whole H&E histology slides.",
        epilog="Run 'histoviewer COMMAND --help' for the options of a command. "
        "With no command, the viewer opens: 'histoviewer [SLIDE] [--model MODEL]' is "
        "short for 'histoviewer gui [SLIDE] [--model MODEL]'.",
    )
    parser.add_argument("--version", action="version", version=f"histoviewer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gui = sub.add_parser(
        "gui", help="open the viewer (the default)", description="Open the HistoViewer window."
    )
    add_gui_arguments(gui)
    gui.set_defaults(func=_run_gui)

    from histoviewer.labels import commands as label_commands
    from histoviewer.mapping import commands as mapping_commands
    from histoviewer.training import commands as training_commands

    mapping_commands.register(sub)
    training_commands.register(sub)
    label_commands.register(sub)
    return parser


def add_gui_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of the viewer: ``histoviewer gui`` here and gui/app.py's parser."""
    parser.add_argument("slide", nargs="?", help="a slide to open")
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="a model file (.safetensors, .pth.tar, last.pt) or model folder to load "
        "(instead of the one used last time)",
    )


def gui_argv(args: argparse.Namespace) -> list[str]:
    """The viewer's arguments from parsed ones, for gui/app.py's ``main``."""
    argv = [f"--model={args.model}"] if args.model else []
    if args.slide:
        argv += ["--", args.slide]  # "--": a slide named "-x.tif" is not an option
    return argv


def _run_gui(args: argparse.Namespace) -> int:
    try:
        from histoviewer.gui.app import main as gui_main
    except ImportError as exc:
        raise HistoViewerError(f"the viewer cannot start: {exc} (is PySide6 installed?)") from None
    return gui_main(gui_argv(args))


#: The options of the top-level parser; any other word, option or not, starts the command.
_TOP_LEVEL_OPTIONS = ("-h", "--help", "--version", "-v", "--verbose", "-q", "--quiet", "--debug")


def _is_top_level_option(arg: str) -> bool:
    if arg in _TOP_LEVEL_OPTIONS:
        return True
    if arg.startswith("--"):  # argparse also takes a unique prefix: --verb
        return len(arg) > 2 and any(
            o.startswith(arg) for o in _TOP_LEVEL_OPTIONS if o.startswith("--")
        )
    short_flags = {o[1] for o in _TOP_LEVEL_OPTIONS if len(o) == 2}
    return arg.startswith("-") and len(arg) > 2 and set(arg[1:]) <= short_flags  # -vq


def _normalise_argv(argv: list[str]) -> list[str]:
    """`histoviewer SLIDE [--model M]` is short for `histoviewer gui SLIDE [--model M]`.

    The first word that is not a top-level option decides: a subcommand keeps the
    arguments as they are; anything else (a slide, ``--model``) goes to ``gui``, with
    the top-level options (``-v``, ``--help``, ...) moved before it, wherever they
    were (up to a ``--``, after which every word is the slide).
    """
    options: list[str] = []
    rest: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest += argv[i:]
            break
        (options if _is_top_level_option(arg) else rest).append(arg)
    if rest[:1] and rest[0] in SUBCOMMANDS:
        return argv
    if not rest and any(o in ("-h", "--help", "--version") for o in options):
        return argv
    return [*options, "gui", *rest]


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger("histoviewer")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _os_error_line(exc: OSError) -> str:
    from histoviewer.fileio import describe_os_error

    name = exc.filename if exc.filename is not None else ""
    return f"{os.fsdecode(name)}: {describe_os_error(exc)}" if name else describe_os_error(exc)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _LineFormatter(logging.Formatter):
    """'histoviewer: warning: ...' for warnings and errors, 'histoviewer: ...' otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"histoviewer: {record.levelname.lower()}: {message}"
        return f"histoviewer: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_normalise_argv(argv))
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except HistoViewerError as exc:
        print(f"histoviewer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("histoviewer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`histoviewer info SLIDE | head -1`): stop
        # quietly, as other command-line tools do, and keep Python from complaining
        # again when it flushes stdout at exit.
        _silence_stdout()
        return 141  # 128 + SIGPIPE, the status of a tool stopped by the broken pipe
    except OSError as exc:  # the environment (a name too long, a vanished file), not a bug
        if args.debug:
            raise
        print(f"histoviewer: error: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, unless --debug asks for more
        if args.debug:
            raise
        print(
            f"histoviewer: unexpected error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for details and please report it)",
            file=sys.stderr,
        )
        return 1
