"""Command-line entry points for every compression step (`python -m compression STEP --help`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from app.decision import DEFAULT_OOS_LABEL
from compression.commands import COMMANDS
from compression.commands.common import UsageError

PROG = "python -m compression"


# The data options, by destination, with the value that means "not given".
DATA_OPTIONS = {"data": None, "oos_label": DEFAULT_OOS_LABEL, "domains": None}


def reads_data(command: ModuleType) -> bool:
    """Whether a command reads intent data (a module sets READS_DATA = False when it only copies or converts)."""
    return getattr(command, "READS_DATA", True)


def add_global_options(parser: argparse.ArgumentParser, defaults: bool = True, data: bool = True) -> None:
    """The options commands share: the data source, its oos label and domains (`data`), verbosity.

    They are taken before the command's name and after it: `defaults=False` (on each command's parser) sets an
    option only when it is given there, so one given before the name is not overwritten by a default.
    """
    where = "after" if defaults else "before"
    group = parser.add_argument_group(f"{'data and ' if data else ''}logging (also accepted {where} the command name)")

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group.add_argument("-v", "--verbose", action="store_true", default=default(False))

    def described(text: str) -> str:
        # A command that reads no data still parses the options, unlisted, so that main() can say why they are refused.
        return text if data else argparse.SUPPRESS

    group.add_argument(
        "--data",
        default=default(DATA_OPTIONS["data"]),
        help=described(
            "CSV or JSONL file of text,label[,split] (your own intents), a CLINC150 oos-eval JSON or an HF dataset "
            "name (default: the local CLINC150 file if present)"
        ),
    )
    group.add_argument(
        "--oos-label",
        default=default(DATA_OPTIONS["oos_label"]),
        help=described(
            "the out-of-scope label, the service's fallback answer; data without such rows still gets it as a "
            f"class (default: {DEFAULT_OOS_LABEL})"
        ),
    )
    group.add_argument(
        "--domains",
        type=Path,
        default=default(DATA_OPTIONS["domains"]),
        help=described(
            'JSON {"domain": [intents]} named in the fallback message (default: CLINC150\'s domains.json for '
            "CLINC150, else none: a generic message)"
        ),
    )


def build_parser(
    commands: Mapping[str, ModuleType] = COMMANDS, prog: str = PROG, description: str | None = __doc__
) -> argparse.ArgumentParser:
    """The argument parser: the global options, then one subcommand per entry of `commands`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_global_options(parser)
    parser.set_defaults(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands.items():
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        add_global_options(command, defaults=False, data=reads_data(module))
        show_defaults(command)
    return parser


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append each option's default to its help, unless the help already says it or there is none to show."""
    for action in parser._actions:
        unset = action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
        hidden = action.help == argparse.SUPPRESS or unset
        if not action.option_strings or hidden or "default" in (action.help or ""):
            continue
        action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def check_data_options(parser: argparse.ArgumentParser, args: argparse.Namespace, command: ModuleType) -> None:
    """A usage error when data options were given before the name of a command that reads no data."""
    if reads_data(command):
        return
    given = [f"--{k.replace('_', '-')}" for k, unset in DATA_OPTIONS.items() if getattr(args, k) != unset]
    if given:
        parser.error(f"{args.command} reads no intent data: {', '.join(given)} would have no effect; drop it")


def main(
    argv: list[str] | None = None,
    commands: Mapping[str, ModuleType] = COMMANDS,
    prog: str = PROG,
    description: str | None = __doc__,
    loggers: Sequence[str] = ("compression", "app"),
) -> int:
    """Parse arguments and run one step."""
    parser = build_parser(commands, prog, description)
    args = parser.parse_args(argv)
    check_data_options(parser, args, commands[args.command])
    # Third-party libraries (ORT's quantizer) log at INFO on the root logger: keep them quiet.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in loggers:
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if reads_data(commands[args.command]):  # data names and base models may be hub ids: fail fast without a hub
        from compression.hub import offline_unless_reachable

        offline_unless_reachable()

    from app.package import PackageError
    from compression.base_models import BaseModelError
    from compression.packaging import OutputDirError

    try:
        return commands[args.command].run(args)
    except UsageError as exc:  # a bad combination of options: usage and exit code 2, as argparse reports
        parser.error(str(exc))
    except (BaseModelError, OutputDirError) as exc:  # a missing base encoder, a folder not to overwrite: one line
        raise SystemExit(f"{args.command}: {exc}") from None
    except (PackageError, FileNotFoundError) as exc:
        # A package or file that is not there or not whole: the message says what to run; --verbose keeps the trace.
        if args.verbose:
            raise
        raise SystemExit(f"{args.command}: {exc}") from None
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, OSError, RuntimeError) as exc:
        # A value the checks let through that a library refuses (torch, numpy, transformers), or the system's own
        # refusal (a full disk, a read-only folder): its message, not a traceback; --verbose keeps the trace.
        if args.verbose:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise SystemExit(f"{args.command}: error: {message} (-v shows where it came from)") from None
