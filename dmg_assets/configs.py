"""The pieces the assets' run configs are built from, each field declared once.

``ScopeConfig`` says what a step works on (its pieces: window, protocol, tissue, genes),
``ModelsConfig`` which models and how (models, seed, workers), ``CNNConfig`` how the CNN trains
and what of it is saved. An asset's config class is the pieces it takes (``EvaluationConfig``
all three; an experiment the pieces it has), so a field has one name, one type, one default
(``dmg_ml.defaults``) and one description wherever it appears, and ``dmg run`` maps each option
onto every config that has that field.
"""

from typing import Any, Literal

from dagster import Config
from pydantic import Field, field_validator

from dmg_ml import defaults
from dmg_ml.data.barcodes import Tissue
from dmg_ml.data.splits import ProtocolName
from dmg_ml.evaluation.registry import MODELS
from dmg_ml.models.cnn import ChannelRule
from dmg_ml.training.reference import TrainConfig, TrainerName


class WindowPiece(Config):
    window_bp: int = Field(default=defaults.WINDOW_BP, description="Window half-width W (bp).")


class ProtocolPiece(Config):
    protocol: ProtocolName = Field(
        default=defaults.PROTOCOL,
        description="'honest' (patient-grouped, fresh model per fold, inner early stopping) or "
        "'published' (the authors' code path; an audit, not an estimate).",
    )


class TissuePiece(Config):
    tissue: Tissue = Field(
        default=defaults.TISSUE,
        description="Samples trained and scored on: all, tumour or normal only.",
    )


class GenesPiece(Config):
    genes: list[str] = Field(
        default_factory=list, description="Only these genes (default: every gene)."
    )


class ScopeConfig(WindowPiece, ProtocolPiece, TissuePiece, GenesPiece):
    """What a step works on: window, protocol, tissue, genes."""


def models_field(default: tuple[str, ...], note: str = "") -> Any:
    """The ``models`` field with its one description (and ``note``), for a config whose default
    models differ (the experiments'); ``ModelsConfig`` checks the names."""
    return Field(
        default=list(default),
        description="Registry models to cross-validate on the same outer folds: "
        + ", ".join(MODELS) + "." + (f" {note}" if note else ""),
    )


class ModelsConfig(Config):
    """Which models, and how they draw and run."""

    models: list[str] = models_field(defaults.MODELS)
    seed: int = Field(default=defaults.SEED,
                      description="Seed of the folds, the CNN's initial weights and every model.")
    n_jobs: int = Field(
        default=0, description="Workers for the forests (rf, cascade_forest); 0: one per "
        "physical core."
    )

    @field_validator("models")
    @classmethod
    def _registered(cls, models: list[str]) -> list[str]:
        """Dagster's config types cannot hold ``list[ModelName]``: the names are checked here."""
        unknown = sorted(set(models) - set(MODELS))
        if unknown or not models:
            raise ValueError(f"models must be a non-empty list of registry models {list(MODELS)}"
                             f"; got {models}")
        return models


class CNNConfig(Config):
    """How the CNN trains, and which of its models are saved."""

    max_epochs: int = Field(default=defaults.MAX_EPOCHS, description="Epochs at most per fold.")
    patience: int = Field(
        default=defaults.PATIENCE, description="Epochs without a better validation loss to stop."
    )
    learning_rate: float = Field(default=defaults.LEARNING_RATE,
                                 description="Adam's learning rate.")
    batch_size: int = Field(default=0, description="0 = full batch (as the authors); else a size.")
    channels: ChannelRule = Field(
        default="adaptive",
        description="'adaptive' (the paper's rule from L) or 'fixed' (64/32, the authors' first "
        "commit).",
    )
    trainer: TrainerName = Field(
        default="batched", description="'batched' (fast, stacked) or 'reference' (plain loop)."
    )
    restore_best_weights: bool = Field(
        default=True,
        description="Restore the best epoch's weights after early stopping (the paper). False "
        "keeps the last epoch's, as the authors' script does in effect (the model is then "
        "'cnn_last_epoch'): with protocol 'published' and seed 42 it is the authors' run exactly.",
    )
    checkpoint_precision: Literal["auto", "fp32", "fp16"] = Field(
        default="auto",
        description="Weights in the checkpoint files: 'auto' stores a gene in half precision "
        "when that moves its out-of-fold R² by less than 1e-3 (half the bytes), else fp32.",
    )
    checkpoint_models: Literal["folds", "folds_and_final", "final"] = Field(
        default="folds",
        description="Models saved per gene: its five fold models (the default), those and a "
        "final model trained on every sample (early stopping on a patient-grouped 20 %; +20 % "
        "training), or the final model alone, a fifth of the folds' disk: the choice for whole "
        "cohorts (docs/design.md §11). The published audit saves its folds.",
    )
    store_min_r2: float | None = Field(
        default=None,
        description="Save no model for a gene whose honest out-of-fold R² is below this (its "
        "metrics and predictions stay). Unset: every gene.",
    )

    def train_config(self, precision: str, seed: int) -> TrainConfig:
        """The trainer's settings (``TrainConfig`` checks them)."""
        return TrainConfig(
            max_epochs=self.max_epochs, patience=self.patience, lr=self.learning_rate,
            batch_size=self.batch_size or None, seed=seed, channels=self.channels,
            precision=precision, restore_best_weights=self.restore_best_weights,
        )

    @property
    def cnn_name(self) -> str:
        """The CNN's name in the tables: 'cnn', or 'cnn_last_epoch' for the last epoch's weights."""
        return "cnn" if self.restore_best_weights else "cnn_last_epoch"

    @property
    def weights(self) -> str:
        return "best" if self.restore_best_weights else "last"
