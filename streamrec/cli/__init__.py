"""The `streamrec` command: argument parsing and exit codes (2 for bad input, 1 for internal failure).

This is the only module that calls sys.exit. Each command family is a module here (data, train, evaluate, run,
bench, engines) with its arguments beside its handler; args holds what they share. Handlers import their
implementation lazily so that `streamrec --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from rich.logging import RichHandler
from rich.text import Text

from streamrec import __version__
from streamrec.cli import bench, data, engines, evaluate, run, train, tune
from streamrec.cli.args import console
from streamrec.core.errors import UserError
from streamrec.core.redact import RedactingFilter, redact

log = logging.getLogger("streamrec")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line like every other error (exit 2), the usage left to --help.
    Subcommand parsers are of the same class (add_subparsers' default)."""

    def error(self, message: str) -> NoReturn:
        _print_error("error:", f"{self.prog}: {message} (see {self.prog} --help)")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamrec",
        description="Real-time recognition of musical instruments in live and recorded video.",
    )
    parser.add_argument("--version", action="version", version=f"streamrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks on failure")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for family in (data, train, tune, evaluate, run, bench, engines):
        family.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handler = RichHandler(console=console, show_path=False, show_time=False)
    handler.addFilter(RedactingFilter())  # every log line, from any library: no URL credentials
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", handlers=[handler])
    try:
        code = args.func(args)
    except UserError as e:
        _print_error("error:", str(e))
        code = 2
    except KeyboardInterrupt:
        console.print("interrupted")
        code = 130
    except Exception as e:  # an internal failure: one line, the traceback with --verbose
        if args.verbose:
            console.print_exception()
        _print_error("internal error:", f"{type(e).__name__}: {e} (run with --verbose for the traceback)")
        code = 1
    distributed = sys.modules.get("streamrec.train.distributed")  # imported only by training commands
    if distributed is not None and distributed.took_part():
        distributed.end_process(code)
    sys.exit(code)


def _print_error(prefix: str, message: str) -> None:
    """One line: the message as plain text (a path may hold brackets), its URL credentials redacted."""
    console.print(Text.assemble((prefix, "red"), " ", redact(message)), highlight=False, soft_wrap=True)
