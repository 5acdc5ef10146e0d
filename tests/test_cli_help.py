"""``dmg SUBCOMMAND --help``: the right program name, no reST markup, and no Dagster, torch or
pandas imported for it (they take seconds; help must take well under one). The light parsers of
``dmg_assets.cli`` mirror defaults whose home is a config class: checked here against it."""

import json
import subprocess
import sys
from pathlib import Path

from dmg_assets import cli

ROOT = Path(__file__).resolve().parents[1]

#: Prints, as JSON, the exit code and the help of each command, and which heavy packages the
#: process imported.
HELP = """
import contextlib, io, json, sys
from dmg_assets import cli

out = {}
for command in ([], ["run"], ["predict"], ["report"]):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            code = cli.main([*command, "--help"])
        except SystemExit as exit_:
            code = exit_.code
    out[" ".join(["dmg", *command])] = {"code": code, "help": text.getvalue()}
out["imported"] = sorted(m for m in ("dagster", "torch", "pandas") if m in sys.modules)
print(json.dumps(out))
"""


def test_help_names_each_command_and_imports_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", HELP], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out.pop("imported") == []
    for command, shown in out.items():
        assert shown["code"] == 0, command
        assert shown["help"].startswith(f"usage: {command} "), shown["help"][:80]
        assert "``" not in shown["help"], command
    assert "--max-epochs MAX_EPOCHS" in out["dmg run"]["help"]
    assert "Epochs at most per fold. (default 700)" in out["dmg run"]["help"]
    assert "FILE" in out["dmg predict"]["help"] and "--min-r2" in out["dmg predict"]["help"]
    assert "cohorts" in out["dmg report"]["help"]


def _actions(parser) -> list[tuple]:
    return [(a.option_strings, a.dest, a.default, a.choices, a.nargs, a.metavar, a.type, a.help)
            for a in parser._actions]


def test_the_run_options_mirror_their_configs():
    import argparse
    from typing import get_args

    from dmg_assets import options, run
    from dmg_assets.commands import config_option
    from dmg_assets.evaluation import EvaluationConfig
    from dmg_ml import defaults
    from dmg_ml.data.xena import DEFAULT_COHORTS
    from dmg_ml.evaluation.registry import MODELS, ModelName

    light = {a.dest: a for a in cli.run_parser()._actions}
    reference = argparse.ArgumentParser()
    for field in options.TRAINING_OPTIONS:
        config_option(reference, EvaluationConfig, field)
    for action in reference._actions[1:]:
        mirrored = light[action.dest]
        assert (mirrored.default, mirrored.choices, mirrored.type, mirrored.help) == (
            action.default, action.choices, action.type, action.help), action.dest
    assert light["models"].default == list(defaults.MODELS) == ["cnn", "enet", "mean", "rf"]
    assert light["models"].nargs == "+"
    assert EvaluationConfig.model_fields["models"].default == list(defaults.MODELS)
    assert options.MODELS == tuple(MODELS) == get_args(ModelName)
    assert light["cohorts"].default == list(DEFAULT_COHORTS)
    assert run.build_parser().prog == "python -m dmg_assets.run"


def test_the_light_predict_parser_mirrors_the_commands_own():
    """``dmg predict --help`` is served by options.predict_parser, which must say what
    ``dmg_assets.predict.build_parser`` accepts (update the mirror when that changes)."""
    from dmg_assets import predict

    own, light = predict.build_parser(), cli.predict_parser()
    assert _actions(light) == _actions(own)
    assert light.epilog == own.epilog
    assert light.prog == "dmg predict"
