"""__main__.py: one dispatcher for every command (evaluate's subcommands too), each command's function exists."""

import importlib

import pytest

from tokencompose.__main__ import COMMANDS, dispatch, main
from tokencompose.evaluate.cli import SUBCOMMANDS


@pytest.mark.parametrize("table", [COMMANDS, SUBCOMMANDS], ids=["commands", "evaluate"])
def test_every_command_points_at_a_function_with_a_docstring(table):
    for name, (module_name, function_name, text) in table.items():
        function = getattr(importlib.import_module(module_name), function_name)
        assert callable(function) and function.__doc__ and text, name


def test_help_lists_every_command_and_unknown_ones_fail(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)
    assert main(["evaluate", "--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in SUBCOMMANDS)
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert dispatch([], SUBCOMMANDS, "prog") == 2


def test_dispatch_passes_the_rest_of_the_arguments(monkeypatch):
    seen = []
    monkeypatch.setattr("tokencompose.evaluate.cli.multigen_cli", lambda argv: seen.append(argv) or 7)
    assert main(["evaluate", "multigen", "--out", "x"]) == 7 and seen == [["--out", "x"]]
