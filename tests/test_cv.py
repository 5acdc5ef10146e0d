"""The CNN under the evaluation engine's two protocols: grouping, leakage, learning, agreement,
determinism, checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dmg_ml.data import splits as splits_module
from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import final_split, honest_splits, published_splits
from dmg_ml.evaluation import engine
from dmg_ml.models.checkpoint import load_fold_model, scale_features
from dmg_ml.training import folds, planning
from dmg_ml.training.planning import task_bytes
from dmg_ml.training.reference import TrainConfig, init_model

FAST = {"max_epochs": 100, "patience": 30}
DEFAULTS = TrainConfig()


def cross_validate(genes, protocol="honest", params=None, seed=DEFAULTS.seed, **kwargs):
    """The CNN through the evaluation engine (what ``cv.cross_validate`` was)."""
    return engine.evaluate(genes, "cnn", protocol, params=params, seed=seed, **kwargs)


def scores(result) -> pd.DataFrame:
    """A result's per-fold figures and training facts, without the wall times."""
    return result.fold_metrics.drop(columns="seconds").merge(result.training, on="fold")


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
    return cross_validate([gene("SIG", True), gene("NULL", False, seed=1)], params=FAST)


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
    real = folds.train_tasks

    def spy(tasks, config, trainer, device):
        seen.extend(tasks)
        return real(tasks, config, trainer, device)

    monkeypatch.setattr(folds, "train_tasks", spy)
    (result,) = cross_validate([data], params={"max_epochs": 2, "patience": 2})
    assert len(seen) == 5
    for fold, (task, checkpoint) in enumerate(zip(seen, result.fold_models, strict=True)):
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
    assert list(result.fold_metrics.columns) == engine.FOLD_COLUMNS
    assert list(result.training.columns) == engine.TRAINING_COLUMNS
    assert list(result.fold_metrics["fold"]) == [0, 1, 2, 3, 4]
    assert list(result.training["fold"]) == [0, 1, 2, 3, 4]
    # n_train is the fold's whole training set: the gradient rows plus the early-stopping rows
    sizes = result.fold_metrics[["n_train", "n_test"]].sum(axis=1)
    assert (sizes == 180).all()
    assert (result.training["n_valid"] > 0).all()
    assert (result.training["n_valid"] < result.fold_metrics["n_train"]).all()
    assert list(result.oof.columns) == ["sample", "fold", "y_true", "y_pred"]
    assert len(result.oof) == 180 and result.oof["sample"].is_unique
    assert result.n_cpgs == 40 and result.seconds > 0 and result.protocol == "honest"
    assert result.model == "cnn" and len(result.fold_models) == 5
    assert (result.training["best_epoch"] <= result.training["epochs_run"]).all()


def test_checkpoints_reproduce_the_out_of_fold_predictions(honest_results) -> None:
    data, result = gene("SIG", True), honest_results[0]
    for checkpoint in result.fold_models:
        rows = result.oof.index[result.oof["fold"] == checkpoint.fold]
        model = load_fold_model(checkpoint)
        np.testing.assert_array_equal(model.predict(data.X[rows]), result.oof.loc[rows, "y_pred"])


def test_fold_assignment_is_the_same_for_every_gene(honest_results) -> None:
    a, b = honest_results
    pd.testing.assert_series_equal(a.oof["fold"], b.oof["fold"])


def test_deterministic_for_a_seed() -> None:
    data = [gene("SIG", True, seed=3)]
    params = {"max_epochs": 40, "patience": 10}
    first, second = (cross_validate(data, params=params, seed=5)[0] for _ in range(2))
    pd.testing.assert_frame_equal(first.oof, second.oof)
    pd.testing.assert_frame_equal(scores(first), scores(second))
    other = cross_validate(data, params=params, seed=6)[0]
    assert not np.allclose(other.oof["y_pred"], first.oof["y_pred"])


def test_batched_and_reference_trainers_agree() -> None:
    data = [gene("SIG", True, seed=4)]
    params = {"max_epochs": 60, "patience": 10}
    fast = cross_validate(data, params={**params, "trainer": "batched"})[0]
    ref = cross_validate(data, params={**params, "trainer": "reference"})[0]
    assert abs(fast.r2 - ref.r2) < 0.01
    assert abs(fast.pearson_r2 - ref.pearson_r2) < 0.01


def test_published_protocol_carries_one_model_across_folds(monkeypatch) -> None:
    seen = []
    real = folds.train_tasks

    def spy(tasks, config, trainer, device):
        results = real(tasks, config, trainer, device)
        seen.append((tasks[0], results[0]))
        return results

    monkeypatch.setattr(folds, "train_tasks", spy)
    done = []
    (result,) = cross_validate(
        [gene("SIG", True)], protocol="published", params=FAST, on_gene_done=done.append
    )
    assert done == [result] and result.protocol == "published"
    assert len(seen) == 5
    # fold 0 starts from the model the authors' module builds under the seed (its extra draw)
    first = init_model(40, DEFAULTS.channels, DEFAULTS.seed, published_init=True).state_dict()
    for k, v in first.items():
        assert torch.equal(seen[0][0].init_state[k], v)
    for (task, _), (_, previous) in zip(seen[1:], seen[:-1], strict=True):
        for k, v in previous.model.state_dict().items():
            assert torch.equal(task.init_state[k], v)
    assert result.r2 > 0.3
    assert (result.training["n_valid"] == result.fold_metrics["n_test"]).all()
    assert (result.fold_metrics[["n_train", "n_test"]].sum(axis=1) == 180).all()


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
    params = {"max_epochs": 30, "patience": 5}
    alone = cross_validate(data, protocol=protocol, params=params)
    cuda_batches = planning.gene_batches  # batches as planned for a GPU with memory to spare
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 40, 1 << 41))
    monkeypatch.setattr(
        folds, "gene_batches",
        lambda shapes, models, channels, _: cuda_batches(shapes, models, channels, gpu),
    )
    shapes = [(len(g.y), g.X.shape[1]) for g in data]
    assert folds.gene_batches(shapes, 5, "adaptive", torch.device("cpu")) == [[0, 1, 2]]
    together = cross_validate(data, protocol=protocol, params=params)
    for a, t in zip(alone, together, strict=True):
        assert t.gene == a.gene
        pd.testing.assert_series_equal(t.training["epochs_run"], a.training["epochs_run"])
        assert t.r2 == pytest.approx(a.r2, abs=1e-3)
        assert t.pearson_r2 == pytest.approx(a.pearson_r2, abs=1e-3)
        np.testing.assert_allclose(t.oof["y_pred"], a.oof["y_pred"], atol=0.05)


def test_gpu_batches_take_genes_in_length_order_within_the_memory_budget(monkeypatch) -> None:
    data = [gene("L", False, 60)] + [gene(f"G{i}", False, length=40, seed=i) for i in range(5)]
    shapes = [(len(g.y), g.X.shape[1]) for g in data]
    per_gene = 5 * task_bytes(len(data[1].y), 40, "adaptive")
    free = int(2.5 * per_gene / 0.4)  # room for two genes of length 40 in 40 % of free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    batches = planning.gene_batches(shapes, 5, "adaptive", torch.device("cuda"))
    assert batches == [[1, 2], [3, 4], [5], [0]]
    assert planning.gene_batches(shapes, 5, "adaptive", torch.device("cpu")) == [
        [0], [1], [2], [3], [4], [5]]


def test_a_final_model_trains_on_every_sample_beside_unchanged_folds() -> None:
    data = gene("A", True, seed=21)
    params = {"max_epochs": 30, "patience": 5}
    (plain,) = cross_validate([data], params=params)
    (with_final,) = cross_validate([data], params=params, final_model=True)
    assert plain.final is None and with_final.final is not None
    pd.testing.assert_frame_equal(scores(with_final), scores(plain), atol=1e-4)
    assert [m.fold for m in with_final.fold_models] == [0, 1, 2, 3, 4]
    split = final_split(data.patients, 5)
    assert len(split.test) == 0 and len(split.scaler_rows) == len(data.y)
    assert not set(data.patients[split.train]) & set(data.patients[split.valid])
    np.testing.assert_allclose(with_final.final.scaler_mean, data.X.mean(axis=0), rtol=1e-5)
    checkpoint = with_final.gene_checkpoint([f"cg{i}" for i in range(data.X.shape[1])], "{}", "r")
    assert [m.fold for m in checkpoint.models] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="honest"):
        cross_validate([data], protocol="published", params=params, final_model=True)


def test_folds_are_computed_once_per_set_of_samples_and_patients(monkeypatch) -> None:
    """Genes of one cohort share their samples: their folds are split once and shared."""
    calls = []
    real = engine.outer_splits

    def counted(patients, protocol, n_folds=5, seed=0):
        calls.append(len(patients))
        return real(patients, protocol, n_folds, seed)

    monkeypatch.setattr(engine, "outer_splits", counted)
    samples, patients = cohort(60, 10)
    fewer = GeneData("FEWER", np.ones((len(samples) - 1, 3), dtype=np.float32),
                     np.arange(len(samples) - 1.0), patients[1:], samples[1:])
    same = [GeneData(f"G{i}", np.full((len(samples), 3), i, dtype=np.float32),
                     np.arange(len(samples), dtype=float), patients, samples) for i in range(3)]
    results = engine.evaluate([*same, fewer], "mean")
    assert calls == [len(samples), len(samples) - 1]
    assert all(r.oof["fold"].tolist() == results[0].oof["fold"].tolist() for r in results[:3])
    engine.evaluate(same, "mean", seed=1)
    assert calls[2:] == [len(samples)]  # another seed, other folds


def test_the_splits_module_owns_the_fold_seeds() -> None:
    """Fold k's inner split is seeded by ``split_seed(seed, k)``: 32 bits of ``task_seed``."""
    assert splits_module.split_seed(3, 2) == splits_module.task_seed(3, 2) % 2**32
    assert splits_module.split_seed(3, 2) != splits_module.split_seed(3, 3)
