"""The `histoviewer` command: the GUI by default, and headless subcommands.

    histoviewer [SLIDE]                  open the viewer (optionally on a slide)
    histoviewer gui [SLIDE]              the same
    histoviewer info SLIDE               format, levels, sizes, um/px
    histoviewer map SLIDE... --out DIR   tissue maps and exports
    histoviewer train DATA --out DIR     fit a model on labelled tiles
    histoviewer evaluate MODEL DATA      test metrics of a model
    histoviewer benchmark                engine vs recipe-style baseline

Errors caused by the input (HistoViewerError) are printed as one line on
stderr with exit status 1; usage errors exit with status 2.
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

SUBCOMMANDS = ("gui", "info", "map", "benchmark", "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="histoviewer",
        description="Map tissue types across whole H&E histology slides.",
        epilog="Run 'histoviewer COMMAND --help' for the options of a command. "
        "With no command, the viewer opens.",
    )
    parser.add_argument("--version", action="version", version=f"histoviewer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gui = sub.add_parser("gui", help="open the viewer (the default)")
    gui.add_argument("slide", nargs="?", help="a slide to open")
    gui.set_defaults(func=_run_gui)

    from histoviewer.mapping import commands as mapping_commands
    from histoviewer.training import commands as training_commands

    mapping_commands.register(sub)
    training_commands.register(sub)
    return parser


def _run_gui(args: argparse.Namespace) -> int:
    try:
        from histoviewer.gui.app import main as gui_main
    except ImportError as exc:
        raise HistoViewerError(f"the viewer cannot start: {exc} (is PySide6 installed?)") from None
    return gui_main([args.slide] if args.slide else [])


def _normalise_argv(argv: list[str]) -> list[str]:
    """`histoviewer SLIDE` is short for `histoviewer gui SLIDE`."""
    options = [a for a in argv if a.startswith("-")]
    positional = [a for a in argv if not a.startswith("-")]
    if not positional:
        if any(o in ("-h", "--help", "--version") for o in options):
            return argv
        return [*argv, "gui"]
    if positional[0] not in SUBCOMMANDS:
        return [*options, "gui", *positional]
    return argv


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
