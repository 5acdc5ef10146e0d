"""Predict expression for new samples from a shell: ``python -m dmg_assets.predict FILE``.

FILE is a methylation matrix of the new samples: a Xena β matrix or a probes × samples TSV/CSV
(gzipped or not), 450K or EPIC probe ids, β or M values (detected; ``--scale`` to say which). The
command registers a prediction batch (``--batch``, by default the file's name without its
extensions) and runs ``prediction_job`` for it, recorded in the Dagster instance
(``$DAGSTER_HOME``, else a temporary one) like the runs of ``python -m dmg_assets.run``. It shows
a progress bar over the genes, then prints how many samples and genes were predicted and skipped,
the scale it read, where the rows are and the SQL that reads them.

Before any run it checks its arguments: FILE is a readable file, every option is valid, and the
batch holds no rows yet (a batch with rows is refused unless ``--replace``: ``lab_2024.tsv`` and
``lab_2024.csv`` both default to batch ``lab_2024``).

Exit codes: 0 when the batch was predicted; 2 when it was refused: a wrong option, a batch that
holds rows, a file the reader refuses (its caps included), no model or gene to predict with;
1 when the run failed for another reason (a damaged checkpoint, a bug); 130 or 143 when
interrupted. A refusal is one line on stderr, ``error: `` and the project's own message (the
file, probe, sample or value it is about); another failure names its exception's class first.
Nothing is written either way; ``--verbose`` shows Dagster's events, the traceback of a failed
step included.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from dagster import LoggerDefinition
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata
from pydantic import ValidationError
from tqdm import tqdm

from dmg_assets import commands, runs
from dmg_assets.commands import cohort_names, config_option
from dmg_assets.definitions import defs
from dmg_assets.metadata import progress_counts
from dmg_assets.partitions import prediction_batches
from dmg_assets.prediction import (
    PredictionConfig,
    PredictionRefused,
    batch_name_for,
    batch_rows,
    batch_sql,
    existing_batch,
    prediction,
    prediction_job,
    validate_batch,
)
from dmg_ml.prediction import PredictionInputError

#: Config field → this command's flags (the first is the one help shows); the other fields of
#: ``PredictionConfig`` but ``input_path`` (the FILE argument) take ``--field-name``.
_FLAGS = {"training_cohort": ("--cohort", "--training-cohort")}
_OPTIONS = ("training_cohort", "window_bp", "min_coverage", "min_r2", "scale", "genes")
#: The step's refusals (exit 2): the exceptions whose message is written for the person.
_REFUSALS = frozenset({PredictionInputError.__name__, PredictionRefused.__name__})
EXIT_REFUSED, EXIT_FAILED = 2, 1


class _Parser(argparse.ArgumentParser):
    """An option error in one line, as every other refusal: ``error: --flag: why``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_REFUSED, f"error: {message} (--help lists the options)\n")


class _Renamed:
    """A parser whose options are added under this command's flags (``_FLAGS``), so
    ``config_option`` gives ``--cohort`` the default, choices and help of ``training_cohort``."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_argument(self, flag: str, **options) -> argparse.Action:
        flags = _FLAGS.get(options["dest"])
        if flags is None:
            return self.parser.add_argument(flag, **options)
        metavar = flags[0].removeprefix("--").replace("-", "_").upper()
        return self.parser.add_argument(*flags, **{"metavar": metavar, **options})


class _GeneBar(logging.Handler):
    """A bar over the genes of the prediction step, with its ETA, moved by the step's progress
    lines (``progress_line``), which the console shows only with ``--verbose``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.bar: tqdm | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not has_log_record_metadata(record):
            return
        counts = progress_counts(get_log_record_metadata(record)["orig_message"])
        if counts is None:
            return
        done, total = counts
        if self.bar is None:
            self.bar = tqdm(total=total, unit="gene", desc="predicting", dynamic_ncols=True,
                            file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def _gene_bar(init_context) -> logging.Logger:
    logger = logging.Logger("dmg_predict_progress", logging.INFO)
    logger.addHandler(_GeneBar())
    return logger


#: The progress bar of ``dmg predict``, a Dagster logger of the run.
GENE_BAR = LoggerDefinition(_gene_bar, description="A terminal progress bar over the genes.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m dmg_assets.predict", description=__doc__.splitlines()[0],
        epilog="Results: the tables predicted_expression and prediction_skipped, one batch each; "
        "a batch that holds rows is refused unless --replace.",
    )
    parser.add_argument("file", metavar="FILE",
                        help=PredictionConfig.model_fields["input_path"].description)
    parser.add_argument(
        "--batch", default=None,
        help="name of the batch the rows are stored under: letters, digits, dashes and "
        "underscores (default: the file's name without its extensions, e.g. lab_2024 for "
        "lab_2024.tsv.gz)",
    )
    for field in _OPTIONS:
        config_option(_Renamed(parser), PredictionConfig, field)
    parser.add_argument(
        "--replace", action="store_true", default=PredictionConfig.model_fields["replace"].default,
        help="replace the batch's rows if it holds some (without it such a batch is refused)",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="show Dagster's INFO events (the step's progress lines) instead of the progress bar",
    )
    return parser


def _config(args: argparse.Namespace) -> dict:
    """The run config of the prediction step: every option, and the file's absolute path."""
    return {"input_path": str(Path(args.file).resolve()), "replace": args.replace,
            **{field: getattr(args, field) for field in _OPTIONS}}


def _check_file(parser: argparse.ArgumentParser, file: str) -> None:
    path = Path(file)
    if not path.exists():
        parser.error(f"FILE: no such file: {file}")
    if not path.is_file():
        parser.error(f"FILE: not a file: {file}")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        parser.error(f"FILE: cannot read {file}: {exc.strerror or exc}")


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, dict]:
    """The batch name and the step's config, or an error (exit 2) saying what is wrong with
    the arguments; nothing has run yet."""
    _check_file(parser, args.file)
    batch = batch_name_for(args.file) if args.batch is None else args.batch
    try:
        validate_batch(batch)
    except ValueError as exc:
        parser.error(f"--batch: {exc}")
    (args.training_cohort,) = cohort_names(parser, "--cohort", [args.training_cohort])
    config = _config(args)
    try:
        PredictionConfig(**config)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = _FLAGS.get(error["loc"][0], ("--" + str(error["loc"][0]).replace("_", "-"),))[0]
        parser.error(f"{flag}: {error['msg'].removeprefix('Value error, ')}")
    return batch, config


def _existing(batch: str, replace: bool) -> PredictionRefused | None:
    """The refusal of ``batch`` when it holds rows and ``--replace`` was not given."""
    rows = {} if replace else batch_rows(defs.resources["warehouse"], batch)
    return existing_batch(batch, rows, "pass --replace", "--batch NAME") if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    batch, config = _checked(parser, args)
    if (refusal := _existing(batch, args.replace)) is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    runs.log_to_terminal()
    return runs.until_interrupted(
        lambda: _predict(batch, config, "INFO" if args.verbose else "WARNING"))


def _predict(batch: str, config: dict, log_level: str) -> int:
    instance = commands.project_instance()
    if batch not in instance.get_dynamic_partitions(prediction_batches.name):
        instance.add_dynamic_partitions(prediction_batches.name, [batch])
    loggers = {"console": {"config": {"log_level": log_level}}}
    run_config = {"ops": {prediction.op.name: {"config": config}},
                  "loggers": loggers if log_level == "INFO" else {**loggers, "progress": {}}}
    print(f"predicting batch {batch} from {config['input_path']} with the CNNs of "
          f"{config['training_cohort']} (W={config['window_bp']:,})", flush=True)
    job = defs.resolve_job_def(prediction_job.name)
    if log_level != "INFO":  # --verbose shows everything, stack traces included
        job = job.with_logger_defs({"console": runs.QUIET_CONSOLE, "progress": GENE_BAR})
    result = runs.execute(job, instance, partition_key=batch, run_config=run_config,
                          raise_on_error=False)
    if not result.success:
        cls_name, message = _failure(result)
        if cls_name in _REFUSALS:
            print(f"error: {message}; nothing was written for batch {batch}", file=sys.stderr)
            return EXIT_REFUSED
        how = ("" if log_level == "INFO"
               else " (an unexpected failure: --verbose shows its traceback)")
        print(f"error: {cls_name}: {message}; nothing was written for batch {batch}{how}",
              file=sys.stderr)
        return EXIT_FAILED
    metadata = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
                for m in result.asset_materializations_for_node(prediction.op.name)}
    _print_results(batch, metadata["predicted_expression"])
    return 0


def _failure(result) -> tuple[str | None, str]:
    """The class and the one-line message of the step's own exception: the first under
    Dagster's wrappers, not the low-level cause it was raised from (``raise ... from exc``)."""
    for event in result.all_events:
        if event.is_step_failure or event.is_run_failure:
            error = (event.step_failure_data.error if event.is_step_failure
                     else event.event_specific_data.error)
            if error is None:
                continue
            while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            return error.cls_name, _message(error.cls_name, error.message)
    return None, "the run failed (see the Dagster UI for its events)"


def _message(cls_name: str | None, message: str) -> str:
    """``'pkg.module.SomeError: text\\n'`` → ``'text'``, on one line."""
    text = message.strip()
    head, sep, rest = text.partition(": ")
    if sep and cls_name and head.rsplit(".", 1)[-1] == cls_name:
        text = rest
    lines = text.splitlines()
    return lines[0] if lines else cls_name or "unknown error"


def _print_results(batch: str, metadata: dict) -> None:
    skipped = {reason: n for reason, n in metadata["skipped_by_reason"].items() if n}
    reasons = "; ".join(f"{reason}: {n}" for reason, n in skipped.items()) or "none"
    database = metadata["database"]
    sql = batch_sql(batch)
    print(f"predicted {metadata['samples']} samples × {metadata['genes_predicted']} genes "
          f"({metadata['rows']:,} rows) with the CNNs of {metadata['training_cohort']} "
          f"(W={metadata['window_bp']:,})")
    print(f"genes skipped: {metadata['genes_skipped']} ({reasons}); the list: prediction_skipped")
    print(f"scale: {metadata['scale']}; {metadata['input']}")
    print(f"rows: tables predicted_expression and prediction_skipped, batch '{batch}', in "
          f"{database}")
    print("read them with:")
    print(f"  {sql}")
    print(f"e.g. python -m warehouse.query --database {database} \"{sql}\"")


if __name__ == "__main__":
    raise SystemExit(main())
