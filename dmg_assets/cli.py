"""``dmg``: the platform from a terminal.

    dmg run [options]           build the cohorts, train and evaluate, run the experiments, report
    dmg predict FILE [options]  predicted expression for a lab's methylation file
    dmg query "SELECT ..."      any SQL over the warehouse's views (or a .sql file)
    dmg report [COHORT ...]     (re)write the evaluation report and print where it is

Each subcommand is the module it names (``python -m dmg_assets.run`` and so on) with the same
options; ``dmg SUBCOMMAND --help`` explains every one of them.
"""

import argparse
import sys
from collections.abc import Callable

from dagster import AssetKey

COMMANDS: dict[str, str] = {
    "run": "build the cohorts, train and evaluate the models, run the experiments, write the "
           "report (what make run does)",
    "predict": "predict expression for the samples of a methylation file (β or M values)",
    "query": "run SQL over the warehouse's views and print the rows",
    "report": "write the evaluation report of cohorts already trained and print where it is",
}


def _run(argv: list[str]) -> int:
    from dmg_assets import run

    return run.main(argv)


def _predict(argv: list[str]) -> int:
    from dmg_assets import predict

    return predict.main(argv)


def _query(argv: list[str]) -> int:
    from warehouse import query

    return query.main(argv)


def _report(argv: list[str]) -> int:
    from dmg_assets import runs
    from dmg_assets.definitions import defs
    from dmg_assets.partitions import cohort_partitions
    from dmg_assets.report import report_path
    from dmg_assets.run import _instance
    from dmg_resources.source import validate_cohort

    parser = argparse.ArgumentParser(prog="dmg report", description=COMMANDS["report"])
    parser.add_argument("cohorts", nargs="*", default=["BRCA"],
                        help="cohorts whose report to write (default BRCA)")
    args = parser.parse_args(argv)
    instance = _instance()
    job = defs.resolve_implicit_global_asset_job_def()
    for cohort in args.cohorts:
        try:
            validate_cohort(cohort)
        except ValueError as exc:
            parser.error(str(exc))
        if cohort not in instance.get_dynamic_partitions(cohort_partitions.name):
            instance.add_dynamic_partitions(cohort_partitions.name, [cohort])
        result = runs.execute(job, instance, partition_key=cohort,
                              asset_selection=[AssetKey("evaluation_report")],
                              run_config={"loggers": {"console": {"config": {
                                  "log_level": "CRITICAL"}}}},
                              raise_on_error=False)
        if not result.success:
            print(f"error: {cohort} has no evaluation results to report: train it first "
                  f"(dmg run --cohorts {cohort})", file=sys.stderr)
            return 1
        print(f"Report: {report_path(defs.resources['warehouse'], cohort)}")
    return 0


HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "run": _run, "predict": _predict, "query": _query, "report": _report,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
