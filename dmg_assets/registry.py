"""Saving a step's models into the model registry (``model_registry``) and the checkpoint store.

``save_models`` writes each gene's kept models as the config asks (which models, which precision,
which genes) and returns the registry rows; ``superseded`` finds the stored models a retrain
scores lower, whose files are kept (``model_superseded``); ``registered_keys`` is every key the
committed registry names, what the store's sweep keeps.
"""

from contextlib import suppress
from dataclasses import replace

import pandas as pd

from dmg_assets.configs import CNNConfig
from dmg_ml.data.inputs import GeneInput
from dmg_ml.evaluation.engine import ModelCVResult, half_precision_delta_r2
from dmg_ml.evaluation.schemas import validate
from dmg_ml.models.checkpoint import HALF_PRECISION_MAX_DELTA_R2, GeneCheckpoint, half_precision
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.warehouse import Warehouse

REGISTRY = "model_registry"
#: Registry rows of models a retrain replaced with lower-scoring ones (their files are kept).
SUPERSEDED = "model_superseded"


def save_models(
    store: CheckpointStore, run_dir: tuple[str, ...], results: list[ModelCVResult],
    inputs: dict[str, GeneInput], config: CNNConfig, config_json: str, run_id: str,
) -> list[dict]:
    """Save each gene's models as ``config`` asks and return its registry rows."""
    rows = []
    precision = config.checkpoint_precision
    for result in results:
        if not result.fold_models and result.final is None:
            continue
        if config.store_min_r2 is not None and result.r2 < config.store_min_r2:
            continue
        gene = inputs[result.gene]
        checkpoint = kept_models(
            result.gene_checkpoint(gene.probe_ids, config_json, run_id), config.checkpoint_models
        )
        delta = half_precision_delta_r2(result, gene.data) if precision == "auto" else None
        half = precision == "fp16" or (delta is not None and delta < HALF_PRECISION_MAX_DELTA_R2)
        if half:
            checkpoint = replace(
                checkpoint, folds=[half_precision(f) for f in checkpoint.folds],
                final=checkpoint.final and half_precision(checkpoint.final),
            )
        key, digest = store.save(checkpoint, *run_dir, result.model, result.gene)
        rows.append({
            "model": result.model, "gene": result.gene, "path": key, "sha256": digest,
            "n_cpgs": result.n_cpgs, "n_folds": len(checkpoint.folds),
            "final_model": checkpoint.final is not None, "config": config_json, "r2": result.r2,
            "pearson_r2": result.pearson_r2, "weights_dtype": "fp16" if half else "fp32",
            "half_precision_delta_r2": delta, "bytes": store.resolve(key).stat().st_size,
            "run_id": run_id,
        })
    return rows


def kept_models(checkpoint: GeneCheckpoint, layout: str) -> GeneCheckpoint:
    """The models of ``checkpoint`` that ``layout`` (``checkpoint_models``) keeps (a final
    model is trained wherever ``layout`` asks for one)."""
    if layout == "final":
        return replace(checkpoint, folds=[])
    if layout == "folds":
        return replace(checkpoint, final=None)
    return checkpoint


def superseded(warehouse: Warehouse, partition: dict[str, str], tissue: str,
               registry: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """Registry rows of this tissue's stored models whose (model, gene) this run's ``registry``
    rows score lower (by out-of-fold R²), with the run and R² that replace them."""
    try:
        old = warehouse.read(REGISTRY, partition)
    except LookupError:
        return pd.DataFrame()
    if registry.empty:
        return pd.DataFrame()
    old = old[old["tissue"] == tissue]
    new_r2 = registry.set_index(["model", "gene"])["r2"]
    keys = pd.MultiIndex.from_frame(old[["model", "gene"]])
    old = old[keys.isin(new_r2.index)]
    replacing = new_r2.loc[pd.MultiIndex.from_frame(old[["model", "gene"]])].to_numpy()
    lower = old[replacing < old["r2"].to_numpy()]
    frame = lower.assign(
        superseded_by_run_id=run_id,
        superseded_by_r2=replacing[replacing < old["r2"].to_numpy()],
        superseded_at=pd.Timestamp.now(tz="UTC").isoformat(),
    )
    return validate(SUPERSEDED, frame.reset_index(drop=True))


def superseded_message(rows: pd.DataFrame) -> str:
    shown = ", ".join(f"{row.model} {row.gene} {row.r2:.3f} → {row.superseded_by_r2:.3f}"
                      for row in rows.head(5).itertuples())
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return (
        f"{len(rows)} genes scored lower than their stored models ({shown}{more}); the new "
        f"models replace them in {REGISTRY}, and the previous ones are kept: SELECT * FROM "
        f"{SUPERSEDED} WHERE superseded_by_run_id = '{rows['superseded_by_run_id'].iloc[0]}'"
    )


def registered_keys(warehouse: Warehouse) -> set[str]:
    """Every checkpoint key the committed warehouse names (current and superseded models)."""
    keys: set[str] = set()
    for table in (REGISTRY, SUPERSEDED):
        with suppress(LookupError):
            keys |= set(warehouse.read(table, columns=["path"])["path"])
    return keys
