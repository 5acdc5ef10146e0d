"""``dmg``: the platform from a terminal.

    dmg run [options]           build the cohorts, train and evaluate, run the experiments, report
    dmg predict FILE [options]  predicted expression for a lab's methylation file
    dmg query "SELECT ..."      any SQL over the warehouse's views (or a .sql file)
    dmg report [COHORT ...]     (re)write the evaluation report and print where it is

Each subcommand is the module it names (``python -m dmg_assets.run`` and so on) with the same
options; ``dmg SUBCOMMAND --help`` explains every one of them.
"""

# This module imports nothing heavy (its parsers are ``dmg_assets.options``): each subcommand's
# module (Dagster, torch, DuckDB) is imported by the function that runs it.

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from dmg_assets.options import COMMANDS, Parser, predict_parser, report_parser, run_parser

if TYPE_CHECKING:
    from dagster import DagsterInstance

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
    from dmg_assets import commands, runs
    from dmg_resources.source import validate_cohort

    for cohort in args.cohorts:
        try:
            validate_cohort(cohort)
        except ValueError as exc:
            parser.error(str(exc))
    instance = commands.project_instance()
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
    parser = Parser(
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
