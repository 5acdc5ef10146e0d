"""The folds a gene's samples are split into, under the two protocols of docs/design.md §5.

``honest`` (the default, what every model is scored with): outer folds grouped by patient
(``GroupKFold`` with shuffling, ``random_state=seed``), each with a patient-grouped 20 % of its
training rows held out for early stopping (``INNER_VALID_FRACTION``), so tumour and normal of one
patient never sit on both sides. ``published`` (the audit): the authors' row shuffle
(``DataFrame.sample(frac=1, random_state=1)``), then ungrouped ``KFold(5, shuffle=True,
random_state=42)`` on that order, early stopping on the scored fold itself.

Fold assignment depends only on the samples, patients and seed, so every gene of a cohort and
every model of the comparison gets the same folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold

from dmg_ml import defaults

ProtocolName = Literal["honest", "published"]
PROTOCOLS: tuple[ProtocolName, ...] = get_args(ProtocolName)
HONEST: ProtocolName = "honest"
PUBLISHED: ProtocolName = "published"
#: The protocol every figure is scored with unless the published audit is asked for.
DEFAULT_PROTOCOL: ProtocolName = defaults.PROTOCOL
N_FOLDS = 5
PUBLISHED_KFOLD_SEED = 42
#: ``random_state`` of the authors' row shuffle, ``DataFrame.sample(frac=1, random_state=1)``.
PUBLISHED_SHUFFLE_SEED = 1
#: Share of a fold's training rows held out (grouped by patient) for early stopping.
INNER_VALID_FRACTION = 0.2


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold: gradient steps, early stopping, scoring, scaler fit (and every
    other model's fit: ``scaler_rows`` are the fold's training rows, ``train`` ∪ ``valid``)."""

    fold: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    scaler_rows: np.ndarray


def task_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer keys (e.g. the fold), free of collisions
    such as ``seed + fold`` would have: of a fold's inner split here, of its initial weights and
    mini-batch order in training."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def split_seed(seed: int, fold: int) -> int:
    """The ``random_state`` of fold ``fold``'s inner split (scikit-learn takes 32 bits)."""
    return task_seed(seed, fold) % (2**32)


def honest_splits(patients: np.ndarray, n_folds: int = N_FOLDS, seed: int = 0) -> list[FoldSplit]:
    """Patient-grouped outer folds, each with a patient-grouped inner early-stopping split."""
    patients = np.asarray(patients).astype(str)
    if len(np.unique(patients)) < n_folds:
        raise ValueError(f"need at least {n_folds} patients for {n_folds} grouped folds")
    outer = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = []
    rows = np.zeros((len(patients), 1))
    for fold, (fit_rows, test) in enumerate(outer.split(rows, groups=patients)):
        inner = GroupShuffleSplit(
            n_splits=1, test_size=INNER_VALID_FRACTION, random_state=split_seed(seed, fold)
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
        n_splits=1, test_size=INNER_VALID_FRACTION, random_state=split_seed(seed, key)
    )
    train, valid = next(inner.split(rows, groups=patients))
    return FoldSplit(key, np.sort(train), np.sort(valid), np.array([], dtype=int), rows)


def published_row_order(n_samples: int) -> np.ndarray:
    """The authors' row shuffle: position ``i`` of their shuffled table holds row
    ``order[i]``; pandas' own ``DataFrame.sample(frac=1, random_state=1)`` computes it."""
    rows = pd.DataFrame(index=pd.RangeIndex(n_samples))
    return rows.sample(frac=1, random_state=PUBLISHED_SHUFFLE_SEED).index.to_numpy()


def published_splits(n_samples: int, n_folds: int = N_FOLDS) -> list[FoldSplit]:
    """The authors' folds: rows shuffled (``published_row_order``), then ungrouped
    ``KFold(shuffle=True, random_state=42)`` on that order; early stopping on the scored fold.

    Row indices are in the order their script feeds them (not sorted): a full-batch loss sums
    its rows in that order, and exact agreement needs the same rounding."""
    order = published_row_order(n_samples)
    outer = KFold(n_splits=n_folds, shuffle=True, random_state=PUBLISHED_KFOLD_SEED)
    return [FoldSplit(fold, order[train], order[test], order[test], order[train])
            for fold, (train, test) in enumerate(outer.split(order))]


def outer_splits(patients: np.ndarray, protocol: str, n_folds: int = N_FOLDS,
                 seed: int = 0) -> list[FoldSplit]:
    """The outer folds every model of a gene with these ``patients`` (one per row) is scored on."""
    if protocol == HONEST:
        return honest_splits(patients, n_folds, seed)
    if protocol == PUBLISHED:
        return published_splits(len(patients), n_folds)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
