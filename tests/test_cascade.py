"""The cascade forest ("Deep Forest") baseline: layer growth, honesty of its inner folds, fit."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import r2_score

from dmg_ml.models import cascade
from dmg_ml.models.cascade import CascadeForest

N_PATIENTS = 60
N_FEATURES = 30
TRAIN_PATIENTS = 45
#: Small forests keep every fit well under a second.
FAST = {"n_estimators": 20, "forests_per_type": 1, "max_layers": 3}


def paired_cohort(seed: int = 0, noise_only: bool = False):
    """120 rows: tumour and normal of 60 patients, sharing a patient component in X and y."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(N_PATIENTS), 2)
    patient_x = rng.normal(size=(N_PATIENTS, N_FEATURES))[groups]
    X = 0.6 * patient_x + 0.8 * rng.normal(size=(2 * N_PATIENTS, N_FEATURES))
    if noise_only:
        y = rng.normal(size=2 * N_PATIENTS)
    else:
        signal = 2.0 * np.tanh(1.5 * X[:, 0]) - X[:, 1] ** 2 + 1.5 * (X[:, 2] > 0)
        y = signal + 0.3 * rng.normal(size=2 * N_PATIENTS)
    train = groups < TRAIN_PATIENTS
    return X, y, groups, train


@pytest.fixture(scope="module")
def signal_fit():
    X, y, groups, train = paired_cohort()
    model = CascadeForest(**FAST, random_state=0).fit(X[train], y[train], groups[train])
    return model, X, y, groups, train


def test_layers_grow_only_while_the_inner_score_improves(signal_fit):
    model = signal_fit[0]
    scores, kept = model.layer_scores_, model.n_layers_
    # On this signal the second layer gains (0.61 -> 0.66), so the growth rule is exercised.
    assert 2 <= kept <= model.max_layers
    assert len(model.layers_) == kept
    # Every layer tried is scored; all but the first kept beat the best before them by > tol.
    assert all(b > a + model.tol for a, b in zip(scores[:kept - 1], scores[1:kept], strict=True))
    if kept < model.max_layers:
        # Growth stopped early: exactly one more layer was tried, and it did not improve.
        assert len(scores) == kept + 1
        assert scores[-1] <= max(scores[:kept]) + model.tol
    else:
        assert len(scores) == kept
    # Layer k sees X plus one out-of-fold column per forest of layer k - 1.
    n_forests = 2 * model.forests_per_type
    for k, forests in enumerate(model.layers_):
        assert len(forests) == n_forests
        assert {f.n_features_in_ for f in forests} == {N_FEATURES + (n_forests if k else 0)}


def test_a_huge_tol_keeps_one_layer_and_records_the_rejected_one():
    X, y, groups, train = paired_cohort()
    model = CascadeForest(**FAST, tol=1.0).fit(X[train], y[train], groups[train])
    assert model.n_layers_ == 1
    assert len(model.layer_scores_) == 2
    assert model.layer_scores_[1] <= model.layer_scores_[0] + 1.0
    one = CascadeForest(**{**FAST, "max_layers": 1}).fit(X[train], y[train], groups[train])
    assert one.n_layers_ == 1 and len(one.layer_scores_) == 1


def test_predicts_held_out_patients_well_above_a_constant(signal_fit):
    model, X, y, _, train = signal_fit
    pred = model.predict(X[~train])
    assert pred.shape == (int((~train).sum()),)
    assert np.isfinite(pred).all()
    assert r2_score(y[~train], pred) > 0.2
    # The inner score is an honest out-of-fold estimate: positive on a clear signal.
    assert model.layer_scores_[0] > 0.2


def test_prediction_is_the_mean_of_the_last_layer_fed_through_the_cascade(signal_fit):
    model, X, _, _, train = signal_fit
    test = X[~train]
    features = test
    for forests in model.layers_:
        columns = np.column_stack([f.predict(features) for f in forests])
        features = np.hstack([test, columns])
    np.testing.assert_allclose(model.predict(test), columns.mean(axis=1))


def test_pure_noise_stops_early_and_does_not_overfit():
    X, y, groups, train = paired_cohort(seed=1, noise_only=True)
    model = CascadeForest(**{**FAST, "max_layers": 5}).fit(X[train], y[train], groups[train])
    assert model.n_layers_ <= 2
    # Out-of-fold, not in-sample: a forest fits noise in-sample with R² far above 0.
    assert model.layer_scores_[0] < 0.1
    assert r2_score(y[~train], model.predict(X[~train])) > -0.3


def test_inner_folds_never_split_a_patient(monkeypatch):
    X, y, groups, train = paired_cohort()
    calls = []
    original = cascade.inner_folds

    def spy(*args, **kwargs):
        folds = original(*args, **kwargs)
        calls.append((args, kwargs, folds))
        return folds

    monkeypatch.setattr(cascade, "inner_folds", spy)
    g = groups[train]
    model = CascadeForest(**FAST, inner_splits=3).fit(X[train], y[train], g)
    assert len(calls) == 1
    args, kwargs, folds = calls[0]
    np.testing.assert_array_equal(args[0], g)
    assert len(folds) == model.inner_splits
    seen = np.concatenate([valid for _, valid in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(g)))
    for inner_train, valid in folds:
        assert not set(g[inner_train]) & set(g[valid])


def test_fitted_forests_only_ever_see_inner_train_rows(monkeypatch):
    """Every inner fit gets rows of whole patients, never a patient it will predict."""
    X, y, groups, train = paired_cohort()
    Xt, yt, g = X[train], y[train], groups[train]
    row_of = {row.tobytes(): i for i, row in enumerate(Xt)}
    events = []
    for cls in (cascade.RandomForestRegressor, cascade.ExtraTreesRegressor):
        fit, predict = cls.fit, cls.predict

        def spy_fit(self, A, b, *args, _fit=fit, **kwargs):
            events.append(("fit", [row_of[r[:N_FEATURES].tobytes()] for r in A]))
            return _fit(self, A, b, *args, **kwargs)

        def spy_predict(self, A, _predict=predict):
            events.append(("predict", [row_of[r[:N_FEATURES].tobytes()] for r in A]))
            return _predict(self, A)

        monkeypatch.setattr(cls, "fit", spy_fit)
        monkeypatch.setattr(cls, "predict", spy_predict)
    model = CascadeForest(**{**FAST, "max_layers": 2}).fit(Xt, yt, g)
    n_forests = 2 * model.forests_per_type
    inner = refits = 0
    for i, (kind, rows) in enumerate(events):
        if kind != "fit":
            continue
        if len(rows) == len(yt):
            refits += 1
            continue
        # An inner fit is followed by the prediction of its validation rows: other patients.
        inner += 1
        next_kind, valid = events[i + 1]
        assert next_kind == "predict"
        assert not set(g[rows]) & set(g[valid])
        assert len(rows) + len(valid) == len(yt)
    assert inner == len(model.layer_scores_) * n_forests * model.inner_splits
    assert refits == model.n_layers_ * n_forests


def test_deterministic_for_a_fixed_random_state():
    X, y, groups, train = paired_cohort()
    a = CascadeForest(**FAST, random_state=11).fit(X[train], y[train], groups[train])
    b = CascadeForest(**FAST, random_state=11).fit(X[train], y[train], groups[train])
    assert a.layer_scores_ == b.layer_scores_
    np.testing.assert_array_equal(a.predict(X[~train]), b.predict(X[~train]))
    c = CascadeForest(**FAST, random_state=12).fit(X[train], y[train], groups[train])
    assert c.layer_scores_ != a.layer_scores_


def test_clone_and_get_params():
    model = CascadeForest(n_estimators=7, forests_per_type=1, max_layers=2, inner_splits=4,
                          tol=0.01, max_features="sqrt", n_jobs=1, random_state=5)
    params = model.get_params()
    assert set(params) == {"n_estimators", "forests_per_type", "max_layers", "inner_splits",
                           "tol", "max_features", "extra_max_features", "min_samples_leaf",
                           "n_jobs", "random_state"}
    assert params["max_features"] == "sqrt" and params["inner_splits"] == 4
    twin = clone(model)
    assert twin is not model and twin.get_params() == params
    assert not hasattr(twin, "layers_")


def test_rejects_bad_parameters_and_unfitted_use():
    X, y, groups, _ = paired_cohort()
    with pytest.raises(ValueError, match="inner_splits"):
        CascadeForest(inner_splits=1).fit(X, y, groups)
    with pytest.raises(ValueError, match="max_layers"):
        CascadeForest(max_layers=0).fit(X, y, groups)
    model = CascadeForest(**FAST).fit(X, y, groups)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :5])
