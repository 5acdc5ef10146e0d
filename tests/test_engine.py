"""The evaluation engine: one set of outer folds for every model, and no fit ever sees the rows
it is scored on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin

from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import outer_splits
from dmg_ml.evaluation import engine, registry


def _gene(name: str = "G", n_patients: int = 30, length: int = 12, seed: int = 0) -> GeneData:
    """Tumour and normal of each of the first patients, tumour only for the rest; y unique per
    sample (so a set of y values names the samples a fit saw) and driven by two CpGs."""
    rng = np.random.default_rng(seed)
    patients = [f"TCGA-AA-{i:04d}" for i in range(n_patients)]
    samples = [f"{p}-01A" for p in patients] + [f"{p}-11A" for p in patients[:10]]
    groups = [s[:12] for s in samples]
    X = rng.normal(size=(len(samples), length)).astype(np.float32)
    y = -X[:, 3] + 0.5 * X[:, 7] + 0.3 * rng.normal(size=len(samples))
    y = y + np.arange(len(samples)) * 1e-4
    return GeneData(name, X, y, np.array(groups), np.array(samples))


class SpyModel(BaseEstimator, RegressorMixin):
    """Records the y values of every fit; refuses a fit that sees the current outer test fold
    (of ``gene``, the gene the spy tests evaluate)."""

    gene: GeneData = _gene()
    seen: list[set[float]] = []
    forbidden: set[float] = set()

    def fit(self, X, y, groups=None):
        assert SpyModel.forbidden, "a fit outside the fold the engine is on"
        rows = set(np.round(np.asarray(y, dtype=np.float64), 6).tolist())
        overlap = rows & SpyModel.forbidden
        assert not overlap, f"a fit saw {len(overlap)} rows of the fold it is scored on"
        SpyModel.seen.append(rows)
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


class _Tracked(list):
    """A gene's outer folds that mark each fold's test rows forbidden while the engine is on
    that fold (it fits a gene's fold models fold by fold, iterating its folds)."""

    def __iter__(self):
        for split in super().__iter__():
            y = SpyModel.gene.y[split.test].astype(np.float64)
            SpyModel.forbidden = set(np.round(y, 6).tolist())
            yield split
        SpyModel.forbidden = set()


@pytest.fixture
def spy(monkeypatch):
    """Registers ``spy`` and marks each outer test fold forbidden while the engine fits it."""
    monkeypatch.setitem(registry.MODELS, "spy", f"{__name__}:SpyModel")
    real = engine.outer_splits

    def tracked(patients, protocol, n_folds=5, seed=0):
        assert np.array_equal(patients, SpyModel.gene.patients)
        return _Tracked(real(patients, protocol, n_folds, seed))

    monkeypatch.setattr(engine, "outer_splits", tracked)
    SpyModel.seen = []
    yield SpyModel
    SpyModel.seen, SpyModel.forbidden = [], set()


def _folds(result) -> list[int]:
    return result.oof.sort_values("sample")["fold"].tolist()


def test_every_model_is_scored_on_the_same_outer_folds():
    genes = [_gene("A", seed=1), _gene("B", seed=2)]
    fold_of = {}
    for split in outer_splits(genes[0].patients, "honest"):
        fold_of.update(dict.fromkeys(genes[0].samples[split.test], split.fold))
    expected = [fold_of[s] for s in sorted(genes[0].samples)]
    for model, params in [("mean", {}), ("enet", {}), ("rf", {"n_estimators": 5}),
                          ("cnn", {"max_epochs": 3, "patience": 5})]:
        for result in engine.evaluate(genes, model, params=params):
            assert _folds(result) == expected, model
            assert result.model == model and len(result.fold_metrics) == 5
            assert sorted(result.oof["sample"]) == sorted(genes[0].samples)


def test_honest_folds_keep_a_patients_samples_together():
    result = engine.evaluate([_gene()], "mean")[0]
    folds_per_patient = result.oof.assign(patient=result.oof["sample"].str[:12]).groupby(
        "patient")["fold"].nunique()
    assert (folds_per_patient == 1).all()


@pytest.mark.parametrize("protocol", ["honest", "published"])
def test_no_fit_sees_the_fold_it_is_scored_on(spy, protocol):
    result = engine.evaluate([spy.gene], "spy", protocol=protocol)[0]
    assert [len(rows) for rows in spy.seen] == result.fold_metrics["n_train"].tolist()
    assert set().union(*spy.seen) == set(np.round(result.oof["y_true"], 6))  # every row trains


def test_best_never_lets_the_scored_fold_reach_its_choice(spy):
    gene = spy.gene
    results = engine.evaluate(
        [gene], "best", params={"candidates": ("spy", "enet"), "inner_splits": 3}
    )
    # per outer fold: 3 inner fits of the spy, then the refit if it won (it never beats enet here)
    assert len(spy.seen) == 15
    assert results[0].r2 > 0.5  # enet chosen: the signal is linear


def test_best_chooses_by_inner_r2_only():
    gene = _gene()
    model = registry.make_model("best", candidates=("mean", "enet"), inner_splits=3)
    model.fit(gene.X, gene.y, groups=gene.patients)
    assert model.chosen_ == "enet"
    assert model.inner_r2_["enet"] > 0.5 > model.inner_r2_["mean"]


def test_published_audit_folds_are_the_authors_shuffle_then_kfold():
    import pandas as pd
    from sklearn.model_selection import KFold

    gene = _gene()
    result = engine.evaluate([gene], "mean", protocol="published")[0]
    shuffled = pd.DataFrame(gene.X, index=gene.samples).sample(frac=1, random_state=1)
    expected = {}
    for fold, (_, test) in enumerate(KFold(5, shuffle=True, random_state=42).split(shuffled)):
        expected.update(dict.fromkeys(shuffled.index[test], fold))
    assert result.oof["sample"].tolist() == gene.samples.tolist()  # mapped back to dmg's order
    assert result.oof["fold"].tolist() == [expected[s] for s in gene.samples]
    cnn = engine.evaluate([gene], "cnn", protocol="published",
                          params={"max_epochs": 2, "patience": 2})[0]
    assert cnn.oof["fold"].tolist() == result.oof["fold"].tolist()


class _Recorder:
    """Stands in for a model by name and keeps the features of its last fit."""

    def __init__(self, name: str, seen: dict[str, np.ndarray]) -> None:
        self.name, self.seen = name, seen

    def fit(self, X, y, groups=None):
        self.seen[self.name], self.mean_ = np.asarray(X), float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def test_published_audit_scales_only_where_the_authors_pipeline_did(monkeypatch):
    """Their SVM, random-forest, Deep Forest and CNN scripts feed raw M-values; geneEXPLORE's
    glmnet standardises them itself. Honest mode standardises for every model."""
    seen: dict[str, np.ndarray] = {}
    monkeypatch.setattr(engine, "make_model", lambda name, **params: _Recorder(name, seen))
    gene = _gene()
    last_train = outer_splits(gene.patients, "published")[-1].train
    for name in ("svr", "rf", "cascade_forest", "mlp", "enet"):
        engine.evaluate([gene], name, protocol="published")
        raw = name != "enet"
        assert np.array_equal(seen[name], gene.X[last_train]) == raw, name
        assert (np.abs(seen[name].mean(axis=0)).max() < 1e-5) != raw, name
    engine.evaluate([gene], "svr")
    assert np.abs(seen["svr"].mean(axis=0)).max() < 1e-5


def test_registry_builds_every_model_and_refuses_unknown_names():
    for name in registry.MODELS:
        model = registry.make_model(name)
        assert hasattr(model, "fit") and hasattr(model, "predict"), name
    assert registry.make_model("rf").n_estimators == 100
    with pytest.raises(ValueError, match="unknown model 'xgb'"):
        registry.make_model("xgb")


def test_metrics_are_both_r2_definitions():
    result = engine.evaluate([_gene()], "enet")[0]
    assert result.r2 > 0.5 and result.pearson_r2 >= result.r2 - 0.05
    assert set(result.fold_metrics.columns) >= {"r2", "pearson_r2", "n_train", "n_test"}
    mean = engine.evaluate([_gene()], "mean")[0]
    assert mean.r2 < 0.05


def test_workers_go_only_to_models_whose_fit_pays_for_them():
    assert registry.parallel_params("rf", 2) == {"n_jobs": 2}
    assert registry.parallel_params("cascade_forest", 2) == {"n_jobs": 2}
    assert registry.parallel_params("enet", 2) == {} == registry.parallel_params("mean", 2)
