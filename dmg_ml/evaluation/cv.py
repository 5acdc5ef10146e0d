"""Cross-validation of the per-gene CNN under the two protocols of docs/design.md §5.

``honest`` (the default, what every model in the project is scored with): outer folds grouped by
patient (``GroupKFold`` with shuffling, ``random_state=seed``), a fresh model per fold, early
stopping on a patient-grouped 20 % split of the outer training folds, features standardised with
a scaler fitted on the outer training folds only. The scored fold is never seen in training.

``published`` (audit mode; label its figures as such): the authors' script
(``Model/DeepMethyGene.py`` of github.com/yaoyao-11/DeepMethyGene), reproduced exactly; a test
holds dmg to a re-statement of their loop (``tests/test_published_audit.py``). What it does:

* **Rows and folds.** The gene's rows are shuffled as ``DataFrame.sample(frac=1, random_state=1)``
  shuffles them, then ``KFold(5, shuffle=True, random_state=42)`` splits that shuffled order,
  ungrouped (``published_splits``; its rows come in the order their script feeds them, which
  decides the rounding of every full-batch sum). Out-of-fold predictions are mapped back to
  dmg's sample ids.
* **No scaling.** The network sees raw M-values, as theirs does (the checkpoints hold an identity
  scaler: mean 0, scale 1).
* **One model carried across the five folds**, built once per gene under ``torch.manual_seed``
  with ``config.seed`` itself (their ``torch.manual_seed(42)``; ``seed=42`` gives their initial
  weights) and with their module's extra ``torch.randn`` before ``fc1`` (``published_init``).
  Fold k starts from the weights fold k-1 ended with, with a fresh Adam, and stops early on the
  scored fold itself.
* **fp32.** The audit always trains in fp32, as the authors did, whatever ``config.precision``
  says (``protocol_config`` is the one place of that rule; ``precision: auto`` gives bf16 on
  hardware that has it).
* **Weights.** Their script stores ``best_model_state = model.state_dict()``, a reference to the
  live weights, so its "restore the best weights" restores nothing: each fold ends with (and hands
  on) its last epoch's weights. Both protocols restore the best weights by default, as the paper
  describes; ``TrainConfig(restore_best_weights=False)`` is their script.
* **Headline.** The paper's figure is the mean over folds of the per-fold squared Pearson
  correlation: ``GeneCVResult.headline`` (``mean_fold_pearson_r2``) for this protocol. The pooled
  out-of-fold ``r2`` and ``pearson_r2`` are kept beside it.

So ``published`` with ``seed=42`` and ``restore_best_weights=False`` is their script's run.
Labelled differences that remain: (1) their CpGs follow their annotation table's row order; dmg's
follow genomic position (``dmg_ml.data.inputs``), and the data keep that order; (2) their shuffle
permutes their own matrix's sample order; dmg's permutes its own (samples sorted by barcode), so
on one cohort the two put the same samples in the same folds only where the base orders agree;
(3) for ``L < 20`` their adaptive rule gives zero channels and their script crashes; dmg keeps
one channel (``dmg_ml.models.cnn``).

Fold assignment depends only on the samples, patients and seed, so every gene of a cohort gets the
same folds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold
from sklearn.preprocessing import StandardScaler

from dmg_ml.data.inputs import GeneData
from dmg_ml.evaluation.metrics import pearson_r2, r2
from dmg_ml.models.cnn import AdaptiveRegressionCNN
from dmg_ml.training.batched import FitTask, fit_batched
from dmg_ml.training.planning import gpu_memory_budget, task_bytes
from dmg_ml.training.reference import (
    TRAINERS,
    TrainConfig,
    TrainResult,
    fit_reference,
    init_model,
    model_from_state,
    predict,
    task_seed,
)

ProtocolName = Literal["honest", "published"]
PROTOCOLS: tuple[ProtocolName, ...] = get_args(ProtocolName)
PUBLISHED_KFOLD_SEED = 42
#: ``random_state`` of the authors' row shuffle, ``DataFrame.sample(frac=1, random_state=1)``.
PUBLISHED_SHUFFLE_SEED = 1
#: The figure each protocol is headlined by: honest, the pooled out-of-fold R² (coefficient of
#: determination); published, the paper's figure for the CNN, the mean over the five folds of each
#: fold's squared Pearson correlation.
HEADLINE_METRIC = {"honest": "r2", "published": "mean_fold_pearson_r2"}
INNER_VALID_FRACTION = 0.2
FOLD_METRIC_COLUMNS = [
    "fold",
    "n_train",
    "n_valid",
    "n_test",
    "r2",
    "pearson_r2",
    "epochs_run",
    "best_epoch",
]


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold: gradient steps, early stopping, scoring, scaler fit."""

    fold: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    scaler_rows: np.ndarray


@dataclass
class FoldCheckpoint:
    """Everything needed to rebuild a fold's model and reproduce its predictions."""

    fold: int
    state_dict: dict[str, torch.Tensor]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    input_size: int
    channels: str


@dataclass
class GeneCheckpoint:
    """A gene's saved models: a ``FoldCheckpoint`` per outer fold kept (none, where only the
    final model is stored), the ``final`` model trained on every sample (None where it was not
    trained or not kept) and the probe (column) order their inputs take. ``config`` is the run
    configuration as JSON."""

    gene: str
    protocol: str
    probe_ids: list[str]
    folds: list[FoldCheckpoint]
    config: str
    run_id: str
    final: FoldCheckpoint | None = None

    @property
    def models(self) -> list[FoldCheckpoint]:
        """Every stored model: the folds', then the final one."""
        return [*self.folds, *([self.final] if self.final is not None else [])]


class CVScores:
    """The per-fold means and the protocol's headline figure of a cross-validation result with
    a ``fold_metrics`` frame (``r2``, ``pearson_r2`` per fold) and a ``headline_metric``."""

    fold_metrics: pd.DataFrame
    headline_metric: str

    @property
    def mean_fold_r2(self) -> float:
        return float(self.fold_metrics["r2"].mean())

    @property
    def mean_fold_pearson_r2(self) -> float:
        return float(self.fold_metrics["pearson_r2"].mean())

    @property
    def headline(self) -> float:
        return float(getattr(self, self.headline_metric))


@dataclass
class GeneCVResult(CVScores):
    """Cross-validated performance of one gene's CNN.

    ``r2`` and ``pearson_r2`` pool the out-of-fold predictions; ``mean_fold_r2`` and
    ``mean_fold_pearson_r2`` average the per-fold figures of ``fold_metrics``. ``headline`` is
    the protocol's own figure (``HEADLINE_METRIC``): pooled ``r2`` for honest,
    ``mean_fold_pearson_r2`` for the published audit (what the paper averaged). ``seconds`` is
    the wall time of the gene's training and scoring; genes trained together in one batch share
    it equally.
    """

    gene: str
    protocol: str
    fold_metrics: pd.DataFrame
    oof: pd.DataFrame
    r2: float
    pearson_r2: float
    n_cpgs: int
    seconds: float
    checkpoints: list[FoldCheckpoint] = field(repr=False)
    final: FoldCheckpoint | None = field(default=None, repr=False)

    @property
    def headline_metric(self) -> str:
        return HEADLINE_METRIC[self.protocol]

    def gene_checkpoint(self, probe_ids: Sequence[str], config: str, run_id: str) -> GeneCheckpoint:
        """The saved form of this gene's models; ``probe_ids`` are the columns of ``X``."""
        return GeneCheckpoint(
            self.gene, self.protocol, [str(p) for p in probe_ids], self.checkpoints, config, run_id,
            self.final,
        )


@dataclass
class FoldModel:
    """A fold's network and the scaler it was trained behind."""

    model: AdaptiveRegressionCNN
    mean: np.ndarray
    scale: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for raw (unscaled) rows of ``X``, computed on the CPU in fp32."""
        return predict(self.model, scale_features(X, self.mean, self.scale))


def scale_features(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - mean) / scale`` in float64, returned as float32 (used for training and reload)."""
    return ((np.asarray(X, dtype=np.float64) - mean) / scale).astype(np.float32)


def load_fold_model(checkpoint: FoldCheckpoint) -> FoldModel:
    """Rebuild a fold's model from its checkpoint."""
    model = model_from_state(checkpoint.state_dict, checkpoint.input_size, checkpoint.channels)
    return FoldModel(model.eval(), checkpoint.scaler_mean, checkpoint.scaler_scale)


#: Largest change of a gene's out-of-fold R² that storing its weights in half precision may cause
#: for the half-precision file to be kept (docs/design.md §11).
HALF_PRECISION_MAX_DELTA_R2 = 1e-3


def half_precision(checkpoint: FoldCheckpoint) -> FoldCheckpoint:
    """``checkpoint`` with its floating-point weights rounded to float16 (the scaler stays
    float64): what a half-precision file holds."""
    state = {
        name: t.to(torch.float16) if t.is_floating_point() else t
        for name, t in checkpoint.state_dict.items()
    }
    return replace(checkpoint, state_dict=state)


def half_precision_delta_r2(result: GeneCVResult, gene: GeneData) -> float:
    """How much half-precision weights move the gene's out-of-fold R²: |R²(fp16) − R²(fp32)|,
    each fold's model predicting the rows it was scored on."""
    rows = pd.Index(gene.samples).get_indexer(result.oof["sample"].astype(str))
    folds = result.oof["fold"].to_numpy()
    full, half = np.empty(len(rows)), np.empty(len(rows))
    for checkpoint in result.checkpoints:
        mask = folds == checkpoint.fold
        X = gene.X[rows[mask]]
        full[mask] = load_fold_model(checkpoint).predict(X)
        half[mask] = load_fold_model(half_precision(checkpoint)).predict(X)
    y = result.oof["y_true"].to_numpy()
    return abs(r2(y, half) - r2(y, full))


def _split_seed(seed: int, fold: int) -> int:
    return task_seed(seed, fold) % (2**32)


def honest_splits(patients: np.ndarray, n_folds: int = 5, seed: int = 0) -> list[FoldSplit]:
    """Patient-grouped outer folds, each with a patient-grouped inner early-stopping split."""
    patients = np.asarray(patients).astype(str)
    if len(np.unique(patients)) < n_folds:
        raise ValueError(f"need at least {n_folds} patients for {n_folds} grouped folds")
    outer = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = []
    rows = np.zeros((len(patients), 1))
    for fold, (fit_rows, test) in enumerate(outer.split(rows, groups=patients)):
        inner = GroupShuffleSplit(
            n_splits=1, test_size=INNER_VALID_FRACTION, random_state=_split_seed(seed, fold)
        )
        train_pos, valid_pos = next(inner.split(fit_rows, groups=patients[fit_rows]))
        train, valid = np.sort(fit_rows[train_pos]), np.sort(fit_rows[valid_pos])
        splits.append(FoldSplit(fold, train, valid, np.sort(test), np.sort(fit_rows)))
    return splits


def final_split(patients: np.ndarray, key: int, seed: int = 0) -> FoldSplit:
    """The split of a gene's final model, trained on every sample: a patient-grouped 20 % for
    early stopping, the rest to train on, the scaler fitted on all; nothing is held out to score
    (the outer folds score the method). ``key`` numbers it after the outer folds (``n_folds``),
    for its seeds."""
    patients = np.asarray(patients).astype(str)
    rows = np.arange(len(patients))
    inner = GroupShuffleSplit(
        n_splits=1, test_size=INNER_VALID_FRACTION, random_state=_split_seed(seed, key)
    )
    train, valid = next(inner.split(rows, groups=patients))
    return FoldSplit(key, np.sort(train), np.sort(valid), np.array([], dtype=int), rows)


def published_row_order(n_samples: int) -> np.ndarray:
    """The authors' row shuffle: position ``i`` of their shuffled table holds row
    ``order[i]``; pandas' own ``DataFrame.sample(frac=1, random_state=1)`` computes it."""
    rows = pd.DataFrame(index=pd.RangeIndex(n_samples))
    return rows.sample(frac=1, random_state=PUBLISHED_SHUFFLE_SEED).index.to_numpy()


def published_splits(n_samples: int, n_folds: int = 5) -> list[FoldSplit]:
    """The authors' folds: rows shuffled (``published_row_order``), then ungrouped
    ``KFold(shuffle=True, random_state=42)`` on that order; early stopping on the scored fold.

    Row indices are in the order their script feeds them (not sorted): a full-batch loss sums
    its rows in that order, and exact agreement needs the same rounding."""
    order = published_row_order(n_samples)
    outer = KFold(n_splits=n_folds, shuffle=True, random_state=PUBLISHED_KFOLD_SEED)
    splits = []
    for fold, (train, test) in enumerate(outer.split(order)):
        splits.append(FoldSplit(fold, order[train], order[test], order[test], order[train]))
    return splits


def protocol_config(protocol: str, config: TrainConfig) -> TrainConfig:
    """The training settings a protocol runs with: the published audit always trains in fp32
    (the authors' precision), whatever ``config.precision`` asks; honest runs as configured."""
    if protocol == "published":
        return replace(config, precision="fp32")
    return config


def train_tasks(
    tasks: list[FitTask], config: TrainConfig, trainer: str, device: str | torch.device
) -> list[TrainResult]:
    """Train every task with the chosen trainer (results in task order)."""
    if trainer == "batched":
        return fit_batched(tasks, config, device=device)
    results = []
    for task in tasks:
        model = None
        if task.init_state is not None:
            model = model_from_state(task.init_state, task.X_train.shape[1], config.channels)
        results.append(
            fit_reference(
                task.X_train,
                task.y_train,
                task.X_valid,
                task.y_valid,
                config,
                seed=task.seed,
                device=device,
                model=model,
            )
        )
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
    def prepare(cls, gene: GeneData, split: FoldSplit, scaled: bool = True) -> _Fold:
        """``scaled=False`` (the published audit) keeps the raw features: an identity scaler."""
        if not scaled:
            length = gene.X.shape[1]
            return cls(gene, split, np.zeros(length), np.ones(length))
        scaler = StandardScaler().fit(gene.X[split.scaler_rows].astype(np.float64))
        return cls(gene, split, scaler.mean_, scaler.scale_)

    def task(self, seed: int, init_state: dict[str, torch.Tensor] | None = None) -> FitTask:
        g, s = self.gene, self.split
        return FitTask(
            scale_features(g.X[s.train], self.mean, self.scale),
            g.y[s.train],
            scale_features(g.X[s.valid], self.mean, self.scale),
            g.y[s.valid],
            seed=seed,
            init_state=init_state,
        )

    def checkpoint(self, channels: str) -> FoldCheckpoint:
        state = {k: v.detach().cpu().clone() for k, v in self.result.model.state_dict().items()}
        return FoldCheckpoint(
            self.split.fold, state, self.mean, self.scale, self.gene.X.shape[1], channels
        )


def _train_honest(
    folds: list[list[_Fold]], config: TrainConfig, trainer: str, device: str | torch.device
) -> None:
    """Every fold of every gene (and each gene's final model, when prepared) as one batch of
    tasks, fold ``k`` seeded with ``task_seed(seed, k)``."""
    flat = [fold for gene_folds in folds for fold in gene_folds]
    tasks = [f.task(task_seed(config.seed, f.split.fold)) for f in flat]
    for fold, result in zip(flat, train_tasks(tasks, config, trainer, device), strict=True):
        fold.result = result


def _train_published(
    folds: list[list[_Fold]], config: TrainConfig, trainer: str, device: str | torch.device
) -> None:
    """Fold k of every gene in one round, each starting from that gene's fold k-1 weights; fold
    0 from the model the authors' script builds under ``config.seed``."""
    for k in range(len(folds[0])):
        tasks = []
        for gene_folds in folds:
            if k:
                state = gene_folds[k - 1].result.model.state_dict()
            else:
                length = gene_folds[0].gene.X.shape[1]
                model = init_model(length, config.channels, config.seed, published_init=True)
                state = model.state_dict()
            tasks.append(gene_folds[k].task(task_seed(config.seed, k), state))
        results = train_tasks(tasks, config, trainer, device)
        for gene_folds, result in zip(folds, results, strict=True):
            gene_folds[k].result = result


def _gene_result(
    folds: list[_Fold], protocol: str, channels: str, seconds: float, final: _Fold | None = None
) -> GeneCVResult:
    gene = folds[0].gene
    metrics, oof = [], []
    for f in folds:
        fold_model = FoldModel(f.result.model, f.mean, f.scale)
        test = f.split.test
        pred = fold_model.predict(gene.X[test])
        metrics.append(
            {
                "fold": f.split.fold,
                "n_train": len(f.split.train),
                "n_valid": len(f.split.valid),
                "n_test": len(test),
                "r2": r2(gene.y[test], pred),
                "pearson_r2": pearson_r2(gene.y[test], pred),
                "epochs_run": f.result.epochs_run,
                "best_epoch": f.result.best_epoch,
            }
        )
        oof.append(
            pd.DataFrame(
                {
                    "row": test,
                    "sample": gene.samples[test],
                    "fold": f.split.fold,
                    "y_true": gene.y[test].astype(np.float64),
                    "y_pred": pred,
                }
            )
        )
    oof_frame = pd.concat(oof).sort_values("row").drop(columns="row").reset_index(drop=True)
    return GeneCVResult(
        gene=gene.gene,
        protocol=protocol,
        fold_metrics=pd.DataFrame(metrics, columns=FOLD_METRIC_COLUMNS),
        oof=oof_frame,
        r2=r2(oof_frame["y_true"], oof_frame["y_pred"]),
        pearson_r2=pearson_r2(oof_frame["y_true"], oof_frame["y_pred"]),
        n_cpgs=gene.X.shape[1],
        seconds=seconds,
        checkpoints=[f.checkpoint(channels) for f in folds],
        final=None if final is None else final.checkpoint(channels),
    )


def _gene_batches(
    genes: Sequence[GeneData], config: TrainConfig, device: torch.device, n_folds: int
) -> list[list[int]]:
    """Genes trained together: one at a time on CPU; on CUDA, genes in order of window length,
    as many as fit the memory budget (``fit_batched`` then stacks their folds, nearby lengths
    packed into one model)."""
    if device.type != "cuda":
        return [[i] for i in range(len(genes))]
    budget = gpu_memory_budget(device)
    batches: list[list[int]] = []
    used = 0
    for i in sorted(range(len(genes)), key=lambda i: (genes[i].X.shape[1], i)):
        size = n_folds * task_bytes(len(genes[i].y), genes[i].X.shape[1], config.channels)
        if not batches or used + size > budget:
            batches.append([])
            used = 0
        batches[-1].append(i)
        used += size
    return batches


def cross_validate(
    genes: Sequence[GeneData],
    protocol: str = "honest",
    config: TrainConfig | None = None,
    trainer: str = "batched",
    device: str | torch.device = "cpu",
    n_folds: int = 5,
    on_gene_done: Callable[[GeneCVResult], None] | None = None,
    final_model: bool = False,
) -> list[GeneCVResult]:
    """Cross-validate the CNN of every gene; ``on_gene_done`` is called as each gene finishes.

    ``final_model`` also trains each gene's final model on every sample (``final_split``; honest
    protocol only), in the same batch as its folds: the model to predict new samples with
    (``GeneCVResult.final``); the folds' scores are its estimate. The published audit trains in
    fp32 whatever ``config.precision`` is (``protocol_config``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    if final_model and protocol != "honest":
        raise ValueError("final models are trained under the honest protocol only")
    config = protocol_config(protocol, config or TrainConfig())
    device = torch.device(device)
    split_cache: dict[bytes, list[FoldSplit]] = {}
    results: list[GeneCVResult | None] = [None] * len(genes)
    models = n_folds + int(final_model)
    for batch in _gene_batches(genes, config, device, models):
        start = time.perf_counter()
        folds = [
            _prepare(genes[i], protocol, n_folds, config.seed, split_cache, final_model)
            for i in batch
        ]
        train = _train_honest if protocol == "honest" else _train_published
        train(folds, config, trainer, device)
        seconds = (time.perf_counter() - start) / len(batch)
        for i, gene_folds in zip(batch, folds, strict=True):
            final = gene_folds[n_folds] if final_model else None
            results[i] = _gene_result(
                gene_folds[:n_folds], protocol, config.channels, seconds, final
            )
            if on_gene_done is not None:
                on_gene_done(results[i])
    return results


def _prepare(
    gene: GeneData,
    protocol: str,
    n_folds: int,
    seed: int,
    cache: dict[bytes, list[FoldSplit]],
    final_model: bool = False,
) -> list[_Fold]:
    """The gene's folds (then its final model's split, with ``final_model``), ready to train."""
    parts = [protocol, str(n_folds), str(seed), str(final_model), *gene.samples, *gene.patients]
    key = hashlib.sha256("\x00".join(parts).encode()).digest()
    if key not in cache:
        if protocol == "honest":
            cache[key] = honest_splits(gene.patients, n_folds, seed)
            if final_model:
                cache[key].append(final_split(gene.patients, n_folds, seed))
        else:
            cache[key] = published_splits(len(gene.y), n_folds)
    return [_Fold.prepare(gene, split, scaled=protocol == "honest") for split in cache[key]]
