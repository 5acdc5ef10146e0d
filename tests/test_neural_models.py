"""The neural models of the comparison as scikit-learn estimators: the CNN and its ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import r2_score
from torch import nn

from dmg_ml.models.cnn import HIDDEN_UNITS, AblationMLP
from dmg_ml.training import estimators
from dmg_ml.training.estimators import CNNRegressor, MLPRegressor
from dmg_ml.training.reference import TrainConfig

LENGTH = 30
FAST = {"max_epochs": 60, "patience": 10}

pytestmark = pytest.mark.usefixtures("one_thread")


def make_gene(seed: int = 0, n_patients: int = 40, length: int = LENGTH):
    """Two samples per patient; neighbouring CpGs correlated, as in real windows; expression
    falls with the mean methylation of a block of CpGs in the window."""
    rng = np.random.default_rng(seed)
    n = 2 * n_patients
    z = rng.standard_normal((n, length + 2))
    X = ((z[:, :-2] + z[:, 1:-1] + z[:, 2:]) / np.sqrt(3)).astype(np.float32)
    signal = -X[:, 12:18].mean(axis=1)
    y = (signal / signal.std() + 0.2 * rng.standard_normal(n)).astype(np.float32)
    patients = np.repeat([f"TCGA-{seed}-{p:04d}" for p in range(n_patients)], 2)
    return X, y, patients


@pytest.fixture(scope="module")
def gene():
    return make_gene(0)


@pytest.fixture(scope="module")
def unseen():
    X, y, _ = make_gene(1, n_patients=30)
    return X, y


MODELS = {
    "cnn": lambda **kw: CNNRegressor(**FAST, **kw),
    "cnn-reference": lambda **kw: CNNRegressor(**FAST, trainer="reference", **kw),
    "mlp": lambda **kw: MLPRegressor(**FAST, **kw),
}


@pytest.mark.parametrize("name", MODELS)
def test_learns_the_gene_and_beats_the_mean(name, gene, unseen) -> None:
    X, y, patients = gene
    model = MODELS[name]().fit(X, y, patients)
    pred = model.predict(unseen[0])
    assert pred.dtype == np.float64 and pred.shape == (len(unseen[1]),)
    assert r2_score(unseen[1], pred) > 0.3
    assert 1 <= model.best_epoch_ <= model.epochs_run_ <= FAST["max_epochs"]
    assert not model.model_.training
    assert all(p.device.type == "cpu" for p in model.model_.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_early_stopping_rows_are_whole_patients(name, gene, monkeypatch) -> None:
    X, y, patients = gene
    splits = []

    def spy(groups, n_rows, seed=0):
        train, valid = inner_holdout(groups, n_rows, seed)
        splits.append((train, valid))
        return train, valid

    inner_holdout = estimators.inner_holdout
    monkeypatch.setattr(estimators, "inner_holdout", spy)
    model = MODELS[name](seed=5).fit(X, y, patients)
    (train, valid), = splits
    assert len(valid) > 0 and sorted([*train, *valid]) == list(range(len(y)))
    assert not set(patients[train]) & set(patients[valid])
    # The trainer stopped on exactly these rows: the restored weights' loss on them is its best.
    valid_mse = float(np.mean((model.predict(X[valid]) - y[valid]) ** 2))
    assert valid_mse == pytest.approx(model.best_valid_loss_, rel=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_fixed_seed_gives_the_same_model(name, gene, unseen) -> None:
    X, y, patients = gene
    torch.manual_seed(1)
    a = MODELS[name](seed=3).fit(X, y, patients)
    torch.manual_seed(2)  # the global RNG plays no part
    b = MODELS[name](seed=3).fit(X, y, patients)
    c = MODELS[name](seed=4).fit(X, y, patients)
    np.testing.assert_array_equal(a.predict(unseen[0]), b.predict(unseen[0]))
    assert (a.epochs_run_, a.best_epoch_) == (b.epochs_run_, b.best_epoch_)
    assert not np.allclose(a.predict(unseen[0]), c.predict(unseen[0]))


@pytest.mark.parametrize(
    "cls, params",
    [
        (CNNRegressor, {"channels", "trainer"}),
        (MLPRegressor, set()),
    ],
)
def test_parameters_are_constructor_arguments_and_clone_works(cls, params, gene) -> None:
    shared = {
        "max_epochs", "patience", "learning_rate", "batch_size", "precision",
        "restore_best_weights", "seed", "device",
    }  # fmt: skip
    default = cls()
    assert set(default.get_params()) == shared | params
    config = TrainConfig()
    assert (default.max_epochs, default.patience, default.learning_rate) == (
        config.max_epochs, config.patience, config.lr,
    )  # fmt: skip
    assert default.batch_size is None and default.restore_best_weights
    fitted = cls(**FAST, batch_size=32, seed=7).fit(*gene)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "model_")
    assert copy.set_params(seed=8).seed == 8 and fitted.seed == 7


def test_reference_and_batched_trainers_agree(gene, unseen) -> None:
    X, y, patients = gene
    for batch_size in (None, 24):
        batched = CNNRegressor(**FAST, batch_size=batch_size).fit(X, y, patients)
        reference = CNNRegressor(**FAST, batch_size=batch_size, trainer="reference")
        reference.fit(X, y, patients)
        got, expected = batched.predict(unseen[0]), reference.predict(unseen[0])
        assert abs(batched.epochs_run_ - reference.epochs_run_) <= 2
        np.testing.assert_allclose(got, expected, atol=0.05)
        assert np.corrcoef(got, expected)[0, 1] > 0.99


def test_mlp_is_the_cnn_without_convolutions(gene) -> None:
    model = MLPRegressor(**FAST).fit(*gene).model_
    assert isinstance(model, AblationMLP)
    assert not any(isinstance(m, nn.Conv1d | nn.Conv2d) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (LENGTH, HIDDEN_UNITS), (HIDDEN_UNITS, 1),
    ]  # fmt: skip
    x = torch.randn(5, LENGTH)
    with torch.no_grad():
        assert model(x).shape == (5,)
        torch.testing.assert_close(model(x.unsqueeze(1)), model(x))


def test_bad_arguments_are_refused(gene) -> None:
    X, y, patients = gene
    with pytest.raises(ValueError, match="trainer"):
        CNNRegressor(**FAST, trainer="fastest").fit(X, y, patients)
    with pytest.raises(ValueError, match="channels"):
        CNNRegressor(**FAST, channels="wide").fit(X, y, patients)
    with pytest.raises(ValueError, match="precision"):
        MLPRegressor(**FAST, precision="fp16").fit(X, y, patients)
    with pytest.raises(ValueError, match="groups"):
        MLPRegressor(**FAST).fit(X, y, patients[:-1])
    fitted = MLPRegressor(**FAST).fit(X, y, patients)
    with pytest.raises(ValueError):
        fitted.predict(X[:, :-1])
