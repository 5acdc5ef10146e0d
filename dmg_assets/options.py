"""The options of the ``dmg`` subcommands: their parsers, in a module that imports nothing heavy.

``dmg SUBCOMMAND --help`` and a refused option answer at once, and Dagster and torch (seconds to
import) load only for the command that runs. The defaults the parsers show come from
``dmg_ml.defaults`` (which imports nothing), and the descriptions and choices, whose homes are
config classes in modules that import Dagster and torch, are copied here; tests/test_cli_help.py
checks every copy against its home.
"""

import argparse
from typing import NoReturn

from dmg_ml import defaults

COMMANDS: dict[str, str] = {
    "run": "build the cohorts, train and evaluate the models, run the experiments, write the "
           "report (what make run does)",
    "predict": "predict expression for the samples of a methylation file (β or M values)",
    "query": "run SQL over the warehouse's views and print the rows",
    "report": "write the evaluation report of cohorts already trained and print where it is",
}

#: The experiments ``--experiments`` offers, and those of the default run (the window experiment
#: trains every model four times over: through the option).
EXPERIMENTS = ("tissue", "generalisation", "window")
DEFAULT_EXPERIMENTS = ("tissue", "generalisation")

DEFAULT_TRAINING_COHORT = defaults.TRAINING_COHORT
#: A copy (see above) of the registry's names, ``dmg_ml.evaluation.registry.ModelName``.
MODELS = ("mean", "enet", "svr", "rf", "cascade_forest", "mlp", "cnn", "best")
#: The ``EvaluationConfig`` fields ``dmg run`` offers: type (None for choices), default, choices
#: (copies) and description (copies).
TRAINING_FIELDS: dict[str, tuple[type | None, object, tuple[str, ...] | None, str]] = {
    "window_bp": (int, defaults.WINDOW_BP, None, "Window half-width W (bp)."),
    "protocol": (None, defaults.PROTOCOL, ("honest", "published"),
                 "'honest' (patient-grouped, fresh model per fold, inner early stopping) or "
                 "'published' (the authors' code path; an audit, not an estimate)."),
    "max_epochs": (int, defaults.MAX_EPOCHS, None, "Epochs at most per fold."),
    "patience": (int, defaults.PATIENCE, None,
                 "Epochs without a better validation loss to stop."),
    "seed": (int, defaults.SEED, None,
             "Seed of the folds, the CNN's initial weights and every model."),
}
TRAINING_OPTIONS = tuple(TRAINING_FIELDS)


class Parser(argparse.ArgumentParser):
    """Errors in one line, ``PROG: error: MESSAGE``, exit 2; the usage is ``--help``'s."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def field_option(parser: argparse.ArgumentParser, flags: tuple[str, ...], dest: str,
                  kind: type | None, default: object, description: str,
                  choices: tuple[str, ...] | None = None, **extra) -> None:
    """An option for a config field, as ``dmg_assets.commands.config_option`` adds it from the
    config class: the field's default and choices, its description and ``(default ...)``."""
    options: dict = {"default": default, "help": f"{description} (default %(default)s)"}
    if choices is not None:
        options["choices"] = choices
    elif kind is list:
        options["nargs"] = "*"
    else:
        options["type"] = kind
    parser.add_argument(*flags, dest=dest, **extra, **options)


def run_parser(prog: str = "dmg run") -> argparse.ArgumentParser:
    """The options of ``dmg run`` (``python -m dmg_assets.run``)."""
    parser = Parser(
        prog=prog, description=COMMANDS["run"].capitalize() + ".",
        epilog="Exit codes: 0 done; 2 an option, cohort, gene or input file refused; 1 another "
        "failure; 130 after Ctrl-C, 143 after SIGTERM.",
    )
    parser.add_argument("--cohorts", nargs="+", default=list(defaults.COHORTS),
                        help="cohorts to register and build (default %(default)s)")
    parser.add_argument(
        "--train", nargs="*", default=None,
        help=f"cohorts to train and evaluate on (default: {DEFAULT_TRAINING_COHORT} when among "
        "--cohorts, else the first of them; none trains nothing)",
    )
    for field, (kind, default, choices, description) in TRAINING_FIELDS.items():
        field_option(parser, ("--" + field.replace("_", "-"),), field, kind, default,
                      description, choices)
    parser.add_argument(
        "--models", nargs="+", default=list(defaults.MODELS),
        help="models to cross-validate on the same outer folds (registry names: "
        f"{', '.join(MODELS)}; default %(default)s)",
    )
    parser.add_argument(
        "--experiments", nargs="*", default=list(DEFAULT_EXPERIMENTS), choices=EXPERIMENTS,
        help="the paper's experiments to run on each training cohort after its models: "
        "tissue (all, tumour-only, normal-only samples), generalisation (its models applied to "
        "the other cohorts), window (1 kb to 1 Mb; slower); default: "
        + " ".join(DEFAULT_EXPERIMENTS) + "; none skips them",
    )
    parser.add_argument(
        "--genes", nargs="+", default=None,
        help="only these genes (any chromosomes: each goes to its own partition)",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="show Dagster's INFO events (each step's own progress) above the progress bar, "
        "and the traceback of a failure",
    )
    parser.add_argument(
        "--keep-last-weights", action="store_true",
        help="keep each fold's last-epoch weights (restore_best_weights: false), as the "
        "authors' script does in effect; with --protocol published --seed 42 it is their run",
    )
    return parser


def predict_parser(prog: str = "dmg predict") -> argparse.ArgumentParser:
    """A copy of ``dmg_assets.predict.build_parser`` (``PredictionConfig``'s fields), which shows
    ``dmg predict --help`` without importing it; the command itself parses with its own."""
    parser = Parser(
        prog=prog, description=COMMANDS["predict"].capitalize() + ".",
        epilog="Results: the tables predicted_expression and prediction_skipped, one batch each; "
        "a batch that holds rows is refused unless --replace.",
    )
    parser.add_argument("file", metavar="FILE",
                        help="Methylation file of the new samples: a Xena β matrix or a probes × "
                        "samples TSV/CSV (gzipped or not), 450K or EPIC probe ids, β or M values.")
    parser.add_argument(
        "--batch", default=None,
        help="name of the batch the rows are stored under: letters, digits, dashes and "
        "underscores (default: the file's name without its extensions, e.g. lab_2024 for "
        "lab_2024.tsv.gz)",
    )
    field_option(parser, ("--cohort", "--training-cohort"), "training_cohort", str,
                  DEFAULT_TRAINING_COHORT,
                  "Cohort whose trained CNNs predict (its model_evaluation must have run).",
                  metavar="COHORT")
    field_option(parser, ("--window-bp",), "window_bp", int, defaults.WINDOW_BP,
                  "Window half-width W (bp) of the models used.")
    field_option(parser, ("--min-coverage",), "min_coverage", float, 0.8,
                  "Share of a gene's probes a sample must have for the gene to be predicted; the "
                  "missing ones take the training cohort's means.")
    field_option(parser, ("--min-r2",), "min_r2", float, 0.1,
                  "Genes whose honest R² is below this are not predicted (they are listed in "
                  "prediction_skipped).")
    field_option(parser, ("--scale",), "scale", None, "auto",
                  "What the file holds: 'auto' detects β or M values.",
                  choices=("auto", "beta", "m_value"))
    field_option(parser, ("--genes",), "genes", list, [],
                  "Only these genes (default: every gene with a model).")
    parser.add_argument(
        "--replace", action="store_true",
        help="replace the batch's rows if it holds some (without it such a batch is refused)",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="show Dagster's INFO events (the step's progress lines) instead of the progress bar",
    )
    return parser


def report_parser(prog: str = "dmg report") -> argparse.ArgumentParser:
    """The options of ``dmg report``."""
    parser = Parser(prog=prog, description=COMMANDS["report"].capitalize() + ".")
    parser.add_argument("cohorts", nargs="*", default=[DEFAULT_TRAINING_COHORT],
                        help="cohorts whose report to write (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Dagster's events of the report's run and the traceback of a "
                        "failure")
    return parser
