"""What the terminal commands (``dmg run``, ``dmg predict``, ``dmg report``) share once Dagster is
loaded: the project's Dagster instance, options read off config classes, cohort names checked."""

import argparse
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from dagster import Config, DagsterInstance
from dagster._core.errors import DagsterError, DagsterHomeNotSetError

from dmg_assets.definitions import defs
from dmg_assets.evaluation import POOL
from dmg_resources import settings
from dmg_resources.source import validate_cohort

#: The project's Dagster instance, beside the data directory (the Makefile's
#: ``$(CURDIR)/.dagster_home`` beside its ``data/``), and the ``dagster.yaml`` it is created
#: with: the Makefile's, no telemetry. tests/test_cli_errors.py checks both against the Makefile.
INSTANCE_DIR = ".dagster_home"
INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def project_home() -> Path:
    """Where the project's Dagster instance lives: ``.dagster_home`` beside the data directory."""
    return Path(settings.DATA_DIR).resolve().parent / INSTANCE_DIR


def project_instance() -> DagsterInstance:
    """The Dagster instance every command records its runs in: ``$DAGSTER_HOME`` when set, else
    the project's (:func:`project_home`), created when missing with the Makefile's
    ``dagster.yaml`` and the training pool limited as :func:`limit_pool` limits it.

    A ``$DAGSTER_HOME`` that Dagster cannot use (no such directory, a relative path, a broken
    ``dagster.yaml``) ends the command with one line and exit 2: a temporary instance would lose
    the run history and the pool that runs share, and creating a mistyped directory would split
    them.
    """
    try:
        return DagsterInstance.get()
    except DagsterHomeNotSetError:
        pass
    except Exception as exc:  # no such directory, a relative path, a dagster.yaml it refuses
        said = " ".join(str(exc).split()).split(". Dagster requires")[0].rstrip(".")
        if not isinstance(exc, DagsterError):
            said = f"{type(exc).__name__}: {said}"
        print(f"error: {said} (DAGSTER_HOME names the Dagster instance: an existing directory, "
              f"by its absolute path; unset, the runs go to the project's, {project_home()})",
              file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    home = project_home()
    created = not (home / "dagster.yaml").exists()
    if created:
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
        print(f"created the project's Dagster instance {home} (DAGSTER_HOME is not set): its "
              "runs show in make dev's UI", flush=True)
    instance = DagsterInstance.from_config(str(home))
    if created:
        limit_pool(instance)
    return instance


def limit_pool(instance: DagsterInstance) -> None:
    """One slot of the training pool per GPU, one on CPU."""
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.set_concurrency_slots(POOL, max(1, _gpus()))


def config_option(parser: argparse.ArgumentParser, config: type[Config], field: str,
                   **overrides) -> None:
    """``--field-name`` with the config field's default, choices (a ``Literal``) and help."""
    info = config.model_fields[field]
    options: dict = {"default": info.default, "help": f"{info.description} (default %(default)s)"}
    if get_origin(info.annotation) is Literal:
        options["choices"] = get_args(info.annotation)
    elif get_origin(info.annotation) is list:
        options |= {"nargs": "*", "default": info.get_default(call_default_factory=True)}
    else:
        options["type"] = info.annotation
    parser.add_argument("--" + field.replace("_", "-"), dest=field, **(options | overrides))


def cohort_names(parser: argparse.ArgumentParser, option: str, names: list[str]) -> list[str]:
    """``names`` upper-cased, or an argparse error (exit 2) naming the first one that is bad."""
    for name in names:
        try:
            validate_cohort(name.upper())
        except ValueError as exc:
            parser.error(f"{option}: {exc}")
    return [name.upper() for name in names]


def _gpus() -> int:
    return defs.resources["device"].gpu_count()
