"""The CLI explains itself: help on every option, an example per subcommand, the config keys
listed from the config types, every config error of one input at once, and no torch import
before a command needs it."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from metalandscape.cli import build_parser, main
from metalandscape.config import ConfigError, RunConfig, config_keys, resolve_run_config


def _subparsers(parser: argparse.ArgumentParser, path: str = "metalandscape"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from _subparsers(sub, f"{path} {name}")


def test_every_subcommand_has_a_description_an_example_and_helped_options() -> None:
    commands = dict(_subparsers(build_parser()))
    assert {"metalandscape train", "metalandscape plan", "metalandscape figure"} <= set(commands)
    for path, parser in commands.items():
        assert parser.description, f"{path} has no description"
        assert parser.epilog and "example:" in parser.epilog, f"{path} has no example"
        assert path.split()[-1] in parser.epilog or "metalandscape" in parser.epilog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{path} {action.option_strings or action.dest} has no help"


def test_list_config_prints_every_runconfig_field_with_its_meaning(capsys) -> None:
    assert main(["train", "--list-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines[1:]}
    fields = {field.name for field in dataclasses.fields(RunConfig)}
    assert set(listed) == fields
    for key in config_keys():
        assert key.help, f"RunConfig.{key.name} has no help metadata"
        assert key.help in listed[key.name] and key.default in listed[key.name]
    assert "required" in listed["dataset"] and "500" in listed["iterations_per_epoch"]


def test_every_config_error_of_one_input_is_reported_together() -> None:
    raw = {
        "dataset": "omniglot",
        "algorithm": "bogus",
        "n_way": 0,
        "train_phase": [2, 1],
        "colour": "red",
    }
    with pytest.raises(ConfigError) as caught:
        resolve_run_config(raw)
    errors = caught.value.errors
    assert len(errors) == 5
    for needle in ("'colour'", "'algorithm'", "'n_way'", "'train_phase'", "needs 'data_path'"):
        assert sum(needle in error for error in errors) == 1, needle
    assert all("\n" not in error for error in errors)
    assert str(caught.value).startswith("5 config errors: ")
    with pytest.raises(ConfigError) as single:
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "epochs": -1})
    assert str(single.value) == single.value.errors[0] and "'epochs'" in str(single.value)


def test_train_prints_each_config_error_on_its_own_line_and_exits_2(capsys, tmp_path) -> None:
    out = tmp_path / "r.h5"
    arguments = ["train", "--set", "dataset=sinusoid", "--set", "algorithm=nope"]
    code = main([*arguments, "--set", "epochs=-3", "--set", "seed=x", "--out", str(out)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("metalandscape train: error: config key") for line in lines)
    assert not out.exists()


PROBE = """
import sys
from metalandscape.cli import main
try:
    code = main({argv!r})
except SystemExit as stop:
    code = stop.code
print("torch" in sys.modules, code)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["train", "--list-config"],
        ["train", "--set", "dataset=sinusoid", "--set", "algorithm=x", "--out", "r.h5"],
        ["plan", "--help"],
    ],
)
def test_help_and_config_errors_do_not_import_torch(argv, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    torch_loaded, code = result.stdout.strip().splitlines()[-1].split()
    assert torch_loaded == "False", result.stdout + result.stderr
    assert code in ("0", "2")
