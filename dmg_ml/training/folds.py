"""The CNN trained on the outer folds of many genes at once (docs/design.md §4-5).

The evaluation engine hands over each gene's folds (``dmg_ml.data.splits``) and scores what comes
back like every other model's fold models; this module only trains. Honest: each fold's scaler is
fitted on its training rows, the network trains on ``train`` and stops early on ``valid`` (a
patient-grouped 20 %), fold ``k`` seeded with ``task_seed(seed, k)``, and every fold of every gene
of a batch (with each gene's final model, when asked) is one batch of tasks for the trainer.

The published audit is the authors' script (``Model/DeepMethyGene.py`` of
github.com/yaoyao-11/DeepMethyGene), reproduced exactly (``tests/test_published_audit.py``):

* **No scaling.** The network sees raw M-values (the checkpoints hold an identity scaler).
* **One model carried across the five folds**, built once per gene under ``torch.manual_seed``
  with the seed itself (their ``torch.manual_seed(42)``) and with their module's extra
  ``torch.randn`` before ``fc1`` (``published_init``). Fold k starts from the weights fold k-1
  ended with, with a fresh Adam, and stops early on the scored fold itself.
* **fp32**, as the authors trained, whatever ``precision`` says (``protocol_config``).
* **Weights.** Their script keeps ``best_model_state = model.state_dict()``, a reference to the
  live weights, so its "restore the best weights" restores nothing; ``restore_best_weights=False``
  is their script, ``True`` (the default) the paper's description.

Labelled differences that remain: (1) their CpGs follow their annotation table's row order; dmg's
follow genomic position; (2) their shuffle permutes their own matrix's sample order, dmg's its own
(samples sorted by barcode); (3) for ``L < 20`` their adaptive rule gives zero channels and their
script crashes; dmg keeps one channel (``dmg_ml.models.cnn``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import PUBLISHED, FoldSplit, task_seed
from dmg_ml.models.base import FittedFold
from dmg_ml.models.checkpoint import FoldCheckpoint, FoldModel, scale_features
from dmg_ml.models.cnn import model_from_state
from dmg_ml.training.batched import fit_batched
from dmg_ml.training.planning import FitTask, gene_batches
from dmg_ml.training.reference import (
    TRAINERS,
    TrainConfig,
    TrainResult,
    fit_reference,
    init_model,
)


def protocol_config(protocol: str, config: TrainConfig) -> TrainConfig:
    """The training settings a protocol runs with: the published audit always trains in fp32
    (the authors' precision), whatever ``config.precision`` asks; honest runs as configured."""
    if protocol == PUBLISHED:
        return replace(config, precision="fp32")
    return config


def train_tasks(
    tasks: list[FitTask], config: TrainConfig, trainer: str, device: str | torch.device
) -> list[TrainResult]:
    """Train every task with the chosen trainer (results in task order)."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    if trainer == "batched":
        return fit_batched(tasks, config, device=device)
    results = []
    for task in tasks:
        model = None
        if task.init_state is not None:
            model = model_from_state(task.init_state, task.X_train.shape[1], config.channels)
        results.append(fit_reference(
            task.X_train, task.y_train, task.X_valid, task.y_valid, config, seed=task.seed,
            device=device, model=model,
        ))
    return results


@dataclass
class _Fold:
    """A fold of one gene being worked on: its split, scaler and (once trained) its result."""

    gene: GeneData
    split: FoldSplit
    mean: np.ndarray
    scale: np.ndarray
    result: TrainResult | None = None

    @classmethod
    def prepare(cls, gene: GeneData, split: FoldSplit, scaled: bool) -> _Fold:
        """``scaled=False`` (the published audit) keeps the raw features: an identity scaler."""
        if not scaled:
            length = gene.X.shape[1]
            return cls(gene, split, np.zeros(length), np.ones(length))
        scaler = StandardScaler().fit(gene.X[split.scaler_rows].astype(np.float64))
        return cls(gene, split, scaler.mean_, scaler.scale_)

    def task(self, seed: int, init_state: dict[str, torch.Tensor] | None = None) -> FitTask:
        g, s = self.gene, self.split
        return FitTask(
            scale_features(g.X[s.train], self.mean, self.scale), g.y[s.train],
            scale_features(g.X[s.valid], self.mean, self.scale), g.y[s.valid],
            seed=seed, init_state=init_state,
        )

    def fitted(self, channels: str, seconds: float) -> FittedFold:
        model = self.result.model.to("cpu").eval()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        checkpoint = FoldCheckpoint(
            self.split.fold, state, self.mean, self.scale, self.gene.X.shape[1], channels
        )
        facts = {"n_valid": len(self.split.valid), "epochs_run": self.result.epochs_run,
                 "best_epoch": self.result.best_epoch}
        return FittedFold(self.split.fold, FoldModel(model, self.mean, self.scale), seconds,
                          facts, checkpoint)


def _train_honest(folds: list[list[_Fold]], config: TrainConfig, trainer: str,
                  device: torch.device) -> None:
    flat = [fold for gene_folds in folds for fold in gene_folds]
    tasks = [f.task(task_seed(config.seed, f.split.fold)) for f in flat]
    for fold, result in zip(flat, train_tasks(tasks, config, trainer, device), strict=True):
        fold.result = result


def _train_published(folds: list[list[_Fold]], config: TrainConfig, trainer: str,
                     device: torch.device) -> None:
    """Fold k of every gene in one round, each starting from that gene's fold k-1 weights; fold
    0 from the model the authors' script builds under ``config.seed``."""
    for k in range(len(folds[0])):
        tasks = []
        for gene_folds in folds:
            if k:
                state = gene_folds[k - 1].result.model.state_dict()
            else:
                length = gene_folds[0].gene.X.shape[1]
                state = init_model(length, config.channels, config.seed,
                                   published_init=True).state_dict()
            tasks.append(gene_folds[k].task(task_seed(config.seed, k), state))
        for gene_folds, result in zip(folds, train_tasks(tasks, config, trainer, device),
                                      strict=True):
            gene_folds[k].result = result


def train_gene_folds(
    genes: Sequence[GeneData], splits: Sequence[Sequence[FoldSplit]], protocol: str,
    config: TrainConfig, trainer: str = "batched", device: str | torch.device = "cpu",
) -> Iterator[tuple[list[int], list[list[FittedFold]]]]:
    """Train the CNN of every fold in ``splits[i]`` of each gene ``genes[i]``; yields, batch by
    batch (on CUDA, as many genes as fit the GPU's memory), the genes' indices and their fitted
    folds in split order. ``config.seed`` seeds the weights; the published audit carries weights
    across folds and trains in fp32 (``protocol_config``). A gene's split list may end with its
    final model's split (``final_split``): it trains in the same batch as the gene's folds."""
    config = protocol_config(protocol, config)
    device = torch.device(device)
    published = protocol == PUBLISHED
    shapes = [(len(g.y), g.X.shape[1]) for g in genes]
    most = max((len(s) for s in splits), default=0)
    for batch in gene_batches(shapes, most, config.channels, device):
        started = time.perf_counter()
        folds = [[_Fold.prepare(genes[i], split, scaled=not published) for split in splits[i]]
                 for i in batch]
        (_train_published if published else _train_honest)(folds, config, trainer, device)
        seconds = (time.perf_counter() - started) / len(batch)
        yield batch, [[f.fitted(config.channels, seconds / len(gene_folds)) for f in gene_folds]
                      for gene_folds in folds]
