"""``dmg``: the platform from a terminal.

    dmg run [options]           build the cohorts, train and evaluate, run the experiments, report
    dmg predict FILE [options]  predicted expression for a lab's methylation file
    dmg query "SELECT ..."      any SQL over the warehouse's views (or a .sql file)
    dmg report [COHORT ...]     (re)write the evaluation report and print where it is

Each subcommand is the module it names (``python -m dmg_assets.run`` and so on) with the same
options; ``dmg SUBCOMMAND --help`` explains every one of them.
"""

# This module imports nothing heavy: ``dmg SUBCOMMAND --help`` and a refused option answer at
# once, and Dagster and torch (seconds to import) load only for the command that runs. So the
# parsers are built here, and the defaults they show, whose homes are config classes in modules
# that import Dagster and torch, are copied below; tests/test_cli_help.py checks every copy
# against its home.

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from dagster import DagsterInstance

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

#: Copies (see above). Homes: ``dmg_ml.data.xena.DEFAULT_COHORTS``, ``TrainingConfig``,
#: ``dmg_ml.data.windows.DEFAULT_WINDOW_BP``, ``dmg_assets.evaluation.DEFAULT_MODELS`` and the
#: registry ``dmg_ml.models.registry.MODELS`` (but the CNN).
DEFAULT_COHORTS = ("BRCA", "COAD", "GBM", "LUAD")
DEFAULT_TRAINING_COHORT = DEFAULT_COHORTS[0]
DEFAULT_WINDOW_BP = 1_000_000
DEFAULT_MODELS = ("enet", "mean", "rf")
BASELINE_MODELS = ("mean", "enet", "svr", "rf", "cascade_forest", "mlp", "best")
#: Copies of the ``TrainingConfig`` fields ``dmg run`` offers: type (None for choices), default,
#: choices, description.
TRAINING_FIELDS: dict[str, tuple[type | None, object, tuple[str, ...] | None, str]] = {
    "window_bp": (int, DEFAULT_WINDOW_BP, None, "Window half-width W (bp)."),
    "protocol": (None, "honest", ("honest", "published"),
                 "'honest' (patient-grouped, fresh model per fold, inner early stopping) or "
                 "'published' (the authors' code path; an audit, not an estimate)."),
    "max_epochs": (int, 700, None, "Epochs at most per fold."),
    "patience": (int, 90, None, "Epochs without a better validation loss to stop."),
    "seed": (int, 0, None, "Seed of the folds and initial weights."),
}
TRAINING_OPTIONS = tuple(TRAINING_FIELDS)


class _Parser(argparse.ArgumentParser):
    """Errors in one line, ``PROG: error: MESSAGE``, exit 2; the usage is ``--help``'s."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _field_option(parser: argparse.ArgumentParser, flags: tuple[str, ...], dest: str,
                  kind: type | None, default: object, description: str,
                  choices: tuple[str, ...] | None = None, **extra) -> None:
    """An option for a config field, as ``dmg_assets.run._config_option`` adds it from the
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
    parser = _Parser(
        prog=prog, description=COMMANDS["run"].capitalize() + ".",
        epilog="Exit codes: 0 done; 2 an option, cohort, gene or input file refused; 1 another "
        "failure; 130 after Ctrl-C, 143 after SIGTERM.",
    )
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS),
                        help="cohorts to register and build (default %(default)s)")
    parser.add_argument(
        "--train", nargs="*", default=None,
        help=f"cohorts to train and evaluate on (default: {DEFAULT_TRAINING_COHORT} when among "
        "--cohorts, else the first of them; none trains nothing)",
    )
    for field, (kind, default, choices, description) in TRAINING_FIELDS.items():
        _field_option(parser, ("--" + field.replace("_", "-"),), field, kind, default,
                      description, choices)
    parser.add_argument(
        "--models", nargs="*", default=list(DEFAULT_MODELS),
        help="baseline models to cross-validate beside the CNN (registry names: "
        f"{', '.join(BASELINE_MODELS)}; default %(default)s); none skips the evaluation",
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
    parser = _Parser(
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
    _field_option(parser, ("--cohort", "--training-cohort"), "training_cohort", str,
                  DEFAULT_TRAINING_COHORT,
                  "Cohort whose trained CNNs predict (its cnn_models must have run).",
                  metavar="COHORT")
    _field_option(parser, ("--window-bp",), "window_bp", int, DEFAULT_WINDOW_BP,
                  "Window half-width W (bp) of the models used.")
    _field_option(parser, ("--min-coverage",), "min_coverage", float, 0.8,
                  "Share of a gene's probes a sample must have for the gene to be predicted; the "
                  "missing ones take the training cohort's means.")
    _field_option(parser, ("--min-r2",), "min_r2", float, 0.1,
                  "Genes whose honest R² is below this are not predicted (they are listed in "
                  "prediction_skipped).")
    _field_option(parser, ("--scale",), "scale", None, "auto",
                  "What the file holds: 'auto' detects β or M values.",
                  choices=("auto", "beta", "m_value"))
    _field_option(parser, ("--genes",), "genes", list, [],
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
    parser = _Parser(prog=prog, description=COMMANDS["report"].capitalize() + ".")
    parser.add_argument("cohorts", nargs="*", default=[DEFAULT_TRAINING_COHORT],
                        help="cohorts whose report to write (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Dagster's events of the report's run and the traceback of a "
                        "failure")
    return parser


def _run(argv: list[str]) -> int:
    parser = run_parser()
    args = parser.parse_args(argv)
    from dmg_assets import run

    return run.drive(parser, args)


def _predict(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        predict_parser().parse_args(argv)
    from dmg_assets import predict

    return predict.main(argv)


def _query(argv: list[str]) -> int:
    from warehouse import query

    return query.main(argv)


def _report(argv: list[str]) -> int:
    parser = report_parser()
    args = parser.parse_args(argv)
    from dmg_assets import run, runs
    from dmg_resources.source import validate_cohort

    for cohort in args.cohorts:
        try:
            validate_cohort(cohort)
        except ValueError as exc:
            parser.error(str(exc))
    instance = run._instance()
    return runs.until_interrupted(lambda: runs.in_one_line(
        lambda: _write_reports(instance, args.cohorts, args.verbose), verbose=args.verbose))


def _write_reports(instance: "DagsterInstance", cohorts: list[str], verbose: bool) -> int:
    """The ``evaluation_report`` run of each cohort, and where its report is."""
    from dagster import AssetKey

    from dmg_assets import runs
    from dmg_assets.definitions import defs
    from dmg_assets.partitions import cohort_partitions
    from dmg_assets.report import NothingToReport, report_path

    job = defs.resolve_implicit_global_asset_job_def()
    loggers = {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}}
    for cohort in cohorts:
        if cohort not in instance.get_dynamic_partitions(cohort_partitions.name):
            instance.add_dynamic_partitions(cohort_partitions.name, [cohort])
        try:
            runs.execute(job, instance, partition_key=cohort,
                         asset_selection=[AssetKey("evaluation_report")],
                         run_config={"loggers": loggers})
        except Exception as exc:
            if isinstance(runs.user_error(exc), NothingToReport):
                print(f"error: {cohort} has no evaluation results to report: train it first "
                      f"(dmg run --cohorts {cohort})", file=sys.stderr)
                return 2
            raise runs.RunFailed(f"report {cohort}", exc) from exc
        print(f"Report: {report_path(defs.resources['warehouse'], cohort)}")
    return 0


HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "run": _run, "predict": _predict, "query": _query, "report": _report,
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dmg", description=__doc__.replace("``", ""),
        epilog="dmg SUBCOMMAND --help explains every option of a subcommand.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="SUBCOMMAND",
                        help=", ".join(COMMANDS))
    parser.add_argument("arguments", nargs=argparse.REMAINDER,
                        help="the subcommand's own options")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return HANDLERS[args.command](args.arguments)


if __name__ == "__main__":
    raise SystemExit(main())
