"""`python -m iqa COMMAND ...`: one sub-command per pipeline.

Each command lives in its own module exposing `register(subparsers)`, which adds an argparse
sub-parser whose `func(args) -> int` runs it. Add a module to `COMMAND_MODULES` to add a command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "iqa.score",
    "iqa.evaluate",
    "iqa.benchmark",
    "iqa.data.synth",
    "iqa.data.splits",
    "iqa.train_iqa",
    "iqa.train_diffusion",
    "iqa.train_rank",
    "iqa.levels",
    "iqa.localise",
    "iqa.partial",
    "iqa.report",
    "iqa.bundle",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks and ends each option's help with its default, unless the
    help already names it or there is none to name."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = action.default
        if (not text or not action.option_strings or "default" in text
                or default is None or default is False or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iqa",
                                     description="DiffV2IQA: no-reference image quality assessment")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
