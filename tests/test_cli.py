"""The command line: every sub-command registers, and its help shows each option's default."""
import pytest

from iqa.cli import COMMAND_MODULES, build_parser, main


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping


def test_every_module_registers_a_command():
    commands = {a.dest for a in build_parser()._subparsers._group_actions[0]._choices_actions}
    assert commands == {"score", "evaluate", "benchmark", "synth", "splits", "train", "train-diffusion", "train-rank",
                        "levels", "localise", "partial", "report", "bundle"} and len(commands) == len(COMMAND_MODULES)


@pytest.mark.parametrize("command, shown", [
    ("splits", ["(default: 8:2)", "(default: 10)", "(default: 0)"]),  # 0 is a default worth showing too
    ("report", ["(default: docs/RESULTS.md)", "(default: 3)", "(default: True)"]),
    ("train-diffusion", ["(default: 64)", "(default: generic)"]),
])
def test_help_shows_defaults(command, shown, capsys):
    text = _help(command, capsys)
    assert all(s in text for s in shown), text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_help_does_not_repeat_a_default_the_text_gives(capsys):
    text = _help("score", capsys)
    assert "(default 0:" in text and "(default: 0)" not in text
