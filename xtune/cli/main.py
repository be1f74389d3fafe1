"""Entry point of `xtune` and `python -m xtune`: parse, dispatch, and turn errors into exit codes.

User mistakes print one `Error: ...` line and exit 2, run-time failures exit 1; `--debug` (or
XTUNE_DEBUG=1) shows the traceback instead. A command never exits 0 after a failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from xtune import __version__
from xtune.errors import UsageError, XtuneError

# Subcommand modules in xtune.cli, in the order `xtune --help` lists them.
COMMANDS = ["list_cfg", "copy_cfg", "train", "estimate", "plugins_cmd", "template", "check_custom_dataset",
            "log_dataset", "convert", "chat", "serve", "webui", "eval", "reward"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one Error line (exit 2) instead of a usage dump."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}", hint=f"see '{self.prog} --help'")


def build_parser(plugin_system=None) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="xtune",
        description="Fine-tune large language models from recipes: train, convert, merge and chat.",
    )
    parser.add_argument("--version", action="version", version=f"xtune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xtune.cli.{name}").add_parser(subparsers, common)
    if plugin_system is not None:
        plugin_system.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("XTUNE_DEBUG") == "1"
    from xtune.cli.quiet import quiet_library_noise

    quiet_library_noise(debug)
    try:
        from xtune.plugins import get_plugin_system

        system = get_plugin_system()
        parser = build_parser(system)
        args = parser.parse_args(argv)
        debug = debug or getattr(args, "debug", False)
        if not hasattr(args, "func"):
            parser.print_help()
            return 0 if not argv else 2
        if getattr(args, "warn_plugin_failures", True):
            system.warn_failures()
        code = args.func(args)
        return int(code or 0)
    except XtuneError as exc:
        if debug:
            traceback.print_exc()
        return _error(str(exc), exc.exit_code)
    except BrokenPipeError:  # `xtune list-cfg | head`: the reader left; say nothing, exit like SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except Exception as exc:  # a bug or a library failure: still one line unless --debug
        if debug:
            traceback.print_exc()
        return _error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)


def _error(message: str, code: int) -> int:
    """The one `Error:` line; a process of a multi-process run hands it to xtune's launcher instead, which
    prints the first process's."""
    from xtune.engine.launch import record_rank_error

    if not record_rank_error(message, code):
        print(f"Error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
