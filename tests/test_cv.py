"""Cross-validation protocols: grouping, leakage, learning, agreement, determinism, checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import dmg_ml.evaluation.cv as cv
from dmg_ml.evaluation.cv import (
    GeneData,
    cross_validate,
    honest_splits,
    load_fold_model,
    published_splits,
    scale_features,
)
from dmg_ml.training.planning import task_bytes
from dmg_ml.training.reference import TrainConfig, init_model

FAST = TrainConfig(max_epochs=100, patience=30)


pytestmark = pytest.mark.usefixtures("one_thread")


def cohort(n_patients: int = 150, n_normal: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Sample barcodes and patients: every patient has a tumour, some also a normal."""
    patients = [f"TCGA-AA-{i:04d}" for i in range(n_patients)]
    samples = [f"{p}-01A" for p in patients] + [f"{p}-11A" for p in patients[:n_normal]]
    return np.array(samples), np.array([s[:12] for s in samples])


def gene(name: str, signal: bool, length: int = 40, seed: int = 0) -> GeneData:
    samples, patients = cohort()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(samples), length)).astype(np.float32)
    if signal:
        y = -1.5 * x[:, 8] - 1.0 * x[:, 10] + 0.8 * x[:, 3] + 0.4 * rng.standard_normal(len(x))
    else:
        y = rng.standard_normal(len(x))
    return GeneData(name, x, y, patients, samples)


@pytest.fixture(scope="module")
def honest_results():
    return cross_validate([gene("SIG", True), gene("NULL", False, seed=1)], config=FAST)


def test_outer_folds_are_patient_grouped_and_inner_split_avoids_the_scored_fold() -> None:
    samples, patients = cohort()
    splits = honest_splits(patients, n_folds=5, seed=0)
    test_rows = np.concatenate([s.test for s in splits])
    assert np.array_equal(np.sort(test_rows), np.arange(len(samples)))
    fold_of_patient: dict[str, int] = {}
    for split in splits:
        for p in set(patients[split.test]):
            assert fold_of_patient.setdefault(p, split.fold) == split.fold
        train, valid, test = (set(x.tolist()) for x in (split.train, split.valid, split.test))
        assert not (train & valid) and not (train & test) and not (valid & test)
        assert train | valid | test == set(range(len(samples)))
        assert not set(patients[split.train]) & set(patients[split.valid])
        assert np.array_equal(np.sort(split.scaler_rows), np.sort(np.r_[split.train, split.valid]))
        assert 0.1 < len(split.valid) / (len(split.train) + len(split.valid)) < 0.3
    again = honest_splits(patients, n_folds=5, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again, strict=True))


def test_published_splits_stop_early_on_the_scored_fold() -> None:
    splits = published_splits(50)
    for split in splits:
        assert np.array_equal(split.valid, split.test)
        assert np.array_equal(split.scaler_rows, split.train)
    assert np.array_equal(np.sort(np.concatenate([s.test for s in splits])), np.arange(50))


def test_the_scored_fold_never_reaches_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gene("SIG", True)
    seen = []
    real = cv.train_tasks

    def spy(tasks, config, trainer, device):
        seen.extend(tasks)
        return real(tasks, config, trainer, device)

    monkeypatch.setattr(cv, "train_tasks", spy)
    (result,) = cross_validate([data], config=TrainConfig(max_epochs=2, patience=2))
    assert len(seen) == 5
    for fold, (task, checkpoint) in enumerate(zip(seen, result.checkpoints, strict=True)):
        test = result.oof.index[result.oof["fold"] == fold]
        scaled = scale_features(data.X[test], checkpoint.scaler_mean, checkpoint.scaler_scale)
        used = np.vstack([task.X_train, task.X_valid])
        assert not (scaled[:, None, :] == used[None, :, :]).all(axis=2).any()
        assert len(used) + len(test) == len(data.y)


def test_model_learns_signal_and_not_noise(honest_results) -> None:
    signal, null = honest_results
    assert signal.r2 > 0.3 and signal.pearson_r2 > 0.3
    assert null.r2 < 0.1 and null.pearson_r2 < 0.1


def test_result_tables_have_the_documented_shape(honest_results) -> None:
    result = honest_results[0]
    assert list(result.fold_metrics.columns) == cv.FOLD_METRIC_COLUMNS
    assert list(result.fold_metrics["fold"]) == [0, 1, 2, 3, 4]
    sizes = result.fold_metrics[["n_train", "n_valid", "n_test"]].sum(axis=1)
    assert (sizes == 180).all()
    assert list(result.oof.columns) == ["sample", "fold", "y_true", "y_pred"]
    assert len(result.oof) == 180 and result.oof["sample"].is_unique
    assert result.n_cpgs == 40 and result.seconds > 0 and result.protocol == "honest"
    assert (result.fold_metrics["best_epoch"] <= result.fold_metrics["epochs_run"]).all()


def test_checkpoints_reproduce_the_out_of_fold_predictions(honest_results) -> None:
    data, result = gene("SIG", True), honest_results[0]
    for checkpoint in result.checkpoints:
        rows = result.oof.index[result.oof["fold"] == checkpoint.fold]
        model = load_fold_model(checkpoint)
        np.testing.assert_array_equal(model.predict(data.X[rows]), result.oof.loc[rows, "y_pred"])


def test_fold_assignment_is_the_same_for_every_gene(honest_results) -> None:
    a, b = honest_results
    pd.testing.assert_series_equal(a.oof["fold"], b.oof["fold"])


def test_deterministic_for_a_seed() -> None:
    data = [gene("SIG", True, seed=3)]
    config = TrainConfig(max_epochs=40, patience=10, seed=5)
    first, second = (cross_validate(data, config=config)[0] for _ in range(2))
    pd.testing.assert_frame_equal(first.oof, second.oof)
    pd.testing.assert_frame_equal(first.fold_metrics, second.fold_metrics)


def test_batched_and_reference_trainers_agree() -> None:
    data = [gene("SIG", True, seed=4)]
    config = TrainConfig(max_epochs=60, patience=10)
    fast = cross_validate(data, config=config, trainer="batched")[0]
    ref = cross_validate(data, config=config, trainer="reference")[0]
    assert abs(fast.r2 - ref.r2) < 0.01
    assert abs(fast.pearson_r2 - ref.pearson_r2) < 0.01


def test_published_protocol_carries_one_model_across_folds(monkeypatch) -> None:
    seen = []
    real = cv.train_tasks

    def spy(tasks, config, trainer, device):
        results = real(tasks, config, trainer, device)
        seen.append((tasks[0], results[0]))
        return results

    monkeypatch.setattr(cv, "train_tasks", spy)
    done = []
    (result,) = cross_validate(
        [gene("SIG", True)], protocol="published", config=FAST, on_gene_done=done.append
    )
    assert done == [result] and result.protocol == "published"
    # fold 0 starts from the model the authors' module builds under the seed (its extra draw)
    first = init_model(40, FAST.channels, FAST.seed, published_init=True).state_dict()
    for k, v in first.items():
        assert torch.equal(seen[0][0].init_state[k], v)
    for (task, _), (_, previous) in zip(seen[1:], seen[:-1], strict=True):
        for k, v in previous.model.state_dict().items():
            assert torch.equal(task.init_state[k], v)
    assert result.r2 > 0.3
    assert (result.fold_metrics["n_valid"] == result.fold_metrics["n_test"]).all()


def test_bad_input_is_refused() -> None:
    samples, patients = cohort()
    with pytest.raises(ValueError):
        GeneData("G", np.full((len(samples), 3), np.nan), np.zeros(len(samples)), patients, samples)
    with pytest.raises(ValueError):
        cross_validate([gene("SIG", True)], protocol="leaky")
    with pytest.raises(ValueError):
        honest_splits(np.array(["p1", "p2", "p1"]), n_folds=5)


@pytest.mark.parametrize("protocol", ["honest", "published"])
def test_genes_trained_together_match_genes_trained_alone(monkeypatch, protocol) -> None:
    """The CUDA path stacks the folds of several genes into one model; run it on the CPU.

    Grouped kernels of another width round differently, and the published chain of five folds
    carries that on, so the figures agree to rounding, not bit for bit; a gene mixed up with
    another would be off by far more."""
    data = [gene("A", True, seed=11), gene("B", False, seed=12), gene("C", True, seed=13)]
    config = TrainConfig(max_epochs=30, patience=5)
    alone = cross_validate(data, protocol=protocol, config=config)
    cuda_batches = cv._gene_batches  # batches as planned for a GPU with memory to spare
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 40, 1 << 41))
    monkeypatch.setattr(
        cv, "_gene_batches", lambda genes, config, _, folds: cuda_batches(genes, config, gpu, folds)
    )
    assert cv._gene_batches(data, config, torch.device("cpu"), 5) == [[0, 1, 2]]
    together = cross_validate(data, protocol=protocol, config=config)
    for a, t in zip(alone, together, strict=True):
        assert t.gene == a.gene
        pd.testing.assert_series_equal(t.fold_metrics["epochs_run"], a.fold_metrics["epochs_run"])
        assert t.r2 == pytest.approx(a.r2, abs=1e-3)
        assert t.pearson_r2 == pytest.approx(a.pearson_r2, abs=1e-3)
        np.testing.assert_allclose(t.oof["y_pred"], a.oof["y_pred"], atol=0.05)


def test_gpu_batches_take_genes_in_length_order_within_the_memory_budget(monkeypatch) -> None:
    data = [gene("L", False, 60)] + [gene(f"G{i}", False, length=40, seed=i) for i in range(5)]
    per_gene = 5 * task_bytes(len(data[1].y), 40, "adaptive")
    free = int(2.5 * per_gene / 0.4)  # room for two genes of length 40 in 40 % of free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    batches = cv._gene_batches(data, TrainConfig(), torch.device("cuda"), 5)
    assert batches == [[1, 2], [3, 4], [5], [0]]


def test_a_final_model_trains_on_every_sample_beside_unchanged_folds() -> None:
    data = gene("A", True, seed=21)
    config = TrainConfig(max_epochs=30, patience=5)
    (plain,) = cross_validate([data], config=config)
    (with_final,) = cross_validate([data], config=config, final_model=True)
    assert plain.final is None and with_final.final is not None
    pd.testing.assert_frame_equal(with_final.fold_metrics, plain.fold_metrics, atol=1e-4)
    split = cv.final_split(data.patients, 5)
    assert len(split.test) == 0 and len(split.scaler_rows) == len(data.y)
    assert not set(data.patients[split.train]) & set(data.patients[split.valid])
    np.testing.assert_allclose(with_final.final.scaler_mean, data.X.mean(axis=0), rtol=1e-5)
    checkpoint = with_final.gene_checkpoint([f"cg{i}" for i in range(data.X.shape[1])], "{}", "r")
    assert [m.fold for m in checkpoint.models] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="honest"):
        cross_validate([data], protocol="published", config=config, final_model=True)
